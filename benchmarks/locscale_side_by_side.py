"""Side-by-side benchmark of a real peer, LocScale 2.4 (PyPI ``locscale``), on the validation cases
of the model card, scored with the project's one map-model scorer (``metrics.model_agreement``).

Cases (exactly as ``deepemhancer validate`` makes them): the 8 held-out structures of
``configs/open-halves.toml`` with the fewest atoms, each simulated at 3, 4.5 and 6 Å
(``validate.simulated_halves(structure, 7, settings, resolution)``, first pair), and EMD-3488
(``validate.pseudo_halves(deposited, 3.2, 7)``) with its fitted model 5me2.

LocScale runs in its own virtual environment (Python >= 3.12, outside the repository):

    /root/.pyenv/versions/3.12.1/bin/python -m venv /work/locscale-venv
    /work/locscale-venv/bin/pip install torch==2.13.0
    /work/locscale-venv/bin/pip install "locscale==2.4.*"

(the local torch 2.13.0 wheel is CPU-only for Python 3.11, so pip takes the CUDA build for 3.12, about
5 GB with its NVIDIA libraries; it runs on the CPU here.)

and is called as a subprocess on each pair of half maps (written as MRC to a work folder outside the
repository), in LocScale's classic model-free mode, ``--build_using_pseudomodel`` (pseudo-atomic model
placed in a mask, servalcat ADP refinement against the half maps, its model map the local reference):

- ``pseudomodel``: as LocScale runs by default in that mode, in its own FDR confidence mask;
- ``pseudomodel_mapmask``: given (``-ma``) the mask ``deepemhancer.molecule_masks.map_mask`` makes from the
  halves' average, dilated 3 Å (LocScale writes zeros outside its mask, and its FDR mask covers only
  part of the molecule on these maps).

servalcat needs a CCP4 monomer library, which LocScale otherwise clones from GitHub at run time
(unreachable here); a pseudo-atomic model holds only waters (HOH), so the script writes a monomer
library holding HOH alone (``write_monomer_library``: HOH.cif and the O/H atom types of ener_lib.cif,
copied from the CCP4 monomer library) and points CLIBD_MON at it. ``--no_reference`` (modes ``noref``,
``noref_mapmask``) runs offline too but writes LocScale's mask, not a sharpened map (NOREF_NOTE).
LocScale's default half-map mode (EMmerNet prediction of the model map) downloads network weights
at run time and cannot run here.

Each output map is placed back on the half maps' grid (LocScale writes origin 0 and keeps the
array; a box of another shape or voxel size is resampled, centre on centre) and scored against the
atomic model exactly as ``train.validate.evaluate_case`` does, beside the raw average and global
B-factor sharpening (``halves_input.baseline_sharpening``) on the same halves, and once more after
the low-pass that ends B-factor sharpening (``+lowpass``: LocScale does not low-pass its output).

    .venv/bin/python benchmarks/locscale_side_by_side.py                 # all 25 cases, both modes
    .venv/bin/python benchmarks/locscale_side_by_side.py --cases 2X9A@3,EMD-3488 --modes pseudomodel

With ``--model`` (a model name or JSON) the script also enhances each pair with that model (the
pipeline's defaults, as ``deepemhancer validate`` runs it) and scores it twice: as it is (``model``)
and multiplied by the region where each LocScale output is non-zero (``model_in_<mode>_region``,
beside ``bfactor_in_<mode>_region``): LocScale writes zeros outside its mask, so this compares the
two maps over the same voxels.

    .venv/bin/python benchmarks/locscale_side_by_side.py --modes pseudomodel --model open-halves \
        --out benchmarks/locscale_results/locscale_same_region

Writes benchmarks/locscale_results/locscale_side_by_side.{json,md} (updated after every case;
``--resume`` skips cases already in the JSON; ``--rescore`` scores the recorded LocScale outputs again
and runs LocScale only for modes a case lacks).
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from deepemhancer.halves_input import baseline_sharpening  # noqa: E402
from deepemhancer.mapio import Map, read_map, write_map  # noqa: E402
from deepemhancer.metrics import model_agreement, model_reference, radial_frequency_grid  # noqa: E402
from deepemhancer.sharpen import LOWPASS_EDGE_SHELLS, raised_cosine_lowpass  # noqa: E402

SHARED = Path(os.environ.get("DEEPEMHANCER_SHARED_DATA", REPO.parent / "shared" / "data"))
EMD3488 = SHARED / "maps" / "emd3488"
RESULTS = REPO / "benchmarks" / "locscale_results"
CONFIG = REPO / "configs" / "open-halves.toml"
RESOLUTIONS = (3.0, 4.5, 6.0)
SEED = 7
METRICS = ("fsc05", "cc_mask", "lc5", "lc7")

# mode -> (extra LocScale arguments, needs the monomer library, is given a mask made from the map)
MODES = {
    "pseudomodel": (["--build_using_pseudomodel"], True, False),
    "noref": (["--no_reference"], False, False),
    "pseudomodel_mapmask": (["--build_using_pseudomodel"], True, True),
    "noref_mapmask": (["--no_reference"], False, True),
}
NOREF_NOTE = ("`--no_reference` is not usable in LocScale 2.4.1: its amplitude scaling ignores the "
              "`set_local_bfactor` setting and scales every window to the placeholder reference it uses in that "
              "mode (a map of ones), so the output is its mask (values 0 and 1, e.g. on 2X9A@3 and 1M27@3; "
              "0 and ±1 on EMD-3488), not a sharpened map; it is left out of the default run.")
MASK_DILATION_A = 3.0  # the map mask handed to LocScale: molecule_masks.map_mask of the average, dilated 3 Å

# A CCP4 monomer library holding water alone: all a pseudo-atomic model contains. HOH.cif as in the
# CCP4 monomer library (MonomerLibrary/monomers, h/HOH.cif); the atom types it uses (and water's
# OH2/HOH2) with their rows of ener_lib.cif; a mon_lib_list.cif listing HOH only.
_MON_LIB_LIST = """data_lib
_lib.name mon_lib
_lib.version HOH-only

