"""Measures of map quality: FSC and resolution, Guinier B-factor, local and map-model correlation.

Pure functions on numpy arrays with their voxel size in Å; Map-level wrappers where a model is
placed on a map's grid. Submodules: ``fourier`` (frequency grid, FSC, phase-randomised masked FSC),
``masks`` (soft masks), ``guinier`` (B-factors), ``local`` (sliding-window correlation), ``model``
(model maps, molecular mask, phenix's CC_box / CC_mask / CC_volume / CC_peaks, map-model FSC),
``agreement`` (the project's one map-model scorer, built on the others).
"""
from .fourier import (HALF_MAP_FSC_THRESHOLD, FSCCurve, fsc, fsc_masked_corrected, radial_frequency_grid,
                      randomisation_start, randomise_phases, resolution_at, shared_power)
from .agreement import ModelAgreement, ModelReference, model_agreement, model_reference
from .guinier import GuinierFit, GuinierRangeError, apply_bfactor, guinier_bfactor
from .local import local_correlation, median_local_correlation
from .masks import soft_mask
from .model import (MapModelCC, map_model_cc, map_model_correlations, map_model_fsc, model_map, molecular_mask,
                    read_structure)

__all__ = [
    "HALF_MAP_FSC_THRESHOLD", "FSCCurve", "fsc", "fsc_masked_corrected", "radial_frequency_grid",
    "randomisation_start", "randomise_phases", "resolution_at", "shared_power",
    "ModelAgreement", "ModelReference", "model_agreement", "model_reference",
    "GuinierFit", "GuinierRangeError", "apply_bfactor", "guinier_bfactor",
    "local_correlation", "median_local_correlation",
    "soft_mask",
    "MapModelCC", "map_model_cc", "map_model_correlations", "map_model_fsc", "model_map", "molecular_mask",
    "read_structure",
]
