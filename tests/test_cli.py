"""The command line end to end, in-process (deepemhancer.cli.main), on small synthetic maps and tiny
random networks; every bad input gives one error line, exit status != 0 and no output."""
from __future__ import annotations

import contextlib
import dataclasses
import gzip
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from deepemhancer.cli import main
from deepemhancer.mapio import Geometry, Map, read_map, voxel_centre_xyz, write_map
from deepemhancer.models.store import save_model, weights_path
from deepemhancer.nn import UNet
from test_download import Served, official_zip, serving

SHAPE = (40, 44, 36)  # sections, rows, columns
NOISE = ("0", "0.05")  # --noiseStats for the synthetic maps: noise mean 0, std 0.05


# --- inputs ------------------------------------------------------------------------------------


def placed_geometry(shape, voxel_size=1.0, origin=(12.5, -7.25, 3.0), nstart=(-5, 3, 7),
                    axis_order=(3, 2, 1)) -> Geometry:
    """A geometry with every placement field set: origin, nstart and a non-trivial axis order."""
    sections, rows, columns = shape
    counts_crs = (columns, rows, sections)
    sampling = tuple(counts_crs[axis_order.index(axis)] for axis in (1, 2, 3))
    return Geometry(voxel_size=(voxel_size,) * 3, origin=origin, nstart=nstart, axis_order=axis_order,
                    sampling=sampling, cell_lengths=tuple(voxel_size * m for m in sampling))


def density(shape=SHAPE, seed=0) -> np.ndarray:
    """Noise (mean 0, std 0.05) everywhere and a cluster of smooth blobs around the centre, float32."""
    rng = np.random.default_rng(seed)
    idx = np.indices(shape).astype(np.float64)
    x = rng.normal(0.0, 0.05, shape)
    for _ in range(8):
        centre = [n / 2 + rng.uniform(-0.12, 0.12) * n for n in shape]
        x += rng.uniform(0.5, 1.0) * np.exp(-sum((g - c) ** 2 for g, c in zip(idx, centre)) / (2 * 2.5**2))
    return x.astype(np.float32)


def save(path: Path, data: np.ndarray, geometry: Geometry | None = None) -> Path:
    geometry = geometry or placed_geometry(data.shape)
    return write_map(Map(np.asarray(data, np.float32), geometry), path)


def tiny_model(folder: Path, name: str, normalization: str = "noise", groups: int = 1, seed: int = 0) -> Path:
    """A random U-Net of width 1/16 saved as a model: 16^3 cubes at stride 8 keep runs fast."""
    torch.manual_seed(seed)
    network = UNet(width=0.0625, groups=groups)
    metadata = {"name": name, "description": "tiny random network for tests", "architecture": network.architecture(),
                "normalization": normalization, "cube_size": 16, "stride": 8, "voxel_size": 1.0, "trained": True}
    return save_model(folder / f"{name}.json", metadata, network.state_dict())


# --- running the command line ------------------------------------------------------------------


@contextlib.contextmanager
def global_state_kept():
    """main() configures the package logger and --threads sets torch's thread count (and may set
    OMP_NUM_THREADS): put all of it back so later tests see what they expect."""
    logger = logging.getLogger("deepemhancer")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    threads, omp = torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS")
    try:
        yield
    finally:
        logger.handlers[:] = saved[0]
        logger.setLevel(saved[1])
        logger.propagate = saved[2]
        torch.set_num_threads(threads)
        if omp is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = omp


@pytest.fixture(autouse=True)
def _restore_global_state():
    with global_state_kept():
        yield


def call(*args: str) -> int:
    """main() as the shell would run it: argparse exits become the exit status."""
    try:
        return main([str(a) for a in args])
    except SystemExit as exit_:
        return int(exit_.code or 0)


@pytest.fixture
def run(capsys):
    """Run the command line; return (status, stdout, stderr)."""
    def _run(*args):
        status = call(*args)
        captured = capsys.readouterr()
        return status, captured.out, captured.err
    return _run


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    """Shared inputs: a placed map, tiny noise and masked models, and the baseline output."""
    folder = tmp_path_factory.mktemp("cli")
    space = {"map": save(folder / "map.mrc", density()),
             # Seed and groups chosen so that this random network's output has a solvent darker than
             # its foreground, which small-blob removal needs (else it leaves the map as it is).
             "model": tiny_model(folder, "tiny", groups=2, seed=0),
             "masked_model": tiny_model(folder, "tinymasked", "masked", groups=1, seed=1)}
    baseline = folder / "baseline.mrc"
    with global_state_kept(), pytest.MonkeyPatch.context() as patch:
        patch.setenv("DEEPEMHANCER_MODELS_DIR", str(folder / "models"))  # never the user's
        # every cube predicted: the tests below check the pipeline's arithmetic cube by cube
        assert call("-i", space["map"], "-o", baseline, "--deepLearningModelPath", space["model"], "-g", "-1",
                    "-q", "--noiseStats", *NOISE, "--predictSolvent") == 0
    space["input"], space["baseline"] = read_map(space["map"]), read_map(baseline)
    return space


