"""Global B-factor sharpening of half maps (RELION postprocess's recipe), on synthetic maps with
known answers. Reference filters are written here in numpy, independently of deepemhancer."""
import logging

import numpy as np
import pytest

from deepemhancer.errors import InputError
from deepemhancer.mapio import Geometry, Map
from deepemhancer.sharpen import fsc_weight, read_mtf, sharpen

N = 64
VOXEL = 1.0
TRUE_B = 80.0


def _frequency(shape=(N, N, N), voxel=VOXEL):
    """|s| in 1/Å on numpy's rfftn layout."""
    f0 = np.fft.fftfreq(shape[0], voxel)
    f1 = np.fft.fftfreq(shape[1], voxel)
    f2 = np.fft.rfftfreq(shape[2], voxel)
    return np.sqrt(f0[:, None, None] ** 2 + f1[None, :, None] ** 2 + f2[None, None, :] ** 2)


def _filter(volume, gain):
    """``volume`` with its Fourier coefficients multiplied by ``gain`` (rfftn layout)."""
    return np.fft.irfftn(np.fft.rfftn(volume) * gain, s=volume.shape)


def _map(data, voxel=VOXEL):
    return Map(np.asarray(data, dtype=np.float32), Geometry.for_grid(data.shape, voxel))


def _cc(a, b):
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


@pytest.fixture(scope="module")
def scene():
    """A flat-spectrum truth (2,000 point atoms in a 20 Å ball, apparent B about 0), blurred by
    B = 80 Å², and two half maps with independent noise (FSC = 0.143 near 3.5 Å)."""
    rng = np.random.default_rng(1)
    points = np.argwhere(np.ones((N, N, N), bool))
    ball = points[((points - N / 2) ** 2).sum(axis=1) < 20 ** 2]
    truth = np.zeros((N, N, N))
    truth[tuple(ball[rng.choice(len(ball), 2000, replace=False)].T)] = 1.0
    blurred = _filter(truth, np.exp(-TRUE_B * _frequency() ** 2 / 4))
    halves = [blurred + rng.normal(0.0, 0.04, truth.shape) for _ in range(2)]
    return truth, blurred, halves


def test_recovers_the_blurring_bfactor_and_improves_the_map(scene):
    truth, _, (h1, h2) = scene
    result = sharpen(_map(h1), _map(h2))
    assert 2.5 < result.resolution < 5.0
    assert abs(result.b_factor - TRUE_B) < 10.0
    assert result.guinier is not None and result.guinier.b_factor == result.b_factor
    assert result.map.geometry == _map(h1).geometry
    # Against the truth seen to the same resolution, the sharpened map beats the blurred average.
    truth_seen = _filter(truth, _frequency() <= 1 / result.resolution)
    assert _cc(result.map.data, truth_seen) > _cc(0.5 * (h1 + h2), truth_seen) + 0.1


def test_user_bfactor_and_resolution_are_applied_exactly(scene):
    # Noise-free identical halves: FSC = 1, so the weights are 1 and only exp(+B s²/4) and the
    # low-pass act; below the low-pass edge the result is the input times exp(+B s²/4).
    _, blurred, _ = scene
    result = sharpen(_map(blurred), _map(blurred), b_factor=60.0, resolution=4.0)
    assert result.b_factor == 60.0 and result.resolution == 4.0 and result.guinier is None
    s = _frequency()
    ratio_expected = np.exp(60.0 * s ** 2 / 4)
    spectrum_in, spectrum_out = np.fft.rfftn(blurred), np.fft.rfftn(result.map.data)
    passband = (s < 1 / 4.0 - 1.5 / (N * VOXEL)) & (np.abs(spectrum_in) > 1e-3 * np.abs(spectrum_in).max())
    np.testing.assert_allclose(spectrum_out[passband] / spectrum_in[passband], ratio_expected[passband],
                               rtol=1e-3)


def test_negative_user_bfactor_blurs_with_a_warning(scene, caplog):
    _, blurred, _ = scene
    with caplog.at_level(logging.WARNING, logger="deepemhancer"):
        result = sharpen(_map(blurred), _map(blurred), b_factor=-40.0, resolution=4.0)
    assert result.map.data.var() < blurred.var()
    assert any("blurs" in record.getMessage() for record in caplog.records)


