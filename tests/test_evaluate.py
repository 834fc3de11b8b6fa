"""``deepemhancer evaluate``: the measures, the JSON, the PNG plots and the self-contained HTML report,
in-process and through the command line, on a synthetic map and a tiny model written here."""
from __future__ import annotations

import base64
import json
import logging
import re
from pathlib import Path

import numpy as np
import pytest

from deepemhancer import plots
from deepemhancer.cli import main
from deepemhancer.errors import InputError
from deepemhancer.evaluate import evaluate
from deepemhancer.mapio import Geometry, Map, write_map
from deepemhancer.metrics import model_map
from deepemhancer.report import write_report

SHAPE = (40, 40, 40)
RESOLUTION = 3.0
# Two alanines, placed in the middle of a 40 Å box; PDB columns as the format fixes them.
ATOMS = [("N", "ALA", 1, 17.0, 18.0, 19.0), ("CA", "ALA", 1, 18.2, 18.6, 19.8), ("C", "ALA", 1, 19.4, 19.3, 19.0),
         ("O", "ALA", 1, 19.3, 20.4, 18.5), ("CB", "ALA", 1, 18.6, 17.5, 20.8), ("N", "ALA", 2, 20.5, 18.6, 19.0),
         ("CA", "ALA", 2, 21.7, 19.1, 18.3), ("C", "ALA", 2, 22.9, 18.2, 18.6), ("O", "ALA", 2, 22.9, 17.0, 18.3),
         ("CB", "ALA", 2, 21.9, 20.5, 18.9)]


@pytest.fixture(autouse=True)
def _keep_logger():
    logger = logging.getLogger("deepemhancer")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    yield
    logger.handlers[:], logger.propagate = saved[0], saved[2]
    logger.setLevel(saved[1])


def write_pdb(path: Path) -> Path:
    lines = ["CRYST1   40.000   40.000   40.000  90.00  90.00  90.00 P 1           1"]
    for serial, (name, residue, number, x, y, z) in enumerate(ATOMS, 1):
        lines.append(f"ATOM  {serial:5d}  {name:<3s} {residue:3s} A{number:4d}    {x:8.3f}{y:8.3f}{z:8.3f}"
                     f"{1.0:6.2f}{20.0:6.2f}          {name[0]:>2s}")
    path.write_text("\n".join(lines + ["END"]) + "\n")
    return path


def as_map(data: np.ndarray) -> Map:
    return Map(np.asarray(data, dtype=np.float32), Geometry.for_grid(SHAPE, 1.0))


def noise(seed: int, std: float) -> np.ndarray:
    return np.random.default_rng(seed).normal(0.0, std, SHAPE).astype(np.float32)


def high_band(seed: int, amplitude: float) -> np.ndarray:
    """A pattern in shells 14 and beyond (finer than 2.9 Å), the same wherever the seed is."""
    k = np.fft.fftfreq(SHAPE[0]) * SHAPE[0]
    shell = np.sqrt(k[:, None, None] ** 2 + k[None, :, None] ** 2 + k[None, None, :] ** 2)
    transform = np.fft.fftn(np.random.default_rng(seed).normal(size=SHAPE)) * (shell >= 14)
    return (amplitude * np.fft.ifftn(transform).real).astype(np.float32)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """A model map made from the tiny model, noisy half maps of it, their average, a sharper 'enhanced'
    map, enhanced halves sharing an invented high-resolution pattern, and a soft spherical mask."""
    folder = tmp_path_factory.mktemp("evaluate")
    pdb = write_pdb(folder / "tiny.pdb")
    density = model_map(pdb, as_map(np.zeros(SHAPE)), RESOLUTION).data
    scale = float(density.std())
    half1, half2 = density + noise(1, 4 * scale), density + noise(2, 4 * scale)  # about 4 Å
    invented = high_band(3, 3 * scale)
    radius = np.sqrt(np.sum((np.indices(SHAPE) - 19.5) ** 2, axis=0))
    mask = np.clip((15.0 - radius) / 3.0, 0.0, 1.0)
    arrays = {"raw": 0.5 * (half1 + half2), "enhanced": density + noise(4, 0.1 * scale),
              "half1": half1, "half2": half2, "enhanced1": half1 + invented, "enhanced2": half2 + invented,
              "mask": mask}
    maps = {name: as_map(a) for name, a in arrays.items()}
    paths = {name: write_map(m, folder / f"{name}.mrc") for name, m in maps.items()}
    return {"pdb": pdb, "maps": maps, "paths": paths, "folder": folder}