def enhance_args(ws, source, out, *extra):
    return ["-i", source, "-o", out, "--deepLearningModelPath", ws["model"], "-g", "-1", "-q", "--predictSolvent",
            *extra]


# --- what works --------------------------------------------------------------------------------


def test_single_map_with_defaults_keeps_geometry_and_placement(ws, tmp_path, run):
    out = tmp_path / "enhanced.mrc"
    # No -g (the original's default 0: CPU fallback where there is no GPU), automatic noise estimate.
    status, _, err = run("-i", ws["map"], "-o", out, "--deepLearningModelPath", ws["model"], "-q")
    assert status == 0, err
    result, source = read_map(out), ws["input"]
    assert result.geometry == source.geometry
    assert result.data.shape == source.data.shape
    corners = np.array([[0, 0, 0], [39, 43, 35], [5, 30, 17]])
    np.testing.assert_array_equal(voxel_centre_xyz(result, corners), voxel_centre_xyz(source, corners))
    assert np.all(np.isfinite(result.data)) and np.std(result.data) > 0
    baseline = ws["baseline"].data  # the same map with --noiseStats 0 0.05, the true noise statistics
    # the default leaves out the solvent far from the molecule (0 there, fading over an edge)
    from deepemhancer.pipeline import solvent_free_region

    weight = solvent_free_region(source.data, source.isotropic_voxel_size)
    inner = weight == 1.0
    assert inner.mean() > 0.3 and not result.data[weight == 0].any()
    assert np.corrcoef(result.data[inner], baseline[inner])[0, 1] > 0.99


def test_baseline_is_the_network_applied_to_the_normalised_map(ws):
    """Where one cube alone covers a voxel (the first 8 along each axis, stride 8), the output is that
    cube's prediction on (x - 0) / (0.05 * 10), with no resampling at 1 Å."""
    from deepemhancer.models.store import load_network

    network, _ = load_network(ws["model"])
    cube = ws["input"].data[:16, :16, :16] / np.float32(0.5)
    with torch.no_grad():
        expected = network(torch.from_numpy(np.ascontiguousarray(cube))[None, None])[0, 0].numpy()
    np.testing.assert_allclose(ws["baseline"].data[:8, :8, :8], expected[:8, :8, :8], rtol=1e-5, atol=1e-5)


def test_two_half_maps_are_averaged(ws, tmp_path, run):
    rng = np.random.default_rng(5)
    x = ws["input"].data
    difference = rng.normal(0.0, 0.05, x.shape).astype(np.float32)
    half1, half2 = save(tmp_path / "h1.mrc", x + difference), save(tmp_path / "h2.mrc", x - difference)
    mean = save(tmp_path / "mean.mrc", 0.5 * ((x + difference) + (x - difference)))
    assert run(*enhance_args(ws, half1, tmp_path / "halves.mrc", "-i2", half2, "--noiseStats", *NOISE))[0] == 0
    assert run(*enhance_args(ws, mean, tmp_path / "mean_out.mrc", "--noiseStats", *NOISE))[0] == 0
    halves = read_map(tmp_path / "halves.mrc")
    np.testing.assert_allclose(halves.data, read_map(tmp_path / "mean_out.mrc").data, rtol=0, atol=1e-6)
    assert halves.geometry == ws["input"].geometry


def test_noise_stats_with_a_negative_mean(ws, tmp_path, run):
    """Map x with noise mean -0.5 normalises exactly like map x + 0.5 with noise mean 0."""
    x = ws["input"].data
    shifted = save(tmp_path / "shifted.mrc", x + np.float32(0.5))
    status, _, err = run(*enhance_args(ws, ws["map"], tmp_path / "neg.mrc", "--noiseStats", "-0.5", "0.05"))
    assert status == 0, err
    assert run(*enhance_args(ws, shifted, tmp_path / "zero.mrc", "--noiseStats", *NOISE))[0] == 0
    negative = read_map(tmp_path / "neg.mrc").data
    np.testing.assert_allclose(negative, read_map(tmp_path / "zero.mrc").data, rtol=0, atol=1e-6)
    assert not np.allclose(negative, ws["baseline"].data, atol=1e-3)


