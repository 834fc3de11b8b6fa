"""The ``evaluate`` measures: every number about a set of maps in one JSON-able dict.

Per map: the Guinier B-factor and, given an atomic model, map-model FSC (read at 0.5), CC_mask,
CC_box, CC_volume, CC_peaks and the median local correlation in 5- and 7-voxel windows. Given half
maps: their FSC and 0.143 resolution (masked and phase-randomisation corrected when a mask is
given). Given enhanced halves too: the independent-halves check (deepemhancer.trust).
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np

from . import __version__
from .errors import InputError
from .mapio import Map, check_same_grid
from .metrics import (FSCCurve, GuinierFit, fsc, fsc_masked_corrected, guinier_bfactor, map_model_correlations,
                      map_model_fsc, median_local_correlation, model_map, molecular_mask, resolution_at)
from .trust import FSC_THRESHOLD, halves_check

GUINIER_LOW_RESOLUTION = 10.0  # Å: below this the plot is dominated by the molecule's shape, not its B-factor
LOCAL_CC_WINDOWS = (5, 7)  # voxels, as the DeepEMhancer paper reports
MODEL_FSC_THRESHOLD = 0.5


def evaluate(maps: Mapping[str, Map], half_maps: tuple[Map, Map] | None = None, structure: Path | None = None,
             resolution: float | None = None, mask: Map | None = None,
             enhanced_halves: tuple[Map, Map] | None = None) -> dict:
    """All measures of ``maps`` (name -> map), as a JSON-able dict (see the module docstring).

    resolution: Å, for the model map and the Guinier fit's high end; default the half maps' 0.143
    resolution. mask: values in 0..1 on the maps' grid, for the half-map and map-model FSC.
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
    model, molecule = None, None
    if structure is not None:
        model = model_map(structure, reference, resolution)
        molecule = molecular_mask(structure, reference)
        results["atomic_model"] = str(structure)
    for name, m in maps.items():
        entry = {"guinier": guinier_to_dict(_guinier(m, voxel, resolution))}
        if model is not None:
            entry["model"] = _model_measures(m, model, molecule, weights)
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
    named = [(f"map {name!r}", m) for name, m in maps.items()]
    for label, pair in (("half map", half_maps), ("enhanced half map", enhanced_halves)):
        if pair is not None:
            named += [(f"{label} 1", pair[0]), (f"{label} 2", pair[1])]
    if mask is not None:
        named.append(("the mask", mask))
    first_name, reference = named[0]
    for name, other in named[1:]:
        check_same_grid(reference, other, first_name, name)
    if mask is not None and (float(mask.data.min()) < 0.0 or float(mask.data.max()) > 1.0):
        raise InputError(f"mask values must lie in 0..1, found {float(mask.data.min()):g} to "
                         f"{float(mask.data.max()):g}; give a binary or soft mask")
    return reference


def _half_map_measures(halves: tuple[Map, Map], voxel: float, mask: np.ndarray | None) -> dict:
    unmasked = fsc(halves[0].data, halves[1].data, voxel)
    entry = {"fsc_unmasked": curve_to_dict(unmasked),
             "resolution_0143_unmasked": resolution_at(unmasked, FSC_THRESHOLD)}
    if mask is None:
        entry["resolution_0143"] = entry["resolution_0143_unmasked"]
        return entry
    corrected = fsc_masked_corrected(halves[0].data, halves[1].data, voxel, mask)
    entry["fsc_masked_corrected"] = curve_to_dict(corrected)
    entry["resolution_0143"] = resolution_at(corrected, FSC_THRESHOLD)
    return entry


def _guinier(m: Map, voxel: float, resolution: float | None) -> GuinierFit:
    """Fit from 10 Å to the resolution (to Nyquist when it is unknown)."""
    return guinier_bfactor(m.data, voxel, GUINIER_LOW_RESOLUTION, resolution)


def _model_measures(m: Map, model: Map, molecule: np.ndarray, mask: np.ndarray | None) -> dict:
    curve = map_model_fsc(m, model, mask)
    cc = map_model_correlations(m.data, model.data, molecule)
    entry = {"fsc_05_resolution": resolution_at(curve, MODEL_FSC_THRESHOLD), "fsc": curve_to_dict(curve),
             "cc_mask": cc.cc_mask, "cc_box": cc.cc_box, "cc_volume": cc.cc_volume, "cc_peaks": cc.cc_peaks,
             "n_mask_voxels": cc.n_mask_voxels}
    for window in LOCAL_CC_WINDOWS:
        entry[f"median_local_cc_{window}"] = median_local_correlation(m.data, model.data, window, molecule)
    return entry


def curve_to_dict(curve: FSCCurve) -> dict:
    return {"resolution_inv_angstrom": curve.resolution.tolist(), "correlation": curve.correlation.tolist(),
            "n_voxels": curve.n_voxels.tolist(), "voxel_size": curve.voxel_size}


def curve_from_dict(entry: dict) -> FSCCurve:
    return FSCCurve(np.asarray(entry["resolution_inv_angstrom"]), np.asarray(entry["correlation"]),
                    np.asarray(entry["n_voxels"]), float(entry["voxel_size"]))


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