data_comp_list
loop_
_chem_comp.id
_chem_comp.three_letter_code
_chem_comp.name
_chem_comp.group
_chem_comp.number_atoms_all
_chem_comp.number_atoms_nh
_chem_comp.desc_level
HOH HOH WATER non-polymer 3 1 .
"""
_ENER_LIB = """data_energy
loop_
_lib_atom.type
_lib_atom.weight
_lib_atom.hb_type
_lib_atom.vdw_radius
_lib_atom.vdwh_radius
_lib_atom.ion_radius
_lib_atom.element
_lib_atom.valency
_lib_atom.sp
 O       15.99940  A     1.520     1.520    1.28   O   2  2
 OH2     15.99940  B     1.520     1.520    1.28   O   2  3
 H        1.00800  N     1.200      .     .     H   1  .
 HOH2     1.00800  H     1.200      .     .     H   1  .
"""
_HOH = """global_
_lib_name         ?
_lib_version      ?
_lib_update       ?
data_comp_list
loop_
_chem_comp.id
_chem_comp.three_letter_code
_chem_comp.name
_chem_comp.group
_chem_comp.number_atoms_all
_chem_comp.number_atoms_nh
_chem_comp.desc_level
HOH      HOH 'WATER                               ' non-polymer         3   1 .
data_comp_HOH
loop_
_chem_comp_atom.comp_id
_chem_comp_atom.atom_id
_chem_comp_atom.type_symbol
_chem_comp_atom.type_energy
_chem_comp_atom.partial_charge
_chem_comp_atom.x
_chem_comp_atom.y
_chem_comp_atom.z
 HOH           H2     H    H         0.000      0.000    0.000    0.000
 HOH           O      O    O         0.000     -0.867    0.000   -0.427
 HOH           H1     H    H         0.000     -0.709    0.000   -1.381
loop_
_chem_comp_tree.comp_id
_chem_comp_tree.atom_id
_chem_comp_tree.atom_back
_chem_comp_tree.atom_forward
_chem_comp_tree.connect_type
 HOH      H2     n/a    O      START
 HOH      O      H2     H1     .
 HOH      H1     O      .      END
loop_
_chem_comp_bond.comp_id
_chem_comp_bond.atom_id_1
_chem_comp_bond.atom_id_2
_chem_comp_bond.type
_chem_comp_bond.value_dist
_chem_comp_bond.value_dist_esd
 HOH      H1     O         single      1.040    0.020
 HOH      O      H2        single      1.040    0.020
loop_
_chem_comp_angle.comp_id
_chem_comp_angle.atom_id_1
_chem_comp_angle.atom_id_2
_chem_comp_angle.atom_id_3
_chem_comp_angle.value_angle
_chem_comp_angle.value_angle_esd
 HOH      H2     O      H1      120.000    3.000