def test_binary_mask_with_the_masked_model(ws, tmp_path, run):
    idx = np.indices(SHAPE)
    ball = sum((g - c) ** 2 for g, c in zip(idx, (20, 22, 18))) <= 9  # radius 3: indices 17..23
    mask = save(tmp_path / "mask.mrc", ball.astype(np.float32))
    out = tmp_path / "masked.mrc"
    status, _, err = run("-i", ws["map"], "-o", out, "-m", mask, "--deepLearningModelPath", ws["masked_model"],
                         "-g", "-1", "-q")
    assert status == 0, err
    result = read_map(out)
    assert result.geometry == ws["input"].geometry
    # Only cubes touching the mask run (origins 8 and 16 on every axis): the rest stays 0.
    assert np.all(result.data[:8] == 0) and np.all(result.data[:, :, 32:] == 0)
    assert np.std(result.data[ball]) > 0


def test_legacy_mode_halves_what_one_cube_alone_covers(ws, tmp_path, run):
    out = tmp_path / "legacy.mrc"
    status, _, err = run(*enhance_args(ws, ws["map"], out, "--legacy", "--noiseStats", *NOISE))
    assert status == 0, err
    legacy, baseline = read_map(out), ws["baseline"].data
    assert legacy.geometry == ws["input"].geometry  # placement is kept in legacy mode too
    corner = (slice(0, 8),) * 3  # sum / (1 + count) with count 1, against the true mean
    np.testing.assert_allclose(2 * legacy.data[corner], baseline[corner], rtol=1e-4, atol=1e-4 * np.ptp(baseline))
    assert np.max(np.abs(legacy.data - baseline)) > 0.05 * np.ptp(baseline)


def test_count_blending(ws, tmp_path, run):
    out = tmp_path / "count.mrc"
    assert run(*enhance_args(ws, ws["map"], out, "--blending", "count", "--noiseStats", *NOISE))[0] == 0
    count, baseline = read_map(out).data, ws["baseline"].data  # the baseline blends with the Gaussian window
    corner = (slice(0, 8),) * 3  # one cube: any weighting gives its prediction back
    np.testing.assert_allclose(count[corner], baseline[corner], rtol=1e-5, atol=1e-5)
    assert np.max(np.abs(count - baseline)) > 0.01 * np.ptp(baseline)


def test_cleaning_sets_small_components_to_the_minimum(ws, tmp_path, run):
    out = tmp_path / "clean.mrc"
    status, _, err = run(*enhance_args(ws, ws["map"], out, "--cleaningStrengh", "0.2", "--noiseStats", *NOISE))
    assert status == 0, err
    cleaned, baseline = read_map(out).data, ws["baseline"].data
    at_minimum = cleaned == cleaned.min()
    assert at_minimum.mean() > 0.05 and (baseline == baseline.min()).mean() < 1e-3
    assert cleaned.min() == baseline.min()
    np.testing.assert_array_equal(cleaned[~at_minimum], baseline[~at_minimum])


@pytest.mark.parametrize("extra", [("-b", "2"), ("--threads", "1")], ids=["batch2", "threads1"])
def test_batch_size_and_threads_do_not_change_the_result(ws, tmp_path, run, extra):
    out = tmp_path / "out.mrc"
    assert run(*enhance_args(ws, ws["map"], out, *extra, "--noiseStats", *NOISE))[0] == 0
    np.testing.assert_allclose(read_map(out).data, ws["baseline"].data, rtol=1e-5, atol=1e-5)


def test_bf16_is_close_to_fp32(ws, tmp_path, run):
    out = tmp_path / "bf16.mrc"
    assert run(*enhance_args(ws, ws["map"], out, "--precision", "bf16", "--noiseStats", *NOISE))[0] == 0
    half, full = read_map(out).data, ws["baseline"].data
    assert not np.array_equal(half, full)
    assert np.corrcoef(half.ravel(), full.ravel())[0, 1] > 0.99


