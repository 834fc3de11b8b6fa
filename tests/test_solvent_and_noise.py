"""The corrected mode's two uses of what the input says about its noise: the noise of two half maps
measured from their difference, and cubes of solvent only left out."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from deepemhancer import normalization
from deepemhancer.errors import NormalizationError
from deepemhancer.mapio import Geometry, Map
from deepemhancer.models.store import save_model
from deepemhancer.nn import UNet
from deepemhancer.models.loaded import load_model
from deepemhancer.pipeline import EnhanceOptions, enhance, solvent_free_region
from deepemhancer.predict import Progress
from deepemhancer.tiling import CORRECTED_MASK_THRESHOLD

NOISE = 0.05


def _hollow_halves(seed=0, n=64):
    """A hollow shell of density filling most of the box (a virus-like capsid or a large ring): the
    original's radial solvent search finds no solvent shell in it."""
    rng = np.random.default_rng(seed)
    z, y, x = np.indices((n, n, n)) - (n - 1) / 2
    radius = np.sqrt(x ** 2 + y ** 2 + z ** 2)
    density = ((radius > 22) & (radius < 31)).astype(np.float32) * (rng.random((n,) * 3) < 0.3)
    density = ndimage.gaussian_filter(density, 1.0)
    return [(density + rng.normal(0, NOISE, density.shape)).astype(np.float32) for _ in range(2)]


def test_the_noise_of_two_halves_is_measured_where_the_radial_estimate_fails():
    half1, half2 = _hollow_halves()
    with pytest.raises(NormalizationError, match="automatic noise estimation failed"):
        normalization.noise_statistics_radial(0.5 * (half1 + half2))
    mean, std = normalization.noise_statistics_from_halves(half1, half2)
    assert std == pytest.approx(NOISE / np.sqrt(2), rel=0.01)  # the noise of the average
    assert abs(mean) < 0.05 * std  # the solvent is at 0, though the shell fills most of the box
    shifted_mean, _ = normalization.noise_statistics_from_halves(half1 + 3.0, half2 + 3.0)
    assert shifted_mean == pytest.approx(mean + 3.0, abs=1e-3)
    with pytest.raises(NormalizationError, match="identical"):
        normalization.noise_statistics_from_halves(half1, half1)


@pytest.fixture
def single_map_model(tmp_path):
    torch.manual_seed(0)
    net = UNet(1.0, 2, [4, 8], 3)
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0.0, 0.2)
    metadata = {"name": "tiny", "architecture": net.architecture(), "normalization": "noise",
                "cube_size": 16, "stride": 16, "voxel_size": 1.0, "trained": True}
    return save_model(tmp_path / "tiny.json", metadata, net.state_dict())


def _corner_molecule(n=64):
    rng = np.random.default_rng(1)
    density = np.zeros((n, n, n), np.float32)
    atoms = rng.normal(14, 3.0, size=(200, 3)).round().astype(int).clip(4, 26)
    density[tuple(atoms.T)] = 1.0
    density = ndimage.gaussian_filter(density, 1.2)
    geometry = Geometry.for_grid(density.shape, 1.0)
    return [Map((density + rng.normal(0, 0.02, density.shape)).astype(np.float32), geometry) for _ in range(2)]


def _run(model_json, halves, **settings):
    """The result and the number of cubes predicted."""
    report = Progress(enabled=False)
    out = enhance(halves, load_model(model_json), EnhanceOptions(gpu_ids="-1", **settings), progress=report)
    return out.data, report.done


def test_solvent_cubes_are_skipped_without_changing_the_molecule(single_map_model):
    halves = _corner_molecule()
    skipped, fewer = _run(single_map_model, halves)
    full, every = _run(single_map_model, halves, skip_solvent=False)
    assert fewer < 0.5 * every
    weight = solvent_free_region(0.5 * (halves[0].data + halves[1].data), 1.0)
    region, inner = weight > 0, weight == 1.0
    assert inner[14, 14, 14] and not region[50, 50, 50]
    assert 0.02 < region.mean() < 0.4  # the molecule and a margin of SOLVENT_MARGIN_A, not the box
    # every cube that reaches the molecule's region is predicted: the result there is the same, and
    # it fades to 0 over the soft edge, with no step a pair of enhanced halves could share
    np.testing.assert_allclose(skipped[inner], full[inner], rtol=1e-5, atol=1e-6)
    predicted = weight > CORRECTED_MASK_THRESHOLD  # a fainter edge does not call for a cube: 0 there
    np.testing.assert_allclose(skipped[predicted], (full * weight)[predicted], rtol=1e-5, atol=1e-6)
    assert not skipped[~region].any() and full[~region].any()  # solvent beyond the margin: 0
    edge = region & ~inner
    assert edge.any() and 0.0 < weight[edge].min() and weight[edge].max() < 1.0


def test_legacy_mode_predicts_every_cube_as_the_original(single_map_model):
    halves = _corner_molecule()
    average = halves[0].with_data(0.5 * (halves[0].data + halves[1].data))
    _, legacy = _run(single_map_model, average, legacy=True, noise_stats=(0.0, 0.02))
    _, corrected = _run(single_map_model, average, noise_stats=(0.0, 0.02), skip_solvent=False)
    assert legacy >= corrected > 0


def test_a_hollow_map_given_as_two_halves_is_enhanced_in_the_default_mode(single_map_model):
    geometry = Geometry.for_grid((64, 64, 64), 1.0)
    halves = [Map(h, geometry) for h in _hollow_halves()]
    data, cubes = _run(single_map_model, halves)
    assert cubes > 0 and np.isfinite(data).all()
    with pytest.raises(NormalizationError, match="automatic noise estimation failed"):  # legacy keeps the original's estimate
        _run(single_map_model, halves, legacy=True)