"""


def write_monomer_library(folder: Path) -> Path:
    """The water-only monomer library (see above) in ``folder``; returns it."""
    (folder / "list").mkdir(parents=True, exist_ok=True)
    (folder / "h").mkdir(exist_ok=True)
    (folder / "list" / "mon_lib_list.cif").write_text(_MON_LIB_LIST)
    (folder / "ener_lib.cif").write_text(_ENER_LIB)
    (folder / "h" / "HOH.cif").write_text(_HOH)
    return folder


def make_cases(names: set[str] | None):
    """(name, half1, half2, structure path) for each validation case, generated lazily."""
    from deepemhancer.train import validate
    from deepemhancer.train.config import make_config
    from deepemhancer.train.loop import training_split

    config = make_config(str(CONFIG))
    structures = validate.smallest(training_split(config)[2], 8)
    for structure in structures:
        for resolution in RESOLUTIONS:
            name = structure.name.split("_")[0] + f"@{resolution:g}"
            if names is None or name in names:
                halves = validate.simulated_halves(structure, SEED, config.settings(), resolution)
                yield name, halves[0], halves[1], structure
    if names is None or "EMD-3488" in names:
        half1, half2 = validate.pseudo_halves(read_map(EMD3488 / "emd_3488.mrc"), 3.2, SEED)
        yield "EMD-3488", half1, half2, EMD3488 / "5me2.pdb"


def case_names() -> list[str]:
    """All case names, cheaply (the structure list only)."""
    from deepemhancer.train import validate
    from deepemhancer.train.config import make_config
    from deepemhancer.train.loop import training_split

    structures = validate.smallest(training_split(make_config(str(CONFIG)))[2], 8)
    return [s.name.split("_")[0] + f"@{r:g}" for s in structures for r in RESOLUTIONS] + ["EMD-3488"]


def run_locscale(venv: Path, folder: Path, mode: str, timeout: float, monlib: Path) -> dict:
    """Run LocScale on folder/half1.mrc, half2.mrc; returns the command, wall time, status and the
    output path (or the reason it failed)."""
    extra, needs_monlib, masked = MODES[mode]
    if masked:
        extra = [*extra, "-ma", "map_mask.mrc"]
    output = folder / f"locscale_{mode}.mrc"
    processing = folder / f"{mode}_proc"
    for stale in (output, processing):
        if stale.is_dir():
            shutil.rmtree(stale)
        elif stale.exists():
            stale.unlink()
    command = [str(venv / "bin" / "locscale"), "-hm", "half1.mrc", "half2.mrc", "-o", output.name,
               "-op", processing.name, "-v", *extra]
    env = dict(os.environ, PATH=f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",  # servalcat
               MPLBACKEND="Agg")
    if needs_monlib:
        env["CLIBD_MON"] = str(monlib)
    log_path = folder / f"locscale_{mode}.log"
    started = time.monotonic()
    record = {"mode": mode, "command": " ".join(["locscale", *command[1:]]), "log": str(log_path)}
    try:
        with open(log_path, "w") as log:
            completed = subprocess.run(command, cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL, timeout=timeout)
        record["returncode"] = completed.returncode
    except subprocess.TimeoutExpired:
        record["returncode"] = None
        record["error"] = f"timed out after {timeout:.0f} s"
    record["wall_s"] = round(time.monotonic() - started, 1)
    text = read_log(record)
    if "error" not in record and (record["returncode"] != 0 or not output.exists()):
        lines = [line for line in text.splitlines() if line.strip()]
        record["error"] = f"exit {record['returncode']}: " + (lines[-1][:300] if lines else "no output")
    if "error" not in record:
        record["output"] = str(output)
        shutil.rmtree(processing, ignore_errors=True)  # servalcat's intermediate files: tens of MB a case
    return record


def read_log(record: dict) -> str:
    """LocScale's log of a run; records the modality it ran and the pseudo-atoms it placed."""
    path = Path(record["log"])
    text = path.read_text(errors="replace") if path.exists() else ""
    found = re.search(r"Running LocScale with modality: (\S+)", text)
    record["modality"] = found.group(1) if found else record.get("modality")
    found = re.search(r"pseudo-atomic model generator with (\d+) atoms", text)
    if found:
        record["pseudo_atoms"] = int(found.group(1))
    return text


def on_grid(path: Path, like: Map) -> tuple[np.ndarray, dict]:
    """LocScale's map on ``like``'s grid, and what its header said."""
    import mrcfile

    with mrcfile.open(path, permissive=True) as mrc:
        data = np.asarray(mrc.data, dtype=np.float32)
        voxel = float(mrc.voxel_size.x)
        origin = tuple(float(mrc.header.origin[a]) for a in ("x", "y", "z"))
    ours = like.isotropic_voxel_size
    header = {"shape": list(data.shape), "voxel_size": round(voxel, 5), "origin": list(origin)}
    if data.shape == like.data.shape and abs(voxel - ours) <= 1e-3 * ours:
        header["placement"] = "same array (LocScale keeps the array and writes origin 0)"
        return data, header
    from scipy.ndimage import affine_transform

    # Centre on centre: LocScale pads or crops about the centre; scale by the voxel ratio.
    scale = ours / voxel
    centre_out = (np.array(data.shape) - 1) / 2.0
    centre_in = (np.array(like.data.shape) - 1) / 2.0
    placed = affine_transform(data, np.full(3, scale), offset=centre_out - scale * centre_in,
                              output_shape=like.data.shape, order=1, mode="constant", cval=0.0)
    header["placement"] = "resampled centre on centre onto the half maps' grid"
    return placed.astype(np.float32), header


