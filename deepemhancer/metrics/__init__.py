"""Measures of map quality: FSC and resolution, Guinier B-factor, local and map-model correlation,
the independent-halves check.

Pure functions on numpy arrays with their voxel size in Å; Map-level wrappers where a model is
placed on a map's grid. Submodules: ``fourier`` (frequency grid, FSC, phase-randomised masked FSC,
``half_map_fsc``: the one half-map FSC recipe), ``mask_check`` (the one check of a mask, for
measuring and for enhancing), ``soft_edge`` (soft masks),
``guinier`` (B-factors), ``local`` (sliding-window correlation), ``model`` (model maps, molecular
mask, phenix's CC_box / CC_mask / CC_volume / CC_peaks), ``agreement`` (the
project's one map-model scorer, built on the others), ``independent_halves`` (enhanced halves against
raw halves).

Measuring never runs the network: nothing here imports torch, the pipeline or the runtime
(docs/architecture.md; tests/test_architecture.py).
"""
from .fourier import (HALF_MAP_FSC_THRESHOLD, FSCCurve, HalfMapFSC, fsc, fsc_masked_corrected, half_map_fsc,
                      radial_frequency_grid, randomisation_start, randomise_phases, resolution_at, shared_power)
from .agreement import ModelAgreement, ModelReference, model_agreement, model_reference
from .guinier import GuinierFit, GuinierRangeError, guinier_bfactor
from .independent_halves import HalvesCheck, halves_check, share_text
from .local import local_correlation, median_local_correlation
from .mask_check import check_mask
from .model import MapModelCC, map_model_correlations, model_map, molecular_mask, read_structure
from .soft_edge import soft_mask

__all__ = [
    "HALF_MAP_FSC_THRESHOLD", "FSCCurve", "HalfMapFSC", "fsc", "fsc_masked_corrected", "half_map_fsc",
    "radial_frequency_grid", "randomisation_start", "randomise_phases", "resolution_at", "shared_power",
    "ModelAgreement", "ModelReference", "model_agreement", "model_reference",
    "GuinierFit", "GuinierRangeError", "guinier_bfactor",
    "HalvesCheck", "halves_check", "share_text",
    "local_correlation", "median_local_correlation",
    "check_mask", "soft_mask",
    "MapModelCC", "map_model_correlations", "model_map", "molecular_mask", "read_structure",
]