def test_lowpass_removes_power_beyond_the_resolution(scene):
    # Against the same sharpening low-passed only at Nyquist: identical below the soft edge, zero
    # beyond it, and a falling ratio across it (2 shells wide, centred on the resolution).
    _, _, (h1, h2) = scene
    wide = np.fft.rfftn(sharpen(_map(h1), _map(h2), resolution=2 * VOXEL, b_factor=50.0).map.data)
    cut = np.fft.rfftn(sharpen(_map(h1), _map(h2), resolution=5.0, b_factor=50.0).map.data)
    s = _frequency()
    shell = 1 / (N * VOXEL)
    below, beyond = s < 1 / 5.0 - shell, s > 1 / 5.0 + shell
    scale = np.abs(wide).max()
    assert np.abs(cut[below] - wide[below]).max() < 1e-5 * scale
    assert np.abs(cut[beyond]).max() < 1e-5 * scale
    edge = ~below & ~beyond & (np.abs(wide) > 1e-3 * scale)
    ratio = (cut[edge] / wide[edge]).real
    order = np.argsort(s[edge])
    assert np.all(np.diff(ratio[order]) <= 1e-4) and ratio.min() >= -1e-6 and ratio.max() <= 1 + 1e-6


def test_fsc_weighting_attenuates_pure_noise_halves():
    rng = np.random.default_rng(2)
    h1, h2 = (rng.normal(size=(N, N, N)) for _ in range(2))
    # Low-pass at Nyquist and no B: only the FSC weights can remove power (the corners beyond
    # Nyquist hold under half of it).
    result = sharpen(_map(h1), _map(h2), resolution=2 * VOXEL, b_factor=0.0)
    assert result.map.data.var() < 0.05 * (0.5 * (h1 + h2)).var()


def test_fsc_weight_formula():
    weights = fsc_weight(np.array([-0.5, 0.0, 1 / 3, 1.0]))
    np.testing.assert_allclose(weights, [0.0, 0.0, np.sqrt(0.5), 1.0])


def test_mask_sharpens_the_fsc_resolution(scene):
    _, _, (h1, h2) = scene
    grid = np.indices((N, N, N)) - N / 2
    radius = np.sqrt((grid ** 2).sum(axis=0))
    mask = np.clip((26.0 - radius) / 4.0, 0.0, 1.0)  # 1 inside 22 Å, linear to 0 at 26 Å
    unmasked = sharpen(_map(h1), _map(h2))
    masked = sharpen(_map(h1), _map(h2), mask=mask)
    assert masked.resolution < unmasked.resolution - 0.2
    # As in RELION, B is fitted on the unmasked map weighted by the masked FSC: solvent noise
    # flattens the Guinier plot near the finer resolution, so B comes out lower than unmasked.
    assert 0.0 < masked.b_factor < unmasked.b_factor


def test_mask_that_misses_the_molecule_is_not_used(scene, caplog):
    _, _, (h1, h2) = scene
    grid = np.indices((N, N, N))
    corner = np.clip((12.0 - np.sqrt(((grid - 8) ** 2).sum(axis=0))) / 4.0, 0.0, 1.0)  # solvent only
    with caplog.at_level(logging.WARNING, logger="deepemhancer"):
        result = sharpen(_map(h1), _map(h2), mask=corner)
    assert result.resolution == sharpen(_map(h1), _map(h2)).resolution
    assert any("mask is not used" in record.getMessage() for record in caplog.records)


def test_fsc_that_never_drops_uses_nyquist_with_a_warning(scene, caplog):
    _, blurred, _ = scene
    with caplog.at_level(logging.WARNING, logger="deepemhancer"):
        result = sharpen(_map(blurred), _map(blurred))
    assert result.resolution == pytest.approx(2 * VOXEL)
    assert any("Nyquist" in record.getMessage() for record in caplog.records)


