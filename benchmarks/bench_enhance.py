"""Seconds, peak memory and cubes per second of ``enhance`` per map size, on this machine.

Each case runs in a fresh subprocess so its peak host memory (ru_maxrss) is its own. Usage:

    python benchmarks/bench_enhance.py                       # CPU, demo-width network, all sizes
    python benchmarks/bench_enhance.py -g 0 --width 1.0      # first GPU, full Table-1 width
    python benchmarks/bench_enhance.py --cases 128 --max-cubes 24 --width 1.0   # throughput only
    python benchmarks/bench_enhance.py --cases 256 512 768 --stride 64 -b 1      # peak memory

Besides the process' lifetime peak (ru_maxrss), each row gives the input's size and the peak
memory the ``enhance`` call ADDED beyond what the process held just before it (torch, the model
and the synthesised map are not counted): the kernel's peak-RSS mark (VmHWM) is reset through
/proc/self/clear_refs before the call and read after it, minus VmRSS before it. "One batch" is
the same added peak for one forward pass of one batch of cubes, in a fresh process of its own
(so it includes torch's first-use costs, as the ``enhance`` call does).

``--max-cubes`` stops after that many cubes (throughput only, the map is not finished) so slow
networks on a CPU can be measured in minutes; the table says which rows are partial.
Maps: synthetic 128³ and 256³ at 1 Å, and EMD-11007 (240³ at 0.834 Å) from the shared data
(``DEEPEMHANCER_SHARED_DATA``, default ../shared/data) when present.
"""
from __future__ import annotations