def test_sampling_rate_override(ws, tmp_path, run):
    out = tmp_path / "resampled.mrc"
    status, _, err = run(*enhance_args(ws, ws["map"], out, "-s", "1.25", "--noiseStats", *NOISE))
    assert status == 0, err
    result, source = read_map(out), ws["input"].geometry
    assert result.geometry.voxel_size == (1.25, 1.25, 1.25)
    assert result.data.shape == SHAPE
    for field in ("origin", "nstart", "axis_order", "sampling", "cell_angles"):
        assert getattr(result.geometry, field) == getattr(source, field)
    assert not np.allclose(result.data, ws["baseline"].data, atol=1e-3)  # the 1 Å grid differs now


def test_gzipped_output(ws, tmp_path, run):
    out = tmp_path / "enhanced.mrc.gz"
    assert run(*enhance_args(ws, ws["map"], out, "--noiseStats", *NOISE))[0] == 0
    assert out.read_bytes()[:2] == b"\x1f\x8b"
    with gzip.open(out) as handle:
        assert len(handle.read()) == 1024 + 4 * int(np.prod(SHAPE))
    result = read_map(out)
    assert result.geometry == ws["input"].geometry
    np.testing.assert_array_equal(result.data, ws["baseline"].data)


def test_gpu_id_that_does_not_exist(ws, tmp_path, run):
    out = tmp_path / "out.mrc"
    status, _, err = run(*enhance_args(ws, ws["map"], out, "-g", "7", "--noiseStats", *NOISE))
    if torch.cuda.is_available() and torch.cuda.device_count() < 8:
        assert status == 1 and err.startswith("deepemhancer: error:") and "-g" in err
        assert not out.exists()
    else:  # no CUDA: a GPU request falls back to the CPU with a notice
        assert status == 0, err
        assert "CPU" in err or "MPS" in err
        np.testing.assert_allclose(read_map(out).data, ws["baseline"].data, rtol=1e-5, atol=1e-5)


def test_models_list_shows_the_bundled_demos(run):
    status, out, _ = run("models", "list")
    assert status == 0
    names = [line.split()[0] for line in out.splitlines() if line and not line.startswith("(")]
    assert "demo-untrained" in names and "demo-untrained-masked" in names
    assert "untrained demo" in out


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A fresh home folder: the original's model folder lives under it."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def test_download_flag_fetches_and_imports(tmp_path, home, run, monkeypatch):
    served = Served(official_zip(tmp_path))
    with serving(served) as url:
        monkeypatch.setenv("DEEPEMHANCER_DOWNLOAD_URL", url)
        status, out, err = run("--download", "-q")  # into the original's folder, as its --download does
    assert status == 0, err
    assert len(served.ranges) == 1
    imported = sorted(Path(line.removeprefix("imported ")).name for line in out.splitlines())
    assert imported == ["highRes.json", "masked.json", "tightTarget.json", "wideTarget.json"]
    original = home / ".local" / "share" / "deepEMhancerModels" / "production_checkpoints"
    assert (original / "deepEMhancer_highRes.hd5").is_file()


def test_models_download_then_enhance_by_name(tmp_path, home, run):
    served = Served(official_zip(tmp_path))
    with serving(served) as url:
        status, out, err = run("models", "download", tmp_path / "dest", "--url", url)
    assert status == 0, err
    assert out.count("imported ") == 4
    status, out, _ = run("models", "list")
    assert {"tightTarget", "wideTarget", "highRes", "masked"} <= {line.split()[0] for line in out.splitlines()}
    small = save(tmp_path / "small.mrc", density((24, 28, 20), seed=2))
    status, _, err = run("-i", small, "-o", tmp_path / "out.mrc", "-p", "wideTarget", "-g", "-1", "-q",
                         "--noiseStats", *NOISE)
    assert status == 0, err
    assert read_map(tmp_path / "out.mrc").geometry == read_map(small).geometry


def test_help_shows_the_defaults():
    result = subprocess.run([sys.executable, "-m", "deepemhancer", "--help"], capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())  # argparse wraps lines
    for option, default in (("--gpuIds", "(default: 0)"), ("--cleaningStrengh", "(default: -1)"),
                            ("--precision", "(default: fp32)"), ("--blending", "(default: gaussian")):
        assert option in text
        assert default in text[text.index(option):], (option, default)
    assert "--legacy" in text and "--noiseStats" in text and "--download" in text


# --- what fails --------------------------------------------------------------------------------


def _geometry(shape, **changes) -> Geometry:
    return dataclasses.replace(placed_geometry(shape), **changes)