@pytest.fixture(scope="module")
def results(inputs):
    m = inputs["maps"]
    return evaluate({"raw": m["raw"], "enhanced": m["enhanced"]}, (m["half1"], m["half2"]), inputs["pdb"], None,
                    m["mask"], enhanced_halves=(m["enhanced1"], m["enhanced2"]))


def test_evaluate_gives_every_number(results):
    halves = results["half_maps"]
    assert results["masked"] and "fsc_masked_corrected" in halves
    assert 2.0 <= halves["resolution_0143"] < 10.0
    assert results["resolution"] == halves["resolution_0143"]  # used for the model map and the Guinier fit
    for name in ("raw", "enhanced"):
        entry = results["maps"][name]
        assert np.isfinite(entry["guinier"]["b_factor"])
        low, high = entry["guinier"]["fit_range_angstrom"]
        assert low <= 10.0 and high >= results["resolution"] - 0.2
        model = entry["model"]
        for key in ("fsc_05_resolution", "cc_mask", "cc_box", "cc_volume", "cc_peaks", "median_local_cc_5",
                    "median_local_cc_7"):
            assert np.isfinite(model[key]), key
        assert model["median_local_cc_7_non_protein"] is None  # the model holds no ligand, heme or glycan
        assert model["n_mask_voxels"] > 100
    raw, enhanced = results["maps"]["raw"]["model"], results["maps"]["enhanced"]["model"]
    # The map made from the model with little noise agrees with it better than the noisy average.
    assert enhanced["cc_mask"] > raw["cc_mask"] + 0.01 and enhanced["cc_box"] > raw["cc_box"] + 0.01
    assert enhanced["median_local_cc_5"] > raw["median_local_cc_5"]
    assert enhanced["fsc_05_resolution"] < raw["fsc_05_resolution"]
    check = results["halves_check"]
    assert check["invented_detail"] and min(check["flagged_resolutions"]) == pytest.approx(2.0)


def test_a_mask_that_costs_resolution_is_set_aside_as_sharpening_does(inputs, tmp_path):
    """The one half-map recipe (metrics.half_map_fsc): a mask off the molecule is not used for the
    resolution, and the report says so."""
    m = inputs["maps"]
    corner = np.zeros(SHAPE, np.float32)
    corner[:12, :12, :12] = 1.0
    found = evaluate({}, (m["half1"], m["half2"]), mask=as_map(corner))
    halves = found["half_maps"]
    assert halves["fsc_masking"] == "unmasked" and "fsc_masked_corrected" not in halves
    assert halves["resolution_0143"] == halves["resolution_0143_unmasked"] == found["resolution"]
    page = write_report(found, tmp_path / "report")["html"].read_text()
    assert "the mask was not used" in page


def test_evaluate_without_halves_or_model(inputs):
    m = inputs["maps"]
    found = evaluate({"raw": m["raw"]})
    assert set(found) == {"deepemhancer_version", "voxel_size", "shape", "masked", "maps", "resolution"}
    assert found["resolution"] is None and found["maps"]["raw"]["guinier"]["fit_range_angstrom"][1] == pytest.approx(2.0)


@pytest.mark.parametrize("kwargs, message", [
    ({}, "nothing to evaluate"),
    ({"maps": "raw", "enhanced_halves": True}, "give the raw half maps too"),
    ({"maps": "raw", "structure": True}, "needs a resolution"),
    ({"maps": "raw", "resolution": -3.0}, "positive number"),
    ({"maps": "raw", "mask": "raw"}, "mask values must lie in 0..1"),
    ({"maps": "raw", "other": "short"}, "disagree in shape"),
])
def test_evaluate_refuses_bad_inputs(inputs, kwargs, message):
    m = inputs["maps"]
    maps = {"raw": m["raw"]} if kwargs.get("maps") else {}
    if kwargs.get("other"):
        maps["short"] = Map(m["raw"].data[:, :, :36].copy(), Geometry.for_grid((40, 40, 36), 1.0))
    with pytest.raises(InputError, match=message):
        evaluate(maps, structure=inputs["pdb"] if kwargs.get("structure") else None,
                 resolution=kwargs.get("resolution"), mask=m[kwargs["mask"]] if kwargs.get("mask") else None,
                 enhanced_halves=(m["enhanced1"], m["enhanced2"]) if kwargs.get("enhanced_halves") else None)


def image_sources(page: str) -> list[str]:
    return re.findall(r'<img src="([^"]*)"', page)