import argparse
import gc
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
    SYNTHETIC_NOISE_STD) everywhere, 1 Å voxels.

    Built in place in one float32 volume (the noise a section at a time), so that making a 768³ map
    (1.7 GiB) does not take several times its size."""
    from scipy import ndimage

    from deepemhancer.mapio import Geometry, Map

    rng = np.random.default_rng(size)
    density = np.zeros((size,) * 3, np.float32)
    centre = size / 2
    points = rng.normal(centre, size / 8, size=(size * 20, 3)).clip(0, size - 1).astype(int)
    density[points[:, 0], points[:, 1], points[:, 2]] = 1.0
    ndimage.gaussian_filter(density, 1.5, output=density)  # separable passes, each one in place
    density *= np.float32(1.0 / density.max())
    for section in density:
        section += rng.standard_normal(section.shape, dtype=np.float32) * np.float32(SYNTHETIC_NOISE_STD)
    return Map(density, Geometry.for_grid(density.shape, 1.0))


def _status_mib(field: str) -> float:
    """A memory field of /proc/self/status (VmRSS, VmHWM) in MiB; NaN where there is none."""
    try:
        with open("/proc/self/status") as handle:
            return next(int(line.split()[1]) / 1024 for line in handle if line.startswith(field + ":"))
    except (OSError, StopIteration, ValueError):
        return float("nan")


def _reset_peak() -> bool:
    """Reset the process' peak-RSS mark (VmHWM, and with it ru_maxrss) to its current RSS (Linux)."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def _lifetime_peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_case(case: str, width: float, gpu_ids: str, precision: str, stride: int | None,
             batch_size: int | None, max_cubes: int | None) -> dict:
    """One case in this process: the whole ``enhance`` run, or with ``max_cubes`` only the first
    cubes' inference (``predict.network_predictor``, the step that dominates), for throughput on slow devices."""
    import torch

    from deepemhancer import tiling
    from deepemhancer.devices import resolve_devices, torch_settings
    from deepemhancer.mapio import read_map
    from deepemhancer.models.store import save_model
    from deepemhancer.nn import UNet, count_parameters
    from deepemhancer.models.loaded import load_model
    from deepemhancer.pipeline import EnhanceOptions, enhance
    from deepemhancer.predict import Progress, network_predictor

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
    gc.collect()
    peak_before = _lifetime_peak_mib()  # the mark is reset below: keep the peak so far
    held_before = _status_mib("VmRSS")
    exact = _reset_peak()
    start = time.perf_counter()
    if max_cubes is None:
        report = Progress(enabled=False)  # counts the cubes predicted
        enhance(source, model, EnhanceOptions(gpu_ids=gpu_ids, precision=precision, stride=stride,
                                              batch_size=batch_size, noise_stats=noise_stats), progress=report)
        cubes = report.done
    else:
        origins = tiling.cube_origins(source.data.shape, 64, stride or 16)[:max_cubes]
        predictor = network_predictor(model.network, resolve_devices(gpu_ids), cube=64, batch_size=batch_size,
                                      precision=precision)
        with torch_settings(None, precision):
            predictor(source.data, origins, tiling.Blender(source.data.shape, 64, "count").add)
        cubes = len(origins)
    seconds = time.perf_counter() - start
    # without the reset the mark may still be the synthesis' peak: then this is an upper bound
    added = (_status_mib("VmHWM") if exact else _lifetime_peak_mib()) - held_before
    lifetime_peak = max(peak_before, _lifetime_peak_mib())
    input_mib = source.data.nbytes / 2**20
    result = {
        "case": case, "shape": list(source.data.shape), "voxel_size": source.isotropic_voxel_size,
        "width": width, "parameters": count_parameters(network), "precision": precision,
        "stride": stride or 16, "gpu_ids": gpu_ids, "finished": max_cubes is None, "cubes": cubes,
        "seconds": round(seconds, 2), "cubes_per_second": round(cubes / seconds, 3),
        "peak_host_mib": round(lifetime_peak, 1),
        "input_mib": round(input_mib, 1), "held_before_mib": round(held_before, 1),
        "added_peak_mib": round(added, 1), "added_per_input": round(added / input_mib, 2),
        "added_exact": exact,
        # other work on the machine slows a run down: the 1-minute load average says how much there was
        "load_average_after": round(os.getloadavg()[0], 2),
    }
    if use_gpu:
        result["peak_gpu_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return result


def one_batch_mib(width: float, gpu_ids: str, precision: str, batch_size: int | None) -> float:
    """Host memory added by one forward pass of one batch of 64³ cubes (the batch a run uses);
    called in a fresh process, before anything else ran on the network."""
    import torch

    from deepemhancer.devices import resolve_devices
    from deepemhancer.nn import UNet
    from deepemhancer.predict import _run_batch, batch_size_for

    torch.manual_seed(0)
    device = resolve_devices(gpu_ids)[0]
    network = UNet(width=width).to(device).eval()
    size = batch_size_for(network, 64, device, precision, batch_size)
    gc.collect()
    held = _status_mib("VmRSS")
    if not _reset_peak():
        return float("nan")
    _run_batch(network, np.ones((size, 64, 64, 64), np.float32), device, precision)  # the batch is counted
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return _status_mib("VmHWM") - held


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
    if args.one == "batch":
        print(json.dumps({"batch_mib": round(one_batch_mib(*settings[:3], args.batch_size), 1)}))
        return 0
    if args.one is not None:
        print(json.dumps(run_case(args.one, *settings)))
        return 0
    results = []
    print(f"machine: {machine_description(args.gpu_ids)}")
    done = subprocess.run([sys.executable, __file__, "--one", "batch"] + sys.argv[1:], capture_output=True, text=True)
    batch_mib = json.loads(done.stdout.strip().splitlines()[-1])["batch_mib"] if done.returncode == 0 else None
    print(f"one batch ({args.batch_size or 'auto'} cubes of 64³, fresh process) adds {batch_mib} MiB of host memory")
    print("| case | shape | voxel Å | width | params | precision | stride | batch | cubes | finished | s | cubes/s "
          "| peak host MiB | peak GPU MiB | load | input MiB | added peak MiB | added ÷ input |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
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
              f"{r['parameters']:,} | {r['precision']} | {r['stride']} | {args.batch_size or 'auto'} | "
              f"{r['cubes']} | {r['finished']} | {r['seconds']} | {r['cubes_per_second']} | {r['peak_host_mib']} | "
              f"{r.get('peak_gpu_mib', '-')} | {r['load_average_after']} | {r['input_mib']} | "
              f"{r['added_peak_mib']}{'' if r['added_exact'] else ' (≤)'} | {r['added_per_input']}× |",
              flush=True)
    if args.json:
        args.json.write_text(json.dumps({"machine": machine_description(args.gpu_ids), "one_batch_mib": batch_mib,
                                           "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
