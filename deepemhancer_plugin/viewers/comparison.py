"""What the comparison viewer shows: the maps of one data set (raw, B-factor sharpened, enhanced),
its half-map FSC, and a ChimeraX script that puts them side by side.

Runs of this plugin belong to one comparison when they work on the same half maps (or, without
halves, the same input map): their ``getChainKey()`` is equal. An enhancement of a set of volumes
is compared on its own: each volume beside its enhanced map.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from ..constants import OUTPUT_CONFIDENCE, OUTPUT_VOLUMES
from ..convert import map_path, origin_shifts, read_volume_file
from ..protocols import ProtDeepEMhancer, ProtDeepEMhancerHalfMapFSC, ProtDeepEMhancerMask, ProtDeepEMhancerSharpen

AUTOMATIC_ENCLOSED_FRACTION = 0.01  # ChimeraX's own initial contour encloses 1% of the box


@dataclass(frozen=True)
class ChainMap:
    """One map of the comparison, with the sampling rate and origin Scipion records for it."""

    kind: str  # "raw", "sharpened", "enhanced" or "mask"
    title: str
    path: str
    sampling: float
    origin: tuple[float, float, float]
    confidence: str = ""  # an enhanced map's confidence map, when its run made one


@dataclass
class Chain:
    """Everything the viewer shows for one data set."""

    maps: list[ChainMap] = field(default_factory=list)
    curves: dict[str, dict] = field(default_factory=dict)  # label -> FSCCurve.to_dict() content
    mask: ChainMap | None = None
    halves: list[str] = field(default_factory=list)
    sampling: float = 1.0


def _entry(kind: str, title: str, volume, confidence=None) -> ChainMap:
    return ChainMap(kind, title, map_path(volume.getFileName()), float(volume.getSamplingRate()),
                    origin_shifts(volume), map_path(confidence.getFileName()) if confidence is not None else "")


def _contributions(run, chain: Chain) -> None:
    """Add what one finished run brings to the comparison."""
    tag = f"run {run.getObjId()}"
    if isinstance(run, ProtDeepEMhancerHalfMapFSC):
        chain.maps.append(_entry("raw", f"half-map average ({tag})", run.outputVolume))
        if run.getResult() is not None:
            chain.curves[f"half maps ({tag})"] = run.getResult()
    elif isinstance(run, ProtDeepEMhancerSharpen) and run.getResult() is not None:
        result = run.getResult()
        chain.maps.append(_entry("sharpened", f"sharpened, B {result['b_factor']:.0f} Å² ({tag})", run.outputVolume))
        chain.curves[f"half maps, {'masked' if result['masked'] else 'unmasked'} ({tag})"] = result
    elif isinstance(run, ProtDeepEMhancer) and not run.usesSet():
        if not run.usesHalfMaps():
            chain.maps.append(_entry("raw", f"input map ({tag})", run.inputVolume.get()))
        chain.maps.append(_entry("enhanced", f"DeepEMhancer {run.getModelName()} ({tag})", run.outputVolume,
                                 getattr(run, OUTPUT_CONFIDENCE, None)))
    elif isinstance(run, ProtDeepEMhancerMask) and chain.mask is None:
        chain.mask = _entry("mask", f"mask ({tag})", run.outputMask)


def collect_chain(target, runs) -> Chain:
    """The maps, curves and mask of every finished run that shares ``target``'s data, target first."""
    key = target.getChainKey()
    related = [run for run in runs if hasattr(run, "getChainKey") and run.isFinished() and run.getChainKey() == key]
    related.sort(key=lambda run: (run.getObjId() != target.getObjId(), run.getObjId()))
    chain = Chain()
    for run in related:
        _contributions(run, chain)
    if hasattr(target, "getHalfMapFiles"):
        chain.halves = target.getHalfMapFiles()
    reference = target.getReferenceVolume()
    chain.sampling = float(reference.getSamplingRate()) if reference is not None else 1.0
    # One raw map (the target's own when it has one: runs are in that order), then the others.
    raws = [m for m in chain.maps if m.kind == "raw"][:1]
    others = list({m.path: m for m in chain.maps if m.kind != "raw"}.values())
    chain.maps = raws + sorted(others, key=lambda m: m.kind != "sharpened")
    return chain


def set_chain(run) -> Chain:
    """An enhancement of a set of volumes: each enhanced volume after the volume it was made from."""
    chain = Chain()
    enhanced = getattr(run, OUTPUT_VOLUMES, None)
    if enhanced is None:
        return chain
    inputs = run.inputVolumes.get()
    for volume in enhanced.iterItems():
        number = volume.getObjId()
        chain.maps += [_entry("raw", f"volume {number}", inputs[number]),
                       _entry("enhanced", f"volume {number}, enhanced", volume)]
    chain.sampling = float(enhanced.getSamplingRate())
    return chain


def ensure_raw(chain: Chain, reference, folder: str, filename: str) -> None:
    """Without a raw map among the runs, show the average of the half maps (written into ``folder``)."""
    if any(m.kind == "raw" for m in chain.maps) or len(chain.halves) != 2:
        return
    from deepemhancer.mapio import average_halves, write_map

    path = os.path.join(folder, filename)
    if not os.path.exists(path):
        write_map(average_halves(*(read_volume_file(h, chain.sampling) for h in chain.halves)), path, overwrite=True)
    chain.maps.insert(0, ChainMap("raw", "half-map average", path, chain.sampling, origin_shifts(reference)))


