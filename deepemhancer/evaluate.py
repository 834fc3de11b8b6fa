"""The ``evaluate`` measures: every number about a set of maps in one JSON-able dict.

Per map: the Guinier B-factor and, given an atomic model, the project's one map-model score
(``metrics.agreement``: map-model FSC read at 0.5 under the soft molecular mask, CC_mask, CC_box,
CC_volume, CC_peaks, median local correlation in 5- and 7-voxel windows): the same numbers the
model cards report. Given half
maps: their FSC and 0.143 resolution by the one recipe (``metrics.half_map_fsc``, the numbers
sharpening and Scipion report), and the unmasked FSC beside it. Given enhanced halves too: the
independent-halves check (``metrics.halves_check``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np

from . import __version__
from .errors import InputError
from .mapio import Map, check_same_grid
from .metrics import (GuinierFit, ModelReference, check_mask, guinier_bfactor, half_map_fsc, halves_check,
                      model_agreement, model_reference)

GUINIER_LOW_RESOLUTION = 10.0  # Å: below this the plot is dominated by the molecule's shape, not its B-factor


def evaluate(maps: Mapping[str, Map], half_maps: tuple[Map, Map] | None = None, structure: Path | None = None,
             resolution: float | None = None, mask: Map | None = None,
             enhanced_halves: tuple[Map, Map] | None = None) -> dict:
    """All measures of ``maps`` (name -> map), as a JSON-able dict (see the module docstring).

    resolution: Å, for the model map and the Guinier fit's high end; default the half maps' 0.143
    resolution. mask: values in 0..1 on the maps' grid, for the half-map FSC (the map-model FSC
    uses the model's own soft molecular mask, as every model score does).
    """
    reference = _check_inputs(maps, half_maps, structure, resolution, mask, enhanced_halves)
    voxel = reference.isotropic_voxel_size
    weights = None if mask is None else mask.data
    results: dict = {"deepemhancer_version": __version__, "voxel_size": voxel, "shape": list(reference.data.shape),
                     "masked": mask is not None, "maps": {}}
    if half_maps is not None:
        results["half_maps"] = _half_map_measures(half_maps, voxel, weights)
        if resolution is None:
            resolution = results["half_maps"]["resolution_0143"]
    results["resolution"] = resolution
    if enhanced_halves is not None:
        results["halves_check"] = halves_check(*half_maps, *enhanced_halves, mask=mask).to_dict()
    scorer = None
    if structure is not None:
        scorer = model_reference(structure, reference, resolution)
        results["atomic_model"] = str(structure)
    for name, m in maps.items():
        entry = {"guinier": guinier_to_dict(_guinier(m, voxel, resolution))}
        if scorer is not None:
            entry["model"] = _model_measures(m, scorer)
        results["maps"][name] = entry
    return results


def _check_inputs(maps, half_maps, structure, resolution, mask, enhanced_halves) -> Map:
    """InputError for missing or inconsistent inputs; the map every other must share a grid with."""
    if not maps and half_maps is None:
        raise InputError("nothing to evaluate: give at least one map or two half maps")
    if enhanced_halves is not None and half_maps is None:
        raise InputError("the halves check compares enhanced halves with the raw ones: give the raw half maps too")
    if structure is not None and resolution is None and half_maps is None:
        raise InputError("the model map needs a resolution: give it, or half maps to measure it")
    if resolution is not None and not (np.isfinite(resolution) and resolution > 0):
        raise InputError(f"resolution must be a positive number of Å, got {resolution}")
    if half_maps is not None and np.array_equal(half_maps[0].data, half_maps[1].data):
        # Identical halves would report an FSC of 1 to Nyquist: a resolution they do not have.
        raise InputError("the two half maps are identical; give the two independently refined half maps")
    named = [(f"map {name!r}", m) for name, m in maps.items()]
    for label, pair in (("half map", half_maps), ("enhanced half map", enhanced_halves)):
        if pair is not None:
            named += [(f"{label} 1", pair[0]), (f"{label} 2", pair[1])]
    if mask is not None:
        named.append(("the mask", mask))
    first_name, reference = named[0]
    for name, other in named[1:]:
        check_same_grid(reference, other, first_name, name)
    if mask is not None:
        check_mask(mask.data, reference.data.shape)
    return reference


def _half_map_measures(halves: tuple[Map, Map], voxel: float, mask: np.ndarray | None) -> dict:
    """The unmasked FSC, and the one recipe's curve and resolution (the same without a mask).

    fsc_masking: how the mask entered ``resolution_0143`` ("unmasked" where RELION's rule set it
    aside); fsc_masked_corrected: that curve, when the mask was used."""
    unmasked = half_map_fsc(halves[0].data, halves[1].data, voxel)
    entry = {"fsc_unmasked": unmasked.curve.to_dict(), "resolution_0143_unmasked": unmasked.resolution}
    measured = unmasked if mask is None else half_map_fsc(halves[0].data, halves[1].data, voxel, mask)
    entry["fsc_masking"] = measured.masking
    entry["resolution_0143"] = measured.resolution
    if measured.masking == "corrected":
        entry["fsc_masked_corrected"] = measured.curve.to_dict()
    return entry


def _guinier(m: Map, voxel: float, resolution: float | None) -> GuinierFit:
    """Fit from 10 Å to the resolution (to Nyquist when it is unknown)."""
    return guinier_bfactor(m.data, voxel, GUINIER_LOW_RESOLUTION, resolution)


def _model_measures(m: Map, reference: ModelReference) -> dict:
    score = model_agreement(m.data, reference)
    cc = score.correlations
    return {"fsc_05_resolution": score.fsc05, "fsc": score.fsc.to_dict(),
            "cc_mask": cc.cc_mask, "cc_box": cc.cc_box, "cc_volume": cc.cc_volume, "cc_peaks": cc.cc_peaks,
            "n_mask_voxels": cc.n_mask_voxels, "median_local_cc_5": score.lc5, "median_local_cc_7": score.lc7,
            "median_local_cc_7_non_protein": score.lc7_non_protein}


def guinier_to_dict(fit: GuinierFit) -> dict:
    """The B-factor, the fitted range and the plot's points; ln |F| of empty shells becomes null (JSON has no -inf)."""
    fitted = np.sqrt(fit.s_squared[fit.in_fit])
    return {"b_factor": fit.b_factor, "intercept": fit.intercept,
            "fit_range_angstrom": [float(1.0 / fitted.min()), float(1.0 / fitted.max())],
            "s_squared": fit.s_squared.tolist(),
            "ln_amplitude": [float(v) if np.isfinite(v) else None for v in fit.ln_amplitude],
            "in_fit": fit.in_fit.tolist()}


def guinier_from_dict(entry: dict) -> GuinierFit:
    ln_amplitude = np.array([-np.inf if v is None else v for v in entry["ln_amplitude"]], dtype=float)
    return GuinierFit(float(entry["b_factor"]), float(entry["intercept"]), np.asarray(entry["s_squared"]),
                      ln_amplitude, np.asarray(entry["in_fit"], dtype=bool))
