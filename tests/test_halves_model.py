"""The half-map model design: the sharpening filter reused on the halves' difference, the two input
channels, the residual U-Net that starts from the sharpened map, and its path through enhance,
the registry, the confidence map and training (pickle-free checkpoints)."""
from __future__ import annotations

import dataclasses
import json
import pickle

import numpy as np
import pytest
import torch
from scipy import ndimage

from deepemhancer.errors import InputError
from deepemhancer.halves_input import baseline_sharpening, fsc_mask, halves_channels
from deepemhancer.mapio import Geometry, Map
from deepemhancer.models import registry
from deepemhancer.models.store import HALVES_NORMALIZATION, WIENER_HALVES_NORMALIZATION, save_model
from deepemhancer.nn import UNet
from deepemhancer.models.loaded import load_model
from deepemhancer.pipeline import EnhanceOptions, enhance
from deepemhancer.metrics import FSCCurve, radial_frequency_grid
from deepemhancer.sharpen import SharpeningFilter, sharpen
from deepemhancer.train import dataset, loop

from test_train import _tiny_config

N = 48


def _cc(a, b):
    return float(np.corrcoef(np.ravel(a), np.ravel(b))[0, 1])


@pytest.fixture(scope="module")
def halves():
    """Two half maps of one blob-like density (a 14 Å ball of Gaussian blobs) with independent noise."""
    rng = np.random.default_rng(3)
    centres = rng.normal(N / 2, 5.0, size=(300, 3)).round().astype(int).clip(4, N - 5)
    density = np.zeros((N, N, N), np.float32)
    density[tuple(centres.T)] = 1.0
    density = ndimage.gaussian_filter(density, 1.5)
    geometry = Geometry.for_grid(density.shape, 1.0)
    return tuple(Map((density + rng.normal(0, 0.004, density.shape)).astype(np.float32), geometry) for _ in range(2))


def _halves_model(tmp_path, residual=True, seed=0, normalization=HALVES_NORMALIZATION):
    torch.manual_seed(seed)
    net = UNet(1.0, 2, [4, 8], 3, in_channels=2, residual=residual)
    metadata = {"name": "tiny-halves", "architecture": net.architecture(), "normalization": normalization,
                "cube_size": 32, "stride": 16, "voxel_size": 1.0, "trained": True}
    return load_model(save_model(tmp_path / "tiny-halves.json", metadata, net.state_dict()))


def test_the_sharpening_filter_remakes_the_sharpened_map(halves):
    result = sharpen(*halves)
    average = 0.5 * (halves[0].data + halves[1].data)
    remade = result.filter.apply(average)
    assert np.abs(remade - result.map.data).max() <= 1e-6 * np.abs(result.map.data).max()
    # the filter is linear: the difference map's filtered copy is the filtered difference
    difference = 0.5 * (halves[0].data - halves[1].data)
    assert np.allclose(result.filter.apply(2 * difference), 2 * result.filter.apply(difference), atol=1e-6)


