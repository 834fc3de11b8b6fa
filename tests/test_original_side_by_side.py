"""The pure parts of benchmarks/original_side_by_side.py (no TensorFlow, no original program needed):
case parsing, the original's cube count, alternation, medians and ratios, the table, the command
lines, the stand-in weight file (read by our own import), and the skip when the original is absent."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "original_side_by_side.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("original_side_by_side", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


def test_imports_without_tensorflow(bench):
    assert "tensorflow" not in sys.modules


def test_parse_case(bench):
    assert bench.parse_case("emd3488") == bench.Case("emd3488", "emd3488", None)
    assert bench.parse_case("emd11007@96") == bench.Case("emd11007@96", "emd11007", 96)
    for bad in ("emd9999", "emd11007@x", "emd11007@32"):
        with pytest.raises(ValueError):
            bench.parse_case(bad)


def test_centre_crop(bench):
    array = np.arange(10 * 12 * 14).reshape(10, 12, 14)
    crop = bench.centre_crop(array, 4)
    assert crop.shape == (4, 4, 4)
    assert crop[0, 0, 0] == array[3, 4, 5]
    with pytest.raises(ValueError):
        bench.centre_crop(array, 11)


def test_original_cubes_by_hand(bench):
    # 96 × 0.834 = 80.06 -> 80, padded by 16 to 96: 3 cubes per axis; rows of 3 filled up to a batch of 8.
    assert bench.original_cubes((96, 96, 96), 0.834) == (27, 3 * 3 * 8)
    # EMD-3488: 100 × 1.05 = 105, padded by 7 to 112: 4 per axis.
    assert bench.original_cubes((100, 100, 100), 1.05) == (64, 4 * 4 * 8)
    # EMD-11007: 240 × 0.834 = 200.16 -> 200, padded by 8 to 208: 10 per axis, rows filled to 16.
    assert bench.original_cubes((240, 240, 240), 0.834) == (1000, 10 * 10 * 16)
    assert bench.original_cubes((240, 240, 240), 0.834, batch=1) == (1000, 1000)
    # The third axis is padded by the second axis' amount (the original's bug): 96 + 12 (from 100) -> 108,
    # 3 cubes, not the 4 of 96 + 16.
    assert bench.original_cubes((64, 100, 96), 1.0, batch=1) == (2 * 4 * 3, 24)


def test_median_and_ratio(bench):
    assert bench.median([3.0, 1.0, 2.0]) == 2.0
    assert bench.median([]) is None
    assert bench.ratio(10.0, 4.0) == 2.5
    assert bench.ratio(None, 4.0) is None
    assert bench.ratio(1.0, 0.0) is None


def test_schedule_alternates(bench):
    order = bench.schedule(["a"], ["legacy"], 2)
    assert [(r, p) for _, _, r, p in order] == [(0, "ours"), (0, "original"), (1, "ours"), (1, "original")]
    assert len(bench.schedule(["a", "b"], ["legacy", "default"], 3)) == 2 * 2 * 3 * 2


def _run(program, wall, user, sys_, rss=100.0, rc=0, case="m", mode="legacy"):
    return {"case": case, "mode": mode, "program": program, "rc": rc, "wall_s": wall, "user_s": user, "sys_s": sys_,
            "maxrss_mib": rss, "load_before": [1.0, 1.0, 1.0], "load_after": [2.0, 1.0, 1.0]}


def test_summarise_medians_ratio_and_failures(bench):
    runs = [_run("ours", 10, 8, 1, rss=500), _run("original", 30, 25, 1), _run("ours", 12, 9, 2, rss=700),
            _run("original", 20, 18, 1), _run("ours", 11, 9, 1), _run("original", 99, 1, 1, rc=1)]
    (row,) = bench.summarise(runs)
    assert row["ours"]["wall_median_s"] == 11
    assert row["ours"]["cpu_median_s"] == 10  # medians of user + sys: 9, 11, 10
    assert row["ours"]["peak_rss_mib"] == 700
    assert row["original"]["wall_median_s"] == 25  # the failed run is left out
    assert row["original"]["failed"] == 1
    assert row["wall_ratio"] == pytest.approx(25 / 11)
    table = bench.markdown_table([row])
    assert "| m | legacy | 11.0 | 25.0 | 2.27 |" in table
    assert "(1 failed)" in table


def test_parse_our_cubes(bench):
    log = "deepemhancer: noise statistics: ...\ndeepemhancer: 27 cubes of 64³ at stride 16 on cpu\n"
    assert bench.parse_our_cubes(log) == (27, 16)
    assert bench.parse_our_cubes("nothing") is None


def test_command_lines(bench):
    paths = dict(input_map=Path("in.mrc"), output_map=Path("out.mrc"), model=Path("m.hd5"), threads=2,
                 original_python=Path("/venv/bin/python"))
    ours = bench.program_commands("ours", "legacy", noise_stats=(0.5, 2.0), **paths)
    assert ours[1:3] == ["-m", "deepemhancer"]
    assert ours[-5:] == ["--legacy", "-b", "8", "--threads", "2"]
    assert ["--noiseStats", "0.5", "2"] == ours[ours.index("--noiseStats"):ours.index("--noiseStats") + 3]
    default = bench.program_commands("ours", "default", noise_stats=None, **paths)
    assert "--legacy" not in default and "-b" not in default and "--noiseStats" not in default
    original = bench.program_commands("original", "legacy", noise_stats=None, **paths)
    assert original[:2] == ["/venv/bin/python", "-c"]
    assert "set_intra_op_parallelism_threads(2)" in original[2]
    assert original[-2:] == ["-b", "8"] and ["-g", "-1"] == original[original.index("-g"):original.index("-g") + 2]
    assert bench.program_commands("original", "default", noise_stats=None, **paths)[-2:] == ["-g", "-1"]
    env = bench.program_env("original", 2, Path("models"))
    assert env["TF_NUM_INTRAOP_THREADS"] == "2" and env["OMP_NUM_THREADS"] == "2"
    assert bench.program_env("ours", 2, Path("models"))["DEEPEMHANCER_MODELS_DIR"] == "models"


def test_standin_file_is_read_by_our_import(bench, tmp_path):
    """A small stand-in (same builder) in the official layout: our h5py import recognises it, the
    converted network loads strictly with every weight, and runs."""
    from deepemhancer.models.keras_import import import_hd5, read_official_hd5
    from deepemhancer.models.store import load_network

    path = tmp_path / "deepEMhancer_standin.hd5"
    parameters = bench.write_standin_hd5(path, channels=(8, 16), groups=4, cube=16, stride=4)
    official = read_official_hd5(path)
    assert official.norm_function == "inputNormalization_3" and official.normalization == "noise"
    assert (official.cube_size, official.stride) == (16, 4)
    kinds = {layer["class_name"] for layer in official.model_config["config"]["layers"]}
    assert kinds == {"InputLayer", "Conv3D", "Conv3DTranspose", "GroupNormalization", "PReLU", "Concatenate"}
    network, _ = load_network(import_hd5(path, tmp_path / "models"))
    assert sum(p.numel() for p in network.parameters()) == parameters
    with torch.inference_mode():
        out = network(torch.randn(1, 1, 16, 16, 16))
    assert out.shape == (1, 1, 16, 16, 16) and torch.isfinite(out).all()


def test_standin_default_size(bench):
    config = bench.standin_model_config()
    weights = bench.standin_weights(config)
    assert bench.count_parameters(weights) == 30_026_913
    names = [layer["name"] for layer in config["config"]["layers"]]
    assert len(names) == len(set(names))


def test_skipped_with_a_reason_without_the_original(bench, tmp_path, monkeypatch):
    monkeypatch.setattr(bench, "RESULTS", tmp_path)
    assert bench.main(["--original-venv", str(tmp_path / "absent"), "--tag", "t", "--cases", "emd3488",
                       "--workdir", str(tmp_path / "work")]) == 0
    document = json.loads((tmp_path / "t.json").read_text())
    assert "no Python at" in document["meta"]["skipped"]
    assert "**Skipped**" in (tmp_path / "t.md").read_text()


def test_forward_parsing_and_table(bench):
    assert bench.parse_forward("loading...\nFORWARD [1.5, 2.0]\n") == [1.5, 2.0]
    assert bench.parse_forward("Traceback ...") is None
    table = bench.forward_table([{"batch": 8, "ours": 1.0, "original": 0.5, "passes": 9}])
    assert "| 8 | 1.000 | 0.500 | 2.00 | 9 |" in table
    command = bench.forward_command("original", Path("m.hd5"), 2, 8, 3, Path("/venv/bin/python"))
    assert command[0] == "/venv/bin/python" and command[-4:] == ["m.hd5", "2", "8", "3"]
