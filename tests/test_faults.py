"""The standing fault suite: bad inputs and failing machines, each answered with one line, a
non-zero exit (or the library's own error) and no output or temporary file left or overwritten.

Tables: the command line (maps, options, outputs, tampered model files, evaluate, models), the
Python API (wrong types and values), the download (a local HTTP server that lies, stalls, fails
and serves garbage). Then one test per format read for files that carry code (nothing in them
runs), signals, stale temporary files and a scan of the sources for code execution from files.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import time
import zipfile
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import h5py
import mrcfile
import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import deepemhancer
from deepemhancer import mapio
from deepemhancer.cli import main
from deepemhancer.errors import DeepEMhancerError, ModelError
from deepemhancer.mapio import Geometry, Map, read_map, write_map
from deepemhancer.models import download, registry
from deepemhancer.models.keras_import import file_sha256
from deepemhancer.models.store import load_network, weights_path
from deepemhancer.models.loaded import load_model
from deepemhancer.pipeline import EnhanceOptions, enhance
from local_http import serving_with
from official_hd5 import write_official_hd5
from test_cli import density, global_state_kept, save, tiny_model
from test_download import official_zip

SHAPE = (24, 26, 22)
NOISE = ("--noiseStats", "0", "0.05")
UNWRITABLE = Path("/sys")  # nothing can be created there, not even by root


@pytest.fixture(autouse=True)
def _restore_global_state():
    with global_state_kept():
        yield


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    folder = tmp_path_factory.mktemp("faults")
    return {"folder": folder, "map": save(folder / "map.mrc", density(SHAPE)), "model": tiny_model(folder, "tiny")}


def snapshot(*folders: Path) -> dict:
    """Every file under the folders, hidden ones too, with size and modification time."""
    return {p: (p.stat().st_size, p.stat().st_mtime_ns) for f in folders if f.is_dir()
            for p in sorted(f.rglob("*")) if p.is_file()}


def one_error_line(status: int, err: str, expected: str, want_status: int = 1) -> str:
    assert status == want_status, err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("deepemhancer: error: "), err
    assert "Traceback" not in err
    assert expected.lower() in lines[0].lower(), err
    return lines[0]


def call(*args) -> int:
    try:
        return main([str(a) for a in args])
    except SystemExit as exit_:
        return int(exit_.code or 0)


# --- the command line ----------------------------------------------------------------------------


def _with_geometry(ws, tmp, voxel: float) -> Path:
    data = density(SHAPE)
    return save(tmp / "odd.mrc", data, Geometry.for_grid(data.shape, voxel))


def _tampered_json(ws, tmp, change) -> Path:
    """A copy of the tiny model whose JSON content is changed by ``change(metadata)``."""
    metadata = json.loads(ws["model"].read_text())
    changed = change(metadata)
    path = tmp / "tampered.json"
    path.write_text(json.dumps(metadata if changed is None else changed))
    shutil.copy(weights_path(ws["model"]), weights_path(path))
    return path


def _tampered_weights(ws, tmp, payload: bytes | None) -> Path:
    path = tmp / "weights.json"
    shutil.copy(ws["model"], path)
    if payload is not None:
        weights_path(path).write_bytes(payload)
    return path


def _other_tensors() -> bytes:
    from safetensors.torch import save

    return save({"not.a.layer": torch.zeros(3)})


def _hd5(tmp, edit) -> Path:
    """A tiny official-layout .hd5, then ``edit(h5py.File)``."""
    path = tmp / "deepEMhancer_tampered.hd5"
    write_official_hd5(path)
    with h5py.File(path, "r+") as f:
        edit(f)
    return path


def _set_param(name: str, value):
    def edit(f):
        del f[f"configParams/{name}"]
        f.create_dataset(f"configParams/{name}", data=value)
    return edit


def _huge_weight(f):
    """One weight replaced by 200 million zeros that take no space in the file (never written)."""
    layer = next(g for g in f["model_weights"].values() if len(g.attrs.get("weight_names", [])))
    name = layer.attrs["weight_names"][0].decode()
    del layer[name]
    layer.create_dataset(name, shape=(200_000_000,), dtype="f4", chunks=(1_000_000,), compression="gzip")


def _raw_mrc(tmp, data, **header) -> Path:
    path = tmp / "raw.mrc"
    with mrcfile.new(path, overwrite=True) as mrc:
        mrc.set_data(data)
        for key, value in header.items():
            setattr(mrc.header, key, value)
    return path


def _header_lies(tmp) -> Path:
    path = _raw_mrc(tmp, density(SHAPE))
    with mrcfile.open(path, "r+", permissive=True) as mrc:
        mrc.header.nz = 400
    return path


def _copy(ws, tmp) -> Path:
    return Path(shutil.copy(ws["map"], tmp / "same.mrc"))


def _model_args(path) -> list:
    return ["--deepLearningModelPath", path, "-g", "-1", "-q"]


# name: (arguments given the workspace and a scratch folder, text the error line must hold)
ENHANCE_CASES = {
    "sampling_rate_1000": (lambda ws, t: ["-i", ws["map"], "-s", "1000", *_model_args(ws["model"])], "voxel size"),
    "header_voxel_1e4": (lambda ws, t: ["-i", _with_geometry(ws, t, 1e4), *_model_args(ws["model"])], "voxel size"),
    # About 400 GiB on the model's 1 Å grid: beyond any machine this suite runs on.
    "sampling_rate_needs_too_much_memory": (lambda ws, t: ["-i", ws["map"], "-s", "99", *_model_args(ws["model"])],
                                            "GiB of memory"),
    "noise_std_1e-30": (lambda ws, t: ["-i", ws["map"], "--noiseStats", "0", "1e-30", *_model_args(ws["model"])],
                        "do not describe this map's noise"),
    "noise_std_zero": (lambda ws, t: ["-i", ws["map"], "--noiseStats", "0", "0", *_model_args(ws["model"])],
                       "must be positive"),
    "noise_mean_nan": (lambda ws, t: ["-i", ws["map"], "--noiseStats", "nan", "1", *_model_args(ws["model"])],
                       "finite"),
    "identical_half_maps": (lambda ws, t: ["-i", ws["map"], "-i2", _copy(ws, t), *NOISE, *_model_args(ws["model"])],
                            "identical"),
    "stride_zero": (lambda ws, t: ["-i", ws["map"], "--stride", "0", *NOISE, *_model_args(ws["model"])], "stride"),
    "stride_beyond_cube": (lambda ws, t: ["-i", ws["map"], "--stride", "17", *NOISE, *_model_args(ws["model"])],
                           "cube size 16"),
    "batch_size_zero": (lambda ws, t: ["-i", ws["map"], "-b", "0", *NOISE, *_model_args(ws["model"])], "batch size"),
    "threads_zero": (lambda ws, t: ["-i", ws["map"], "--threads", "0", *NOISE, *_model_args(ws["model"])], "threads"),
    "mrc_2d_image": (lambda ws, t: ["-i", _raw_mrc(t, np.ones((8, 9), np.float32)), *_model_args(ws["model"])],
                     "2D image"),
    "mrc_complex_mode": (lambda ws, t: ["-i", _raw_mrc(t, np.ones((4, 4, 4), np.complex64)), *_model_args(ws["model"])],
                         "complex"),
    "mrc_header_lies_about_size": (lambda ws, t: ["-i", _header_lies(t), *_model_args(ws["model"])], "truncated"),
    "json_cube_4096": (lambda ws, t: ["-i", ws["map"], *NOISE, *_model_args(
        _tampered_json(ws, t, lambda m: m.update(cube_size=4096)))], "cube size"),
    "json_cube_text": (lambda ws, t: ["-i", ws["map"], *NOISE, *_model_args(
        _tampered_json(ws, t, lambda m: m.update(cube_size="abc")))], "cube size"),
    "json_voxel_1e-6": (lambda ws, t: ["-i", ws["map"], *NOISE, *_model_args(
        _tampered_json(ws, t, lambda m: m.update(voxel_size=1e-6)))], "voxel size"),
    "json_stride_zero": (lambda ws, t: ["-i", ws["map"], *NOISE, *_model_args(
        _tampered_json(ws, t, lambda m: m.update(stride=0)))], "stride"),
    "json_huge_channels": (lambda ws, t: ["-i", ws["map"], *NOISE, *_model_args(
        _tampered_json(ws, t, lambda m: m["architecture"].update(width=4096.0)))], "parameters"),
    "json_channels_text": (lambda ws, t: ["-i", ws["map"], *NOISE, *_model_args(
        _tampered_json(ws, t, lambda m: m["architecture"].update(channels="abc")))], "invalid"),
    "json_not_an_object": (lambda ws, t: ["-i", ws["map"], *NOISE, *_model_args(
        _tampered_json(ws, t, lambda m: [1, 2]))], "JSON object"),
    "json_trained_text": (lambda ws, t: ["-i", ws["map"], *NOISE, *_model_args(
        _tampered_json(ws, t, lambda m: m.update(trained="yes")))], "trained"),
    "safetensors_huge_header": (lambda ws, t: ["-i", ws["map"], *NOISE, *_model_args(
        _tampered_weights(ws, t, struct.pack("<Q", 1 << 60) + b"{}"))], "corrupt"),
    "safetensors_other_tensors": (lambda ws, t: ["-i", ws["map"], *NOISE, *_model_args(
        _tampered_weights(ws, t, _other_tensors()))], "do not match"),
    "hd5_cube_4096": (lambda ws, t: ["-i", ws["map"], *NOISE, *_model_args(
        _hd5(t, _set_param("NNET_INPUT_SIZE", np.array([4096]))))], "cube size"),
    "hd5_cube_text": (lambda ws, t: ["-i", ws["map"], *NOISE, *_model_args(
        _hd5(t, _set_param("NNET_INPUT_SIZE", np.array([b"abc"]))))], "whole number"),
    "hd5_huge_weights": (lambda ws, t: ["-i", ws["map"], *NOISE, *_model_args(_hd5(t, _huge_weight))], "weights"),
    "hd5_unknown_normalisation": (lambda ws, t: ["-i", ws["map"], *NOISE, *_model_args(
        _hd5(t, lambda f: f["code/normFun"].__setitem__(0, "def mine(x):\n  return x\n")))], "unknown"),
}


@pytest.mark.parametrize("name", list(ENHANCE_CASES))
def test_enhance_fault(ws, tmp_path, capsys, name):
    build, expected = ENHANCE_CASES[name]
    scratch, out = tmp_path / "scratch", tmp_path / "out"
    scratch.mkdir()
    out.mkdir()
    (out / "keep.mrc").write_bytes(b"an earlier result")
    args = build(ws, scratch)
    models_before = snapshot(registry.models_dir())
    before = snapshot(out, ws["folder"])
    status = call(*args, "-o", out / "enhanced.mrc")
    line = one_error_line(status, capsys.readouterr().err, expected)
    assert "fp32" not in line and "normalization=" not in line  # wrong advice seen in issue 13
    status = call(*args, "-o", out / "keep.mrc", "--force")
    one_error_line(status, capsys.readouterr().err, expected)
    assert snapshot(out, ws["folder"]) == before
    assert snapshot(registry.models_dir()) == models_before or "hd5" in name  # a conversion cache may fill


def _evaluate_full_disk(ws, tmp):
    return ["evaluate", "--map", ws["map"], "-o", tmp / "report", "-q"]


# name: (arguments, expected text, environment changes, hook run around the call)
OTHER_CASES = {
    "output_in_unwritable_folder": (lambda ws, t: ["-i", ws["map"], "-o", UNWRITABLE / "enhanced.mrc", *NOISE,
                                                   *_model_args(ws["model"])], "cannot write into"),
    "output_wrong_suffix": (lambda ws, t: ["-i", ws["map"], "-o", t / "enhanced.txt", *_model_args(ws["model"])],
                            "must end in"),
    "output_is_a_folder": (lambda ws, t: ["-i", ws["map"], "-o", _folder(t / "dir.mrc"), *_model_args(ws["model"])],
                           "is a folder"),
    "evaluate_unwritable_folder": (lambda ws, t: ["evaluate", "--map", ws["map"], "-o", UNWRITABLE / "report"],
                                   "cannot write into"),
    "evaluate_identical_half_maps": (lambda ws, t: ["evaluate", "--halfMaps", ws["map"], _copy(ws, t),
                                                    "-o", t / "report"], "identical"),
    "download_malformed_url": (lambda ws, t: ["models", "download", t / "dest", "--url", "not a url"], "http"),
    "download_ftp_url": (lambda ws, t: ["models", "download", t / "dest", "--url", "ftp://127.0.0.1/x.zip"], "http"),
    "import_hd5_cube_4096": (lambda ws, t: ["models", "import", _hd5(t, _set_param("NNET_INPUT_SIZE",
                                                                                   np.array([4096])))], "cube size"),
    "import_not_hdf5": (lambda ws, t: ["models", "import", _not_hdf5(t)], "not an HDF5 file"),
}


def _folder(path: Path) -> Path:
    path.mkdir()
    return path


def _not_hdf5(tmp) -> Path:
    path = tmp / "deepEMhancer_fake.hd5"
    path.write_bytes(b"PK\x03\x04" * 100)
    return path


@pytest.mark.parametrize("name", list(OTHER_CASES))
def test_other_command_fault(ws, tmp_path, capsys, name):
    build, expected = OTHER_CASES[name]
    args = build(ws, tmp_path)
    before = snapshot(tmp_path, ws["folder"], registry.models_dir())
    status = call(*args)
    one_error_line(status, capsys.readouterr().err, expected)
    assert snapshot(tmp_path, ws["folder"], registry.models_dir()) == before
    assert not list(UNWRITABLE.glob("*enhanced*")) and not (UNWRITABLE / "report").exists()


def test_read_only_models_folder_is_named_not_the_file(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("DEEPEMHANCER_MODELS_DIR", str(UNWRITABLE / "models"))
    hd5 = tmp_path / "deepEMhancer_tightTarget.hd5"
    write_official_hd5(hd5)
    line = one_error_line(call("models", "import", hd5), capsys.readouterr().err, "cannot write models into")
    assert str(hd5) not in line and "DEEPEMHANCER_MODELS_DIR" in line


def test_full_disk_while_writing_the_output(ws, tmp_path, capsys, monkeypatch):
    """The space check before the work refuses; a disk that fills anyway is one line and no file."""
    import resource

    out = tmp_path / "enhanced.mrc"
    monkeypatch.setattr(mapio.shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10**9, 10**9, 100))
    one_error_line(call("-i", ws["map"], "-o", out, *NOISE, *_model_args(ws["model"])), capsys.readouterr().err,
                   "MiB free")
    monkeypatch.undo()
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, hard))  # writes past 4 kB fail as on a full disk
    try:
        status = call("-i", ws["map"], "-o", out, *NOISE, *_model_args(ws["model"]))
        eval_status = call(*_evaluate_full_disk(ws, tmp_path))
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    lines = capsys.readouterr().err.splitlines()
    assert status == eval_status == 1 and len(lines) == 2, lines
    assert all(line.startswith("deepemhancer: error: ") and "disk space" in line for line in lines), lines
    assert list(tmp_path.iterdir()) == []


# --- the Python API ------------------------------------------------------------------------------


def _map() -> Map:
    data = density(SHAPE)
    return Map(data, Geometry.for_grid(data.shape, 1.0))


API_CASES = {
    "blending_avg": (lambda ws: EnhanceOptions(blending="avg"), "blending 'avg' is unknown"),
    "stride_text": (lambda ws: EnhanceOptions(stride="8"), "stride"),
    "stride_true": (lambda ws: EnhanceOptions(stride=True), "stride"),
    "batch_size_half": (lambda ws: EnhanceOptions(batch_size=0.5), "batch size"),
    "threads_negative": (lambda ws: EnhanceOptions(threads=-1), "threads"),
    "noise_stats_one_number": (lambda ws: EnhanceOptions(noise_stats=(0.0,)), "two finite numbers"),
    "noise_stats_text": (lambda ws: EnhanceOptions(noise_stats="0 1"), "two finite numbers"),
    "noise_stats_negative_std": (lambda ws: EnhanceOptions(noise_stats=(0, -1)), "positive"),
    "cleaning_text": (lambda ws: EnhanceOptions(cleaning_strength="x"), "cleaning strength"),
    "gpu_ids_int": (lambda ws: EnhanceOptions(gpu_ids=0), "gpu_ids"),
    "precision_fp64": (lambda ws: EnhanceOptions(precision="fp64"), "precision"),
    "legacy_text": (lambda ws: EnhanceOptions(legacy="yes"), "legacy"),
    "mask_array": (lambda ws: enhance(_map(), ws["model"], mask=np.ones(SHAPE, np.float32)), "Map"),
    "mask_and_noise": (lambda ws: enhance(_map(), ws["model"], EnhanceOptions(noise_stats=(0, 1)), mask=_map()),
                       "only one"),
    "enhance_a_path": (lambda ws: enhance(str(ws["map"]), ws["model"]), "read_map"),
    "enhance_three_maps": (lambda ws: enhance([_map()] * 3, ws["model"]), "not 3"),
    "enhance_map_and_text": (lambda ws: enhance((_map(), "half2.mrc"), ws["model"]), "two Maps"),
    "enhance_an_array": (lambda ws: enhance(_map().data, ws["model"]), "ndarray"),
    "enhance_model_number": (lambda ws: enhance(_map(), 42), "model must be"),
    "enhance_options_dict": (lambda ws: enhance(_map(), ws["model"], {"stride": 8}), "EnhanceOptions"),
    "enhance_identical_halves": (lambda ws: enhance((_map(), _map()), ws["model"]), "identical"),
    "enhance_stride_beyond_cube": (lambda ws: enhance(_map(), ws["model"], EnhanceOptions(stride=64)), "cube size"),
    "read_map_number": (lambda ws: read_map(42), "path"),
    "write_map_array": (lambda ws: write_map(_map().data, ws["folder"] / "api_out.mrc"), "Map"),
    "write_map_exists": (lambda ws: write_map(_map(), ws["map"]), "exists"),
    "load_model_number": (lambda ws: load_model(42), "path"),
    "voxel_size_text": (lambda ws: _map().with_voxel_size("1.0"), "voxel size"),
    "download_bad_url": (lambda ws: download.download_file("zenodo.org/x.zip", ws["folder"] / "x.zip"), "http"),
}


@pytest.mark.parametrize("name", list(API_CASES))
def test_api_fault(ws, name):
    call_, expected = API_CASES[name]
    before = snapshot(ws["folder"])
    with pytest.raises(DeepEMhancerError) as caught:
        call_(ws)
    message = str(caught.value)
    assert "\n" not in message and expected.lower() in message.lower(), message
    assert snapshot(ws["folder"]) == before


def test_running_out_of_memory_is_the_librarys_error(ws, monkeypatch):
    """A MemoryError deep inside (the blending accumulators of a box too big for the machine)."""
    from deepemhancer import tiling
    from deepemhancer.errors import ResourceError

    def no_memory(*args, **kwargs):
        raise MemoryError

    monkeypatch.setattr(tiling, "Blender", no_memory)
    with pytest.raises(ResourceError, match="ran out of memory") as caught:
        enhance(_map(), ws["model"], EnhanceOptions(noise_stats=(0, 0.05), gpu_ids="-1", progress=False))
    assert "\n" not in str(caught.value)


# --- the download --------------------------------------------------------------------------------


class Server:
    """A local server whose answer the test chooses: a body, a stall, a lie about the size, an error."""

    def __init__(self, payload: bytes = b"", mode: str = "body"):
        self.payload, self.mode, self.requests = payload, mode, 0

    def handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            timeout = 5

            def do_GET(self):
                server.requests += 1
                if server.mode == "status500":
                    self.send_error(500)
                    return
                self.send_response(200)
                extra = 1000 if server.mode == "lie" else 0
                self.send_header("Content-Length", str(len(server.payload) + extra))
                self.end_headers()
                if server.mode == "stall":
                    time.sleep(3)
                self.wfile.write(server.payload)

            def log_message(self, *args):
                pass

        return Handler


def serving(server: Server):
    return serving_with(server.handler(), download.ZIP_NAME)


def _zip_with_damaged_hd5(tmp) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("production_checkpoints/deepEMhancer_tightTarget.hd5", b"\x89HDF\r\n\x1a\n" + b"0" * 500)
    return buffer.getvalue()


# name: (payload given a scratch folder, server mode, expected text, pinned sha256 or None, disk full)
DOWNLOAD_CASES = {
    "garbage_not_a_zip": (lambda t: b"<html>gateway error</html>" * 20, "body", "not a valid zip"),
    "server_error": (lambda t: b"", "status500", "HTTP 500"),
    "size_lie": (lambda t: b"x" * 5000, "lie", "download of"),
    "damaged_hd5_in_zip": (_zip_with_damaged_hd5, "body", "damaged"),
    "checksum_mismatch": (lambda t: official_zip(t, names=("tightTarget",)), "body", "sha256 differs"),
    "disk_full": (lambda t: b"z" * 100_000, "body", "MiB free"),
}


@pytest.mark.parametrize("name", list(DOWNLOAD_CASES))
def test_download_fault(tmp_path, capsys, monkeypatch, name):
    make, mode, expected = DOWNLOAD_CASES[name]
    scratch, dest = tmp_path / "scratch", tmp_path / "dest"
    scratch.mkdir()
    payload = make(scratch)
    if name == "checksum_mismatch":
        monkeypatch.setitem(download.OFFICIAL_SHA256, download.ZIP_NAME, "0" * 64)
    if name == "disk_full":
        monkeypatch.setattr(download.shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10**9, 10**9, 100))
    with serving(Server(payload, mode)) as url:
        one_error_line(call("models", "download", dest, "--url", url), capsys.readouterr().err, expected)
    left = sorted(p.name for p in dest.rglob("*") if p.is_file())
    # Only an interrupted transfer keeps its .part, on purpose: the next run resumes it.
    assert left == ([f"{download.ZIP_NAME}.part"] if name == "size_lie" else []), left
    assert snapshot(registry.models_dir()) == {}


def test_stalled_server_times_out_with_one_line(tmp_path):
    with serving(Server(b"late", "stall")) as url:
        with pytest.raises(DeepEMhancerError, match="timed out|failed") as caught:
            download.download_file(url, tmp_path / "x.zip", progress=False, timeout=0.5)
    assert "\n" not in str(caught.value)
    assert not (tmp_path / "x.zip").exists()


def test_pinned_checksums_accept_the_right_files_and_recover_from_damage(tmp_path, monkeypatch, capsys):
    """With the zip's and each .hd5's sha256 pinned, a good download installs; a damaged .hd5 left
    in the folder is replaced by the next download instead of failing forever."""
    payload = official_zip(tmp_path, names=("tightTarget",))
    hd5 = tmp_path / "deepEMhancer_tightTarget.hd5"  # official_zip left it here
    monkeypatch.setitem(download.OFFICIAL_SHA256, download.ZIP_NAME, hashlib.sha256(payload).hexdigest())
    monkeypatch.setitem(download.OFFICIAL_SHA256, hd5.name, file_sha256(hd5))
    dest = tmp_path / "dest"
    server = Server(payload)
    with serving(server) as url:
        assert call("models", "download", dest, "--url", url) == 0
        installed = dest / "production_checkpoints" / hd5.name
        installed.write_bytes(installed.read_bytes()[:-10] + b"0123456789")  # damaged on disk later
        assert call("models", "download", dest, "--url", url) == 0
    assert server.requests == 2 and file_sha256(installed) == file_sha256(hd5)
    assert "damaged" in capsys.readouterr().err


def test_damaged_official_default_gives_advice_and_the_run_goes_on(ws, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("HOME", str(tmp_path))
    damaged = registry.original_models_dir() / registry.SUBFOLDER / "deepEMhancer_tightTarget.hd5"
    damaged.parent.mkdir(parents=True)
    damaged.write_bytes(b"\x89HDF\r\n\x1a\n" + b"0" * 500)
    with caplog.at_level("WARNING", logger="deepemhancer"):
        chosen = registry.resolve_model()
    assert chosen.parent == registry.bundled_dir()
    advice = [r.getMessage() for r in caplog.records if "models download" in r.getMessage()]
    assert len(advice) == 1 and "\n" not in advice[0] and str(damaged) in advice[0]
    with pytest.raises(ModelError, match="download"):
        registry.resolve_model("tightTarget")  # asked for by name: an error, not a substitute


# --- files that carry code: nothing in them runs ------------------------------------------------


def _marker_code(marker: Path) -> str:
    return f"__import__('pathlib').Path({str(marker)!r}).write_text('ran')"


def test_malicious_model_json_runs_nothing(ws, tmp_path):
    marker = tmp_path / "ran"
    code = _marker_code(marker)
    json_path = _tampered_json(ws, tmp_path, lambda m: m.update(
        normalization=code, description=code, source={"file": code, "norm_function": code}))
    with pytest.raises(ModelError, match="normalization"):
        load_network(json_path)
    # A Keras graph with a Lambda layer carrying marshalled bytecode and a Python expression.
    lambda_layer = {"class_name": "Lambda", "name": "evil", "config": {"name": "evil", "function": [code, None, None],
                                                                       "function_type": "lambda"},
                    "inbound_nodes": [[["input_1", 0, 0, {}]]]}
    graph = {"class_name": "Model", "config": {"name": "m", "layers": [
        {"class_name": "InputLayer", "name": "input_1", "config": {"batch_input_shape": [None, 16, 16, 16, 1]},
         "inbound_nodes": []}, lambda_layer], "input_layers": [["input_1", 0, 0]], "output_layers": [["evil", 0, 0]]}}
    keras_json = _tampered_json(ws, tmp_path, lambda m: m.update(
        architecture={"type": "keras_graph", "model_config": graph}))
    with pytest.raises(ModelError):
        load_network(keras_json)
    assert not marker.exists()


def test_malicious_safetensors_runs_nothing(ws, tmp_path):
    """Code in the safetensors metadata, and a pickle where the tensors should be, stay inert."""
    import pickle

    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (eval, (_marker_code(marker),))

    path = tmp_path / "m.json"
    shutil.copy(ws["model"], path)
    network, _ = load_network(ws["model"])
    save_file(network.state_dict(), str(weights_path(path)), metadata={"code": _marker_code(marker),
                                                                       "pickle": pickle.dumps(Payload()).hex()})
    load_network(path)  # metadata is never interpreted
    weights_path(path).write_bytes(pickle.dumps(Payload()))
    with pytest.raises(ModelError, match="corrupt"):
        load_network(path)
    assert not marker.exists()


def test_malicious_hd5_runs_nothing(tmp_path):
    """Extends test_keras_import::test_embedded_code_is_never_executed: a Lambda layer with
    marshalled bytecode in the graph and code in every text field is refused, and never run."""
    import marshal

    marker = tmp_path / "ran"
    code = _marker_code(marker)
    path = tmp_path / "deepEMhancer_evil.hd5"
    written = write_official_hd5(path, norm_source=f"{code}\ndef inputNormalization_3(x):\n  return x\n"
                                                   "normFun = inputNormalization_3\n")
    config = written["model_config"]
    bytecode = marshal.dumps(compile(code, "<evil>", "exec")).hex()
    config["config"]["layers"].append({"class_name": "Lambda", "name": "evil", "config": {
        "name": "evil", "function": [bytecode, None, None], "function_type": "lambda"},
        "inbound_nodes": [[[config["config"]["layers"][-1]["name"], 0, 0, {}]]]})
    config["config"]["output_layers"] = [["evil", 0, 0]]
    with h5py.File(path, "r+") as f:
        f.attrs["model_config"] = np.bytes_(json.dumps(config))
        del f["code/custom_objects"]
        f.create_dataset("code/custom_objects", data=[code], dtype=h5py.string_dtype())
    with pytest.raises(ModelError):
        registry.import_models(path)
    assert not marker.exists()


def test_malicious_checkpoint_runs_nothing(tmp_path):
    """Extends test_halves_model::test_training_a_residual_half_map_model_and_resuming_without_pickle
    (a pickled checkpoint.pt is never unpickled): code in a safetensors checkpoint's state stays text."""
    import pickle

    from deepemhancer.nn import UNet
    from deepemhancer.train import loop

    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (eval, (_marker_code(marker),))

    net = UNet(1.0, 2, [4, 8], 3)
    path = tmp_path / loop.CHECKPOINT
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path),
              metadata={"state": json.dumps({"step": _marker_code(marker), "pickle": pickle.dumps(Payload()).hex()})})
    optimizer = torch.optim.AdamW(net.parameters())
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    with pytest.raises(Exception) as caught:
        loop.load_checkpoint(path, net, optimizer, scheduler, torch.device("cpu"))
    assert isinstance(caught.value, DeepEMhancerError), repr(caught.value)
    assert not marker.exists()


