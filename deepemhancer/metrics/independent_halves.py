"""The independent-halves check: whether enhancing the halves made them agree beyond the data.

The FSC of the separately enhanced halves against the FSC of the raw halves, shell by shell:
beyond the raw 0.143 resolution the enhanced halves must not agree more than the data do
(docs/trust.md). A measurement on four maps: it runs no network (the halves are enhanced by the
caller, e.g. ``deepemhancer.confidence.enhance_with_confidence`` or ``train.validate``).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

from ..mapio import Map, check_same_grid
from .fourier import FSCCurve, half_map_fsc, shared_power

_FALSE_ALARM = 0.05  # chance that a map without invented detail has any shell flagged (Bonferroni)
_MIN_SIGMAS = 3.0  # never flag a shell closer than this many noise standard deviations


@dataclass(frozen=True, eq=False)
class HalvesCheck:
    """FSC of the raw and of the separately enhanced halves, and the shells where the enhanced agree too well.

    margin: per shell, how far the enhanced FSC may exceed the raw one by chance.
    flagged: shells beyond the raw 0.143 resolution where it exceeds it by more.
    enhanced_shared_beyond, raw_shared_beyond: the share of each pair's shared power (the FSC's
    numerator summed over shells 1 .. Nyquist) that lies beyond the raw 0.143 resolution: how much
    of the map the detail there is, which the scale-free FSC cannot say.
    """

    raw: FSCCurve
    enhanced: FSCCurve
    margin: np.ndarray
    flagged: np.ndarray
    raw_resolution: float
    enhanced_resolution: float
    enhanced_shared_beyond: float
    raw_shared_beyond: float

    @property
    def invented_detail(self) -> bool:
        return bool(self.flagged.any())

    @property
    def verdict(self) -> str:
        if not self.invented_detail:
            return (f"no sign of invented detail: beyond the raw halves' {self.raw_resolution:.2f} Å the enhanced "
                    "halves agree no more than the data support")
        shells = 1.0 / self.raw.frequency[self.flagged]
        return (f"possible invented detail: in {int(self.flagged.sum())} shells between {shells.max():.2f} and "
                f"{shells.min():.2f} Å, beyond the raw halves' {self.raw_resolution:.2f} Å, the enhanced halves "
                f"agree more than the data support; {share_text(self.enhanced_shared_beyond)} of their shared power "
                f"lies there (raw halves: {share_text(self.raw_shared_beyond)})")

    def to_dict(self) -> dict:
        """JSON-able numbers: resolutions in Å, the per-shell curves, flagged shells and the verdict."""
        return {"raw_resolution_0143": self.raw_resolution, "enhanced_resolution_0143": self.enhanced_resolution,
                "invented_detail": self.invented_detail, "verdict": self.verdict,
                "enhanced_shared_power_beyond": self.enhanced_shared_beyond,
                "raw_shared_power_beyond": self.raw_shared_beyond,
                "flagged_resolutions": [float(v) for v in 1.0 / self.raw.frequency[self.flagged]],
                "voxel_size": self.raw.voxel_size,
                "shells": {"resolution_inv_angstrom": self.raw.frequency.tolist(),
                           "n_voxels": self.raw.n_voxels.tolist(), "fsc_raw": self.raw.correlation.tolist(),
                           "fsc_enhanced": self.enhanced.correlation.tolist(), "margin": self.margin.tolist(),
                           "flagged": self.flagged.tolist()}}

    @classmethod
    def from_dict(cls, entry: dict) -> "HalvesCheck":
        """The check back from ``to_dict``'s output (to plot it again from a JSON file)."""
        shells, voxel = entry["shells"], float(entry["voxel_size"])
        s, n = np.asarray(shells["resolution_inv_angstrom"]), np.asarray(shells["n_voxels"])
        return cls(raw=FSCCurve(s, np.asarray(shells["fsc_raw"]), n, voxel),
                   enhanced=FSCCurve(s, np.asarray(shells["fsc_enhanced"]), n, voxel),
                   margin=np.asarray(shells["margin"]), flagged=np.asarray(shells["flagged"], dtype=bool),
                   raw_resolution=float(entry["raw_resolution_0143"]),
                   enhanced_resolution=float(entry["enhanced_resolution_0143"]),
                   enhanced_shared_beyond=float(entry["enhanced_shared_power_beyond"]),
                   raw_shared_beyond=float(entry["raw_shared_power_beyond"]))


def share_text(share: float) -> str:
    """A shared-power share as a percentage; below zero (noise in the estimate) as '≤ 0 %'."""
    return f"{100 * share:.1f} %" if share > 0 else "≤ 0 %"


def halves_check(raw_half1: Map, raw_half2: Map, enhanced_half1: Map, enhanced_half2: Map,
                 mask: Map | None = None) -> HalvesCheck:
    """Compare FSC(enhanced halves) with FSC(raw halves) shell by shell (both under ``mask`` when given,
    uncorrected: ``half_map_fsc`` says why).

    A shell is flagged when it lies beyond the raw 0.143 resolution and the enhanced FSC exceeds the
    raw one by more than z noise standard deviations of an FSC difference, sqrt(2) / sqrt(n_eff / 2)
    for n_eff coefficients in the shell (times the mask's volume fraction); z makes a false flag on
    any shell 5 % likely (Bonferroni, at least 3).
    """
    others = [(raw_half2, "raw half map 2"), (enhanced_half1, "enhanced half map 1"),
              (enhanced_half2, "enhanced half map 2")] + ([] if mask is None else [(mask, "the mask")])
    for other, name in others:
        check_same_grid(raw_half1, other, "raw half map 1", name)
    voxel = raw_half1.isotropic_voxel_size
    weights = None if mask is None else mask.data
    raw = half_map_fsc(raw_half1.data, raw_half2.data, voxel, weights, correct_for_mask=False)
    enhanced = half_map_fsc(enhanced_half1.data, enhanced_half2.data, voxel, weights, correct_for_mask=False)
    beyond = raw.curve.frequency > 1.0 / raw.resolution
    n_eff = raw.curve.n_voxels * _volume_fraction(weights)
    margin = _sigmas(int(beyond.sum())) * np.sqrt(2.0) / np.sqrt(np.maximum(n_eff / 2.0, 1.0))
    flagged = beyond & (enhanced.curve.correlation - raw.curve.correlation > margin)

    def share_beyond(a: Map, b: Map) -> float:
        shared = shared_power(a.data, b.data, voxel, weights)
        total = float(shared.sum())
        return float(shared[beyond].sum()) / total if total > 0 else 0.0

    return HalvesCheck(raw=raw.curve, enhanced=enhanced.curve, margin=margin, flagged=flagged,
                       raw_resolution=raw.resolution, enhanced_resolution=enhanced.resolution,
                       enhanced_shared_beyond=share_beyond(enhanced_half1, enhanced_half2),
                       raw_shared_beyond=share_beyond(raw_half1, raw_half2))


def _sigmas(n_tested: int) -> float:
    return max(_MIN_SIGMAS, float(stats.norm.isf(_FALSE_ALARM / max(n_tested, 1))))


def _volume_fraction(mask: np.ndarray | None) -> float:
    """The share of the box a (soft) mask keeps, as its participation ratio (sum m)² / (N sum m²);
    the mask has passed ``check_mask`` (not all zero)."""
    if mask is None:
        return 1.0
    m = np.asarray(mask, dtype=np.float64)
    return float(np.sum(m)) ** 2 / (m.size * float(np.sum(m * m)))
