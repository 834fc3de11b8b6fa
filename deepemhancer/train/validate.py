"""The validation table: a candidate model against the raw half-map average and global B-factor
sharpening, on held-out simulated structures and on a real map, scored against the atomic model
with the project's one scorer (``metrics.agreement``):

- FSC 0.5: resolution (Å) where the map-model FSC (model map to Nyquist, soft molecular mask) falls
  below 0.5: lower is better;
- CC_mask: phenix's CC_mask with the model map at the input's resolution;
- LC5, LC7: median local correlation (5- and 7-voxel windows) inside the molecular mask;
- LC7 ligands: LC7 inside the mask of the model's ligands, hemes and glycans, where it has any (EMD-3488's
  hemes, a few held-out structures' ligands, and the cases given such groups: ``simulated_halves``'s
  ``groups_model``).

The B-factor arm is ``halves_input.baseline_sharpening`` (RELION-style, the Guinier fit from 10 Å,
twice the resolution for maps coarser than 5 Å): exactly the map a half-map model's first channel
holds.

The input's resolution is the one the B-factor arm low-passes at: the halves' FSC 0.143 inside
their automatic mask (``halves_input.fsc_mask``; ``metrics.half_map_fsc``, RELION's rule), as a
user's postprocess with a mask reports it. (Unmasked, the solvent's noise in a box much larger than
the molecule put it up to twice as coarse as the detail the halves share.) The independent-halves check is
``metrics.halves_check`` under the soft molecular mask. A single-map
model enhances each half map alone; a half-map model enhances two independent pairs of half maps
(same signal, four noise draws). Shells beyond the input's FSC 0.143 where the two enhanced maps
agree more than chance allows are detail the data do not support, and the share of their shared
power lying there says how much of the map it is.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import InputError, NormalizationError
from ..mapio import Geometry, Map, average_halves, read_map
from ..metrics import (HalvesCheck, ModelAgreement, halves_check as check_halves, model_agreement,
                       model_reference, read_structure, share_text)
from ..molecule_masks import shape_mask
from ..models.loaded import Model, takes_halves
from ..pipeline import EnhanceOptions, enhance
from ..halves_input import baseline_sharpening
from .dataset import structure_name, structure_seed
from .simulate import SimulatedMap, SimulationSettings, coloured_noise, noise_scale, simulate

ARMS = ("raw", "bfactor", "model")
METRICS = ("fsc05", "cc_mask", "lc5", "lc7")


@dataclass
class CaseResult:
    """One validation case: the input halves' resolution, each arm's scores, the halves check."""

    name: str
    resolution: float
    scores: dict[str, ModelAgreement]
    halves: HalvesCheck | None = None  # metrics.halves_check under the FSC mask
    notes: list[str] = field(default_factory=list)
    with_groups: bool = False  # simulated with ligands, hemes and glycans added (scored apart)


def enhance_with_fallback(source: Map | Sequence[Map], model: Model, options: EnhanceOptions,
                          noise: tuple[float, float], notes: list[str]) -> Map:
    """enhance() with automatic noise statistics, as a user runs it; where the automatic estimate
    fails, with the known solvent statistics (noted). Half-map models measure the noise themselves."""
    try:
        return enhance(source, model, options)
    except NormalizationError as error:
        notes.append(f"automatic noise estimate failed ({error}); used the solvent statistics")
        return enhance(source, model, dataclasses.replace(options, noise_stats=noise))


def evaluate_case(name: str, halves: Sequence[Map], structure_path: Path, model: Model,
                  options: EnhanceOptions, halves_check: bool) -> CaseResult:
    """Score the raw average, B-factor sharpening and the model on one pair of half maps.

    ``halves``: the pair, optionally followed by a second, independent pair (needed for the halves
    check of a half-map model)."""
    half1, half2 = halves[:2]
    voxel = half1.isotropic_voxel_size
    baseline = baseline_sharpening(half1, half2)
    resolution = baseline.resolution  # the halves' FSC 0.143 inside their automatic mask
    reference = model_reference(structure_path, half1, resolution)
    average = 0.5 * (half1.data + half2.data)
    solvent = ~shape_mask(reference.molecule, voxel, dilation_A=8.0).astype(bool)
    noise = (float(average[solvent].mean()), float(average[solvent].std()))
    notes: list[str] = []
    maps = {"raw": average, "bfactor": baseline.map.data,
            "model": enhance_with_fallback([half1, half2], model, options, noise, notes).data}
    result = CaseResult(name, resolution, {arm: model_agreement(maps[arm], reference) for arm in ARMS},
                        notes=notes)
    if halves_check:
        fsc_mask = half1.with_data(reference.fsc_mask)
        if takes_halves(model):
            if len(halves) < 4:
                raise InputError("the halves check of a half-map model needs a second, independent pair of halves")
            pairs = [tuple(halves[:2]), tuple(halves[2:4])]
            enhanced = [enhance(pair, model, options) for pair in pairs]
            result.halves = check_halves(*(average_halves(*pair) for pair in pairs), *enhanced, fsc_mask)
        else:
            enhanced = [enhance_with_fallback(h, model, options, noise, notes) for h in (half1, half2)]
            result.halves = check_halves(half1, half2, *enhanced, fsc_mask)
    return result


def held_out_simulation(structure_path: Path, seed: int, settings: SimulationSettings,
                        resolution: float | None = None, with_groups: bool = False) -> SimulatedMap:
    """One held-out structure simulated as for training (seeded by the structure's name, ``seed`` and
    the resolution), never phase-randomised nor empty (those augmentations teach the network, they
    are not data to score on), with a second, independent pair of halves; protein only, as the file
    holds it, unless ``with_groups`` (ligands, hemes and glycans added, ``hetero.decorate``)."""
    settings = dataclasses.replace(settings, phase_randomised_probability=0.0, empty_probability=0.0,
                                   hetero_probability=1.0 if with_groups else 0.0)
    name_seed = structure_seed(structure_name(structure_path), seed)
    rng = np.random.default_rng(name_seed if resolution is None else [name_seed, int(round(resolution * 100))])
    return simulate(structure_path, rng, settings, resolution=resolution, extra_pairs=1)


def simulated_halves(structure_path: Path, seed: int, settings: SimulationSettings,
                     resolution: float | None = None, groups_model: Path | None = None) -> tuple[Map, Map, Map, Map]:
    """``held_out_simulation``'s two pairs of half maps. With ``groups_model`` the structure gets
    ligands, hemes and glycans and the model as simulated is written there (PDB) to be scored against."""
    sim = held_out_simulation(structure_path, seed, settings, resolution, with_groups=groups_model is not None)
    if groups_model is not None:
        sim.model.setup_entities()
        sim.model.write_pdb(str(groups_model))
    geometry = simulated_geometry(sim)
    return tuple(Map(h, geometry) for h in (sim.half1, sim.half2, *sim.extra_halves))  # type: ignore[return-value]


def simulated_geometry(sim: SimulatedMap) -> Geometry:
    """Where a simulated map's grid lies: 1 Å voxels from its origin."""
    return Geometry.for_grid(sim.half1.shape, 1.0, origin=tuple(float(v) for v in sim.origin))