def test_sources_never_execute_what_they_read():
    """No pickle, torch.load without weights_only, eval or exec anywhere in the package."""
    root = Path(deepemhancer.__file__).parent
    forbidden = re.compile(r"\bimport pickle\b|\bpickle\.|\bdill\b|weights_only\s*=\s*False|(?<![\w.])eval\(|"
                           r"(?<![\w.])exec\(|\bmarshal\.|torch\.load\((?![^)]*weights_only\s*=\s*True)")
    offenders = [f"{path.relative_to(root)}:{number}: {line.strip()}"
                 for path in sorted(root.rglob("*.py"))
                 for number, line in enumerate(path.read_text().splitlines(), 1)
                 if forbidden.search(line) and not line.lstrip().startswith("#")]
    assert offenders == []
    assert forbidden.search("state = torch.load(path, weights_only=False)")  # the scan does see them
    assert forbidden.search("x = eval(text)") and not forbidden.search("network.eval()")


# --- signals and leftovers -----------------------------------------------------------------------


def test_sigterm_while_writing_leaves_nothing(ws, tmp_path, capsys, monkeypatch):
    """A real SIGTERM arriving in the middle of writing the output: one line, exit 143, no files."""
    real_fsync = os.fsync

    def terminated_fsync(fd):
        os.kill(os.getpid(), signal.SIGTERM)
        real_fsync(fd)

    monkeypatch.setattr(mapio.os, "fsync", terminated_fsync)
    previous = signal.getsignal(signal.SIGTERM)
    status = call("-i", ws["map"], "-o", tmp_path / "enhanced.mrc", *NOISE, *_model_args(ws["model"]))
    assert status == 128 + signal.SIGTERM
    assert capsys.readouterr().err == "deepemhancer: terminated; no output was written\n"
    assert list(tmp_path.iterdir()) == []
    assert signal.getsignal(signal.SIGTERM) == previous  # in-process callers get their handler back