def alignment_shift(volume: np.ndarray, reference) -> list[int]:
    """The whole-voxel shift (each axis -1, 0 or 1) that best correlates ``volume`` with the model map
    at the input resolution inside the molecular mask: (0, 0, 0) when the map lies where the halves
    do. (A placement check only; a peak against the halves' average moves with LocScale's mask.)"""
    inside = reference.molecule > 0.5
    target = reference.at_resolution[inside]
    best = max(itertools.product((-1, 0, 1), repeat=3),
               key=lambda s: (np.corrcoef(np.roll(volume, s, axis=(0, 1, 2))[inside], target)[0, 1], s == (0, 0, 0)))
    return list(best)


def lowpass(volume: np.ndarray, voxel: float, resolution: float) -> np.ndarray:
    """``volume`` through the raised-cosine low-pass that B-factor sharpening ends with (cut-off at
    ``resolution`` Å, edge LOWPASS_EDGE_SHELLS shells), nothing else."""
    edge = LOWPASS_EDGE_SHELLS / (max(volume.shape) * voxel)
    gain = raised_cosine_lowpass(radial_frequency_grid(volume.shape, voxel), 1.0 / resolution, edge)
    return np.fft.irfftn(np.fft.rfftn(volume) * gain, s=volume.shape).astype(np.float32)


def score(volume: np.ndarray, reference) -> dict:
    agreement = model_agreement(volume, reference)
    return {m: float(getattr(agreement, m)) for m in METRICS}


def evaluate(name: str, half1: Map, half2: Map, structure: Path, args, monlib: Path,
             previous: dict | None = None) -> dict:
    """One case: LocScale in each mode (or, with ``previous``, the runs recorded there and their
    output maps, not run again), every arm scored; with ``args.model``, the model's map too, as it is
    and over each LocScale output's non-zero region."""
    folder = args.work / name.replace("@", "_at_")
    folder.mkdir(parents=True, exist_ok=True)
    write_map(half1, folder / "half1.mrc", overwrite=True)
    write_map(half2, folder / "half2.mrc", overwrite=True)
    voxel = half1.isotropic_voxel_size
    bfactor = baseline_sharpening(half1, half2)
    resolution = bfactor.resolution  # the halves' masked FSC 0.143, as train.validate.evaluate_case takes it
    reference = model_reference(structure, half1, resolution)
    average = 0.5 * (half1.data + half2.data)
    mask_info = None
    if any(MODES[m][2] for m in args.modes):
        from deepemhancer.molecule_masks import map_mask

        made = map_mask(average, voxel_size=voxel, dilation_A=MASK_DILATION_A)
        binary = (made.mask >= 0.5).astype(np.float32)
        write_map(half1.with_data(binary), folder / "map_mask.mrc", overwrite=True)
        molecule = reference.molecule > 0.5
        mask_info = {"box_fraction": round(float(binary.mean()), 4),
                     "molecule_covered": round(float(binary[molecule].mean()), 4)}
    case = {"name": name, "structure": structure.name, "input_fsc0143": float(resolution),
            "lowpass_resolution": bfactor.resolution, "box": list(half1.data.shape), "voxel_size": voxel,
            "scores": {"raw": score(average, reference), "bfactor": score(bfactor.map.data, reference)},
            "locscale": {}, "map_mask": mask_info}
    enhanced = None
    if args.model is not None:
        from deepemhancer.pipeline import EnhanceOptions, enhance

        enhanced = enhance([half1, half2], args.model, EnhanceOptions(gpu_ids="-1", progress=False)).data
        case["scores"]["model"] = score(enhanced, reference)
    for mode in args.modes:
        if previous and mode in previous["locscale"]:
            run = {k: v for k, v in previous["locscale"][mode].items()
                   if k not in ("header", "shift_vs_model", "shift_vs_average", "box_fraction_nonzero",
                                "molecule_covered")}
            if run.get("error", "").startswith("scoring failed"):
                del run["error"]
            read_log(run)
        else:
            print(f"[{time.strftime('%H:%M:%S')}] {name}: LocScale {mode} ...", flush=True)
            run = run_locscale(args.locscale_venv, folder, mode, args.timeout, monlib)
        if "output" in run and "error" not in run:
            try:
                volume, header = on_grid(Path(run["output"]), half1)
                run["header"] = header
                run["shift_vs_model"] = alignment_shift(volume, reference)
                # LocScale writes zeros outside its mask (the FDR confidence mask unless given one)
                run["box_fraction_nonzero"] = round(float(np.mean(volume != 0)), 4)
                run["molecule_covered"] = round(float(np.mean(volume[reference.molecule > 0.5] != 0)), 4)
                case["scores"][f"locscale_{mode}"] = score(volume, reference)
                case["scores"][f"locscale_{mode}+lowpass"] = score(lowpass(volume, voxel, bfactor.resolution),
                                                                   reference)
                if enhanced is not None:
                    region = volume != 0
                    case["scores"][f"model_in_{mode}_region"] = score(enhanced * region, reference)
                    case["scores"][f"bfactor_in_{mode}_region"] = score(bfactor.map.data * region, reference)
            except Exception as error:  # a map we cannot read or score is a failure of this case
                run["error"] = f"scoring failed: {type(error).__name__}: {error}"
        case["locscale"][mode] = run
        print(f"    {name} {mode}: {run.get('error') or case['scores'][f'locscale_{mode}']} ({run['wall_s']} s)",
              flush=True)
    return case


