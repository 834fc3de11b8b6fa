"""Does LocScale 2.4 restore detail that the half maps do not carry? The phase-randomisation test of
``tests/test_trust.py`` applied to LocScale's model-free mode, beside the bundled half-map model on
the same inputs.

Inputs: EMD-3488's molecule (the bundled example map, 72³ of its 100³ at 1.05 Å), four copies with
independent Gaussian noise (30 % of the map's standard deviation; seeds 91-94) taken as two
independent pairs of half maps. For a resolution d of 6 or 4.5 Å the same four copies get their
phases beyond d replaced by independent random ones (``metrics.randomise_phases``, seeds 95-98):
the two pairs then share nothing beyond d. Each pair is sharpened by LocScale
(``--build_using_pseudomodel`` given a mask made from the pair's average, the mode
``pseudomodel_mapmask`` of ``locscale_side_by_side.py``: in its own FDR mask LocScale stops on
phase-randomised halves, its mask coming out empty) and enhanced by ``open-halves``; the figure is the share of the two outputs' common power
(``metrics.shared_power``, the FSC's numerator) that lies beyond d. From phase-randomised pairs,
whatever both outputs hold there in common was made without the data; with the true phases the
same share shows how much real detail lies there. The project's bar for its own model: < 2 %.

    .venv/bin/python benchmarks/locscale_invention.py     # six LocScale runs of about a minute each

Writes benchmarks/locscale_results/locscale_invention.{json,md}; LocScale's files go to --work.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from deepemhancer.mapio import Geometry, Map, read_map, write_map  # noqa: E402
from deepemhancer.metrics import randomisation_start, randomise_phases, shared_power  # noqa: E402
from deepemhancer.models.loaded import load_model  # noqa: E402
from deepemhancer.models.registry import bundled_dir  # noqa: E402
from deepemhancer.pipeline import EnhanceOptions, enhance  # noqa: E402
from deepemhancer.molecule_masks import map_mask  # noqa: E402
from locscale_side_by_side import (MASK_DILATION_A, MODES, RESULTS, locscale_versions, machine, on_grid,  # noqa: E402
                                   run_locscale, write_monomer_library)

EXAMPLE = REPO / "examples" / "emd3488" / "emd_3488.mrc.gz"
CROP = slice(14, 86)  # the molecule, as tests/test_trust.py's example_crop
NOISE_FRACTION = 0.3
NOISE_SEEDS = (91, 92, 93, 94)
PHASE_SEEDS = (95, 96, 97, 98)
RESOLUTIONS = (6.0, 4.5)
MODE = "pseudomodel_mapmask"


def four_halves(phases_beyond: float | None) -> list[Map]:
    """The four noisy copies of the molecule (two pairs), their phases beyond ``phases_beyond`` Å
    randomised independently when it is given."""
    deposited = read_map(EXAMPLE)
    crop = np.ascontiguousarray(deposited.data[CROP, CROP, CROP])
    sigma = NOISE_FRACTION * float(deposited.data.std())
    voxel = deposited.isotropic_voxel_size
    geometry = Geometry.for_grid(crop.shape, voxel)
    copies = [crop + np.random.default_rng(s).normal(0.0, sigma, crop.shape).astype(np.float32) for s in NOISE_SEEDS]
    if phases_beyond is not None:
        start = randomisation_start(crop.shape, voxel, phases_beyond)
        copies = [randomise_phases(c, voxel, start, np.random.default_rng(s)) for c, s in zip(copies, PHASE_SEEDS)]
    return [Map(c.astype(np.float32), geometry) for c in copies]


def share_beyond(a: np.ndarray, b: np.ndarray, voxel: float, resolution: float) -> float:
    """The share of what ``a`` and ``b`` have in common that lies in the shells finer than ``resolution``."""
    shared = shared_power(a, b, voxel)  # shells 1 .. Nyquist
    start = randomisation_start(a.shape, voxel, resolution)
    return float(shared[start - 1:].sum() / shared.sum())


def locscale_outputs(halves: list[Map], folder: Path, args: argparse.Namespace, monlib: Path) -> tuple[list, list]:
    """LocScale's map of each pair on the halves' grid (None where it failed), and its run records."""
    outputs, runs = [], []
    for k, pair in enumerate((halves[:2], halves[2:])):
        work = folder / f"pair{k + 1}"
        work.mkdir(parents=True, exist_ok=True)
        for name, half in zip(("half1.mrc", "half2.mrc"), pair):
            write_map(half, work / name, overwrite=True)
        average = 0.5 * (pair[0].data + pair[1].data)
        made = map_mask(average, voxel_size=pair[0].isotropic_voxel_size, dilation_A=MASK_DILATION_A)
        write_map(pair[0].with_data((made.mask >= 0.5).astype(np.float32)), work / "map_mask.mrc", overwrite=True)
        print(f"[{time.strftime('%H:%M:%S')}] {folder.name} pair {k + 1}: LocScale {MODE} ...", flush=True)
        run = run_locscale(args.locscale_venv, work, MODE, args.timeout, monlib)
        runs.append(run)
        outputs.append(on_grid(Path(run["output"]), pair[0])[0] if "output" in run else None)
    return outputs, runs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--locscale-venv", type=Path, default=Path(os.environ.get("LOCSCALE_VENV", "/work/locscale-venv")))
    parser.add_argument("--work", type=Path, default=Path("/tmp/locscale_invention"),
                        help="folder for the half maps and LocScale's files (outside the repository)")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per LocScale run (default 900)")
    parser.add_argument("--out", type=Path, default=RESULTS / "locscale_invention")
    args = parser.parse_args()
    if not (args.locscale_venv / "bin" / "locscale").exists():
        parser.error(f"no LocScale at {args.locscale_venv}/bin/locscale; install it as locscale_side_by_side.py says")
    args.work.mkdir(parents=True, exist_ok=True)
    monlib = write_monomer_library(args.work / "monomer_library_hoh")
    model = load_model(bundled_dir() / "open-halves.json")
    options = EnhanceOptions(gpu_ids="-1", progress=False)

    outputs = {}  # phases randomised beyond (None: the true phases) -> program -> the two pairs' maps
    records = []
    for beyond in (None, *RESOLUTIONS):
        halves = four_halves(beyond)
        folder = args.work / ("true" if beyond is None else f"beyond_{beyond:g}")
        ours = [enhance(tuple(pair), model, options).data for pair in (halves[:2], halves[2:])]
        theirs, runs = locscale_outputs(halves, folder, args, monlib)
        outputs[beyond] = {"open-halves": ours, "LocScale": theirs}
        label = "true phases" if beyond is None else f"phases randomised beyond {beyond:g} Å"
        records.append({"condition": label, "phases_beyond": beyond, "runs": runs})
    voxel = halves[0].isotropic_voxel_size
    rows = []
    for d in RESOLUTIONS:
        for program in ("LocScale", "open-halves"):
            figures = [None if any(m is None for m in pair) else share_beyond(*pair, voxel, d)
                       for pair in (outputs[None][program], outputs[d][program])]
            rows.append({"resolution": d, "program": program, "true_phases": figures[0], "randomised": figures[1]})
    result = {"machine": machine(), "date": time.strftime("%Y-%m-%d"), "versions": locscale_versions(args.locscale_venv),
              "locscale_command": " ".join(["locscale -hm half1.mrc half2.mrc -o out.mrc -op proc -v", *MODES[MODE][0],
                                            "-ma map_mask.mrc"]),
              "rows": rows, "runs": records}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=1))
    args.out.with_suffix(".md").write_text(markdown(result))
    print(markdown(result), end="")
    return 0


def percent(value: float | None) -> str:
    return "failed" if value is None else f"{100 * value:.2f} %"


def markdown(result: dict) -> str:
    lines = [f"# Phase-randomisation test: LocScale 2.4 beside open-halves ({result['date']}, {result['machine']})", "",
             "Produced by `benchmarks/locscale_invention.py` (its docstring has the recipe). Share of the power two "
             "outputs of independent pairs of half maps have in common that lies beyond d; from phase-randomised "
             "pairs it was made without the data (the project's bar for its own model: < 2 %).", "",
             f"LocScale: `{result['locscale_command']}` (LocScale {result['versions'].get('locscale', '?')}).", "",
             "| d | program | true phases | phases randomised beyond d |", "|---|---|---|---|"]
    lines += [f"| {r['resolution']:g} Å | {r['program']} | {percent(r['true_phases'])} | {percent(r['randomised'])} |"
              for r in result["rows"]]
    walls = [run["wall_s"] for record in result["runs"] for run in record["runs"]]
    lines += ["", f"LocScale wall time per run: {min(walls):.0f}-{max(walls):.0f} s."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
