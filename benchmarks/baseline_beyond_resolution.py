"""What do the shells beyond the halves' FSC 0.143 hold? The B-factor-sharpened baseline of the
half-map model (``halves_input.baseline_sharpening``) low-passed at that resolution, against the same
filter (FSC weighting, B-factor) with its low-pass moved to finer resolutions, and the Wiener-weighted
map that keeps every shell (channel 0 of the "wiener-halves" models, ``SharpeningFilter``'s "wiener"
weighting), on the cases of the
LocScale side by side (the 8 smallest held-out structures at 3, 4.5 and 6 Å, EMD-3488's
pseudo-halves), scored with the project's one scorer (``metrics.model_agreement``).

A pointer for the model's FSC0.5 against LocScale (docs/models/open-halves.md): no training here.

    .venv/bin/python benchmarks/baseline_beyond_resolution.py      # about 5 minutes on 2 cores

Prints a markdown table of medians and of the cases where each variant beats the baseline.
"""
from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from deepemhancer.halves_input import baseline_sharpening  # noqa: E402
from deepemhancer.metrics import model_agreement, model_reference  # noqa: E402
from locscale_side_by_side import make_cases  # noqa: E402

CUTOFF_FACTORS = (0.9, 0.8)  # low-pass at this fraction of the halves' FSC 0.143 resolution (Å)
METRICS = ("fsc05", "cc_mask", "lc7")


def variants(half1, half2) -> tuple[float, dict[str, np.ndarray]]:
    """The halves' resolution and each variant's map: the baseline, the same filter cut finer, the
    Wiener weighting and the raw average."""
    result = baseline_sharpening(half1, half2)
    average = 0.5 * (half1.data + half2.data)
    maps = {"baseline (cut at d)": result.map.data}
    for factor in CUTOFF_FACTORS:
        finer = dataclasses.replace(result.filter, resolution=factor * result.resolution)
        maps[f"cut at {factor:g} d"] = finer.apply(average)
    maps["Wiener weighting, no cut"] = dataclasses.replace(result.filter, weighting="wiener").apply(average)
    maps["raw average"] = average
    return result.resolution, maps


def main() -> int:
    scores: dict[str, list[dict[str, float]]] = {}
    for name, half1, half2, structure in make_cases(None):
        resolution, maps = variants(half1, half2)
        reference = model_reference(structure, half1, resolution)
        for label, volume in maps.items():
            s = model_agreement(volume, reference)
            scores.setdefault(label, []).append({"fsc05": s.fsc05, "cc_mask": s.cc_mask, "lc7": s.lc7})
        print(name, {label: round(scores[label][-1]["fsc05"], 2) for label in maps}, flush=True)
    base = scores["baseline (cut at d)"]
    lines = ["| map | FSC0.5 / CC_mask / LC7 (medians) | better than the baseline: FSC0.5 / CC_mask / LC7 |",
             "|---|---|---|"]
    for label, rows in scores.items():
        medians = " / ".join(f"{np.median([r[m] for r in rows]):.3f}" for m in METRICS)
        wins = " / ".join(str(sum((r[m] < b[m]) if m == "fsc05" else (r[m] > b[m]) for r, b in zip(rows, base)))
                          for m in METRICS)
        lines.append(f"| {label} | {medians} | {wins} of {len(rows)} |")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