def machine() -> str:
    from bench_enhance import machine_description  # benchmarks/ is on the path when run as a script

    return f"{machine_description('-1')}, CPU only (no GPU), {platform.system()} {platform.release()}"


def locscale_versions(venv: Path) -> dict:
    python = str(venv / "bin" / "python")
    code = ("import importlib.metadata as m, sys; print(sys.version.split()[0]); "
            "print(*(m.version(p) for p in ('locscale', 'torch', 'servalcat', 'gemmi')))")
    try:
        out = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=120).stdout.split()
        return dict(zip(("python", "locscale", "torch", "servalcat", "gemmi"), out))
    except (OSError, subprocess.SubprocessError):
        return {}


def arms_of(cases: list[dict]) -> list[str]:
    arms = ["raw", "bfactor"]
    for case in cases:
        arms += [a for a in case["scores"] if a not in arms]
    return arms


def better(ours: float, theirs: float, metric: str) -> bool:
    """Whether ``ours`` is the better score (FSC0.5 in Å: lower)."""
    return ours < theirs if metric == "fsc05" else ours > theirs


HEAD_TO_HEAD = ("fsc05", "cc_mask", "lc7")


def head_to_head(pairs: list[tuple[dict, dict]]) -> tuple[dict[str, int], tuple[str, str]]:
    """For pairs of score dicts (ours, theirs): how often ours is better on each of FSC0.5, CC_mask and
    LC7, and each side's medians as "FSC0.5 / CC_mask / LC7" text."""
    wins = {m: sum(better(ours[m], theirs[m], m) for ours, theirs in pairs) for m in HEAD_TO_HEAD}
    medians = tuple(" / ".join(f"{np.median([pair[i][m] for pair in pairs]):.{2 if m == 'fsc05' else 3}f}"
                               for m in HEAD_TO_HEAD) for i in (0, 1))
    return wins, medians


def summary(cases: list[dict]) -> dict:
    simulated = [c for c in cases if c["name"] != "EMD-3488"]
    out: dict = {"simulated_cases": len(simulated)}
    for arm in arms_of(simulated):
        scored = [c["scores"][arm] for c in simulated if arm in c["scores"]]
        out[arm] = {"cases": len(scored), **{f"median_{m}": float(np.median([s[m] for s in scored]))
                                              for m in METRICS}} if scored else {"cases": 0}
        if arm.startswith("locscale_") and scored:
            pairs = [(c["scores"][arm], c["scores"]["bfactor"]) for c in simulated if arm in c["scores"]]
            out[arm]["beats_bfactor"] = head_to_head(pairs)[0]
    return out


