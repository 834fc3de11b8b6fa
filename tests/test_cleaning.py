"""Small-blob removal (the original's removeSmallCCs)."""
import logging

import numpy as np
import pytest

from deepemhancer.cleaning import remove_small_blobs
from deepemhancer.errors import InputError


def _ball(shape, centre, radius):
    idx = np.indices(shape)
    return sum((g - c) ** 2 for g, c in zip(idx, centre)) < radius**2


def _scene(seed=0):
    """40^3: faint solvent noise, a big ball of density 1 in the centre (about 2,100 voxels)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0.0, 0.01, (40, 40, 40)).astype(np.float32)
    big = _ball(x.shape, (20, 20, 20), 8)
    x[big] = 1.0
    return x, big


def test_small_blob_removed_big_kept_solvent_to_minimum():
    x, big = _scene()
    small = np.zeros(x.shape, bool)
    small[4:6, 30:32, 30:32] = True
    x[small] = 1.0
    out = remove_small_blobs(x, 0.05)
    assert out.dtype == x.dtype
    np.testing.assert_array_equal(out[big], x[big])
    assert np.all(out[~big] == x.min())


def test_blob_above_the_fraction_is_kept():
    x, big = _scene()
    medium = _ball(x.shape, (7, 7, 31), 4)  # about 250 voxels, 10 % of the labelled volume
    x[medium] = 1.0
    out = remove_small_blobs(x, 0.05)
    np.testing.assert_array_equal(out[medium], x[medium])
    assert np.all(remove_small_blobs(x, 0.2)[medium] == x.min())


def test_components_are_26_connected():
    # Two 3^3 cubes touching only at a corner: one component of 54 voxels, kept at a threshold
    # (2 % of about 2,150 = 43 voxels) that would remove each cube alone.
    x, big = _scene()
    pair = np.zeros(x.shape, bool)
    pair[3:6, 3:6, 3:6] = True
    pair[6:9, 6:9, 6:9] = True
    x[pair] = 1.0
    out = remove_small_blobs(x, 0.02)
    np.testing.assert_array_equal(out[pair], x[pair])
    assert np.all(out[~(big | pair)] == x.min())


@pytest.mark.parametrize("strength", [0.0, 1.0, -1.0, 1.5])
def test_strength_must_be_a_fraction(strength):
    with pytest.raises(InputError, match="between 0 and 1") as error:
        remove_small_blobs(np.zeros((8, 8, 8), np.float32), strength)
    assert error.value.setting == "cleaning_strength"  # the command line names its --cleaningStrengh


def test_bright_solvent_skips_cleaning_with_a_warning(caplog):
    # Solvent brighter than the centre: where the original aborts, we keep the map as it is.
    x = np.ones((24, 24, 24), np.float32)
    x[_ball(x.shape, (12, 12, 12), 6)] = 0.0
    with caplog.at_level(logging.WARNING, logger="deepemhancer"):
        out = remove_small_blobs(x, 0.1)
    np.testing.assert_array_equal(out, x)
    assert any("skipped" in rec.getMessage() for rec in caplog.records)


def test_non_positive_threshold_keeps_everything_as_the_original():
    # All values negative: the threshold is below 0, so the original's in-place binarisation
    # marks every voxel as foreground and nothing is removed.
    x, big = _scene()
    x[4:6, 30:32, 30:32] = 1.0
    x -= 3.0
    np.testing.assert_array_equal(remove_small_blobs(x, 0.05), x)
