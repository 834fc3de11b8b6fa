"""Many maps in one call (deepemhancer.batch through the command line): one model load, one line per
map, a bad map among good ones fails alone, nothing overwritten without --force, exit status 1 when
any map failed."""
from __future__ import annotations

import signal
from pathlib import Path

import numpy as np
import pytest

import deepemhancer.models.loaded
import deepemhancer.pipeline
from deepemhancer.batch import result_name
from deepemhancer.cli import _enhance_parser
from deepemhancer.mapio import read_map
from test_cli import NOISE, call, density, global_state_kept, save, tiny_model


@pytest.fixture(autouse=True)
def _restore_global_state():
    with global_state_kept():
        yield


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    """Two good maps, their results one at a time (the reference), and a tiny model."""
    folder = tmp_path_factory.mktemp("batch")
    space = {"folder": folder, "model": tiny_model(folder, "tiny", groups=2),
             "a": save(folder / "a.mrc", density(seed=1)), "b": save(folder / "b.mrc", density(seed=2))}
    with global_state_kept():
        for name in ("a", "b"):
            assert call(*model_args(space), "-i", space[name], "-o", folder / f"single_{name}.mrc") == 0
            space[f"single_{name}"] = read_map(folder / f"single_{name}.mrc")
    return space


def model_args(ws) -> list:
    return ["--deepLearningModelPath", ws["model"], "-g", "-1", "-q", "--threads", "1", "--noiseStats", *NOISE]


@pytest.fixture
def loads(monkeypatch) -> list:
    """Every model load of the run (the batch loads through deepemhancer.models.loaded.load_model)."""
    seen = []
    real = deepemhancer.models.loaded.load_model

    def counted(path):
        seen.append(Path(path))
        return real(path)

    monkeypatch.setattr(deepemhancer.models.loaded, "load_model", counted)
    return seen


def run(capsys, *args):
    status = call(*args)
    captured = capsys.readouterr()
    return status, captured.out.splitlines(), captured.err.splitlines()


def files(folder: Path) -> list[str]:
    """Every name in the folder, hidden temporaries included."""
    return sorted(p.name for p in folder.iterdir())


def test_one_bad_map_among_good_ones(ws, tmp_path, capsys, loads):
    zero = save(tmp_path / "zero.mrc", np.zeros((40, 44, 36), np.float32))
    cut = tmp_path / "cut.mrc"
    cut.write_bytes(ws["a"].read_bytes()[:3000])
    missing = tmp_path / "missing.mrc"
    out = tmp_path / "out"
    out.mkdir()
    status, lines, err = run(capsys, *model_args(ws), "-i", ws["a"], zero, missing, "-i", ws["b"], cut, "-o", out)

    assert status == 1
    assert len(loads) == 1  # one model for all the maps
    # A missing map fails the checks before the long part, so its line comes first; then the maps in order.
    assert lines == [f"FAILED   {missing}: map {missing} not found; check the path",
                     f"enhanced {ws['a']} -> {out / 'a_deepemhancer.mrc'}",
                     f"FAILED   {zero}: input map is all zeros; give the unmasked, unsharpened map (or half maps) "
                     "from the refinement",
                     f"enhanced {ws['b']} -> {out / 'b_deepemhancer.mrc'}",
                     f"FAILED   {cut}: {cut} is truncated: its header promises 253440 bytes of data block but the "
                     "file holds 1976; copy or download the map again"]
    assert err == [f"deepemhancer: error: 3 of 5 maps failed ({zero}; {missing}; {cut}); the others were written"]
    assert files(out) == ["a_deepemhancer.mrc", "b_deepemhancer.mrc"]  # and no temporary left
    for name in ("a", "b"):  # each result is what the map alone gives
        result = read_map(out / f"{name}_deepemhancer.mrc")
        np.testing.assert_array_equal(result.data, ws[f"single_{name}"].data)
        assert result.geometry == ws[f"single_{name}"].geometry


def test_half_map_pairs_in_order(ws, tmp_path, capsys, loads):
    rng = np.random.default_rng(7)
    halves = {}
    for name in ("a", "b"):
        signal_ = read_map(ws[name]).data
        noise = rng.normal(0.0, 0.05, signal_.shape).astype(np.float32)
        halves[name] = (save(tmp_path / f"{name}_half1.mrc", signal_ + noise),
                        save(tmp_path / f"{name}_half2.mrc", signal_ - noise))
    out = tmp_path / "out"
    out.mkdir()
    status, lines, err = run(capsys, *model_args(ws), "-i", halves["a"][0], halves["b"][0],
                             "-i2", halves["a"][1], halves["b"][1], "-o", out)
    assert status == 0, err
    assert len(loads) == 1
    assert lines == [f"enhanced {halves[n][0]} + {halves[n][1]} -> {out / f'{n}_half1_deepemhancer.mrc'}"
                     for n in ("a", "b")]
    for name in ("a", "b"):
        single = tmp_path / f"{name}_pair.mrc"
        assert call(*model_args(ws), "-i", halves[name][0], "-i2", halves[name][1], "-o", single) == 0
        np.testing.assert_array_equal(read_map(out / f"{name}_half1_deepemhancer.mrc").data, read_map(single).data)