def pseudo_halves(deposited: Map, resolution: float, seed: int, count: int = 2) -> tuple[Map, ...]:
    """``count`` half maps made from a deposited map: independent coloured noise putting two halves'
    FSC = 0.143 at ``resolution`` (no real half maps are available)."""
    rng = np.random.default_rng(seed)
    voxel = deposited.isotropic_voxel_size
    scale = noise_scale(deposited.data, 20.0 / voxel ** 2, resolution / voxel)  # simulate works in voxel units
    return tuple(deposited.with_data(deposited.data + scale * coloured_noise(deposited.data.shape, 20.0 / voxel ** 2, rng))
                 for _ in range(count))


def smallest(paths: Sequence[Path], count: int) -> list[Path]:
    """The ``count`` structures with the fewest atoms (CPU time grows with the box)."""
    sizes = [(read_structure(p)[0].count_atom_sites(), structure_name(p), p) for p in paths]
    return [p for _, _, p in sorted(sizes)[:count]]


def summary(results: Sequence[CaseResult]) -> dict[str, float]:
    """Medians per arm and metric, and how often the model beats B-factor sharpening; for the cases
    whose model has ligands, hemes or glycans, the same for LC7 inside them."""
    out: dict[str, float] = {}
    for arm in ARMS:
        for metric in METRICS:
            out[f"median_{metric}_{arm}"] = float(np.median([getattr(r.scores[arm], metric) for r in results]))
    for metric in ("cc_mask", "lc7"):
        out[f"{metric}_wins"] = float(sum(getattr(r.scores["model"], metric) > getattr(r.scores["bfactor"], metric)
                                          for r in results))
    out["fsc05_wins"] = float(sum(r.scores["model"].fsc05 < r.scores["bfactor"].fsc05 for r in results))
    out["cases"] = float(len(results))
    with_groups = [r for r in results if r.scores["model"].lc7_non_protein is not None]
    if with_groups:
        for arm in ARMS:
            out[f"median_lc7_non_protein_{arm}"] = float(np.median([r.scores[arm].lc7_non_protein for r in with_groups]))
        out["lc7_non_protein_wins"] = float(sum(r.scores["model"].lc7_non_protein > r.scores["bfactor"].lc7_non_protein
                                                for r in with_groups))
        out["cases_non_protein"] = float(len(with_groups))
    return out


