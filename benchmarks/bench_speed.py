"""Speed of the default mode on real maps, and what each saving costs in accuracy (issue 14).

Three measurements, each a table, on the machine it runs on (named in the output):

- ``--runs``: enhance real maps with the bundled models at each stride in ``--strides`` with the
  solvent-cube skip on and off: wall and CPU seconds, cubes predicted, and the result's agreement
  with the stride-16 run without skip (Pearson r over the box and inside the map's automatic
  molecular mask, largest difference in units of the reference's standard deviation). Cases:
  EMD-3488 (100³, 1.05 Å) and EMD-11007 (240³, 0.834 Å) as single maps (``open-tight-small``) and as
  pseudo-half maps made from them as validation makes them (``open-halves``).
- ``--batches``: seconds per 64³ cube of each bundled network at batch 1, 4 and 8, each in a fresh
  process with and without ``devices.keep_freed_memory`` (page faults and system time counted).
- ``--bar``: the bar of issue 14: a 256³ map at 1 Å (the memory benchmark's synthetic map) enhanced
  in the default mode with the bundled single-map model, and with ``open-halves`` on two noisy
  halves of it.

    .venv/bin/python benchmarks/bench_speed.py --runs --cases emd3488,emd3488-halves --threads 2
    .venv/bin/python benchmarks/bench_speed.py --batches
    .venv/bin/python benchmarks/bench_speed.py --bar

Results go to stdout as Markdown rows and, with ``--json``, to a file. A benchmark, not a test:
other work on the machine slows it down; the load average is reported with every row.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_enhance import EMD11007, SHARED, SYNTHETIC_NOISE_STD, machine_description, synthetic_map  # noqa: E402

EMD3488 = SHARED / "maps" / "emd3488" / "emd_3488.mrc"
BUNDLED = Path(__file__).resolve().parents[1] / "deepemhancer" / "models" / "bundled"
SINGLE, HALVES = BUNDLED / "open-tight-small.json", BUNDLED / "open-halves.json"
PSEUDO_HALF_RESOLUTION, SEED = 3.2, 7  # as validation makes EMD-3488's pseudo-halves


def load_case(name: str):
    """(maps to enhance, model JSON) of a case: 'emd3488', 'emd11007', or either + '-halves'."""
    from deepemhancer.mapio import read_map
    from deepemhancer.train.validate import pseudo_halves

    deposited = read_map(EMD3488 if name.startswith("emd3488") else EMD11007)
    if name.endswith("-halves"):
        return list(pseudo_halves(deposited, PSEUDO_HALF_RESOLUTION, SEED)), HALVES
    return deposited, SINGLE


def timed_enhance(maps, model, **settings) -> tuple[np.ndarray, dict]:
    """The enhanced array and wall seconds, CPU seconds (user + system) and cubes of one run."""
    from deepemhancer.pipeline import EnhanceOptions, enhance
    from deepemhancer.predict import Progress

    report = Progress(enabled=False)
    before, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    out = enhance(maps, model, EnhanceOptions(gpu_ids="-1", **settings), progress=report)
    wall, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return out.data, {"seconds": round(wall, 1), "cpu_seconds": round(cpu, 1),
                      "system_seconds": round(after.ru_stime - before.ru_stime, 1),
                      "page_faults": after.ru_minflt - before.ru_minflt, "cubes": report.done,
                      "load": round(os.getloadavg()[0], 2)}


def agreement(result: np.ndarray, reference: np.ndarray, molecule: np.ndarray) -> dict:
    scale = float(reference.std())
    return {"r_box": round(float(np.corrcoef(result.ravel(), reference.ravel())[0, 1]), 5),
            "r_molecule": round(float(np.corrcoef(result[molecule], reference[molecule])[0, 1]), 5),
            "max_diff_per_std": round(float(np.abs(result - reference).max()) / scale, 4)}


def runs(cases: list[str], strides: list[int], threads: int) -> list[dict]:
    from deepemhancer.devices import keep_freed_memory
    from deepemhancer.molecule_masks import map_mask
    from deepemhancer.models.loaded import load_model

    keep_freed_memory()
    rows = []
    for name in cases:
        maps, model_json = load_case(name)
        model = load_model(model_json)
        first = maps if not isinstance(maps, list) else maps[0]
        average = first.data if not isinstance(maps, list) else 0.5 * (maps[0].data + maps[1].data)
        molecule = map_mask(average, voxel_size=first.isotropic_voxel_size).mask > 0.5
        reference, info = timed_enhance(maps, model, stride=16, skip_solvent=False, threads=threads)
        rows.append({"case": name, "model": model.name, "stride": 16, "skip_solvent": False, **info,
                     "r_box": 1.0, "r_molecule": 1.0, "max_diff_per_std": 0.0})
        print(row_text(rows[-1]), flush=True)
        for stride in strides:
            for skip in (True, False):
                if stride == 16 and not skip:
                    continue
                result, info = timed_enhance(maps, model, stride=stride, skip_solvent=skip, threads=threads)
                rows.append({"case": name, "model": model.name, "stride": stride, "skip_solvent": skip, **info,
                             **agreement(result, reference, molecule)})
                print(row_text(rows[-1]), flush=True)
    return rows


def row_text(r: dict) -> str:
    return (f"| {r['case']} | {r['model']} | {r['stride']} | {'on' if r['skip_solvent'] else 'off'} | {r['cubes']} | "
            f"{r['seconds']} | {r['cpu_seconds']} | {r['system_seconds']} | {r['r_box']} | {r['r_molecule']} | "
            f"{r['max_diff_per_std']} | {r['load']} |")


RUNS_HEADER = ("| case | model | stride | solvent skip | cubes | wall s | CPU s | system s | r (box) | r (molecule) "
               "| max diff / std | load |\n|---|---|---|---|---|---|---|---|---|---|---|---|")


def one_batch_timing(model_json: str, batch: int, keep: bool, repeats: int = 4) -> dict:
    """Seconds per cube of ``repeats`` forward passes of ``batch`` random 64³ cubes (after one warm-up)."""
    import torch

    from deepemhancer.devices import keep_freed_memory
    from deepemhancer.models.loaded import load_model

    applied = keep_freed_memory() if keep else False
    torch.set_num_threads(1)
    network = load_model(model_json).network.eval()
    cubes = torch.randn(batch, getattr(network, "in_channels", 1), 64, 64, 64)
    with torch.inference_mode():
        network(cubes)
        before, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        for _ in range(repeats):
            network(cubes)
        wall, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF)
    n = repeats * batch
    return {"model": Path(model_json).stem, "batch": batch, "keep_freed_memory": applied,
            "seconds_per_cube": round(wall / n, 4), "user_per_cube": round((after.ru_utime - before.ru_utime) / n, 4),
            "system_per_cube": round((after.ru_stime - before.ru_stime) / n, 4),
            "page_faults_per_cube": int((after.ru_minflt - before.ru_minflt) / n), "load": round(os.getloadavg()[0], 2)}


def batches() -> list[dict]:
    rows = []
    print("| model | batch | keep freed memory | s per cube | user s | system s | page faults | load |\n"
          "|---|---|---|---|---|---|---|---|")
    for model_json in (SINGLE, HALVES):
        for batch in (1, 4, 8):
            for keep in (False, True):
                done = subprocess.run([sys.executable, __file__, "--one-batch", str(model_json), str(batch), str(int(keep))],
                                      capture_output=True, text=True, check=True)
                r = json.loads(done.stdout.strip().splitlines()[-1])
                rows.append(r)
                print(f"| {r['model']} | {r['batch']} | {'yes' if r['keep_freed_memory'] else 'no'} | "
                      f"{r['seconds_per_cube']} | {r['user_per_cube']} | {r['system_per_cube']} | "
                      f"{r['page_faults_per_cube']} | {r['load']} |", flush=True)
    return rows


def bar(threads: int) -> list[dict]:
    """256³ at 1 Å, default mode: the single-map model on the map, open-halves on two noisy halves."""
    from deepemhancer.devices import keep_freed_memory
    from deepemhancer.train.validate import pseudo_halves

    keep_freed_memory()
    source = synthetic_map(256)
    rows = []
    # the synthetic noise is known (the memory benchmark gives it too); two halves measure their own
    for label, maps, model, noise in (("256³ single map", source, SINGLE, (0.0, SYNTHETIC_NOISE_STD)),
                                      ("256³ two halves", list(pseudo_halves(source, 3.5, SEED)), HALVES, None)):
        _, info = timed_enhance(maps, model, threads=threads, noise_stats=noise)
        rows.append({"case": label, "model": model.stem, **info})
        print(f"| {label} | {model.stem} | {info['cubes']} | {info['seconds']} | {info['cpu_seconds']} | "
              f"{info['load']} |", flush=True)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", action="store_true")
    parser.add_argument("--cases", default="emd3488,emd3488-halves,emd11007,emd11007-halves")
    parser.add_argument("--strides", default="16,24,32")
    parser.add_argument("--batches", action="store_true")
    parser.add_argument("--bar", action="store_true")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--one-batch", nargs=3, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one_batch:
        model_json, batch, keep = args.one_batch
        print(json.dumps(one_batch_timing(model_json, int(batch), keep == "1")))
        return 0
    print(f"machine: {machine_description('-1')}; {time.strftime('%Y-%m-%d')}; threads {args.threads}")
    results: dict = {"machine": machine_description("-1"), "date": time.strftime("%Y-%m-%d"), "threads": args.threads}
    if args.runs:
        print(RUNS_HEADER)
        results["runs"] = runs(args.cases.split(","), [int(s) for s in args.strides.split(",")], args.threads)
    if args.batches:
        results["batches"] = batches()
    if args.bar:
        print("| case | model | cubes | wall s | CPU s | load |\n|---|---|---|---|---|---|")
        results["bar"] = bar(args.threads)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
