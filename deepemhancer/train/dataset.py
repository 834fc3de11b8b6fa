"""Training cubes: a pool of simulated maps built once with worker processes, cubes sampled from it
mostly on the molecule, 90° rotations and flips, served by a torch IterableDataset.

The pool is cached as one .npz per (structure, seed, target) so that a resumed run does not
simulate again.
"""
from __future__ import annotations

import hashlib
import multiprocessing
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch

from ..halves_input import RECIPE as HALVES_RECIPE, WEIGHTING, halves_channels
from ..mapio import Geometry, Map
from .simulate import SimulatedMap, SimulationSettings, simulate


@dataclass(frozen=True, eq=False)
class PoolMap:
    """What training needs of one simulated map: the normalised input ((Z, Y, X), or (C, Z, Y, X)
    for several channels), the target and where the molecule is (flat indices of envelope voxels)."""

    name: str
    input: np.ndarray
    target: np.ndarray
    on_molecule: np.ndarray


def structure_name(path: str | Path) -> str:
    """'1A2K' for '.../1A2K_target.pdb.gz'."""
    return Path(path).name.split("_")[0].split(".")[0]


def split_structures(paths: Sequence[str | Path], every: int, offset: int) -> tuple[list[Path], list[Path]]:
    """Deterministic split of the name-sorted structures: every ``every``-th one from ``offset`` is
    held out; the rest train. Returns (train, held_out)."""
    ordered = sorted((Path(p) for p in paths), key=structure_name)
    held = [p for i, p in enumerate(ordered) if i % every == offset % every]
    return [p for p in ordered if p not in held], held


def structure_seed(name: str, seed: int) -> int:
    """A seed for one structure that does not depend on the order of the list."""
    return int.from_bytes(hashlib.sha256(f"{name}:{seed}".encode()).digest()[:8], "little")


def training_pair(sim: SimulatedMap, inputs: str) -> tuple[np.ndarray, np.ndarray]:
    """(input, target) of one simulated map for a model that takes ``inputs``.

    "average": the normalised average and the target as simulated. "sharpened-halves" or
    "wiener-halves": the half-map model's two channels, and the target scaled by least squares to
    channel 0, so that a residual network starting from that channel starts at the right scale.
    """
    if inputs == "average":
        return sim.input, sim.target
    geometry = Geometry.for_grid(sim.half1.shape, 1.0)
    channels = halves_channels(Map(sim.half1, geometry), Map(sim.half2, geometry), WEIGHTING[inputs])
    target = sim.target.astype(np.float64)
    scale = float(np.vdot(channels[0], target) / max(np.vdot(target, target), 1e-12))
    return channels, (max(scale, 1e-6) * target).astype(np.float32)


def _simulate_entry(job: tuple[str, int, str, SimulationSettings, int, Path | None, str]) -> PoolMap:
    path, seed, target, settings, cube, cache, inputs = job
    name = structure_name(path)
    # The settings' digest is in the name: a run with other settings never reads these maps.
    digest = hashlib.sha256(repr(settings).encode()).hexdigest()[:12]
    kind = "" if inputs == "average" else f"_{inputs}-{HALVES_RECIPE}"
    cached = None if cache is None else cache / f"{name}_{seed}_{target}{kind}_{digest}.npz"
    if cached is not None and cached.is_file():
        with np.load(cached) as stored:
            return PoolMap(name, stored["input"], stored["target"], stored["on_molecule"])
    sim = simulate(path, np.random.default_rng(structure_seed(name, seed)), settings, target)
    source, goal = training_pair(sim, inputs)
    padded = (pad_to(source, cube, "reflect") if source.ndim == 3
              else np.stack([pad_to(channel, cube, "reflect") for channel in source]))
    inputs, goal, envelope = padded, pad_to(goal, cube), pad_to(sim.envelope, cube)
    entry = PoolMap(name, inputs, goal, np.flatnonzero(envelope).astype(np.int64))
    if cached is not None:
        cache.mkdir(parents=True, exist_ok=True)
        np.savez(cached, input=entry.input, target=entry.target, on_molecule=entry.on_molecule)
    return entry


