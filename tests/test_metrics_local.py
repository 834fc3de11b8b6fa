"""Sliding-window local correlation against a brute-force reference over explicit windows."""
import numpy as np
import pytest

from deepemhancer.errors import InputError
from deepemhancer.metrics import local_correlation, median_local_correlation


def _maps(shape=(37, 20, 23), seed=0):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal(shape).astype(np.float32) + 10.0  # a large mean must not cost precision
    b = (0.6 * a + rng.standard_normal(shape)).astype(np.float32)
    return a, b


def _reference(a, b, window, index):
    """np.corrcoef over the window around ``index``; numpy's 'symmetric' padding is scipy's 'reflect'."""
    h = window // 2
    pa = np.pad(a.astype(np.float64), h, mode="symmetric")
    pb = np.pad(b.astype(np.float64), h, mode="symmetric")
    cube = tuple(slice(i, i + window) for i in index)
    return np.corrcoef(pa[cube].ravel(), pb[cube].ravel())[0, 1]


@pytest.mark.parametrize("window", [5, 7])
def test_local_correlation_matches_explicit_windows(window):
    a, b = _maps()
    result = local_correlation(a, b, window)
    rng = np.random.default_rng(1)
    corners = [(0, 0, 0), (36, 19, 22), (15, 3, 4), (16, 10, 10), (17, 0, 22)]  # edges and slab seams
    picks = corners + [tuple(int(rng.integers(n)) for n in a.shape) for _ in range(40)]
    for index in picks:
        assert result[index] == pytest.approx(_reference(a, b, window, index), abs=1e-5)


def test_local_correlation_of_a_map_with_itself_is_one():
    a, _ = _maps()
    result = local_correlation(a, a, 5)
    assert np.all(np.isfinite(result))
    np.testing.assert_allclose(result, 1.0, atol=1e-5)


def test_flat_windows_and_voxels_outside_the_mask_are_nan():
    a, b = _maps()
    a[:, :, :11] = 0.0  # flat: windows entirely in here have no variance
    mask = np.zeros(a.shape, dtype=bool)
    mask[5:30, 5:15, 5:20] = True
    result = local_correlation(a, b, 5, mask)
    assert np.all(np.isnan(result[:, :, :9]))
    assert np.all(np.isnan(result[~mask]))
    inside = mask.copy()
    inside[:, :, :9] = False
    assert np.all(np.isfinite(result[inside]))


def test_median_local_correlation_is_the_median_inside_the_mask():
    a, b = _maps(shape=(18, 16, 14), seed=2)
    mask = np.zeros(a.shape, dtype=bool)
    mask[3:15, 2:12, 4:10] = True
    expected = np.median([_reference(a, b, 5, index) for index in zip(*np.nonzero(mask))])
    assert median_local_correlation(a, b, 5, mask) == pytest.approx(expected, abs=1e-5)


def test_even_window_is_refused():
    a, b = _maps(shape=(8, 8, 8))
    with pytest.raises(InputError, match="odd"):
        local_correlation(a, b, 4)