def test_the_wiener_weighting_keeps_the_shells_beyond_the_resolution_weighted_by_the_falling_fsc():
    side, b_factor, resolution = 32, 40.0, 4.0
    frequency = np.arange(1, side // 2 + 1) / side
    # a dip before d (kept as measured); past d (0.143 at 1/4 Å) down to 0.02, a chance rise to 0.2, then 0
    correlation = np.interp(frequency, [0.0, 0.1, 0.15, 0.25, 0.32, 0.4, 0.5], [1.0, 0.5, 0.6, 0.143, 0.02, 0.2, 0.0])
    curve = FSCCurve(frequency, correlation, np.ones_like(frequency), 1.0)
    relion = SharpeningFilter(1.0, curve, b_factor=b_factor, resolution=resolution)
    wiener = dataclasses.replace(relion, weighting="wiener")
    s = np.abs(np.fft.fftfreq(side))[:side // 2 + 1]  # along one axis of the rfftn grid
    line = (0, 0, slice(None))
    past = frequency > 1 / resolution + 1 / side  # past the relion low-pass's end (2 shells wide, centred at 1/d)
    falling = np.r_[correlation[~past], np.minimum.accumulate(correlation[past])]
    assert np.any(np.diff(falling[~past]) > 0) and np.any(np.diff(correlation[past]) > 0)  # both rises are there
    fall = np.interp(s, np.r_[0.0, frequency], np.r_[1.0, falling])
    held = np.minimum(s, 1 / resolution + 1 / side)  # the low-pass's end: 2 shells wide, centred at 1/d
    assert np.allclose(wiener.gain((side,) * 3)[line], 2 * fall / (1 + fall) * np.exp(b_factor / 4 * held ** 2),
                       rtol=1e-5)
    beyond = s > 1 / resolution + 1 / side
    assert beyond.sum() >= 6 and not relion.gain((side,) * 3)[line][beyond].any()  # the baseline cuts them
    assert np.all(wiener.gain((side,) * 3)[line][beyond & (s < 0.5)] > 0)
    # Halves sharing almost nothing (an empty box: the FSC below 0.143 in the first shell, the resolution
    # the box) keep, as the baseline does, the few shells up to its low-pass's end.
    nothing = FSCCurve(frequency, np.r_[-0.01, 0.25, 0.2, np.zeros(side // 2 - 3)], np.ones_like(frequency), 1.0)
    for weighting in ("relion", "wiener"):
        low = SharpeningFilter(1.0, nothing, resolution=float(side), weighting=weighting).gain((side,) * 3)
        assert np.count_nonzero(low) > 1  # more than the mean
    with pytest.raises(InputError, match="weighting must be one of relion, wiener"):
        dataclasses.replace(relion, weighting="wienner")


def _coarse_halves(side, noise=20.0):
    rng = np.random.default_rng(0)
    density = ndimage.gaussian_filter(rng.standard_normal((side,) * 3), 6.0).astype(np.float32)
    geometry = Geometry.for_grid(density.shape, 1.0)
    return [Map(density + rng.normal(0, noise * density.std(), density.shape).astype(np.float32), geometry)
            for _ in range(2)]  # FSC 0.143 near 13 Å (unmasked, at noise 20)


def test_a_coarse_map_is_sharpened_with_the_fit_from_twice_its_resolution():
    noisy = _coarse_halves(96)
    with pytest.raises(InputError, match="not finer than the Guinier fit's low-resolution limit"):
        sharpen(*noisy)
    result = sharpen(*noisy, low_resolution=None)
    assert result.resolution > 10.0 and result.guinier is not None
    fitted = 1.0 / np.sqrt(result.guinier.s_squared[result.guinier.in_fit])
    assert fitted.max() <= 2.0 * result.resolution + 1e-6 and fitted.min() >= result.resolution - 1e-6
    assert baseline_sharpening(*noisy).b_factor == sharpen(*noisy, low_resolution=None, mask=fsc_mask(*noisy)).b_factor


def test_the_baseline_takes_the_fsc_inside_the_molecule_as_relion_does_with_a_mask():
    # a small molecule in a large box: unmasked, the solvent's noise dilutes the FSC
    rng = np.random.default_rng(4)
    side = 96
    density = np.zeros((side,) * 3, np.float32)
    atoms = rng.integers(38, 58, size=(300, 3))
    density[tuple(atoms.T)] = 1.0
    density = ndimage.gaussian_filter(density, 1.0)
    geometry = Geometry.for_grid(density.shape, 1.0)
    noise = 0.25 * density.max()
    halves = [Map(density + rng.normal(0, noise, density.shape).astype(np.float32), geometry) for _ in range(2)]
    mask = fsc_mask(*halves)
    assert mask is not None and 0.01 < mask.mean() < 0.3 and mask[48, 48, 48] == pytest.approx(1.0)
    unmasked = sharpen(*halves, b_factor=0.0)
    baseline = baseline_sharpening(*halves)
    assert baseline.resolution < unmasked.resolution - 0.3


def test_the_baseline_falls_back_to_no_bfactor_where_the_box_is_too_small_to_fit():
    noisy = _coarse_halves(N, noise=40.0)  # 2 shells between 21 and 11 Å: no fit
    result = baseline_sharpening(*noisy)
    assert result.b_factor == 0.0 and result.guinier is None and result.resolution > 10.0


def test_the_two_channels_are_the_sharpened_map_and_its_noise(halves):
    channels = halves_channels(*halves)
    assert channels.shape == (2, N, N, N) and channels.dtype == np.float32
    assert _cc(channels[0], baseline_sharpening(*halves).map.data) > 0.99999
    assert float(channels[1].std()) == pytest.approx(0.1, rel=1e-4)  # noise std 0.1, the noise convention
    assert float(np.median(channels[0])) == pytest.approx(0.0, abs=1e-6)
    # channel 1 is noise only: it does not correlate with the signal
    assert abs(_cc(channels[1], 0.5 * (halves[0].data + halves[1].data))) < 0.1
    with pytest.raises(InputError, match="identical"):
        halves_channels(halves[0], halves[0])


def test_wiener_channels_keep_the_shells_the_baseline_cuts_with_the_same_fsc_and_bfactor(halves):
    result = baseline_sharpening(*halves)
    wiener = dataclasses.replace(result.filter, weighting="wiener")
    channels = halves_channels(*halves, "wiener")
    assert _cc(channels[0], wiener.apply(0.5 * (halves[0].data + halves[1].data))) > 0.99999
    assert float(channels[1].std()) == pytest.approx(0.1, rel=1e-4)
    beyond = radial_frequency_grid((N,) * 3, 1.0) > 1 / result.resolution + 2 / N

    def power_beyond(volume):
        return float(np.sum(np.abs(np.fft.rfftn(volume))[beyond] ** 2) / np.sum(np.abs(np.fft.rfftn(volume)) ** 2))

    assert power_beyond(halves_channels(*halves)[0]) < 1e-10 < power_beyond(channels[0])
    assert power_beyond(channels[1]) > 1e-4  # the noise channel shows the network the noise there


def test_an_untrained_residual_unet_returns_its_first_channel_and_scales_with_it():
    torch.manual_seed(0)
    net = UNet(1.0, 2, [4, 8], 3, in_channels=2, residual=True).eval()
    x = torch.randn(2, 2, 16, 16, 16)
    with torch.no_grad():
        assert torch.equal(net(x), x[:, :1])
        for p in net.head.parameters():  # a trained-looking correction
            p.normal_(0.0, 0.1)
        y = net(x)
        assert not torch.allclose(y, x[:, :1])
        assert torch.allclose(net(3.0 * x), 3.0 * y, rtol=1e-4, atol=1e-5)  # scale-equivariant
        assert float(net(torch.zeros_like(x)).abs().max()) < 1e-5  # an empty cube stays empty, no division by zero
    with pytest.raises(InputError, match="2 input channel"):
        net(torch.zeros(1, 1, 16, 16, 16))
    rebuilt = UNet.from_architecture(net.architecture())
    assert rebuilt.in_channels == 2 and rebuilt.residual
    assert "in_channels" not in UNet(1.0, 2, [4, 8], 3).architecture()  # old readers keep working


def test_enhance_with_a_half_map_model_starts_from_the_sharpened_map(tmp_path, halves):
    model = _halves_model(tmp_path)
    options = EnhanceOptions(gpu_ids="-1", progress=False, skip_solvent=False)
    out = enhance(halves, model, options)
    assert out.geometry == halves[0].geometry
    # untrained, the residual network returns the sharpened map (Gaussian blending of identical cubes)
    assert _cc(out.data, baseline_sharpening(*halves).map.data) > 0.9999
    with pytest.raises(InputError, match="needs the two half maps"):
        enhance(halves[0], model, options)
    with pytest.raises(InputError, match="legacy mode"):
        enhance(halves, model, EnhanceOptions(gpu_ids="-1", progress=False, legacy=True))
    with pytest.raises(InputError, match="no mask or noise statistics"):
        enhance(halves, model, EnhanceOptions(gpu_ids="-1", progress=False, noise_stats=(0.0, 1.0)))


def test_enhance_with_a_wiener_half_map_model_starts_from_the_wiener_weighted_map(tmp_path, halves):
    model = _halves_model(tmp_path, normalization=WIENER_HALVES_NORMALIZATION)
    out = enhance(halves, model, EnhanceOptions(gpu_ids="-1", progress=False, skip_solvent=False))
    wiener = dataclasses.replace(baseline_sharpening(*halves).filter, weighting="wiener")
    expected = wiener.apply(0.5 * (halves[0].data + halves[1].data))
    assert _cc(out.data, expected) > 0.9999 and _cc(out.data, baseline_sharpening(*halves).map.data) < 0.999


def test_confidence_of_a_half_map_model_uses_augmented_pairs(tmp_path, halves):
    from deepemhancer.confidence import enhance_with_confidence

    model = _halves_model(tmp_path)
    found = enhance_with_confidence(halves, model, EnhanceOptions(gpu_ids="-1", progress=False), 8)
    assert found.n_predictions == 8 and found.half_maps is None
    assert found.confidence.data.shape == halves[0].data.shape
    # the untrained residual model is the sharpening: predictions agree everywhere, but for the masked
    # FSC's phase randomisation, which moves with the grid's orientation (on EMD-3488's pseudo-halves
    # a flipped pair's channels agree to r = 0.999997; on this 48³ box less)
    assert float(np.median(found.confidence.data)) > 0.99 and float(found.confidence.data.min()) > 0.95


def test_the_registry_prefers_the_half_map_default_when_halves_are_given(tmp_path, monkeypatch):
    bundled = tmp_path / "bundled"
    bundled.mkdir()
    for name, normalization, default in (("single", "noise", True), ("a-pairs", HALVES_NORMALIZATION, False),
                                         ("pairs", WIENER_HALVES_NORMALIZATION, True)):
        net = UNet(1.0, 2, [4, 8], 3, in_channels=1 if normalization == "noise" else 2)
        save_model(bundled / f"{name}.json", {"name": name, "architecture": net.architecture(),
                                              "normalization": normalization, "cube_size": 32, "stride": 16,
                                              "voxel_size": 1.0, "trained": True, "default": default},
                   net.state_dict())
    monkeypatch.setattr(registry, "bundled_dir", lambda: bundled)
    monkeypatch.setenv("HOME", str(tmp_path))  # no official weights
    assert registry.resolve_model(halves=True) == bundled / "pairs.json"
    assert registry.resolve_model() == bundled / "single.json"


def test_two_channel_cubes_keep_their_channels_aligned():
    rng = np.random.default_rng(0)
    volume = rng.standard_normal((2, 6, 7, 8)).astype(np.float32)
    symmetry = ((2, 0, 1), (True, False, True))
    moved = dataset.apply_symmetry(volume, symmetry)
    for c in range(2):
        assert np.array_equal(moved[c], dataset.apply_symmetry(volume[c], symmetry))


def test_a_wiener_half_map_model_trains_on_the_wiener_channels_and_says_so(tmp_path):
    config = _tiny_config(tmp_path, 2)
    config.inputs, config.residual = WIENER_HALVES_NORMALIZATION, True
    metadata = json.loads(loop.train(config).model_json.read_text())
    assert metadata["normalization"] == WIENER_HALVES_NORMALIZATION and metadata["architecture"]["in_channels"] == 2
    cached = sorted((tmp_path / "run").rglob("*.npz"))
    assert cached and all("_wiener-halves-" in path.name for path in cached)  # never read as the other input


def test_training_a_residual_half_map_model_and_resuming_without_pickle(tmp_path):
    config = _tiny_config(tmp_path, 6)
    config.inputs, config.residual, config.checkpoint_every = "sharpened-halves", True, 3
    result = loop.train(config)
    metadata = json.loads(result.model_json.read_text())
    assert metadata["normalization"] == HALVES_NORMALIZATION and metadata["architecture"]["in_channels"] == 2
    run = tmp_path / "run"
    assert (run / loop.CHECKPOINT).suffix == ".safetensors"

    # A pickled checkpoint dropped into the run folder is never unpickled.
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    (run / "checkpoint.pt").write_bytes(pickle.dumps(Payload()))
    config.steps = 8
    resumed = loop.train(config)
    assert resumed.step == 8 and not marker.exists()

    # A damaged checkpoint is one clear error, not a traceback from deep inside.
    (run / loop.CHECKPOINT).write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}")
    config.steps = 10
    with pytest.raises(InputError, match="cannot be read"):
        loop.train(config)


def test_the_noise_channel_ablation_trains_and_enhances_from_the_sharpened_average_alone(tmp_path, halves):
    config = _tiny_config(tmp_path, 4)
    config.inputs, config.residual, config.noise_channel = "sharpened-halves", True, False
    result = loop.train(config)
    metadata = json.loads(result.model_json.read_text())
    assert metadata["normalization"] == HALVES_NORMALIZATION and metadata["architecture"]["in_channels"] == 1
    model = load_model(result.model_json)
    assert model.network.in_channels == 1
    # enhance gives it channel 0 of the half-map input: with its correction zeroed it is the baseline
    torch.nn.init.zeros_(model.network.head.weight)
    torch.nn.init.zeros_(model.network.head.bias)
    out = enhance(halves, model, EnhanceOptions(gpu_ids="-1", progress=False, skip_solvent=False))
    assert _cc(out.data, baseline_sharpening(*halves).map.data) > 0.9999
    config.noise_channel, config.inputs = False, "average"
    with pytest.raises(InputError, match="noise_channel = false needs inputs"):
        config.check()


def test_a_checkpoint_restores_the_network_and_optimiser(tmp_path):
    torch.manual_seed(0)
    net = UNet(1.0, 2, [4, 8], 3)
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 0.5)
    net(torch.randn(1, 1, 16, 16, 16)).sum().backward()
    optimizer.step()
    scheduler.step()
    config = loop.TrainConfig()
    path = tmp_path / "c.safetensors"
    loop.save_checkpoint(path, 7, net, optimizer, scheduler, config, 12.5)

    fresh = UNet(1.0, 2, [4, 8], 3)
    fresh_optimizer = torch.optim.AdamW(fresh.parameters(), lr=1e-3)
    fresh_scheduler = torch.optim.lr_scheduler.LambdaLR(fresh_optimizer, lambda s: 0.5)
    step, seconds = loop.load_checkpoint(path, fresh, fresh_optimizer, fresh_scheduler, torch.device("cpu"))
    assert (step, seconds) == (7, 12.5)
    for a, b in zip(net.state_dict().values(), fresh.state_dict().values()):
        assert torch.equal(a, b)
    before, after = optimizer.state_dict(), fresh_optimizer.state_dict()
    for index, values in before["state"].items():
        for key, value in values.items():  # moments stored in bf16: equal to bf16 precision
            assert torch.allclose(value, after["state"][index][key].float(), rtol=1e-2, atol=1e-8)
    assert fresh_scheduler.last_epoch == scheduler.last_epoch


def test_the_command_line_refuses_one_confidence_prediction_with_the_half_map_model(tmp_path, halves, capsys):
    from deepemhancer.cli import main
    from deepemhancer.mapio import write_map

    paths = [write_map(h, tmp_path / f"half{i}.mrc") for i, h in enumerate(halves, 1)]
    out = tmp_path / "out.mrc"
    with pytest.raises(SystemExit) as stopped:  # argparse's usage error
        main(["-i", str(paths[0]), "-i2", str(paths[1]), "-o", str(out), "-g", "-1", "--confidence",
              "--confidenceAugmentations", "1"])  # the bundled default for half maps is open-halves
    assert stopped.value.code == 2 and "predicts from both halves at once" in capsys.readouterr().err
    assert not out.exists()
