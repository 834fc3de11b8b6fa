"""Map-model measures on real maps and their fitted models (shared data).

The molecular mask is checked against a reference built here from the atoms with numpy (cctbx's
van der Waals radii, probe 1.11 Å, shrink 0.9 Å); placement against the three EMD-21457 copies.
"""
import dataclasses

import gemmi
import numpy as np
import pytest
from scipy import ndimage

from deepemhancer.errors import InputError
from deepemhancer.mapio import Geometry, Map, read_map
from deepemhancer.metrics import (MapModelCC, fsc, map_model_correlations, median_local_correlation, model_map,
                                  molecular_mask, resolution_at)

pytestmark = pytest.mark.shared_data

CCTBX_VDW = {"C": 1.775, "N": 1.5, "O": 1.45, "S": 1.8, "FE": 1.26}  # cctbx/eltbx/van_der_waals_radii.py


@pytest.fixture(scope="module")
def emd3488(shared_data):
    folder = shared_data / "maps" / "emd3488"
    return read_map(folder / "emd_3488.mrc"), folder / "5me2.pdb"


@pytest.fixture(scope="module")
def emd21457(shared_data):
    return shared_data / "maps" / "emd21457"


def _reference_molecular_mask(pdb, m):
    """Union of spheres r_vdW + 1.11 Å, less shell points within 0.9 Å of solvent; axis order (1, 2, 3) only."""
    assert m.geometry.axis_order == (1, 2, 3)
    spacing = np.array(m.geometry.voxel_size)[::-1]  # z, y, x
    start = (np.array(m.geometry.origin) if any(m.geometry.origin)
             else np.array(m.geometry.nstart) * np.array(m.geometry.voxel_size))[::-1]
    outer = np.zeros(m.data.shape, dtype=bool)
    core = np.zeros(m.data.shape, dtype=bool)
    for chain in gemmi.read_structure(str(pdb))[0]:
        for residue in chain:
            for atom in residue:
                if atom.is_hydrogen():
                    continue
                position = np.array(atom.pos.tolist())[::-1]
                radius = CCTBX_VDW[atom.element.name.upper()]
                low = np.maximum(np.ceil((position - radius - 1.11 - start) / spacing).astype(int), 0)
                high = np.minimum(np.floor((position + radius + 1.11 - start) / spacing).astype(int) + 1, m.data.shape)
                if np.any(high <= low):
                    continue
                axes = [start[i] + np.arange(low[i], high[i]) * spacing[i] - position[i] for i in range(3)]
                d2 = sum(g ** 2 for g in np.meshgrid(*axes, indexing="ij"))
                cube = tuple(slice(lo, hi) for lo, hi in zip(low, high))
                outer[cube] |= d2 <= (radius + 1.11) ** 2
                core[cube] |= d2 <= radius ** 2
    to_solvent = ndimage.distance_transform_edt(outer, sampling=spacing)
    return core | (outer & (to_solvent > 0.9))


def map_model_cc(m: Map, pdb, resolution: float) -> MapModelCC:
    """phenix.map_model_cc's correlations of ``m`` and its model at ``resolution`` Å, as the scorer computes them."""
    return map_model_correlations(m.data, model_map(pdb, m, resolution).data, molecular_mask(pdb, m))


def test_emd3488_and_its_model_agree(emd3488):
    m, pdb = emd3488
    cc = map_model_cc(m, pdb, 3.2)
    assert cc.cc_mask > 0.7 and cc.cc_box > 0.6 and cc.cc_volume > 0.65 and cc.cc_peaks > 0.6
    model = model_map(pdb, m, 3.2)
    mask = molecular_mask(pdb, m)
    for window in (5, 7):
        assert median_local_correlation(m.data, model.data, window, mask) > 0.7
    assert 3.0 < resolution_at(fsc(m.data, model.data, m.isotropic_voxel_size), 0.5) < 4.0


