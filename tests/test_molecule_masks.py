"""Masks from maps (low-pass, threshold, the connected molecule), from atomic models (the paper's
model mask); dilation and soft edges; the near-full-box warning."""
import gemmi
import numpy as np
import pytest

from deepemhancer.errors import InputError
from deepemhancer.mapio import Geometry, Map, read_map, voxel_centre_xyz
from scipy import ndimage

from deepemhancer.molecule_masks import (automatic_threshold, coverage, full_box_warning, map_mask, model_mask, molecule_mask,
                                shape_mask)


def _smooth_map(shape=(40, 40, 40), seed=0):
    """Smooth random density with distinct values."""
    rng = np.random.default_rng(seed)
    noise = rng.normal(size=shape)
    f = [np.fft.fftfreq(n) for n in shape]
    s2 = f[0][:, None, None] ** 2 + f[1][None, :, None] ** 2 + f[2][None, None, :] ** 2
    return np.fft.ifftn(np.fft.fftn(noise) * np.exp(-s2 / (2 * 0.08 ** 2))).real


def _distance_from(shape, centre, voxel):
    """Å from ``centre`` (array index) of every voxel centre."""
    grid = np.indices(shape).astype(float)
    return voxel * np.sqrt(sum((g - c) ** 2 for g, c in zip(grid, centre)))


def _blobs(shape=(40, 40, 40), noise=0.1, seed=0):
    """A dense blob, a faint one apart from it, and white noise."""
    rng = np.random.default_rng(seed)
    grid = np.indices(shape).astype(float)
    blob = lambda centre, width: np.exp(-sum((g - c) ** 2 for g, c in zip(grid, centre)) / (2 * width ** 2))
    return 10.0 * blob((20, 20, 14), 4.0) + 0.6 * blob((20, 20, 33), 1.5) + rng.normal(0, noise, shape)


def test_enclosed_volume_takes_the_densest_voxels_within_one_voxel():
    volume, voxel = _blobs(noise=0.01), 1.3
    wanted = 2345.6  # Å³, all of it in the dense blob: one piece
    made = map_mask(volume, enclosed_volume_A3=wanted, voxel_size=voxel, lowpass_A=0)
    mask = made.mask
    assert mask.dtype == np.float32 and set(np.unique(mask)) == {0.0, 1.0} and made.pieces == made.kept == 1
    assert abs(mask.sum() * voxel ** 3 - wanted) <= 0.5 * voxel ** 3
    assert volume[mask == 1].min() > volume[mask == 0].max()


def test_threshold_keeps_the_connected_molecule_and_drops_noise():
    volume = _blobs()
    made = map_mask(volume, threshold=0.3, voxel_size=1.0, lowpass_A=0)
    labels, _ = ndimage.label(volume > 0.3)
    np.testing.assert_array_equal(made.mask == 1, labels == labels[20, 20, 14])
    assert made.kept == 1 and made.pieces > 2 and not made.automatic  # the faint blob and noise dropped


def test_low_pass_and_automatic_threshold_give_one_smooth_piece():
    volume = _blobs(noise=1.0)
    made = map_mask(volume, voxel_size=1.0)
    assert made.automatic and made.threshold == pytest.approx(automatic_threshold(volume, 1.0))
    assert made.kept == 1 and ndimage.label(made.mask)[1] == 1
    assert made.mask[20, 20, 14] == 1 and made.mask[2, 2, 2] == 0


@pytest.mark.parametrize("voxel, radius", [(1.0, 5.0), (1.5, 6.0), (0.8, 3.3)])
def test_dilation_grows_one_voxel_into_a_sphere(voxel, radius):
    shape, centre = (33, 33, 33), (16, 16, 16)
    volume = np.zeros(shape)
    volume[centre] = 1.0
    mask = map_mask(volume, threshold=0.5, voxel_size=voxel, lowpass_A=0, dilation_A=radius).mask
    np.testing.assert_array_equal(mask == 1, _distance_from(shape, centre, voxel) <= radius + 1e-6)
    assert set(np.unique(mask)) == {0.0, 1.0}


def test_soft_edge_is_a_raised_cosine_within_its_width_only():
    shape, centre, voxel = (41, 41, 41), (20, 20, 20), 1.0
    dilation, width = 3.0, 6.5
    binary = np.zeros(shape, bool)
    binary[centre] = True
    mask = shape_mask(binary, voxel, dilation_A=dilation, soft_edge_A=width)
    d = _distance_from(shape, centre, voxel)
    partial = (mask > 0) & (mask < 1)
    np.testing.assert_array_equal(partial, (d > dilation + 1e-6) & (d < dilation + width - 1e-6))
    assert np.all(mask[d <= dilation] == 1) and np.all(mask[d >= dilation + width] == 0)
    expected = 0.5 + 0.5 * np.cos(np.pi * (d[partial] - dilation) / width)
    np.testing.assert_allclose(mask[partial], expected, atol=1e-6)
    order = np.argsort(d, axis=None)  # non-increasing with distance
    assert np.all(np.diff(mask.ravel()[order]) <= 1e-7)