def test_sigterm_mid_run_in_a_subprocess(ws, tmp_path):
    """The command as a shell runs it, terminated while it predicts."""
    big = save(tmp_path / "big.mrc", density((64, 64, 64)))
    out = tmp_path / "out"
    out.mkdir()
    process = subprocess.Popen([sys.executable, "-m", "deepemhancer", "-i", big, "-o", out / "e.mrc", *NOISE,
                                "--stride", "1", "--deepLearningModelPath", ws["model"], "-g", "-1"],
                               stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    for line in process.stderr:
        if "cubes of" in line:
            break
    process.send_signal(signal.SIGTERM)
    rest = process.stderr.read()
    assert process.wait(timeout=60) == 128 + signal.SIGTERM
    assert rest.splitlines()[-1] == "deepemhancer: terminated; no output was written", rest
    assert "Traceback" not in rest and list(out.iterdir()) == []


def test_stale_temporary_files_are_swept(ws, tmp_path, capsys):
    out = tmp_path / "enhanced.mrc"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".{int(dead.stdout)}-0123abcd.enhanced.mrc"
    nested = tmp_path / f".{int(dead.stdout)}-0123abcd..{int(dead.stdout)}-4567abcd.enhanced.mrc"
    live = tmp_path / f".{os.getpid()}-89abcdef.enhanced.mrc"  # a writer still at work
    other = tmp_path / ".12-0123abcd.other.mrc"  # another output's: not ours to judge here
    for path in (stale, nested, live, other):
        path.write_bytes(b"half written")
    assert call("-i", ws["map"], "-o", out, *NOISE, *_model_args(ws["model"])) == 0, capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([out.name, live.name, other.name])


def test_a_forked_worker_ends_quietly_on_sigterm():
    """Worker processes forked while the CLI's SIGTERM handler is installed (the training pool's) must
    simply end when their pool stops them, not raise the interrupted-run exception: raised inside the
    pool's queue lock it left the other workers, and the run, waiting forever."""
    import time

    from deepemhancer import cli

    with cli._sigterm_as_interrupt():
        child = os.fork()
        if child == 0:  # pragma: no cover - the child only sleeps until it is stopped
            time.sleep(30)
            os._exit(0)
        time.sleep(0.2)
        os.kill(child, signal.SIGTERM)
        _, status = os.waitpid(child, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 128 + signal.SIGTERM