def test_report_writes_json_pngs_and_one_self_contained_page(inputs, results, tmp_path):
    maps = {"raw": inputs["maps"]["raw"], "enhanced": inputs["maps"]["enhanced"]}
    paths = write_report(results, tmp_path / "report", maps)
    expected = {"json", "html", "fsc_half_maps", "halves_check", "fsc_map_model", "guinier", "slices"}
    assert set(paths) == expected
    assert sorted(p.name for p in (tmp_path / "report").iterdir()) == sorted(p.name for p in paths.values())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report"]  # no temporary folder left
    text = paths["json"].read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text)["maps"]["enhanced"]["model"]["cc_mask"] == pytest.approx(
        results["maps"]["enhanced"]["model"]["cc_mask"])
    page = paths["html"].read_text()
    sources = image_sources(page)
    assert len(sources) == 5
    embedded = {base64.b64decode(s.split(",", 1)[1]) for s in sources}
    assert embedded == {paths[name].read_bytes() for name in expected - {"json", "html"}}
    assert all(s.startswith("data:image/png;base64,") for s in sources)
    assert "<script" not in page and not re.search(r'(src|href)="(?!data:)', page)
    assert "default-src 'none'" in page  # the browser refuses any external resource
    assert "possible invented detail" in page and "CC_mask" in page


def test_report_is_all_or_nothing(inputs, results, tmp_path, monkeypatch):
    target = tmp_path / "report"
    write_report({**results, "maps": {}}, target)
    before = {p.name: p.read_bytes() for p in target.iterdir()}

    def broken(*args, **kwargs):
        raise RuntimeError("plotting failed")

    monkeypatch.setattr(plots, "save_guinier", broken)
    with pytest.raises(RuntimeError):
        write_report(results, target, force=True)
    assert {p.name: p.read_bytes() for p in target.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report"]


# --- the command line --------------------------------------------------------------------------


def call(*args) -> int:
    try:
        return main([str(a) for a in args])
    except SystemExit as exit_:
        return int(exit_.code or 0)


def test_cli_evaluate_writes_the_report(inputs, tmp_path, capsys):
    p = inputs["paths"]
    out = tmp_path / "out"
    status = call("evaluate", "--map", f"raw={p['raw']}", "--map", p["enhanced"], "--halfMaps", p["half1"],
                  p["half2"], "--enhancedHalves", p["enhanced1"], p["enhanced2"], "--atomicModel", inputs["pdb"],
                  "--mask", p["mask"], "-o", out, "-q")
    captured = capsys.readouterr()
    assert status == 0, captured.err
    assert "halves check: possible invented detail" in captured.out and str(out / "report.html") in captured.out
    report = json.loads((out / "report.json").read_text())
    assert list(report["maps"]) == ["raw", "enhanced"]  # a bare path is named after its file
    assert report["atomic_model"] == str(inputs["pdb"])
    assert {"fsc_half_maps.png", "halves_check.png", "fsc_map_model.png", "guinier.png", "slices.png"} <= {
        q.name for q in out.iterdir()}
    # An existing report is kept without --force and replaced with it.
    assert call("evaluate", "--map", p["raw"], "-o", out, "-q") == 1
    assert "pass --force" in capsys.readouterr().err
    assert call("evaluate", "--map", p["raw"], "-o", out, "-q", "--force") == 0
    assert list(json.loads((out / "report.json").read_text())["maps"]) == ["raw"]
    assert not (out / "fsc_map_model.png").exists()


@pytest.mark.parametrize("args, message", [
    (["--map", "{missing}"], "not found"),
    (["--map", "a={raw}", "--map", "a={enhanced}"], "two maps are named 'a'"),
    (["--map", "{raw}", "--enhancedHalves", "{enhanced1}", "{enhanced2}"], "give the raw half maps too"),
    (["--map", "{raw}", "--atomicModel", "{pdb}"], "needs a resolution"),
    (["--map", "{raw}", "--mask", "{raw}"], "mask values must lie in 0..1"),
])
def test_cli_evaluate_bad_inputs_give_one_line_and_no_report(inputs, tmp_path, capsys, args, message):
    names = {**{k: str(v) for k, v in inputs["paths"].items()}, "pdb": str(inputs["pdb"]),
             "missing": str(tmp_path / "missing.mrc")}
    out = tmp_path / "out"
    assert call("evaluate", *[a.format(**names) for a in args], "-o", out) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("deepemhancer: error:") and message in err
    assert not out.exists() and [q.name for q in tmp_path.iterdir()] == []


def test_cli_evaluate_never_replaces_a_folder_of_other_files(inputs, tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    assert call("evaluate", "--map", inputs["paths"]["raw"], "-o", tmp_path, "--force") == 1
    assert "not part of a report" in capsys.readouterr().err
    assert [q.name for q in tmp_path.iterdir()] == ["notes.txt"]
