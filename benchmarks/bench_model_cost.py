"""What one 64³ cube costs each bundled model on this machine (the network's forward pass), and what
a half-map model's input preparation (B-factor sharpening of the average and the difference, with
each weighting: "relion" for sharpened-halves models, "wiener" for wiener-halves ones) adds per map. Runs alternate between models; medians are reported with the machine. Usage:

    python benchmarks/bench_model_cost.py                          # bundled open-tight-small vs open-halves
    python benchmarks/bench_model_cost.py --models a.json b.json --repeats 30 --threads 1
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_enhance import machine_description  # noqa: E402

from deepemhancer.halves_input import halves_channels  # noqa: E402
from deepemhancer.sharpen import WEIGHTINGS  # noqa: E402
from deepemhancer.mapio import Geometry, Map  # noqa: E402
from deepemhancer.models.registry import bundled_dir  # noqa: E402
from deepemhancer.models.loaded import load_model  # noqa: E402

CUBE = 64


def forward_seconds(model, repeats: int) -> list[float]:
    """Seconds per forward pass of one cube (batch 1, inference mode), after one warm-up pass."""
    channels = getattr(model.network, "in_channels", 1)
    cube = torch.randn(1, channels, CUBE, CUBE, CUBE)
    model.network.eval()
    times = []
    with torch.inference_mode():
        model.network(cube)
        for _ in range(repeats):
            started = time.perf_counter()
            model.network(cube)
            times.append(time.perf_counter() - started)
    return times


def preparation_seconds(side: int, repeats: int, weighting: str) -> float:
    """Median seconds of ``halves_channels`` (with ``weighting``) on two noisy half maps of ``side``³ voxels."""
    rng = np.random.default_rng(0)
    from scipy import ndimage

    signal = ndimage.gaussian_filter(rng.standard_normal((side,) * 3), 2.0).astype(np.float32)
    geometry = Geometry.for_grid(signal.shape, 1.0)
    halves = [Map(signal + rng.normal(0, signal.std(), signal.shape).astype(np.float32), geometry) for _ in range(2)]
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        halves_channels(*halves, weighting)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=[str(bundled_dir() / "open-tight-small.json"),
                                                        str(bundled_dir() / "open-halves.json")])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    models = [load_model(path) for path in args.models]
    names = [m.name for m in models]
    labels = [name if names.count(name) == 1 else path for name, path in zip(names, args.models)]
    times: list[list[float]] = [[] for _ in models]
    for _ in range(args.repeats):  # alternate, so that a busy moment hits every model alike
        for model, spent in zip(models, times):
            spent += forward_seconds(model, 1)
    print(f"machine: {machine_description('-1')}")
    first = statistics.median(times[0])
    print(f"| model | parameters | median s per 64³ cube | ratio to {labels[0]} |")
    print("|---|---|---|---|")
    for model, label, spent in zip(models, labels, times):
        median = statistics.median(spent)
        parameters = sum(p.numel() for p in model.network.parameters())
        print(f"| {label} | {parameters:,} | {median:.3f} | {median / first:.2f} |")
    for side in (128, 256):
        for weighting in WEIGHTINGS:
            print(f"half-map input preparation, {side}³, {weighting} weighting: "
                  f"{preparation_seconds(side, 3, weighting):.2f} s (median of 3)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