def markdown_table(results: Sequence[CaseResult]) -> str:
    """One row per case and arm, then the halves check."""
    lines = ["| case | input FSC0.143 (Å) | map | FSC0.5 (Å) | CC_mask | LC5 | LC7 | LC7 ligands |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results:
        for arm in ARMS:
            s = r.scores[arm]
            ligands = "–" if s.lc7_non_protein is None else f"{s.lc7_non_protein:.3f}"
            lines.append(f"| {r.name} | {r.resolution:.2f} | {arm} | {s.fsc05:.2f} | {s.cc_mask:.3f} | {s.lc5:.3f} | "
                         f"{s.lc7:.3f} | {ligands} |")
    checked = [r for r in results if r.halves]
    if checked:
        lines += ["", "| case | input halves FSC0.143 (Å) | enhanced halves FSC0.143 (Å) | flagged shells | "
                  "shared power beyond, enhanced / raw | invented detail? |", "|---|---|---|---|---|---|"]
        for r in checked:
            h = r.halves
            lines.append(f"| {r.name} | {h.raw_resolution:.2f} | {h.enhanced_resolution:.2f} | {int(h.flagged.sum())} | "
                         f"{share_text(h.enhanced_shared_beyond)} / {share_text(h.raw_shared_beyond)} | "
                         f"{'YES' if h.invented_detail else 'no'} |")
    notes = [f"- {r.name}: {n}" for r in results for n in r.notes]
    return "\n".join(lines + (["", "Notes:"] + notes if notes else [])) + "\n"


def emd3488_case(data_dir: Path, model: Model, options: EnhanceOptions, seed: int,
                 halves_check: bool) -> CaseResult:
    """EMD-3488 (3.2 Å) with its fitted model 5me2, on pseudo-halves of the deposited map."""
    deposited = read_map(data_dir / "emd_3488.mrc")
    halves = pseudo_halves(deposited, 3.2, seed, count=4)
    result = evaluate_case("EMD-3488", halves, data_dir / "5me2.pdb", model, options, halves_check)
    result.notes.append("pseudo-halves: the deposited (sharpened, masked) map plus independent coloured noise")
    return result