def test_existing_results_are_kept_without_force(ws, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    earlier = out / "a_deepemhancer.mrc"
    earlier.write_bytes(b"an earlier result")
    status, lines, err = run(capsys, *model_args(ws), "-i", ws["a"], ws["b"], "-o", out)
    assert status == 1
    assert lines[0].startswith(f"FAILED   {ws['a']}: output {earlier} exists") and lines[0].endswith("(--force)")
    assert lines[1] == f"enhanced {ws['b']} -> {out / 'b_deepemhancer.mrc'}"
    assert earlier.read_bytes() == b"an earlier result"
    assert err == [f"deepemhancer: error: 1 of 2 maps failed ({ws['a']}); the others were written"]

    status, lines, err = run(capsys, *model_args(ws), "-i", ws["a"], ws["b"], "-o", out, "--force")
    assert status == 0 and err == []
    assert [line.split()[0] for line in lines] == ["enhanced", "enhanced"]
    np.testing.assert_array_equal(read_map(earlier).data, ws["single_a"].data)


def test_confidence_maps_beside_each_result(ws, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    status, lines, err = run(capsys, *model_args(ws), "-i", ws["a"], ws["b"], "-o", out, "--confidence")
    assert status == 0, err
    assert lines[0] == f"enhanced {ws['a']} -> {out / 'a_deepemhancer.mrc'}, {out / 'a_deepemhancer_confidence.mrc'}"
    assert files(out) == ["a_deepemhancer.mrc", "a_deepemhancer_confidence.mrc", "b_deepemhancer.mrc",
                          "b_deepemhancer_confidence.mrc"]
    confidence = read_map(out / "b_deepemhancer_confidence.mrc").data
    assert confidence.min() >= 0 and confidence.max() <= 1 and np.ptp(confidence) > 0


def _same_name_elsewhere(ws, tmp: Path) -> list:
    (tmp / "other").mkdir()
    return ["-i", ws["a"], save(tmp / "other" / "a.mrc", density(seed=3)), "-o", tmp / "out"]


# name: (arguments after the model's, text of the one error line)
REFUSED = {
    "halves_count": (lambda ws, t: ["-i", ws["a"], ws["b"], "-i2", ws["a"], "-o", t / "out"],
                     "2 input map(s) and 1 second half map(s)"),
    "output_not_a_folder": (lambda ws, t: ["-i", ws["a"], ws["b"], "-o", t / "out" / "enhanced.mrc"],
                            "is not one; create it first"),
    "same_result_name": (_same_name_elsewhere, "would both be written to"),
}


@pytest.mark.parametrize("name", list(REFUSED))
def test_a_batch_that_cannot_work_is_refused_before_anything(ws, tmp_path, capsys, loads, name):
    (tmp_path / "out").mkdir()
    build, expected = REFUSED[name]
    status, lines, err = run(capsys, *model_args(ws), *build(ws, tmp_path))
    assert status == 1 and lines == []
    assert len(err) == 1 and err[0].startswith("deepemhancer: error: ") and expected in err[0], err
    assert loads == [] and files(tmp_path / "out") == []


def test_interruption_says_which_results_are_complete(ws, tmp_path, capsys, monkeypatch):
    real = deepemhancer.pipeline.enhance
    calls = []

    def interrupted_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(deepemhancer.pipeline, "enhance", interrupted_second)
    out = tmp_path / "out"
    out.mkdir()
    status, lines, err = run(capsys, *model_args(ws), "-i", ws["a"], ws["b"], "-o", out)
    assert status == 128 + signal.SIGINT
    assert lines == [f"enhanced {ws['a']} -> {out / 'a_deepemhancer.mrc'}"]
    assert err == ["deepemhancer: interrupted; the map in progress was not written; the 1 enhanced above are "
                   "complete"]
    assert files(out) == ["a_deepemhancer.mrc"]


def test_result_names_keep_the_map_suffix():
    assert [result_name(Path(n)) for n in ("run_class001.mrc", "x/emd_1.map.gz", "B.MAP", "noext")] == \
        ["run_class001_deepemhancer.mrc", "emd_1_deepemhancer.map.gz", "B_deepemhancer.MAP", "noext_deepemhancer.mrc"]


def test_help_explains_several_maps():
    text = " ".join(_enhance_parser().format_help().split())
    assert "-o FOLDER" in text and "NAME_deepemhancer.mrc" in text and "paired in order" in text