@pytest.mark.parametrize("options, message", [
    (dict(threshold=0.0, enclosed_volume_A3=100.0), "not both"),
    (dict(threshold=1e9), "no voxel is above"),
    (dict(enclosed_volume_A3=1e9), "enclosed volume"),
    (dict(enclosed_volume_A3=0.1), "enclosed volume"),
    (dict(threshold=0.0, dilation_A=-1.0), "dilation_A"),
    (dict(threshold=0.0, soft_edge_A=float("nan")), "soft_edge_A"),
    (dict(lowpass_A=-15.0), "low-pass resolution"),
])
def test_bad_mask_options_are_refused(options, message):
    with pytest.raises(InputError, match=message):
        map_mask(_smooth_map((16, 16, 16)), voxel_size=1.0, **options)


@pytest.mark.parametrize("noise", [1.0, 3.0])
def test_automatic_mask_of_a_noisy_real_half_map_average_is_the_molecule(shared_data, noise):
    """EMD-3488 plus independent noise in each half (per half, 1 and 3 times the map's standard
    deviation), averaged: a plain threshold of such a map is tens of thousands of pieces."""
    folder = shared_data / "maps" / "emd3488"
    like = read_map(folder / "emd_3488.mrc")
    rng = np.random.default_rng(0)
    sigma = noise * like.data.std()
    average = like.data + 0.5 * (rng.normal(0, sigma, like.data.shape) + rng.normal(0, sigma, like.data.shape))
    made = map_mask(average.astype(np.float32), voxel_size=like.isotropic_voxel_size, dilation_A=3.0, soft_edge_A=6.0)
    assert made.automatic and made.kept == 1 and ndimage.label(made.mask > 0)[1] == 1
    assert 0.1 < coverage(made.mask) < 0.4 and full_box_warning(made.mask) is None
    atoms = model_mask(folder / "5me2.pdb", like, resolution=4.0) > 0
    assert (made.mask[atoms] == 1).mean() > 0.99  # the whole molecule inside the mask's flat part


def test_a_mask_covering_nearly_the_whole_box_is_flagged():
    mask = np.ones((10, 10, 10), np.float32)
    mask[0, 0, :] = 0.0
    assert full_box_warning(mask).startswith("the mask covers 99.0% of the box")
    mask[:5] = 0.0
    assert coverage(mask) == pytest.approx(0.5) and full_box_warning(mask) is None


def test_model_mask_covers_the_model_and_five_percent_of_the_box(shared_data):
    folder = shared_data / "maps" / "emd3488"
    like = read_map(folder / "emd_3488.mrc")
    mask = model_mask(folder / "5me2.pdb", like, resolution=3.2)
    assert mask.shape == like.data.shape and mask.dtype == np.float32
    assert mask.mean() == pytest.approx(0.05, abs=0.002)  # above the 95th percentile, by construction
    # Atom positions to array indices (this map: axes X, Y, Z along columns, rows, sections).
    assert like.geometry.axis_order == (1, 2, 3)
    structure = gemmi.read_structure(str(folder / "5me2.pdb"))
    xyz = np.array([atom.pos.tolist() for chain in structure[0] for residue in chain for atom in residue])
    corner = voxel_centre_xyz(like, (0, 0, 0))
    index = np.rint((xyz - corner) / like.isotropic_voxel_size).astype(int)[:, ::-1]
    assert np.all((index >= 0) & (index < np.array(mask.shape)))
    assert mask[tuple(index.T)].mean() > 0.9
    # Dilation and a soft edge only grow it.
    grown = model_mask(folder / "5me2.pdb", like, resolution=3.2, dilation_A=2.0, soft_edge_A=3.0)
    assert np.all(grown >= mask) and grown.sum() > mask.sum()


@pytest.mark.parametrize("percentile", [0.0, 100.0, float("nan")])
def test_model_mask_percentile_must_be_a_percentage(tmp_path, percentile):
    like = Map(np.zeros((8, 8, 8), np.float32), Geometry.for_grid((8, 8, 8), 1.0))
    with pytest.raises(InputError, match="percentile"):
        model_mask(tmp_path / "model.pdb", like, resolution=3.2, percentile=percentile)


def test_level_enclosing_encloses_the_requested_volume():
    from deepemhancer.molecule_masks import level_enclosing

    volume = np.arange(1000, dtype=np.float32).reshape(10, 10, 10)
    level = level_enclosing(volume, enclosed_volume_A3=250 * 8.0, voxel_size=2.0)
    assert int((volume > level).sum()) == 250
    assert level == 749.5


def test_molecule_mask_is_none_where_nothing_stands_out_of_the_noise():
    rng = np.random.default_rng(7)
    noise = rng.normal(0.0, 1.0, (48, 48, 48)).astype(np.float32)
    assert molecule_mask(noise, voxel_size=1.0) is None  # map_mask alone would keep the highest noise blob
    molecule = np.zeros_like(noise)
    molecule[18:30, 18:30, 18:30] = 3.0
    found = molecule_mask(ndimage.gaussian_filter(molecule, 2.0) + noise, voxel_size=1.0, dilation_A=2.0)
    assert found is not None and found[24, 24, 24] == 1.0 and found[2, 2, 2] == 0.0