def _case(name: str, ws, tmp: Path) -> list:
    """Arguments (all but -o) for one bad input."""
    x = ws["input"].data
    plain = ["--deepLearningModelPath", ws["model"], "-g", "-1", "-q"]
    if name == "missing_input":
        return ["-i", tmp / "nothing.mrc", *plain]
    if name == "random_bytes":
        (tmp / "random.mrc").write_bytes(np.random.default_rng(0).bytes(5000))
        return ["-i", tmp / "random.mrc", *plain]
    if name == "truncated":
        whole = save(tmp / "whole.mrc", x).read_bytes()
        (tmp / "truncated.mrc").write_bytes(whole[: len(whole) // 2])
        return ["-i", tmp / "truncated.mrc", *plain]
    if name in ("nan", "inf"):
        bad = x.copy()
        bad[3, 4, 5] = np.nan if name == "nan" else np.inf
        with np.errstate(invalid="ignore"):  # the header statistics of such a map are NaN
            return ["-i", save(tmp / "bad.mrc", bad), *plain]
    if name == "all_zero":
        return ["-i", save(tmp / "zero.mrc", np.zeros_like(x)), *plain]
    if name.startswith("halves_"):
        other = {"halves_shape": (x[:-2], placed_geometry(x[:-2].shape)),
                 "halves_voxel_size": (x, _geometry(x.shape, voxel_size=(1.1,) * 3,
                                                    cell_lengths=tuple(1.1 * m for m in placed_geometry(x.shape).sampling))),
                 "halves_origin": (x, _geometry(x.shape, origin=(40.0, 0.0, 0.0)))}[name]
        return ["-i", ws["map"], "-i2", save(tmp / "half2.mrc", *other), *plain]
    if name == "anisotropic":
        sampling = placed_geometry(x.shape).sampling
        geometry = _geometry(x.shape, voxel_size=(1.0, 1.2, 1.0),
                             cell_lengths=tuple(v * m for v, m in zip((1.0, 1.2, 1.0), sampling)))
        return ["-i", save(tmp / "aniso.mrc", x, geometry), *plain]
    if name == "voxel_size_zero":
        return ["-i", save(tmp / "zero_apix.mrc", x, _geometry(x.shape, voxel_size=(0.0,) * 3,
                                                                cell_lengths=(0.0,) * 3)), *plain]
    if name == "unknown_model":
        return ["-i", ws["map"], "-p", "nosuchmodel", "-g", "-1", "-q"]
    if name == "garbage_json":
        (tmp / "garbage.json").write_text("{ this is not json")
        return ["-i", ws["map"], "--deepLearningModelPath", tmp / "garbage.json", "-g", "-1", "-q"]
    if name == "truncated_safetensors":
        json_path = tmp / "cut.json"
        json_path.write_text(ws["model"].read_text())
        weights = weights_path(ws["model"]).read_bytes()
        weights_path(json_path).write_bytes(weights[: len(weights) // 2])
        return ["-i", ws["map"], "--deepLearningModelPath", json_path, "-g", "-1", "-q"]
    if name == "hd5_not_hdf5":
        (tmp / "deepEMhancer_fake.hd5").write_bytes(b"PK\x03\x04 a zip, not HDF5" * 20)
        return ["-i", ws["map"], "--deepLearningModelPath", tmp / "deepEMhancer_fake.hd5", "-g", "-1", "-q"]
    if name == "mask_with_model_name":
        return ["-i", ws["map"], "-m", ws["map"], "-p", "tightTarget", "-g", "-1", "-q"]
    if name == "mask_wrong_shape":
        mask = save(tmp / "mask.mrc", np.ones((20, 22, 18), np.float32))
        return ["-i", ws["map"], "-m", mask, "--deepLearningModelPath", ws["masked_model"], "-g", "-1", "-q"]
    if name == "cleaning_out_of_range":
        return ["-i", ws["map"], "--cleaningStrengh", "1.5", *plain]
    if name == "blending_in_legacy_mode":
        return ["-i", ws["map"], "--legacy", "--blending", "count", *plain]
    if name == "automatic_normalisation_fails":
        # A hollow shell in noise: the radial estimate refuses it and asks for --noiseStats.
        rng = np.random.default_rng(3)
        shell = rng.normal(0.0, 0.05, (64, 64, 64)).astype(np.float32)
        radius = np.sqrt(sum((g - 32.0) ** 2 for g in np.indices(shell.shape)))
        shell[(radius > 0.22 * 64) & (radius < 0.3 * 64)] += 1.0
        return ["-i", save(tmp / "hollow.mrc", shell), *plain]
    raise AssertionError(name)


BAD = ["missing_input", "random_bytes", "truncated", "nan", "inf", "all_zero", "halves_shape",
       "halves_voxel_size", "halves_origin", "anisotropic", "voxel_size_zero", "unknown_model", "garbage_json",
       "truncated_safetensors", "hd5_not_hdf5", "mask_with_model_name", "mask_wrong_shape",
       "cleaning_out_of_range", "blending_in_legacy_mode", "automatic_normalisation_fails"]
ARGPARSE_LEVEL = {"mask_with_model_name"}
MESSAGE = {"missing_input": "not found", "random_bytes": "not an MRC map", "truncated": "truncated",
           "nan": "NaN", "inf": "NaN/Inf", "all_zero": "all zeros", "halves_shape": "shape",
           "halves_voxel_size": "voxel size", "halves_origin": "origin", "anisotropic": "anisotropic",
           "voxel_size_zero": "-s/--samplingRate", "unknown_model": "nosuchmodel", "garbage_json": "cannot be read",
           "truncated_safetensors": "corrupt", "hd5_not_hdf5": "HDF5", "mask_with_model_name": "-p",
           "mask_wrong_shape": "shape", "cleaning_out_of_range": "cleaningStrengh",
           "blending_in_legacy_mode": "--blending", "automatic_normalisation_fails": "--noiseStats"}


def assert_one_error_line(name: str, status: int, err: str) -> None:
    if name in ARGPARSE_LEVEL:
        assert status == 2
        assert err.splitlines()[0].startswith("usage:")
        assert err.splitlines()[-1].startswith("deepemhancer: error:")
    else:
        assert status != 0
        assert len(err.splitlines()) == 1 and err.endswith("\n"), err
        assert err.startswith("deepemhancer: error:"), err
    assert MESSAGE[name] in err.splitlines()[-1], err


@pytest.mark.parametrize("name", BAD)
def test_bad_input_is_one_error_line_and_no_output(ws, tmp_path, run, name):
    args = _case(name, ws, tmp_path)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    status, _, err = run(*args, "-o", out_dir / "enhanced.mrc")
    assert_one_error_line(name, status, err)
    assert list(out_dir.iterdir()) == []
    # An existing output stays as it was, even with --force.
    existing = out_dir / "existing.mrc"
    existing.write_bytes(b"keep me")
    before = existing.stat().st_mtime_ns
    status, _, err = run(*args, "-o", existing, "--force")
    assert_one_error_line(name, status, err)
    assert existing.read_bytes() == b"keep me" and existing.stat().st_mtime_ns == before
    assert list(out_dir.iterdir()) == [existing]


def test_voxel_size_zero_is_fixed_by_the_flag(ws, tmp_path, run):
    args = _case("voxel_size_zero", ws, tmp_path)
    out = tmp_path / "fixed.mrc"
    status, _, err = run(*args, "-o", out, "-s", "1.0", "--noiseStats", *NOISE, "--predictSolvent")
    assert status == 0, err
    result = read_map(out)
    assert result.geometry.voxel_size == (1.0, 1.0, 1.0)
    np.testing.assert_allclose(result.data, ws["baseline"].data, rtol=1e-5, atol=1e-5)


def test_existing_output_needs_force(ws, tmp_path, run):
    out = tmp_path / "enhanced.mrc"
    out.write_bytes(b"previous result")
    status, _, err = run(*enhance_args(ws, ws["map"], out, "--noiseStats", *NOISE))
    assert status == 1 and len(err.splitlines()) == 1
    assert err.startswith("deepemhancer: error:") and "--force" in err
    assert out.read_bytes() == b"previous result"
    status, _, err = run(*enhance_args(ws, ws["map"], out, "--noiseStats", *NOISE, "--force"))
    assert status == 0, err
    np.testing.assert_array_equal(read_map(out).data, ws["baseline"].data)


def test_missing_output_folder(ws, tmp_path, run):
    out = tmp_path / "no" / "such" / "folder" / "enhanced.mrc"
    status, _, err = run(*enhance_args(ws, ws["map"], out, "--noiseStats", *NOISE))
    assert status == 1 and len(err.splitlines()) == 1
    assert err.startswith("deepemhancer: error:") and "does not exist" in err
    assert not (tmp_path / "no").exists()