def write_slices(chain: Chain, path: str) -> str:
    """Central orthogonal slices of every map side by side, one colour scaling rule per map (PNG)."""
    from deepemhancer.plots import save_central_slices

    maps = [read_volume_file(m.path, m.sampling) for m in chain.maps]
    return str(save_central_slices(maps, [m.title for m in chain.maps], path,
                                   suptitle="raw / B-factor sharpened / DeepEMhancer"))


def write_fsc(chain: Chain, path: str) -> str | None:
    """The half-map FSC curves of the runs (computed here, unmasked, when no run has one); None
    without halves."""
    from deepemhancer.metrics import FSCCurve, half_map_fsc, resolution_at
    from deepemhancer.plots import save_fsc_curves

    curves = {label: FSCCurve.from_dict(content) for label, content in chain.curves.items()}
    if not curves and len(chain.halves) == 2:
        half1, half2 = (read_volume_file(h, chain.sampling) for h in chain.halves)
        curves["half maps"] = half_map_fsc(half1.data, half2.data, half1.isotropic_voxel_size).curve
    if not curves:
        return None
    labelled = {f"{label}: {resolution_at(curve):.2f} Å": curve for label, curve in curves.items()}
    return str(save_fsc_curves(labelled, path, title="Half-map Fourier shell correlation"))


def write_halves_check(run, path: str) -> str | None:
    """The engine's independent-halves plot of an enhancement run that made one, else None."""
    check = run.getHalvesCheck() if isinstance(run, ProtDeepEMhancer) else None
    if check is None:
        return None
    from deepemhancer.metrics import HalvesCheck
    from deepemhancer.plots import save_halves_check

    return str(save_halves_check(HalvesCheck.from_dict(check), path))


def enclosed_volume(chain: Chain, requested: float) -> tuple[float, str]:
    """The volume (Å³) every contour encloses, and why: the user's, the mask's, or 1% of the box."""
    from deepemhancer.mapio import read_map

    if requested > 0:
        return requested, "chosen in the viewer"
    if chain.mask is not None:
        inside = int(np.count_nonzero(read_map(chain.mask.path).data >= 0.5))
        if inside:
            return inside * chain.mask.sampling ** 3, f"the volume of {chain.mask.title}"
    first = read_volume_file(chain.maps[0].path, chain.maps[0].sampling)
    return (AUTOMATIC_ENCLOSED_FRACTION * first.data.size * chain.maps[0].sampling ** 3,
            "1% of the box, ChimeraX's initial contour")


def contour_level(path: str, sampling: float, enclosed_A3: float) -> float:
    """The density level whose contour encloses ``enclosed_A3`` Å³ of a map (the engine's rule)."""
    from deepemhancer.molecule_masks import level_enclosing

    return level_enclosing(read_volume_file(path, sampling).data, enclosed_A3, sampling)


CONFIDENCE_PALETTE = "0,red:0.5,yellow:1,blue"  # low confidence red, full confidence blue


def chimerax_script(maps: list[ChainMap], levels: list[float], enclosed: tuple[float, str]) -> str:
    """A ChimeraX .cxc script: each map at its sampling rate and origin, contoured at its level, tiled;
    an enhanced map with a confidence map is coloured by it (opened after the maps, hidden)."""
    lines = ["# DeepEMhancer comparison: raw, B-factor sharpened and enhanced maps side by side.",
             f"# Every contour encloses {enclosed[0]:.0f} Å³ ({enclosed[1]}).",
             "# Tiled with independent rotation: turning the view turns every map about its own centre."]
    for number, (m, level) in enumerate(zip(maps, levels), start=1):
        lines += [f"# #{number}: {m.title}", *_open_lines(number, m.path, m, f"level {level:.9g} style surface")]
    coloured = [(number, m) for number, m in enumerate(maps, start=1) if m.confidence]
    for extra, (number, m) in enumerate(coloured, start=len(maps) + 1):
        lines += [f"# #{extra}: confidence of #{number}, colouring its surface: red 0, yellow 0.5, blue 1",
                  *_open_lines(extra, m.confidence, m, "hide"),
                  f"color sample #{number} map #{extra} palette {CONFIDENCE_PALETTE}"]
    lines += [f"tile #1-{len(maps)}" if len(maps) > 1 else "", "view"]
    return "\n".join(line for line in lines if line) + "\n"


def _open_lines(number: int, path: str, placed_as: ChainMap, display: str) -> list[str]:
    x, y, z = placed_as.origin
    return [f'open "{os.path.abspath(path)}" format mrc',
            f"volume #{number} voxelSize {placed_as.sampling:.6g} origin {x:.4f},{y:.4f},{z:.4f} {display}"]


def write_chimerax(chain: Chain, path: str, requested_volume: float = 0.0) -> str:
    """Write the ChimeraX script of the chain's maps; returns its path."""
    enclosed = enclosed_volume(chain, requested_volume)
    levels = [contour_level(m.path, m.sampling, enclosed[0]) for m in chain.maps]
    from deepemhancer.files import write_atomic

    write_atomic(path, chimerax_script(chain.maps, levels, enclosed))
    return path
