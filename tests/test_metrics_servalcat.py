"""Cross-checks against servalcat (an independent implementation) on EMD-3488 and 5me2.

servalcat computes with gemmi's FFT on the Friedel-unique half of reciprocal space, bins with
RELION's one-voxel shells and correlates with numpy.corrcoef; its model map comes from gemmi's
structure factors on the model's own cell. Tolerances: FSC 0.01 per shell (seen: 0.0014), model maps
correlate above 0.998 (seen: 0.9991), CC_mask 0.005, local correlation 1e-4 (seen: 1e-6).
"""
import gemmi
import numpy as np
import pytest

from deepemhancer.mapio import read_map
from deepemhancer.metrics import fsc, local_correlation, map_model_correlations, model_map, molecular_mask

servalcat_maps = pytest.importorskip("servalcat.utils.maps")
servalcat_hkl = pytest.importorskip("servalcat.utils.hkl")
servalcat_model = pytest.importorskip("servalcat.utils.model")
servalcat_fsc = pytest.importorskip("servalcat.spa.fsc")

pytestmark = pytest.mark.shared_data
RESOLUTION = 3.2


@pytest.fixture(scope="module")
def case(shared_data):
    folder = shared_data / "maps" / "emd3488"
    m = read_map(folder / "emd_3488.mrc")
    assert m.geometry.axis_order == (1, 2, 3) and not any(m.geometry.origin) and not any(m.geometry.nstart)
    pdb = folder / "5me2.pdb"
    return m, pdb, model_map(pdb, m, RESOLUTION), molecular_mask(pdb, m)


def _cell(m):
    return gemmi.UnitCell(*m.geometry.cell_lengths, 90, 90, 90)


def _grid(m, array):
    """A gemmi grid (X, Y, Z) of an array stored as (Z, Y, X)."""
    return gemmi.FloatGrid(np.ascontiguousarray(array.transpose(2, 1, 0)), _cell(m), gemmi.SpaceGroup("P 1"))


def test_fsc_matches_servalcat_shell_by_shell(case):
    m, _, model, _ = case
    voxel = m.isotropic_voxel_size
    hkldata = servalcat_maps.mask_and_fft_maps([[_grid(m, m.data)], [_grid(m, model.data)]], d_min=2 * voxel)
    hkldata.setup_relion_binning("stat")  # shell k: round(box edge / d) = k, as ours
    theirs = dict(zip(hkldata.binned_df["stat"].index, servalcat_fsc.calc_fsc(hkldata, labs=["F_map1", "F_map2"])))
    ours = fsc(m.data, model.data, voxel).correlation
    # servalcat merges sparse end shells (1 into 2, 50 into 49) and stops exactly at Nyquist: compare the rest.
    shells = range(3, ours.size - 1)
    differences = [abs(theirs[k] - ours[k - 1]) for k in shells]
    assert max(differences) < 0.01


def test_model_map_matches_servalcat_structure_factors(case):
    m, pdb, model, mask = case
    structure = gemmi.read_structure(str(pdb))
    structure.cell = _cell(m)
    structure.spacegroup_hm = "P 1"
    asu = servalcat_model.calc_fc_fft(structure, RESOLUTION, source="electron", mott_bethe=False)
    grid = servalcat_hkl.fft_map(_cell(m), gemmi.SpaceGroup("P 1"), asu.miller_array, asu.value_array,
                                 grid_size=m.data.shape[::-1])
    theirs = np.array(grid, copy=False).transpose(2, 1, 0)
    assert np.corrcoef(theirs.ravel(), model.data.ravel())[0, 1] > 0.998
    ours_cc = map_model_correlations(m.data, model.data, mask).cc_mask
    assert map_model_correlations(m.data, theirs, mask).cc_mask == pytest.approx(ours_cc, abs=0.005)


@pytest.mark.parametrize("window", [5, 7])
def test_local_correlation_matches_servalcat_inside_the_model(case, window):
    m, _, model, mask = case
    kernel = np.full((window,) * 3, 1.0 / window ** 3)
    theirs = np.array(servalcat_maps.local_cc(_grid(m, m.data), _grid(m, model.data), kernel).array).transpose(2, 1, 0)
    ours = local_correlation(m.data, model.data, window, mask)
    # Inside the molecule: servalcat works in float32, which makes nearly flat solvent windows noisy.
    assert np.all(np.isfinite(ours[mask]))
    np.testing.assert_allclose(ours[mask], theirs[mask], atol=1e-4)