def markdown(meta: dict, cases: list[dict]) -> str:
    v = meta["versions"]
    lines = [
        "# LocScale 2.4 side by side: the model card's validation cases",
        "",
        f"Machine: {meta['machine']}; run {meta['date']}. LocScale {v.get('locscale', '?')} (PyPI) in its own "
        f"virtual environment (Python {v.get('python', '?')}, torch {v.get('torch', '?')}, servalcat "
        f"{v.get('servalcat', '?')}, gemmi {v.get('gemmi', '?')}); run on CPU, one case at a time, "
        f"time limit {meta['timeout_s']:.0f} s per run, while a training job shared the 2 cores.",
        "",
        "Cases: the 8 held-out structures of `configs/open-halves.toml` with the fewest atoms, simulated at "
        "3, 4.5 and 6 Å (`validate.simulated_halves(structure, 7, settings, resolution)`, first pair of "
        "half maps), and EMD-3488 (pseudo-halves of the deposited map at 3.2 Å, seed 7) with its model 5me2. "
        "Scores: `metrics.model_agreement` against the atomic model at the halves' FSC 0.143 resolution "
        "inside an automatic mask (`halves_input.fsc_mask`, the bfactor arm's low-pass), as "
        "`train.validate.evaluate_case` scores (FSC0.5 in Å, lower is better; CC_mask; LC5/LC7 = median "
        "local correlation in 5/7-voxel windows inside the molecular mask).",
        "",
        "Arms: raw = half-map average; bfactor = `halves_input.baseline_sharpening` (global B-factor "
        "sharpening, the sanity check); LocScale modes:",
        "",
    ]
    for mode in meta["modes"]:
        lines.append(f"- `locscale_{mode}`: `{meta['commands'][mode]}` — {meta['mode_notes'][mode]}")
    lines += [f"- `locscale_<mode>+lowpass`: {meta['lowpass_note']}"]
    lines += ["", "Not run: " + meta["not_run"], ""]
    header = "| case | input FSC0.143 (Å) | map | FSC0.5 (Å) | CC_mask | LC5 | LC7 | LocScale wall (s) |"
    lines += [header, "|---|---|---|---|---|---|---|---|"]
    arms = arms_of(cases)
    failures = []
    for c in cases:
        for arm in arms:
            mode = arm.removeprefix("locscale_").removesuffix("+lowpass")
            run = c["locscale"].get(mode) if arm.startswith("locscale_") else None
            wall = f"{run['wall_s']:.0f}" if run and not arm.endswith("+lowpass") else ""
            if arm in c["scores"]:
                s = c["scores"][arm]
                lines.append(f"| {c['name']} | {c['input_fsc0143']:.2f} | {arm} | {s['fsc05']:.2f} | "
                             f"{s['cc_mask']:.3f} | {s['lc5']:.3f} | {s['lc7']:.3f} | {wall} |")
            elif run and not arm.endswith("+lowpass"):
                lines.append(f"| {c['name']} | {c['input_fsc0143']:.2f} | {arm} | failed | | | | {wall} |")
                atoms = f"; LocScale placed {run['pseudo_atoms']} pseudo-atom(s)" if "pseudo_atoms" in run else ""
                failures.append(f"- {c['name']}, {arm} (after {run['wall_s']:.0f} s): {run.get('error')}{atoms}")
    stats = summary(cases)
    lines += ["", f"Medians over the {stats['simulated_cases']} simulated cases (EMD-3488 apart):", "",
              "| map | cases | FSC0.5 (Å) | CC_mask | LC5 | LC7 | beats bfactor on FSC0.5 / CC_mask / LC7 |",
              "|---|---|---|---|---|---|---|"]
    for arm in arms:
        s = stats.get(arm, {})
        if not s.get("cases"):
            continue
        wins = s.get("beats_bfactor")
        wins_text = f"{wins['fsc05']} / {wins['cc_mask']} / {wins['lc7']}" if wins else ""
        lines.append(f"| {arm} | {s['cases']} | {s['median_fsc05']:.2f} | {s['median_cc_mask']:.3f} | "
                     f"{s['median_lc5']:.3f} | {s['median_lc7']:.3f} | {wins_text} |")
    walls = {m: [c["locscale"][m]["wall_s"] for c in cases if m in c["locscale"]] for m in meta["modes"]}
    lines += ["", "LocScale wall time: " + "; ".join(
        f"{m}: {sum(w) / 60:.1f} min over {len(w)} runs (median {np.median(w):.0f} s)" for m, w in walls.items() if w)]
    for m in meta["modes"]:
        covered = [c["locscale"][m]["molecule_covered"] for c in cases
                   if "molecule_covered" in c["locscale"].get(m, {})]
        if covered:
            lines += ["", f"LocScale's output is zero outside its mask; `locscale_{m}` is non-zero on a median "
                      f"{100 * np.median(covered):.0f} % (range {100 * min(covered):.0f}–{100 * max(covered):.0f} %) "
                      f"of the molecular mask the scores use, over {len(covered)} maps."]
    lines += same_region_lines(cases, meta)
    lines += ["", "Failures: " + ("none" if not failures else ""), *failures]
    notes = [f"- {c['name']}, {m}: output {r['header']['placement']}; best correlation with the model map "
             f"at whole-voxel shift {r['shift_vs_model']}"
             for c in cases for m, r in c["locscale"].items()
             if "shift_vs_model" in r and (r["shift_vs_model"] != [0, 0, 0]
                                           or not r["header"]["placement"].startswith("same"))]
    lines += ["", "Placement: every LocScale map kept the half maps' array (same shape and voxel size; LocScale "
              "writes origin 0, so the array is read on the half maps' grid), and it correlates best with the model "
              "map (inside the molecular mask) unshifted rather than shifted by one voxel along any axes" + (", except:" if notes else "."), *notes]
    return "\n".join(lines) + "\n"


def same_region_lines(cases: list[dict], meta: dict) -> list[str]:
    """For each mode: how often the model's map, as it is and over LocScale's non-zero region, is
    better than LocScale's map, and the medians (every case both have, EMD-3488 included)."""
    lines = []
    for mode in meta["modes"]:
        for label, ours in (("as it is", "model"), ("over LocScale's non-zero region", f"model_in_{mode}_region")):
            pairs = [(c["scores"][ours], c["scores"][f"locscale_{mode}"]) for c in cases
                     if ours in c["scores"] and f"locscale_{mode}" in c["scores"]]
            if not pairs:
                continue
            wins, medians = head_to_head(pairs)
            lines += ["", f"The model ({meta.get('model')}) {label} against `locscale_{mode}`: better on FSC0.5 / "
                          f"CC_mask / LC7 in {' / '.join(str(wins[m]) for m in HEAD_TO_HEAD)} of {len(pairs)} "
                          f"maps; medians {medians[0]} against {medians[1]}."]
    return lines


