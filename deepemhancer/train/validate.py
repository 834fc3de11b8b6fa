"""The validation table: a candidate model against the raw half-map average and global B-factor
sharpening, on held-out simulated structures and on a real map, scored against the atomic model.

Scores per map (all against the fitted model):
- FSC 0.5: resolution (Å) where the map-model FSC (model map to Nyquist, soft molecular mask) falls
  below 0.5: lower is better;
- CC_mask: phenix's CC_mask with the model map at the input's resolution;
- LC5: median local correlation (5-voxel window) with that model map inside the molecular mask.

The independent-halves check is ``trust.halves_check`` under the soft molecular mask: each half map
enhanced alone; shells beyond the input halves' FSC 0.143 where the enhanced halves agree more than
chance allows are detail the data do not support, and the share of the enhanced halves' shared
power lying there says how much of the map it is.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import NormalizationError
from ..mapio import Geometry, Map, read_map
from ..masks import shape_mask
from ..metrics import (fsc, map_model_correlations, median_local_correlation, model_map, molecular_mask,
                       read_structure, resolution_at)
from .. import trust
from ..pipeline import EnhanceOptions, Model, enhance
from ..sharpen import sharpen
from .dataset import structure_name, structure_seed
from .simulate import SimulationSettings, coloured_noise, noise_scale, simulate

ARMS = ("raw", "bfactor", "model")


@dataclass(frozen=True)
class Scores:
    """One map's agreement with the model."""

    fsc05: float
    cc_mask: float
    lc5: float


@dataclass
class CaseResult:
    """One validation case: the input halves' resolution, each arm's scores, the halves check."""

    name: str
    resolution: float
    scores: dict[str, Scores]
    halves: trust.HalvesCheck | None = None  # trust.halves_check under the FSC mask
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True, eq=False)
class References:
    """The model maps and masks one case is scored with."""

    at_resolution: np.ndarray
    at_nyquist: np.ndarray
    molecule: np.ndarray
    fsc_mask: np.ndarray


def references(structure_path: Path, like: Map, resolution: float) -> References:
    """Model maps at the input's resolution and at Nyquist, the molecular mask and a soft (3 Å + 3 Å) copy."""
    voxel = like.isotropic_voxel_size
    molecule = molecular_mask(structure_path, like)
    return References(at_resolution=model_map(structure_path, like, resolution).data,
                      at_nyquist=model_map(structure_path, like, 2.0 * voxel).data, molecule=molecule,
                      fsc_mask=shape_mask(molecule, voxel, dilation_A=3.0, soft_edge_A=3.0))


def score(volume: np.ndarray, refs: References, voxel: float) -> Scores:
    """FSC 0.5 resolution, CC_mask and LC5 of one map against the model."""
    curve = fsc(volume, refs.at_nyquist, voxel, refs.fsc_mask)
    return Scores(fsc05=resolution_at(curve, 0.5),
                  cc_mask=map_model_correlations(volume, refs.at_resolution, refs.molecule).cc_mask,
                  lc5=median_local_correlation(volume, refs.at_resolution, 5, refs.molecule))


def enhance_with_fallback(source: Map | Sequence[Map], model: Model, options: EnhanceOptions,
                          noise: tuple[float, float], notes: list[str]) -> Map:
    """enhance() with automatic noise statistics, as a user runs it; where the automatic estimate
    fails, with the known solvent statistics (noted)."""
    try:
        return enhance(source, model, options)
    except NormalizationError as error:
        notes.append(f"automatic noise estimate failed ({error}); used the solvent statistics")
        return enhance(source, model, dataclasses.replace(options, noise_stats=noise))


def evaluate_case(name: str, half1: Map, half2: Map, structure_path: Path, model: Model,
                  options: EnhanceOptions, halves_check: bool) -> CaseResult:
    """Score the raw average, B-factor sharpening and the model on one pair of half maps."""
    voxel = half1.isotropic_voxel_size
    resolution = resolution_at(fsc(half1.data, half2.data, voxel), 0.143)
    refs = references(structure_path, half1, resolution)
    average = 0.5 * (half1.data + half2.data)
    solvent = ~shape_mask(refs.molecule, voxel, dilation_A=8.0).astype(bool)
    noise = (float(average[solvent].mean()), float(average[solvent].std()))
    notes: list[str] = []
    maps = {"raw": average, "bfactor": sharpen(half1, half2).map.data,
            "model": enhance_with_fallback([half1, half2], model, options, noise, notes).data}
    result = CaseResult(name, resolution, {arm: score(maps[arm], refs, voxel) for arm in ARMS}, notes=notes)
    if halves_check:
        enhanced = [enhance_with_fallback(h, model, options, noise, notes) for h in (half1, half2)]
        result.halves = trust.halves_check(half1, half2, *enhanced, half1.with_data(refs.fsc_mask))
    return result