def _write_mtf(path, star: bool):
    frequency = np.linspace(0.0, 0.5, 51)  # 1/pixel
    value = 1.0 - frequency  # linear, so interpolation between rows is exact
    if star:
        rows = "\n".join(f"{f:.6f} {v:.6f}" for f, v in zip(frequency, value))
        path.write_text(f"\ndata_\n\nloop_ \n_rlnResolutionInversePixel #1 \n_rlnMtfValue #2 \n{rows}\n")
    else:
        path.write_text("# frequency (1/pixel)  MTF\n" + "\n".join(f"{f} {v}" for f, v in zip(frequency, value)))
    return frequency, value


@pytest.mark.parametrize("star", [True, False])
def test_read_mtf_gives_fraction_of_nyquist(tmp_path, star):
    frequency, value = _write_mtf(tmp_path / ("mtf.star" if star else "mtf.txt"), star)
    fraction, mtf = read_mtf(tmp_path / ("mtf.star" if star else "mtf.txt"))
    np.testing.assert_allclose(fraction, 2 * frequency, atol=1e-6)
    np.testing.assert_allclose(mtf, value, atol=1e-6)


@pytest.mark.parametrize("mtf_pixel_size", [None, 0.5])
def test_mtf_division_undoes_the_detector(scene, tmp_path, mtf_pixel_size):
    _, _, (h1, h2) = scene
    _write_mtf(tmp_path / "mtf.star", star=True)
    detector_pixel = mtf_pixel_size or VOXEL
    # The detector multiplied every coefficient up to the map's Nyquist by MTF(s * pixel).
    s = _frequency()
    attenuation = np.where(s <= 0.5 / VOXEL, 1.0 - np.minimum(s * detector_pixel, 0.5), 1.0)
    seen = [_filter(h, attenuation) for h in (h1, h2)]
    options = dict(b_factor=50.0, resolution=3.0)
    reference = sharpen(_map(h1), _map(h2), **options).map.data
    corrected = sharpen(_map(seen[0]), _map(seen[1]), mtf=np.asarray(read_mtf(tmp_path / "mtf.star")),
                        mtf_pixel_size=mtf_pixel_size, **options).map.data
    uncorrected = sharpen(_map(seen[0]), _map(seen[1]), **options).map.data
    scale = np.abs(reference).max()
    assert np.abs(corrected - reference).max() < 1e-3 * scale
    assert np.abs(uncorrected - reference).max() > 0.05 * scale


@pytest.mark.parametrize("text, message", [
    ("0.0 1.0\n0.3 0.8\n0.9 0.5\n", "Nyquist"),
    ("0.0 1.0\n0.2 0.0\n", "zero or negative"),
    ("0.0 1.0\n0.2 0.9 7\n", "not two numbers"),
    ("0.2 1.0\n0.1 0.9\n", "increase"),
    ("data_\nloop_\n_rlnResolutionInversePixel #1\n0.0\n0.1\n", "_rlnMtfValue"),
])
def test_bad_mtf_files_are_refused(tmp_path, text, message):
    path = tmp_path / ("mtf.star" if "_rln" in text else "mtf.txt")
    path.write_text(text)
    with pytest.raises(InputError, match=message):
        read_mtf(path)


def test_half_maps_on_different_grids_are_refused(scene):
    _, _, (h1, _) = scene
    with pytest.raises(InputError, match="half map 1 and half map 2 disagree in shape"):
        sharpen(_map(h1), _map(h1[:-2]))
    with pytest.raises(InputError, match="voxel size"):
        sharpen(_map(h1), _map(h1, voxel=1.1))


@pytest.mark.parametrize("options, message", [
    (dict(resolution=1.5), "beyond Nyquist"),
    (dict(resolution=12.0), "low-resolution limit"),
    (dict(mask=np.full((N, N, N), 2.0)), "mask values must lie in 0..1"),
    (dict(mask=np.ones((N, N, N - 1))), "shape"),
])
def test_invalid_options_are_refused(scene, options, message):
    _, _, (h1, h2) = scene
    with pytest.raises(InputError, match=message):
        sharpen(_map(h1), _map(h2), **options)


def test_coarse_resolution_is_fine_with_a_user_bfactor(scene):
    _, _, (h1, h2) = scene
    assert sharpen(_map(h1), _map(h2), resolution=12.0, b_factor=20.0).resolution == 12.0
