"""The project's one map-model scorer: how well a map agrees with its fitted atomic model.

One recipe, used by ``evaluate`` (reports), ``train.validate`` (model cards) and the tests:

- FSC 0.5: the FSC of the map and the model map computed to Nyquist, both under the molecular
  mask dilated by 3 Å with a 3 Å raised-cosine edge; the resolution where it falls below 0.5
  (lower is better). The model map goes to Nyquist so that the FSC measures the map, not the
  reference's own cut-off; the soft molecular mask keeps the solvent's noise out.
- CC_mask, CC_box, CC_volume, CC_peaks: phenix.map_model_cc's, with the model map at the map's
  resolution (``model.map_model_correlations``).
- LC5, LC7: median local correlation with that model map in 5- and 7-voxel windows, inside the
  molecular mask.
- LC7 non-protein: LC7 inside the mask of the model's ligands, hemes and glycans alone
  (``model.non_protein_mask``), when it has any: whether the map keeps what is not protein.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..mapio import Map
from .fourier import FSCCurve, fsc, resolution_at
from .local import median_local_correlation
from .soft_edge import soft_mask
from .model import MapModelCC, map_model_correlations, model_map, molecular_mask, non_protein_mask

MODEL_FSC_THRESHOLD = 0.5
FSC_MASK_DILATION_A = 3.0
FSC_MASK_EDGE_A = 3.0


@dataclass(frozen=True, eq=False)
class ModelReference:
    """What a map is scored against: model maps at its resolution and at Nyquist, the molecular
    mask and the soft FSC mask, all on the map's grid."""

    at_resolution: np.ndarray
    at_nyquist: np.ndarray
    molecule: np.ndarray
    fsc_mask: np.ndarray
    voxel_size: float
    non_protein: np.ndarray | None = None  # the ligands', hemes' and glycans' mask; None: the model has none


@dataclass(frozen=True)
class ModelAgreement:
    """One map's agreement with the model (see the module docstring)."""

    fsc: FSCCurve
    fsc05: float
    correlations: MapModelCC
    lc5: float
    lc7: float
    lc7_non_protein: float | None = None

    @property
    def cc_mask(self) -> float:
        return self.correlations.cc_mask


def model_reference(structure_path: str | Path, like: Map, resolution: float) -> ModelReference:
    """The references for scoring maps on ``like``'s grid at ``resolution`` Å."""
    voxel = like.isotropic_voxel_size
    molecule = molecular_mask(structure_path, like)
    return ModelReference(at_resolution=model_map(structure_path, like, resolution).data,
                          at_nyquist=model_map(structure_path, like, 2.0 * voxel).data, molecule=molecule,
                          fsc_mask=soft_mask(molecule, 0.5, FSC_MASK_DILATION_A / voxel, FSC_MASK_EDGE_A / voxel),
                          voxel_size=voxel, non_protein=non_protein_mask(structure_path, like))


def model_agreement(volume: np.ndarray, reference: ModelReference) -> ModelAgreement:
    """Score one map (on the reference's grid) against the model."""
    curve = fsc(volume, reference.at_nyquist, reference.voxel_size, reference.fsc_mask)
    return ModelAgreement(
        fsc=curve, fsc05=resolution_at(curve, MODEL_FSC_THRESHOLD),
        correlations=map_model_correlations(volume, reference.at_resolution, reference.molecule),
        lc5=median_local_correlation(volume, reference.at_resolution, 5, reference.molecule),
        lc7=median_local_correlation(volume, reference.at_resolution, 7, reference.molecule),
        lc7_non_protein=None if reference.non_protein is None else
        median_local_correlation(volume, reference.at_resolution, 7, reference.non_protein))