LOCSCALE_COLUMNS = (("LocScale, as written (own mask)", "locscale_pseudomodel"),
                    ("LocScale, map mask", "locscale_pseudomodel_mapmask"),
                    ("LocScale, map mask + low-pass", "locscale_pseudomodel_mapmask+lowpass"))


def against_model(cases: list[dict], report: dict) -> str:
    """The model card's table: each case's B-factor sharpening and LocScale scores beside a model's from
    its validation report (``deepemhancer validate``'s JSON, the same cases), and how often the model is
    better on each score."""
    model = {c["name"]: c["scores"]["model"] for c in report["cases"]}
    name = Path(report.get("model", "model")).stem
    lines = ["| case | halves' FSC0.143 (Å) | B-factor sharpening | "
             + " | ".join(title for title, _ in LOCSCALE_COLUMNS) + f" | **{name}** |",
             "|---|---|---|" + "---|" * len(LOCSCALE_COLUMNS) + "---|"]

    def cell(scores: dict | None) -> str:
        return "failed" if scores is None else f"{scores['fsc05']:.2f} / {scores['cc_mask']:.3f} / {scores['lc7']:.3f}"

    scored = [c for c in cases if c["name"] in model]
    for c in scored:
        lines.append(f"| {c['name']} | {c['input_fsc0143']:.2f} | {cell(c['scores']['bfactor'])} | "
                     + " | ".join(cell(c["scores"].get(arm)) for _, arm in LOCSCALE_COLUMNS)
                     + f" | {cell(model[c['name']])} |")
    for title, arm in LOCSCALE_COLUMNS:
        pairs = [(model[c["name"]], c["scores"][arm]) for c in scored if arm in c["scores"]]
        wins, medians = head_to_head(pairs)
        lines.append(f"- against {title}: {name} better on CC_mask in {wins['cc_mask']}, LC7 in {wins['lc7']}, "
                     f"FSC0.5 in {wins['fsc05']} of {len(pairs)} maps; medians FSC0.5 / CC_mask / LC7 "
                     f"{medians[0]} against {medians[1]}")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--locscale-venv", type=Path, default=Path(os.environ.get("LOCSCALE_VENV", "/work/locscale-venv")))
    parser.add_argument("--work", type=Path, default=Path("/tmp/locscale_cases"),
                        help="folder for the half maps and LocScale's files (outside the repository)")
    parser.add_argument("--cases", default="all", help="comma-separated case names (e.g. 2X9A@3,EMD-3488) or 'all'")
    parser.add_argument("--modes", default="pseudomodel,pseudomodel_mapmask",
                        help=f"LocScale modes among {', '.join(MODES)} (default pseudomodel,pseudomodel_mapmask; "
                             "the noref modes write LocScale's mask, see NOREF_NOTE)")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per LocScale run (default 900)")
    parser.add_argument("--out", type=Path, default=RESULTS / "locscale_side_by_side")
    parser.add_argument("--resume", action="store_true", help="keep cases already in OUT.json")
    parser.add_argument("--markdown-only", action="store_true", help="rewrite OUT.md from OUT.json, nothing else")
    parser.add_argument("--against-report", type=Path, metavar="REPORT_JSON",
                        help="print the model card's table: OUT.json's cases beside a model's validation report "
                             "(deepemhancer validate's JSON), nothing else")
    parser.add_argument("--model", help="also enhance each case with this model (a name or a model JSON) and score "
                                        "it as it is and over each LocScale output's non-zero region")
    parser.add_argument("--rescore", action="store_true",
                        help="score again the LocScale outputs that OUT.json records (in --work), without running "
                             "LocScale again; runs it only for modes a case lacks")
    args = parser.parse_args()
    if args.against_report:
        for needed in (args.against_report, args.out.with_suffix(".json")):
            if not needed.is_file():
                parser.error(f"{needed} does not exist; give a validation report (deepemhancer validate's JSON) "
                             "and an --out whose JSON this script wrote")
        recorded = json.loads(args.out.with_suffix(".json").read_text())
        print(against_model(recorded["cases"], json.loads(args.against_report.read_text())), end="")
        return 0
    if args.markdown_only:
        recorded = json.loads(args.out.with_suffix(".json").read_text())
        args.out.with_suffix(".md").write_text(markdown(recorded["meta"], recorded["cases"]))
        return 0
    args.modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = [m for m in args.modes if m not in MODES]
    if unknown:
        parser.error(f"unknown modes {unknown}; choose among {list(MODES)}")
    if not (args.locscale_venv / "bin" / "locscale").exists():
        parser.error(f"no LocScale at {args.locscale_venv}/bin/locscale; install it as the module docstring says")
    model_name = None
    if args.model is not None:
        from deepemhancer.errors import DeepEMhancerError
        from deepemhancer.models.loaded import load_model
        from deepemhancer.models.registry import resolve_model

        try:
            path = Path(args.model)
            path = path if path.suffix == ".json" else resolve_model(args.model)
            model_name = str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)
            args.model = load_model(path)
        except DeepEMhancerError as error:
            parser.error(str(error))
    names = None if args.cases == "all" else {n.strip() for n in args.cases.split(",") if n.strip()}
    if names:
        missing = names - set(case_names())
        if missing:
            parser.error(f"unknown cases {sorted(missing)}")
    args.work.mkdir(parents=True, exist_ok=True)
    monlib = write_monomer_library(args.work / "monomer_library_hoh")
    json_path, md_path = args.out.with_suffix(".json"), args.out.with_suffix(".md")
    json_path.parent.mkdir(parents=True, exist_ok=True)
    cases: list[dict] = []
    previous: dict[str, dict] = {}
    if (args.resume or args.rescore) and json_path.exists():
        cases = json.loads(json_path.read_text())["cases"]
        if args.rescore:
            previous = {c["name"]: c for c in cases}
    done = set() if args.rescore else {c["name"] for c in cases}
    versions = locscale_versions(args.locscale_venv)
    meta = {
        "machine": machine(), "date": time.strftime("%Y-%m-%d"), "versions": versions, "modes": args.modes,
        "timeout_s": args.timeout, "model": model_name,
        "commands": {m: " ".join(["locscale -hm half1.mrc half2.mrc -o out.mrc -op proc -v", *MODES[m][0],
                                  *(["-ma map_mask.mrc"] if MODES[m][2] else [])]) for m in args.modes},
        "mode_notes": {
            "pseudomodel": "LocScale's classic model-free mode: pseudo-atomic model in the FDR confidence mask, "
                           "servalcat ADP refinement against the half maps (10 cycles), model map as the local "
                           "reference. CLIBD_MON points at a water-only CCP4 monomer library that the script "
                           "writes (HOH.cif and the O/H atom types of ener_lib.cif, copied from the CCP4 monomer "
                           "library; a pseudo-atomic model holds only HOH), because LocScale otherwise clones "
                           "the full library from GitHub at run time, which this machine cannot reach.",
            "noref": "reference-less local sharpening (LocScale's help: local B-factor set to a constant, 20 Å²). "
                     + NOREF_NOTE,
            "pseudomodel_mapmask": "as `locscale_pseudomodel`, but given a mask (`-ma`) instead of LocScale's own "
                                   "FDR confidence mask (1 % FDR), which on these maps covers only part of the "
                                   "molecule and LocScale writes zeros outside its mask: the binary mask "
                                   "`deepemhancer.molecule_masks.map_mask` makes from the halves' average (15 Å low-pass, "
                                   "automatic contour, the connected molecule) dilated by 3 Å; no atomic model used.",
            "noref_mapmask": "as `locscale_noref`, with the map mask of `locscale_pseudomodel_mapmask`. " + NOREF_NOTE,
        },
        "lowpass_note": "not a LocScale output: LocScale's map through the raised-cosine low-pass that ends the "
                        "bfactor arm, at the same resolution (the halves' masked FSC 0.143), and nothing else; added "
                        "because LocScale does not low-pass its output and the scores (CC_mask and LC at the "
                        "input resolution) punish noise beyond it.",
        "not_run": "LocScale's default half-map mode (`locscale -hm half1.mrc half2.mrc -o out.mrc`, modality "
                   "`predict_model_map`: EMmerNet predicts the reference) downloads its network weights at run "
                   "time and fails here with `urllib.error.URLError: <urlopen error [Errno -2] Name or service not "
                   "known>`; `--build_using_pseudomodel --skip_refine` is refused by LocScale itself (\"You have "
                   "asked to skip ADP refinement ...\"). " + NOREF_NOTE,
    }
    order = {n: i for i, n in enumerate(case_names())}
    started = time.monotonic()
    for name, half1, half2, structure in make_cases(names):
        if name in done:
            continue
        case = evaluate(name, half1, half2, structure, args, monlib, previous.get(name))
        cases = [c for c in cases if c["name"] != name] + [case]
        cases.sort(key=lambda c: order.get(c["name"], len(order)))
        meta["this_invocation_s"] = round(time.monotonic() - started, 1)
        json_path.write_text(json.dumps({"meta": meta, "summary": summary(cases), "cases": cases}, indent=1) + "\n")
        md_path.write_text(markdown(meta, cases))
    print(md_path.read_text() if md_path.exists() else "no case run")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