def test_molecular_mask_matches_the_reference(emd3488, emd21457):
    for m, pdb in (emd3488, (read_map(emd21457 / "emd_21457_seg.mrc"), emd21457 / "6vyb_Ndom.pdb")):
        mask = molecular_mask(pdb, m)
        reference = _reference_molecular_mask(pdb, m)
        assert np.mean(mask != reference) < 0.002
        model = model_map(pdb, m, 3.2).data
        ours = map_model_correlations(m.data, model, mask).cc_mask
        theirs = np.corrcoef(m.data[reference], model[reference])[0, 1]
        assert ours == pytest.approx(theirs, abs=0.002)


def test_model_map_follows_the_map_placement(emd21457):
    by_origin = read_map(emd21457 / "emd_21457_seg.mrc")
    by_nstart = read_map(emd21457 / "emd_21457_seg_nstart.mrc")
    at_zero = read_map(emd21457 / "emd_21457_seg_orig0.mrc")
    model = model_map(emd21457 / "6vyb_Ndom.pdb", by_origin, 3.2)
    cc = map_model_cc(by_origin, emd21457 / "6vyb_Ndom.pdb", 3.2).cc_mask
    assert cc > 0.45
    scale = np.abs(model.data).max()
    np.testing.assert_allclose(model_map(emd21457 / "6vyb_Ndom.pdb", by_nstart, 3.2).data, model.data,
                               atol=1e-4 * scale)
    np.testing.assert_allclose(model_map(emd21457 / "6vyb_Ndom_shifted.pdb", at_zero, 3.2).data, model.data,
                               atol=1e-4 * scale)
    assert map_model_cc(at_zero, emd21457 / "6vyb_Ndom_shifted.pdb", 3.2).cc_mask == pytest.approx(cc, abs=1e-4)
    with pytest.raises(InputError, match="no atom"):  # the unshifted model lies 160 Å away from this box
        model_map(emd21457 / "6vyb_Ndom.pdb", at_zero, 3.2)
    misplaced = Map(by_nstart.data, dataclasses.replace(by_nstart.geometry, nstart=(157, 220, 195)))  # 2.1 Å off
    assert map_model_cc(misplaced, emd21457 / "6vyb_Ndom.pdb", 3.2).cc_mask < cc - 0.3


def test_model_map_keeps_the_stored_axis_order(emd21457):
    m = read_map(emd21457 / "emd_21457_seg.mrc")
    g = m.geometry
    # The same map stored with X along sections and Z along columns (mapc, mapr, maps = 3, 2, 1).
    swapped = Map(np.ascontiguousarray(m.data.transpose(2, 1, 0)),
                  Geometry(voxel_size=g.voxel_size, origin=g.origin, nstart=g.nstart, axis_order=(3, 2, 1),
                           sampling=g.sampling, cell_lengths=g.cell_lengths))
    pdb = emd21457 / "6vyb_Ndom.pdb"
    np.testing.assert_allclose(model_map(pdb, swapped, 3.2).data, model_map(pdb, m, 3.2).data.transpose(2, 1, 0),
                               atol=1e-6)
    np.testing.assert_array_equal(molecular_mask(pdb, swapped), molecular_mask(pdb, m).transpose(2, 1, 0))


def test_pdb_text_beyond_column_78_is_cut(tmp_path, emd21457):
    lines = (emd21457 / "6vyb_Ndom.pdb").read_text().splitlines()
    # Charge columns 79-80 holding text gemmi rejects, as in some BM5 files.
    damaged = [line[:78].ljust(78) + "85" if line.startswith("ATOM") else line for line in lines]
    path = tmp_path / "damaged.pdb"
    path.write_text("\n".join(damaged) + "\n")
    m = read_map(emd21457 / "emd_21457_seg.mrc")
    np.testing.assert_allclose(model_map(path, m, 4.0).data, model_map(emd21457 / "6vyb_Ndom.pdb", m, 4.0).data,
                               atol=1e-6)