def simulated_halves(structure_path: Path, seed: int, settings: SimulationSettings) -> tuple[Map, Map]:
    """Held-out half maps simulated as for training (seeded by the structure's name and ``seed``), but
    never phase-randomised: that augmentation teaches the network, it is not data to score on."""
    settings = dataclasses.replace(settings, phase_randomised_probability=0.0)
    sim = simulate(structure_path, np.random.default_rng(structure_seed(structure_name(structure_path), seed)),
                   settings)
    geometry = Geometry.for_grid(sim.half1.shape, 1.0, origin=tuple(float(v) for v in sim.origin))
    return Map(sim.half1, geometry), Map(sim.half2, geometry)


def pseudo_halves(deposited: Map, resolution: float, seed: int) -> tuple[Map, Map]:
    """Two half maps made from a deposited map: independent coloured noise putting the halves' FSC
    = 0.143 at ``resolution`` (no real half maps are available)."""
    rng = np.random.default_rng(seed)
    voxel = deposited.isotropic_voxel_size
    scale = noise_scale(deposited.data, 20.0 / voxel ** 2, resolution / voxel)  # simulate works in voxel units
    halves = [deposited.data + scale * coloured_noise(deposited.data.shape, 20.0 / voxel ** 2, rng) for _ in range(2)]
    return deposited.with_data(halves[0]), deposited.with_data(halves[1])


def smallest(paths: Sequence[Path], count: int) -> list[Path]:
    """The ``count`` structures with the fewest atoms (CPU time grows with the box)."""
    sizes = [(read_structure(p)[0].count_atom_sites(), structure_name(p), p) for p in paths]
    return [p for _, _, p in sorted(sizes)[:count]]


def summary(results: Sequence[CaseResult]) -> dict[str, float]:
    """Medians per arm, and how often the model beats B-factor sharpening on CC_mask."""
    out: dict[str, float] = {}
    for arm in ARMS:
        for metric in ("fsc05", "cc_mask", "lc5"):
            out[f"median_{metric}_{arm}"] = float(np.median([getattr(r.scores[arm], metric) for r in results]))
    wins = [r.scores["model"].cc_mask > r.scores["bfactor"].cc_mask for r in results]
    out["cc_mask_wins"] = float(sum(wins))
    out["cases"] = float(len(results))
    return out


def markdown_table(results: Sequence[CaseResult]) -> str:
    """One row per case and arm, then the halves check."""
    lines = ["| case | input FSC0.143 (Å) | map | FSC0.5 (Å) | CC_mask | LC5 |", "|---|---|---|---|---|---|"]
    for r in results:
        for arm in ARMS:
            s = r.scores[arm]
            lines.append(f"| {r.name} | {r.resolution:.2f} | {arm} | {s.fsc05:.2f} | {s.cc_mask:.3f} | {s.lc5:.3f} |")
    checked = [r for r in results if r.halves]
    if checked:
        lines += ["", "| case | input halves FSC0.143 (Å) | enhanced halves FSC0.143 (Å) | flagged shells | "
                  "shared power beyond, enhanced / raw | invented detail? |", "|---|---|---|---|---|---|"]
        for r in checked:
            h = r.halves
            lines.append(f"| {r.name} | {h.raw_resolution:.2f} | {h.enhanced_resolution:.2f} | {int(h.flagged.sum())} | "
                         f"{trust.share_text(h.enhanced_shared_beyond)} / {trust.share_text(h.raw_shared_beyond)} | "
                         f"{'YES' if h.invented_detail else 'no'} |")
    notes = [f"- {r.name}: {n}" for r in results for n in r.notes]
    return "\n".join(lines + (["", "Notes:"] + notes if notes else [])) + "\n"


def emd3488_case(data_dir: Path, model: Model, options: EnhanceOptions, seed: int,
                 halves_check: bool) -> CaseResult:
    """EMD-3488 (3.2 Å) with its fitted model 5me2, on pseudo-halves of the deposited map."""
    deposited = read_map(data_dir / "emd_3488.mrc")
    half1, half2 = pseudo_halves(deposited, 3.2, seed)
    result = evaluate_case("EMD-3488", half1, half2, data_dir / "5me2.pdb", model, options, halves_check)
    result.notes.append("pseudo-halves: the deposited (sharpened, masked) map plus independent coloured noise")
    return result
