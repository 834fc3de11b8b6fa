"""Training pipeline: simulation, cube sampling, config, schedule, and a tiny CPU smoke run."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import ndimage

from deepemhancer.errors import InputError
from deepemhancer.models.store import load_network
from deepemhancer.train import dataset, loop, simulate
from deepemhancer.train.config import TrainConfig, make_config
from deepemhancer.train_cli import main as train_cli_main

RESIDUES = ("ALA", "GLY", "SER", "LEU", "VAL", "THR", "ILE", "ASP", "GLU", "LYS", "ARG", "PHE")


def write_structure(path: Path, seed: int, residues: int = 24) -> Path:
    """A small made-up backbone (N, CA, C, O per residue) on a random walk: gemmi reads it as a PDB."""
    rng = np.random.default_rng(seed)
    lines, serial, position = [], 1, np.zeros(3)
    for r in range(residues):
        step = rng.normal(size=3)
        position = position + 3.8 * step / np.linalg.norm(step)
        position = np.clip(position, -9.0, 9.0)  # keep it compact: a small box
        for name, element in (("N", "N"), ("CA", "C"), ("C", "C"), ("O", "O")):
            xyz = position + rng.normal(scale=0.8, size=3)
            lines.append(f"ATOM  {serial:5d}  {name:<3} {RESIDUES[r % len(RESIDUES)]} A{r + 1:4d}    "
                         f"{xyz[0]:8.3f}{xyz[1]:8.3f}{xyz[2]:8.3f}  1.00 30.00           {element}")
            serial += 1
    path.write_text("\n".join(lines + ["END"]) + "\n")
    return path


def numpy_fsc(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Reference FSC (cubic box, 1 Å voxels): shell frequencies and correlations."""
    fa, fb = np.fft.fftn(a), np.fft.fftn(b)
    n = a.shape[0]
    f = np.fft.fftfreq(n)
    shell = np.rint(np.sqrt(f[:, None, None] ** 2 + f[None, :, None] ** 2 + f[None, None, :] ** 2) * n).astype(int)
    cross = np.bincount(shell.ravel(), (fa * fb.conj()).real.ravel())
    pa = np.bincount(shell.ravel(), (np.abs(fa) ** 2).ravel())
    pb = np.bincount(shell.ravel(), (np.abs(fb) ** 2).ravel())
    k = np.arange(1, n // 2 + 1)
    return k / n, cross[k] / np.sqrt(pa[k] * pb[k])


def test_simulated_halves_reach_the_drawn_resolution(tmp_path):
    path = write_structure(tmp_path / "AAAA_target.pdb", 1)
    sim = simulate.simulate(path, np.random.default_rng(3), resolution=4.0)
    frequency, correlation = numpy_fsc(sim.half1, sim.half2)
    # FSC crosses 0.143 near 1/4 Å⁻¹: above it two shells before, below it two shells after
    k = int(np.argmin(np.abs(frequency - 0.25)))
    assert correlation[k - 2] > 0.143 > correlation[k + 2]
    assert not np.array_equal(sim.half1, sim.half2)


def shell_power(volume: np.ndarray) -> np.ndarray:
    """Total |F|² per shell (cubic box), shells 0 .. N/2."""
    n = volume.shape[0]
    f = np.fft.fftfreq(n)
    shell = np.rint(np.sqrt(f[:, None, None] ** 2 + f[None, :, None] ** 2 + f[None, None, :] ** 2) * n).astype(int)
    return np.bincount(shell.ravel(), (np.abs(np.fft.fftn(volume)) ** 2).ravel())[:n // 2 + 1]


def test_target_is_tight_and_limited_to_the_local_resolution(tmp_path):
    path = write_structure(tmp_path / "AAAA_target.pdb", 2)
    sim = simulate.simulate(path, np.random.default_rng(4), resolution=6.0)
    assert 0 < sim.mask.mean() <= 0.05 + 1e-6  # above the 95th percentile of the box
    away = ndimage.distance_transform_edt(~sim.mask) > 6.0  # the low-passed edge aside, solvent stays empty
    assert np.abs(sim.target[away]).max() < 0.05 * sim.target.max()
    # the local-resolution map stays between Nyquist and 2.5 × the drawn resolution, and the target,
    # masked before it is low-passed, carries nothing finer than the best local resolution
    assert sim.local_resolution.min() >= 2.0 and sim.local_resolution.max() <= 15.0 + 1e-4
    power = shell_power(sim.target)
    finest = int(np.ceil(sim.target.shape[0] / sim.local_resolution.min())) + 1
    assert power[finest:].sum() < 1e-3 * power.sum()  # a limit that varies in space leaks a little
    assert abs(np.percentile(sim.input[~sim.envelope], 50)) < 0.05  # solvent normalised around 0
    assert sim.phases_randomised_beyond is None  # off by default


def test_masked_fsc_target_keeps_the_detail_the_halves_share_inside_the_molecule(tmp_path):
    path = write_structure(tmp_path / "AAAA_target.pdb", 2)
    drawn = simulate.simulate(path, np.random.default_rng(4), resolution=6.0)
    settings = simulate.SimulationSettings(target_resolution="masked-fsc")
    sim = simulate.simulate(path, np.random.default_rng(4), settings, resolution=6.0)
    np.testing.assert_array_equal(sim.half1, drawn.half1)  # the same draws: only the target differs
    assert drawn.target_resolution == 6.0
    # a small molecule in a box of mostly solvent: inside the molecule the halves share much finer
    # detail than the box-wide FSC's 6 Å (the numpy reference: the FSC inside the molecule's envelope)
    assert 2.0 <= sim.target_resolution < 0.9 * 6.0
    dilated = ndimage.gaussian_filter(ndimage.binary_dilation(sim.envelope, iterations=4).astype(float), 2.0)
    frequency, correlation = numpy_fsc(sim.half1 * dilated, sim.half2 * dilated)
    assert correlation[frequency <= 1.0 / sim.target_resolution - 0.02].min() > 0.143
    # the local resolution scales with the global one (same B-factors), and the target follows it
    near = sim.local_resolution < 0.9 * sim.local_resolution.max()
    ratio = sim.local_resolution[near] / drawn.local_resolution[near]
    np.testing.assert_allclose(ratio, sim.target_resolution / 6.0, rtol=0.05)
    n = sim.target.shape[0]
    beyond = slice(int(np.ceil(n / 6.0)) + 2, None)
    assert shell_power(sim.target)[beyond].sum() > 1.4 * shell_power(drawn.target)[beyond].sum()
    with pytest.raises(InputError, match="target_resolution"):
        simulate.simulate(path, np.random.default_rng(4), simulate.SimulationSettings(target_resolution="nominal"))


def test_an_empty_box_shares_only_a_coarse_background_and_asks_for_nothing(tmp_path):
    path = write_structure(tmp_path / "AAAA_target.pdb", 2)
    settings = simulate.SimulationSettings(empty_probability=1.0, empty_resolution_range=(12.0, 12.0))
    sim = simulate.simulate(path, np.random.default_rng(4), settings, extra_pairs=1)
    plain = simulate.simulate(path, np.random.default_rng(4))
    assert sim.half1.shape == plain.half1.shape and np.array_equal(sim.origin, plain.origin)  # the structure's box
    assert not sim.target.any() and not sim.mask.any() and not sim.envelope.any()
    assert sim.resolution == sim.target_resolution == 12.0 and len(sim.extra_halves) == 2
    # the halves' FSC (numpy reference) crosses 0.143 near 12 Å and they share nothing finer
    frequency, correlation = numpy_fsc(sim.half1, sim.half2)
    k = int(np.argmin(np.abs(frequency - 1.0 / 12.0)))
    assert correlation[k - 2] > 0.143 > correlation[k + 2]
    assert np.abs(correlation[frequency > 0.25]).max() < 0.1
    assert abs(float(np.median(sim.input))) < 0.05  # normalised by the whole box's noise
    # the half-map model's input is made as for any map, and the target stays empty at its scale
    channels, target = dataset.training_pair(sim, "sharpened-halves")
    assert channels.shape == (2, *sim.half1.shape) and not target.any()


@pytest.mark.parametrize("end", [1.0, 1.15])  # a target reaching past d never reaches past d_r
def test_phase_randomised_halves_share_nothing_beyond_their_limit_and_the_target_follows(tmp_path, end):
    path = write_structure(tmp_path / "AAAA_target.pdb", 5)
    plain = simulate.simulate(path, np.random.default_rng(6), resolution=3.0)
    settings = simulate.SimulationSettings(phase_randomised_probability=1.0, target_lowpass_end=end)
    sim = simulate.simulate(path, np.random.default_rng(6), settings, resolution=3.0)
    limit = sim.phases_randomised_beyond
    assert 3.0 <= limit <= 7.5
    n = sim.half1.shape[0]
    start = int(np.rint(n / limit))  # the first randomised shell
    frequency, correlation = numpy_fsc(sim.half1, sim.half2)
    k = np.arange(1, n // 2 + 1)
    counts = np.bincount(np.rint(np.sqrt(sum(g ** 2 for g in np.meshgrid(*[np.fft.fftfreq(n) * n] * 3, indexing="ij"))))
                         .astype(int).ravel())[k]
    beyond = k >= start + 1
    assert np.all(np.abs(correlation[beyond]) < 4.5 / np.sqrt(counts[beyond] / 2))  # independent phases
    assert np.all(correlation[k < start - 1] > 0.143)  # the kept shells still carry signal
    # the same draws up to the choice: below the limit nothing changed, beyond it the amplitudes stay
    kept = shell_power(sim.half1)[1:start - 1], shell_power(plain.half1)[1:start - 1]
    np.testing.assert_allclose(*kept, rtol=1e-3)
    moved = shell_power(sim.half1)[start + 1:], shell_power(plain.half1)[start + 1:]
    np.testing.assert_allclose(*moved, rtol=0.1)
    assert sim.local_resolution.min() >= limit - 1e-4
    power = shell_power(sim.target)
    assert power[int(np.ceil(n / limit)) + 1:].sum() < 1e-3 * power.sum()


def test_the_target_lowpass_end_moves_the_edge_past_the_local_resolution():
    rng = np.random.default_rng(0)
    volume = rng.standard_normal((48, 48, 48)).astype(np.float32)
    f = np.fft.fftfreq(48)
    s = np.sqrt(f[:, None, None] ** 2 + f[None, :, None] ** 2 + f[None, None, :] ** 2)
    local = np.full(volume.shape, 6.0, dtype=np.float32)
    for end in (1.0, 1.2):
        spectrum = np.abs(np.fft.fftn(simulate.locally_lowpassed(volume, local, end))) ** 2
        assert spectrum[s > end / 6.0 + 1e-6].sum() < 1e-8 * spectrum.sum()  # nothing past end / d
        edge = spectrum[(s > 1 / 6.0 + 1e-6) & (s < 1.2 / 6.0 - 0.005)].sum()  # past d: only the wider edge
        assert (edge > 1e-3 * spectrum.sum()) == (end > 1.0)
    with pytest.raises(InputError, match="target_lowpass_end must be above 0.85"):  # when the config is read
        make_config(overrides=["simulation.target_lowpass_end=0.8"])


def test_locally_lowpassed_removes_detail_beyond_the_local_resolution():
    rng = np.random.default_rng(0)
    volume = rng.standard_normal((32, 32, 32)).astype(np.float32)
    out = simulate.locally_lowpassed(volume, np.full(volume.shape, 6.0, dtype=np.float32))
    spectrum = np.abs(np.fft.fftn(out)) ** 2
    f = np.fft.fftfreq(32)
    s = np.sqrt(f[:, None, None] ** 2 + f[None, :, None] ** 2 + f[None, None, :] ** 2)
    assert spectrum[s > 1 / 6 + 1e-6].max() < 1e-6 * spectrum.max()
    assert spectrum[(s > 0) & (s < 0.8 / 6)].mean() > 0.5 * (np.abs(np.fft.fftn(volume)) ** 2).mean()


def test_split_is_deterministic_and_disjoint():
    paths = [f"/x/{name}_target.pdb.gz" for name in ("B1", "A1", "C1", "D1", "E1", "F1")]
    train, held = dataset.split_structures(paths, 3, 1)
    assert [p.name for p in held] == ["B1_target.pdb.gz", "E1_target.pdb.gz"]
    assert not set(train) & set(held) and len(train) + len(held) == 6
    assert dataset.split_structures(reversed(paths), 3, 1) == (train, held)


def test_symmetry_and_cube_sampling():
    rng = np.random.default_rng(0)
    volume = rng.standard_normal((4, 5, 6))
    out = dataset.apply_symmetry(volume, ((2, 0, 1), (True, False, True)))
    assert np.array_equal(out, volume.transpose(2, 0, 1)[::-1, :, ::-1])
    entry = dataset.PoolMap("x", rng.standard_normal((20, 20, 20)).astype(np.float32),
                            np.zeros((20, 20, 20), np.float32), np.array([0]))
    x, y = dataset.sample_cube(entry, 16, 1.0, rng)
    assert x.shape == y.shape == (16, 16, 16)
    # the cube holds the voxels of some 16³ window of the volume, rearranged
    assert np.isclose(np.sort(x.ravel()), np.sort(entry.input[:16, :16, :16].ravel())).all()


def test_learning_rate_schedule():
    assert loop.lr_factor(0, 10, 100, 0.1) == pytest.approx(0.1)
    assert loop.lr_factor(9, 10, 100, 0.1) == pytest.approx(1.0)
    assert loop.lr_factor(55, 10, 100, 0.1) == pytest.approx(0.1 + 0.9 * 0.5)
    assert loop.lr_factor(100, 10, 100, 0.1) == pytest.approx(0.1)


def test_l1_with_gradients_adds_the_neighbour_differences():
    prediction, target = torch.zeros(1, 1, 4, 4, 4), torch.zeros(1, 1, 4, 4, 4)
    target[0, 0, 1, 1, 1] = 1.0
    # voxels: 1 of 64 differs by 1; differences: along each axis 2 of 48 differ by 1
    expected = 1.0 / 64.0 + 2.0 / 48.0
    assert float(loop.loss_function("l1_gradients")(prediction, target)) == pytest.approx(expected)
    # a constant offset leaves the differences equal: only the voxel term counts it
    assert float(loop.l1_with_gradients(target + 0.5, target)) == pytest.approx(0.5)
    assert make_config(None, ["loss=l1_gradients"]).loss == "l1_gradients"
    # the weight scales the difference term alone
    half = loop.loss_function("l1_gradients", gradient_weight=0.5)(prediction, target)
    assert float(half) == pytest.approx(1.0 / 64.0 + 0.5 * 2.0 / 48.0)
    with pytest.raises(InputError, match="gradient_weight"):
        make_config(None, ["gradient_weight=-1"])


def test_config_file_and_overrides(tmp_path):
    (tmp_path / "c.toml").write_text('steps = 7\nloss = "mse"\nchannels = [4, 8]\n')
    config = make_config(tmp_path / "c.toml", ["batch_size=3", "simulation={\"margin\": 8.0}"])
    assert (config.steps, config.loss, config.channels, config.batch_size) == (7, "mse", [4, 8], 3)
    assert config.settings().margin == 8.0
    with pytest.raises(InputError, match="unknown keys"):
        (tmp_path / "bad.json").write_text(json.dumps({"stepz": 1}))
        make_config(tmp_path / "bad.json")
    with pytest.raises(InputError, match="multiple of 16"):
        make_config(None, ["cube=24"])


def test_one_simulation_setting_is_overridden_and_the_file_keeps_the_others(tmp_path):
    (tmp_path / "c.toml").write_text('[simulation]\nresolution_range = [2.5, 8.0]\nmargin = 9.0\n')
    config = make_config(tmp_path / "c.toml", ["simulation.target_resolution=masked-fsc",
                                               "simulation.resolution_range=[3, 5]"])
    settings = config.settings()
    assert (settings.target_resolution, settings.resolution_range, settings.margin) == ("masked-fsc", (3, 5), 9.0)
    with pytest.raises(InputError, match="unknown simulation setting"):
        make_config(None, ["simulation.target_resolutions=drawn"])
    with pytest.raises(InputError, match="expected a value like"):
        make_config(None, ["simulation.resolution_range=5"])


def _tiny_config(tmp_path: Path, steps: int) -> TrainConfig:
    folder = tmp_path / "structures"
    folder.mkdir(exist_ok=True)
    for i, name in enumerate(("AAAA", "BBBB", "CCCC")):
        write_structure(folder / f"{name}_target.pdb", 10 + i)
    return make_config(None, [
        f"structures={folder}", f"out={tmp_path / 'run'}", "holdout_every=3", "holdout_offset=2",
        "monitor_count=1", "width=1.0", "groups=2", "channels=[4, 8]", "kernel_size=3", f"steps={steps}",
        "batch_size=2", "cube=16", "validation_cube=16", "validation_cubes=2", "lr=0.01", "warmup_steps=2",
        "workers=0", "pool_workers=0", "log_every=1", "validate_every=10", "checkpoint_every=10", "seed=1"])


def test_smoke_training_loss_decreases_and_resume_continues(tmp_path):
    config = _tiny_config(tmp_path, 10)
    result = loop.train(config)
    records = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if "loss" in r]
    assert result.step == 10 and len(losses) == 10
    assert np.mean(losses[-3:]) < np.mean(losses[:3])
    assert any("validation_cc" in r for r in records)
    split = json.loads((tmp_path / "run" / "split.json").read_text())
    assert split["held_out"] == ["CCCC_target.pdb"] and split["monitor"] == ["BBBB_target.pdb"]

    network, metadata = load_network(result.model_json)
    assert metadata["trained"] is True and metadata["training"]["held_out"] == ["CCCC_target.pdb"]
    with torch.no_grad():
        assert network(torch.zeros(1, 1, 64, 64, 64)).shape == (1, 1, 64, 64, 64)

    more = _tiny_config(tmp_path, 13)
    resumed = loop.train(more)
    steps = [json.loads(line)["step"] for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()
             if "loss" in json.loads(line)]
    assert resumed.step == 13 and steps[-3:] == [11, 12, 13]


def test_cli_reports_bad_settings_in_one_line(capsys):
    from deepemhancer.cli import main

    assert main(["train", "--set", "nosuchkey=1"]) == 1  # as every command's run errors
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("deepemhancer: error:") and "nosuchkey" in err[0]
    assert main(["validate", "--model", "open-halves", "--groups", "-1"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--groups" in err[0] and "0 or more" in err[0]
    assert train_cli_main(["bogus"]) == 2  # a command line that cannot be parsed