def pad_to(volume: np.ndarray, side: int, mode: str = "constant") -> np.ndarray:
    """``volume`` padded evenly on each axis to at least ``side`` voxels."""
    widths = [((max(0, side - n) + 1) // 2, max(0, side - n) // 2) for n in volume.shape]
    return np.pad(volume, widths, mode=mode) if any(sum(w) for w in widths) else volume


def build_pool(paths: Sequence[str | Path], seeds: Sequence[int], target: str, settings: SimulationSettings,
               cube: int, workers: int, cache: Path | None = None, inputs: str = "average") -> list[PoolMap]:
    """Simulate every (structure, seed) pair with ``workers`` processes (0: in this process)."""
    jobs = [(str(p), int(s), target, settings, cube, cache, inputs) for p in paths for s in seeds]
    if workers <= 0:
        return [_simulate_entry(job) for job in jobs]
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        return pool.map(_simulate_entry, jobs, chunksize=1)


def random_symmetry(rng: np.random.Generator) -> tuple[tuple[int, int, int], tuple[bool, bool, bool]]:
    """One of the 48 axis permutations × flips of a cube (90° rotations and mirror images)."""
    return tuple(int(a) for a in rng.permutation(3)), tuple(bool(f) for f in rng.random(3) < 0.5)


def apply_symmetry(volume: np.ndarray, symmetry: tuple[tuple[int, int, int], tuple[bool, bool, bool]]) -> np.ndarray:
    """``volume`` with its last three axes permuted and flipped as ``symmetry`` says (a contiguous
    copy); leading (channel) axes are kept."""
    axes, flips = symmetry
    lead = volume.ndim - 3
    out = np.transpose(volume, (*range(lead), *(lead + a for a in axes)))
    flipped = tuple(lead + i for i, f in enumerate(flips) if f)
    return np.ascontiguousarray(np.flip(out, flipped) if flipped else out)


def sample_cube(entry: PoolMap, cube: int, on_molecule: float,
                rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """An (input, target) cube pair: centred on a molecule voxel with probability ``on_molecule``,
    anywhere otherwise (mostly empty solvent); randomly rotated and flipped."""
    shape = np.asarray(entry.target.shape)
    if entry.on_molecule.size and rng.random() < on_molecule:
        centre = np.asarray(np.unravel_index(int(rng.choice(entry.on_molecule)), tuple(shape)))
    else:
        centre = rng.integers(0, shape)
    corner = np.clip(centre - cube // 2, 0, shape - cube)
    window = tuple(slice(int(c), int(c) + cube) for c in corner)
    symmetry = random_symmetry(rng)
    return apply_symmetry(entry.input[(..., *window)], symmetry), apply_symmetry(entry.target[window], symmetry)


class CubeStream(torch.utils.data.IterableDataset):
    """Endless (input, target) float32 cube pairs of shape (1, cube, cube, cube) from a pool.

    Each worker draws from its own generator, seeded by (seed, start_step, worker id): a resumed
    run continues with fresh, reproducible cubes.
    """

    def __init__(self, pool: Sequence[PoolMap], cube: int, on_molecule: float, seed: int, start_step: int = 0):
        super().__init__()
        self.pool, self.cube, self.on_molecule = list(pool), int(cube), float(on_molecule)
        self.seed, self.start_step = int(seed), int(start_step)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        info = torch.utils.data.get_worker_info()
        worker = 0 if info is None else info.id
        rng = np.random.default_rng([self.seed, self.start_step, worker])
        while True:
            entry = self.pool[int(rng.integers(len(self.pool)))]
            x, y = sample_cube(entry, self.cube, self.on_molecule, rng)
            yield torch.from_numpy(_with_channel_axis(x)), torch.from_numpy(y[None].astype(np.float32))


def _with_channel_axis(cube: np.ndarray) -> np.ndarray:
    """A float32 (C, D, H, W) cube: a single-channel (D, H, W) one gets its channel axis."""
    return (cube[None] if cube.ndim == 3 else cube).astype(np.float32)


def fixed_cubes(pool: Sequence[PoolMap], cube: int, count: int, on_molecule: float,
                seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed, reproducible batch of cubes (for the validation loss during training)."""
    rng = np.random.default_rng([seed, 99])
    pairs = [sample_cube(pool[i % len(pool)], cube, on_molecule, rng) for i in range(count)]
    return (torch.from_numpy(np.stack([_with_channel_axis(p[0]) for p in pairs])),
            torch.from_numpy(np.stack([p[1] for p in pairs])[:, None].astype(np.float32)))
