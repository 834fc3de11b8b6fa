"""The GPU check of issue 14, in one call of a few minutes on a lent H100/H200 (or on the CPU, small,
to test the script itself).

On synthetic maps of each size in ``--sizes`` (the memory benchmark's: blobs in a sphere, Gaussian
noise, 1 Å voxels) and the official-size network (``UNet(width=1.0)``, the Table-1 layout, random
weights: speed does not depend on them), it measures:

- legacy mode in fp32 (stride 16, every cube) and the fast mode (corrected pipeline, bf16, stride
  24, solvent cubes skipped): wall seconds, cubes, peak GPU memory;
- the network alone: 64³ cubes per second in bf16 at the batch the run used, and the achieved
  TFLOP/s (``nn.flops.convolution_flops``, 2 operations per multiply-add) against the dense bf16
  peak of the card (``--peak-tflops``; NVIDIA's H100/H200 SXM figure, 989, by default);
- on a 96³ crop, the output of the GPU in fp32 and in bf16 against the CPU's fp32 run of the
  same mode (Pearson r and the largest difference in units of the CPU result's standard deviation).

On the device machine (its python3 holds torch; mrcfile and gemmi travel as wheels, see
/work/.library/device/README.md: download them here with ``pip download --no-deps --only-binary=:all:
--python-version 3.12 ... -d .whl mrcfile gemmi``, carry ``.whl``):

    python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD
    PYTHONUNBUFFERED=1 python3 benchmarks/gpu_check.py --out $OUT/gpu_check.json

Here, to test it: ``.venv/bin/python benchmarks/gpu_check.py --device cpu --sizes 48 --width 0.125 --crop 32``.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_enhance import SYNTHETIC_NOISE_STD, machine_description, synthetic_map  # noqa: E402

DENSE_BF16_PEAK_TFLOPS = 989.0  # NVIDIA's H100 SXM and H200 figure, without sparsity
FAST_STRIDE = 24


def make_model(folder: Path, width: float):
    import torch

    from deepemhancer.models.store import save_model
    from deepemhancer.nn import UNet
    from deepemhancer.models.loaded import load_model

    torch.manual_seed(0)
    network = UNet(width=width)
    path = save_model(folder / "check.json", {
        "name": f"gpu-check-w{width}", "architecture": network.architecture(), "normalization": "noise",
        "cube_size": 64, "stride": 16, "voxel_size": 1.0, "trained": False}, network.state_dict())
    return load_model(path)


def timed(source, model, device: str, **settings) -> tuple[np.ndarray, dict]:
    import torch

    from deepemhancer.pipeline import EnhanceOptions, enhance
    from deepemhancer.predict import Progress

    gpu = device != "cpu"
    if gpu:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    report = Progress(enabled=False)
    start = time.perf_counter()
    out = enhance(source, model, EnhanceOptions(gpu_ids="0" if gpu else "-1", noise_stats=(0.0, SYNTHETIC_NOISE_STD),
                                                **settings), progress=report)
    if gpu:
        torch.cuda.synchronize()
    info = {"seconds": round(time.perf_counter() - start, 2), "cubes": report.done}
    if gpu:
        info["peak_gpu_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return out.data, info


def network_throughput(model, device: str, batch: int, repeats: int = 5) -> dict:
    """bf16 forward passes of ``batch`` 64³ cubes: cubes per second and TFLOP/s."""
    import torch

    from deepemhancer.nn.flops import convolution_flops

    flops = convolution_flops(model.network, 64)
    network = model.network.to(device).eval()
    cubes = torch.randn(batch, 1, 64, 64, 64, device=device)
    dtype = torch.bfloat16
    with torch.inference_mode(), torch.autocast(device_type=torch.device(device).type, dtype=dtype):
        network(cubes)  # warm-up (kernel selection)
        if device != "cpu":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(repeats):
            network(cubes)
        if device != "cpu":
            torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    network.to("cpu")
    rate = repeats * batch / seconds
    return {"batch": batch, "cubes_per_second": round(rate, 2), "gflop_per_cube": round(flops / 1e9, 1),
            "tflops": round(rate * flops / 1e12, 1)}


def agreement(result: np.ndarray, reference: np.ndarray) -> dict:
    return {"r": round(float(np.corrcoef(result.ravel(), reference.ravel())[0, 1]), 6),
            "max_diff_per_std": round(float(np.abs(result - reference).max() / reference.std()), 5)}


def run_checks(sizes: list[int], width: float, device: str, crop: int, peak_tflops: float) -> dict:
    from deepemhancer.devices import keep_freed_memory

    keep_freed_memory()
    fast = {"precision": "bf16", "stride": FAST_STRIDE}
    results: dict = {"machine": machine_description("0" if device != "cpu" else "-1"), "device": device,
                     "width": width, "date": time.strftime("%Y-%m-%d"), "runs": [], "accuracy": []}
    with tempfile.TemporaryDirectory() as folder:
        model = make_model(Path(folder), width)
        source = synthetic_map(crop)
        timed(source, model, device, precision="bf16")  # warm-up: CUDA context, cuDNN kernel choice
        for size in sizes:
            source = synthetic_map(size)
            for mode, settings in (("legacy fp32", {"legacy": True, "precision": "fp32"}), ("fast bf16", fast)):
                try:
                    _, info = timed(source, model, device, **settings)
                except Exception as error:  # an out-of-memory is a result to report, not the end of the check
                    info = {"error": f"{type(error).__name__}: {error}"}
                results["runs"].append({"size": size, "mode": mode, **info})
                print(json.dumps(results["runs"][-1]), flush=True)
            del source
        runs = [r for r in results["runs"] if r["mode"] == "fast bf16" and "cubes" in r]
        batch = 64 if device != "cpu" else 2
        results["network"] = network_throughput(model, device, batch)
        results["network"]["fraction_of_peak"] = round(results["network"]["tflops"] / peak_tflops, 3)
        results["network"]["peak_tflops"] = peak_tflops
        print(json.dumps(results["network"]), flush=True)
        if runs:
            results["fast_run_tflops"] = [round(r["cubes"] * results["network"]["gflop_per_cube"] / 1e3 / r["seconds"], 1)
                                          for r in runs]
        small = synthetic_map(crop)
        for mode, settings in (("legacy", {"legacy": True}), ("corrected", {"stride": FAST_STRIDE})):
            reference, _ = timed(small, model, "cpu", precision="fp32", **settings)
            for precision in ("fp32", "bf16"):
                if device == "cpu" and precision == "fp32":
                    continue
                result, _ = timed(small, model, device, precision=precision, **settings)
                results["accuracy"].append({"mode": mode, "precision": precision, **agreement(result, reference)})
                print(json.dumps(results["accuracy"][-1]), flush=True)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="256,512")
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--crop", type=int, default=96, help="side of the map compared with the CPU's run")
    parser.add_argument("--peak-tflops", type=float, default=DENSE_BF16_PEAK_TFLOPS)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    results = run_checks([int(s) for s in args.sizes.split(",")], args.width, args.device, args.crop, args.peak_tflops)
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
