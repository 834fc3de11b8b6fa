"""Seconds, peak memory and cubes per second of ``enhance`` per map size, on this machine.

Each case runs in a fresh subprocess so its peak host memory (ru_maxrss) is its own. Usage:

    python benchmarks/bench_enhance.py                       # CPU, demo-width network, all sizes
    python benchmarks/bench_enhance.py -g 0 --width 1.0      # first GPU, full Table-1 width
    python benchmarks/bench_enhance.py --cases 128 --max-cubes 24 --width 1.0   # throughput only

``--max-cubes`` stops after that many cubes (throughput only, the map is not finished) so slow
networks on a CPU can be measured in minutes; the table says which rows are partial.
Maps: synthetic 128³ and 256³ at 1 Å, and EMD-11007 (240³ at 0.834 Å) from the shared data
(``DEEPEMHANCER_SHARED_DATA``, default ../shared/data) when present.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("DEEPEMHANCER_SHARED_DATA", REPO.parent / "shared" / "data"))
EMD11007 = SHARED / "maps" / "emd11007" / "emd_11007.map.gz"


def machine_description(gpu_ids: str) -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            cpu = next(line.split(":", 1)[1].strip() for line in handle if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    text = f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads)"
    if gpu_ids != "-1" and torch.cuda.is_available():
        text += ", GPU " + ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
    return text


SYNTHETIC_NOISE_STD = 0.05


def synthetic_map(size: int):
    """Blobs of protein-like density inside a sphere, Gaussian noise (mean 0, std
    SYNTHETIC_NOISE_STD) everywhere, 1 Å voxels."""
    from scipy import ndimage

    from deepemhancer.mapio import Geometry, Map

    rng = np.random.default_rng(size)
    density = np.zeros((size,) * 3, np.float32)
    centre = size / 2
    points = rng.normal(centre, size / 8, size=(size * 20, 3)).clip(0, size - 1).astype(int)
    density[points[:, 0], points[:, 1], points[:, 2]] = 1.0
    density = ndimage.gaussian_filter(density, 1.5)
    density = density / density.max() + rng.normal(0, SYNTHETIC_NOISE_STD, density.shape).astype(np.float32)
    return Map(density.astype(np.float32), Geometry.for_grid(density.shape, 1.0))


def run_case(case: str, width: float, gpu_ids: str, precision: str, stride: int | None,
             batch_size: int | None, max_cubes: int | None) -> dict:
    """One case in this process: the whole ``enhance`` run, or with ``max_cubes`` only the first
    cubes' inference (``predict_into``, the step that dominates), for throughput on slow devices."""
    import torch

    from deepemhancer import tiling
    from deepemhancer.devices import configure_matmul_precision, resolve_devices
    from deepemhancer.mapio import read_map
    from deepemhancer.models.store import save_model
    from deepemhancer.nn import UNet, count_parameters
    from deepemhancer.pipeline import EnhanceOptions, enhance, load_model
    from deepemhancer.predict import predict_into
    from deepemhancer.resampling import model_grid_shape

    source = read_map(EMD11007) if case == "emd11007" else synthetic_map(int(case))
    # the synthetic noise is known; real maps go through the automatic estimate
    noise_stats = None if case == "emd11007" else (0.0, SYNTHETIC_NOISE_STD)
    torch.manual_seed(0)
    network = UNet(width=width)
    with tempfile.TemporaryDirectory() as folder:
        json_path = save_model(Path(folder) / "bench.json", {
            "name": f"bench-unet-w{width}", "architecture": network.architecture(), "normalization": "noise",
            "cube_size": 64, "stride": 16, "voxel_size": 1.0, "trained": False}, network.state_dict())
        model = load_model(json_path)
    use_gpu = gpu_ids != "-1" and torch.cuda.is_available()
    if use_gpu:
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    if max_cubes is None:
        enhance(source, model, EnhanceOptions(gpu_ids=gpu_ids, precision=precision, stride=stride,
                                              batch_size=batch_size, noise_stats=noise_stats, progress=False))
        grid = model_grid_shape(source.data.shape, source.isotropic_voxel_size)
        padding = tiling.covering_padding(grid, 64, stride or 16)
        cubes = len(tiling.cube_origins([n + p[1] for n, p in zip(grid, padding)], 64, stride or 16))
    else:
        configure_matmul_precision(precision)
        origins = tiling.cube_origins(source.data.shape, 64, stride or 16)[:max_cubes]
        blender = tiling.Blender(source.data.shape, 64, "count")
        predict_into(blender, source.data, origins, model.network, resolve_devices(gpu_ids), cube=64,
                     batch_size=batch_size, precision=precision, progress=False)
        cubes = len(origins)
    seconds = time.perf_counter() - start
    result = {
        "case": case, "shape": list(source.data.shape), "voxel_size": source.isotropic_voxel_size,
        "width": width, "parameters": count_parameters(network), "precision": precision,
        "stride": stride or 16, "gpu_ids": gpu_ids, "finished": max_cubes is None, "cubes": cubes,
        "seconds": round(seconds, 2), "cubes_per_second": round(cubes / seconds, 3),
        "peak_host_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        # other work on the machine slows a run down: the 1-minute load average says how much there was
        "load_average_after": round(os.getloadavg()[0], 2),
    }
    if use_gpu:
        result["peak_gpu_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="+", default=["128", "256", "emd11007"],
                        help="map sizes (cubic, 1 Å) and/or 'emd11007'")
    parser.add_argument("--width", type=float, default=0.125, help="U-Net width (1.0 = full Table-1 width)")
    parser.add_argument("-g", "--gpu-ids", default="-1", help="as deepemhancer -g; -1 is the CPU")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--stride", type=int, default=None)
    parser.add_argument("-b", "--batch-size", type=int, default=None)
    parser.add_argument("--max-cubes", type=int, default=None, help="stop after this many cubes (throughput only)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    settings = (args.width, args.gpu_ids, args.precision, args.stride, args.batch_size, args.max_cubes)
    if args.one is not None:
        print(json.dumps(run_case(args.one, *settings)))
        return 0
    results = []
    print(f"machine: {machine_description(args.gpu_ids)}")
    print("| case | shape | voxel Å | width | params | precision | stride | cubes | finished | s | cubes/s | peak host MiB | peak GPU MiB | load |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for case in args.cases:
        if case == "emd11007" and not EMD11007.is_file():
            print(f"| emd11007 | skipped: {EMD11007} not found |")
            continue
        command = [sys.executable, __file__, "--one", case] + sys.argv[1:]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            print(f"| {case} | failed: {done.stderr.strip().splitlines()[-1] if done.stderr.strip() else done.returncode} |")
            continue
        r = json.loads(done.stdout.strip().splitlines()[-1])
        results.append(r)
        print(f"| {r['case']} | {'×'.join(map(str, r['shape']))} | {r['voxel_size']:.3f} | {r['width']} | "
              f"{r['parameters']:,} | {r['precision']} | {r['stride']} | {r['cubes']} | {r['finished']} | "
              f"{r['seconds']} | {r['cubes_per_second']} | {r['peak_host_mib']} | {r.get('peak_gpu_mib', '-')} | "
              f"{r['load_average_after']} |",
              flush=True)
    if args.json:
        args.json.write_text(json.dumps({"machine": machine_description(args.gpu_ids), "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
