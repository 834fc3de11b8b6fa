"""Map I/O: geometry survives read/write, placement matches ChimeraX, bad input fails in one line."""
from __future__ import annotations

import contextlib
import gzip
import io
import os
import warnings
from pathlib import Path

import mrcfile
import numpy as np
import pytest

try:
    import resource
except ImportError:  # Windows
    resource = None

from deepemhancer.errors import InputError, ResourceError
from deepemhancer.mapio import (Geometry, Map, check_map_values, check_same_grid, read_map,
                                voxel_centre_xyz, write_map)

RNG = np.random.default_rng(1234)


def write_raw(path: Path, data: np.ndarray, *, voxel_size=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0),
              nstart=(0, 0, 0), axis_order=(1, 2, 3), sampling=None, cell_angles=(90.0, 90.0, 90.0),
              ispg=1, compression=None) -> Path:
    """An input map written with mrcfile alone (independent of the code under test)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # NaN/Inf test data
        with mrcfile.new(path, compression=compression, overwrite=True) as mrc:
            mrc.header.ispg = ispg
            mrc.set_data(data)
            if data.ndim == 3:
                counts_crs = (data.shape[2], data.shape[1], data.shape[0])
                xyz_counts = [counts_crs[axis_order.index(a)] for a in (1, 2, 3)]
                sampling = sampling or xyz_counts
                mrc.header.mx, mrc.header.my, mrc.header.mz = sampling
                mrc.header.cella = tuple(np.float32(v * m) for v, m in zip(voxel_size, sampling))
                mrc.header.mapc, mrc.header.mapr, mrc.header.maps = axis_order
            mrc.header.cellb = cell_angles
            mrc.header.nxstart, mrc.header.nystart, mrc.header.nzstart = nstart
            mrc.header.origin = origin
    return path


def header_fields(path: Path) -> dict:
    """Every placement field of a file's header, read by mrcfile."""
    with mrcfile.open(path, permissive=False) as mrc:
        h = mrc.header
        return {name: h[name].tobytes() for name in
                ("nx", "ny", "nz", "mode", "nxstart", "nystart", "nzstart", "mx", "my", "mz", "cella", "cellb",
                 "mapc", "mapr", "maps", "origin")}


def reference_centre(path: Path, index_zyx) -> np.ndarray:
    """X, Y, Z of a voxel centre straight from the header, ChimeraX's rule, orthogonal cells only."""
    with mrcfile.open(path, permissive=False) as mrc:
        h = mrc.header
        step = [float(h.cella[a]) / int(h[m]) for a, m in zip("xyz", ("mx", "my", "mz"))]
        origin = [float(h.origin[a]) for a in "xyz"]
        starts = {int(h.mapc): int(h.nxstart), int(h.mapr): int(h.nystart), int(h.maps): int(h.nzstart)}
        counts = {int(h.mapc): index_zyx[2], int(h.mapr): index_zyx[1], int(h.maps): index_zyx[0]}
    if any(origin):
        return np.array([origin[a - 1] + counts[a] * step[a - 1] for a in (1, 2, 3)])
    return np.array([(starts[a] + counts[a]) * step[a - 1] for a in (1, 2, 3)])


def assert_one_line_advice(error: pytest.ExceptionInfo, *words: str) -> None:
    """The message is one line, says what is wrong and, after a ';', what to do."""
    message = str(error.value)
    assert "\n" not in message
    assert ";" in message and message.split(";")[-1].strip()
    for word in words:
        assert word.lower() in message.lower(), (word, message)


# ----------------------------------------------------------------------------- round trips

UNUSUAL = [
    dict(axis_order=(1, 2, 3), origin=(12.5, -40.25, 3.0), nstart=(0, 0, 0), name="a.mrc"),
    dict(axis_order=(3, 2, 1), origin=(0.0, 0.0, 0.0), nstart=(-7, 4, -11), name="b.map"),
    dict(axis_order=(2, 3, 1), origin=(-5.0, 8.0, 100.0), nstart=(-3, -2, 9), name="c.mrc.gz"),
    dict(axis_order=(2, 3, 1), origin=(0.0, 0.0, 0.0), nstart=(3, -20, 1), name="d.map.gz"),
]


@pytest.mark.parametrize("case", UNUSUAL, ids=[c["name"] for c in UNUSUAL])
def test_round_trip_keeps_data_and_every_header_field(tmp_path, case):
    data = RNG.normal(size=(9, 14, 11)).astype(np.float32)
    compression = "gzip" if case["name"].endswith(".gz") else None
    source = write_raw(tmp_path / f"in_{case['name']}", data, voxel_size=(1.3, 1.3, 1.3), origin=case["origin"],
                       nstart=case["nstart"], axis_order=case["axis_order"], compression=compression)

    m = read_map(source)
    assert m.data.dtype == np.float32 and np.array_equal(m.data, data)  # stored order, never reordered
    g = m.geometry
    with mrcfile.open(source) as mrc:  # the float32 header value, kept as such (as the original reads it)
        assert g.voxel_size == tuple(float(v) for v in mrc.voxel_size.item())
    assert all(v != 1.3 and v == float(np.float32(v)) and abs(v - 1.3) < 1e-6 for v in g.voxel_size)
    assert g.origin == tuple(float(np.float32(v)) for v in case["origin"])
    assert g.nstart == case["nstart"] and g.axis_order == case["axis_order"]

    out = write_map(m, tmp_path / case["name"])
    again = read_map(out)
    assert np.array_equal(again.data, data)
    assert again.geometry == g
    assert header_fields(out) == header_fields(source)
    assert mrcfile.validate(out, print_file=io.StringIO())  # a valid MRC2014 file, statistics included
    if compression:
        with open(out, "rb") as handle:
            assert handle.read(2) == b"\x1f\x8b"
    for index in [(0, 0, 0), (8, 13, 10), (3, 5, 7)]:
        expected = reference_centre(source, index)
        np.testing.assert_allclose(voxel_centre_xyz(m, index), expected, rtol=0, atol=1e-4)
        np.testing.assert_array_equal(voxel_centre_xyz(again, index), voxel_centre_xyz(m, index))


def test_voxel_centre_is_vectorised_and_follows_axis_order(tmp_path):
    data = np.zeros((4, 5, 6), np.float32)
    data[1, 2, 3] = 1.0
    source = write_raw(tmp_path / "v.mrc", data, voxel_size=(2.0, 2.0, 2.0), nstart=(10, 20, 30),
                       axis_order=(3, 1, 2))
    m = read_map(source)
    # columns run along Z (mapc=3), rows along X (mapr=1), sections along Y (maps=2)
    np.testing.assert_allclose(voxel_centre_xyz(m, (1, 2, 3)), [(20 + 2) * 2.0, (30 + 1) * 2.0, (10 + 3) * 2.0])
    indices = np.array([[0, 0, 0], [1, 2, 3], [3, 4, 5]])
    many = voxel_centre_xyz(m, indices)
    assert many.shape == (3, 3)
    for row, index in zip(many, indices):
        np.testing.assert_allclose(row, reference_centre(source, tuple(index)))


def test_header_statistics_are_right(tmp_path):
    data = (RNG.normal(size=(20, 18, 16)) * 3 + 7).astype(np.float32)
    m = Map(data, Geometry.for_grid(data.shape, 1.05, origin=(1.0, 2.0, 3.0)))
    out = write_map(m, tmp_path / "stats.mrc")
    exact = data.astype(np.float64)
    with mrcfile.open(out) as mrc:
        h = mrc.header
        assert int(h.mode) == 2 and mrc.data.dtype == np.float32
        assert float(h.dmin) == float(data.min()) and float(h.dmax) == float(data.max())
        np.testing.assert_allclose(float(h.dmean), exact.mean(), rtol=1e-6)
        np.testing.assert_allclose(float(h.rms), exact.std(), rtol=1e-6)
        assert tuple(float(v) for v in mrc.voxel_size.item()) == (float(np.float32(1.05)),) * 3
        assert tuple(float(h.origin[a]) for a in "xyz") == (1.0, 2.0, 3.0)


def test_integer_and_half_float_modes_read_as_float32(tmp_path):
    for dtype in (np.int8, np.int16, np.uint16, np.float16):
        data = RNG.integers(-5 if np.dtype(dtype).kind != "u" else 0, 100, size=(6, 7, 8)).astype(dtype)
        m = read_map(write_raw(tmp_path / f"{np.dtype(dtype).name}.mrc", data))
        assert m.data.dtype == np.float32
        np.testing.assert_array_equal(m.data, data.astype(np.float32))


def test_ccp4_suffix_and_big_endian_files(tmp_path):
    data = RNG.normal(size=(5, 6, 7)).astype(">f4")
    m = read_map(write_raw(tmp_path / "big.ccp4", data))
    assert m.data.dtype == np.dtype("=f4")
    np.testing.assert_array_equal(m.data, data.astype(np.float32))
    assert read_map(write_map(m, tmp_path / "out.ccp4")).geometry == m.geometry


def test_with_data_and_with_voxel_size(tmp_path):
    data = RNG.normal(size=(6, 7, 8)).astype(np.float32)
    m = read_map(write_raw(tmp_path / "w.mrc", data, voxel_size=(1.1, 1.1, 1.1), origin=(5.0, 6.0, 7.0),
                           nstart=(-1, -2, -3)))
    doubled = m.with_data(data * 2)
    assert doubled.geometry == m.geometry and np.array_equal(doubled.data, data * 2)
    with pytest.raises(ValueError):
        m.with_data(np.zeros((6, 7, 9), np.float32))

    bigger = m.with_voxel_size(1.5)
    assert bigger.geometry.voxel_size == (1.5, 1.5, 1.5) and bigger.isotropic_voxel_size == 1.5
    assert bigger.geometry.origin == m.geometry.origin and bigger.geometry.nstart == m.geometry.nstart
    again = read_map(write_map(bigger, tmp_path / "w15.mrc"))
    assert again.geometry.voxel_size == (1.5, 1.5, 1.5)
    assert again.geometry.origin == (5.0, 6.0, 7.0)
    for size in (0.0, -1.0, float("nan"), 1000.0):
        with pytest.raises(InputError) as error:
            m.with_voxel_size(size)
        assert_one_line_advice(error, "voxel size", "between 0.01 and 100")
        assert error.value.setting == "voxel_size"  # the command line names its -s/--samplingRate


def test_voxel_size_zero_in_header_needs_the_flag(tmp_path):
    data = RNG.normal(size=(6, 7, 8)).astype(np.float32)
    path = write_raw(tmp_path / "zero.mrc", data, voxel_size=(0.0, 0.0, 0.0))
    m = read_map(path)
    with pytest.raises(InputError) as error:
        m.isotropic_voxel_size
    assert_one_line_advice(error, "header", "real voxel size")
    assert error.value.setting == "voxel_size"
    assert m.with_voxel_size(0.9).isotropic_voxel_size == 0.9


def test_voxel_size_override_when_header_sampling_is_zero(tmp_path):
    data = RNG.normal(size=(6, 7, 8)).astype(np.float32)
    path = write_raw(tmp_path / "nosampling.mrc", data, sampling=(0, 0, 0))
    m = read_map(path)
    assert m.geometry.voxel_size == (0.0, 0.0, 0.0)
    fixed = read_map(write_map(m.with_voxel_size(2.0), tmp_path / "fixed.mrc"))
    assert fixed.geometry.voxel_size == (2.0, 2.0, 2.0) and fixed.geometry.sampling == (8, 7, 6)


def test_anisotropic_voxels_are_refused_with_advice(tmp_path):
    data = RNG.normal(size=(4, 5, 6)).astype(np.float32)
    m = read_map(write_raw(tmp_path / "aniso.mrc", data, voxel_size=(1.0, 2.0, 4.0), axis_order=(3, 1, 2)))
    with pytest.raises(InputError) as error:
        m.isotropic_voxel_size
    assert_one_line_advice(error, "anisotropic", "resample")


# ----------------------------------------------------------------------------- grid checks

def _grid(shape=(6, 7, 8), voxel=1.0, origin=(0.0, 0.0, 0.0), nstart=(0, 0, 0), axis_order=(1, 2, 3)) -> Map:
    sections, rows, columns = shape
    crs = (columns, rows, sections)
    sampling = tuple(crs[axis_order.index(a)] for a in (1, 2, 3))
    geometry = Geometry(voxel_size=(voxel,) * 3, origin=origin, nstart=nstart, axis_order=axis_order,
                        sampling=sampling, cell_lengths=tuple(voxel * s for s in sampling))
    return Map(np.zeros(shape, np.float32), geometry)


@pytest.mark.parametrize("other, word, values", [
    (_grid(shape=(6, 7, 9)), "shape", "(6, 7, 8) vs (6, 7, 9)"),
    (_grid(voxel=1.01), "voxel size", "(1, 1, 1) vs (1.01, 1.01, 1.01)"),
    (_grid(origin=(0.0, 0.0, 0.01)), "origin", "(0, 0, 0) vs (0, 0, 0.01)"),
    (_grid(nstart=(0, -1, 0)), "nstart", "(0, 0, 0) vs (0, -1, 0)"),
    (_grid(axis_order=(2, 1, 3), shape=(6, 8, 8)), "axis order", "(1, 2, 3) vs (2, 1, 3)"),
])
def test_check_same_grid_names_the_mismatch(other, word, values):
    reference = _grid(shape=(6, 8, 8)) if word == "axis order" else _grid()
    with pytest.raises(InputError) as error:
        check_same_grid(reference, other, "half map 1", "half map 2")
    assert_one_line_advice(error, "half map 1", "half map 2", word, values)
    with pytest.raises(InputError) as error:
        check_same_grid(reference, other, "half map 1", "half map 2",
                        advice="use the two half maps of one refinement")
    assert str(error.value).endswith("; use the two half maps of one refinement")


def test_check_same_grid_tolerances():
    """Rounding in headers passes; a real difference just beyond the tolerances does not."""
    assert check_same_grid(_grid(), _grid(voxel=1.00005, origin=(0.0005, 0.0, -0.0005)), "map", "mask") is None
    with pytest.raises(InputError, match="voxel size"):
        check_same_grid(_grid(), _grid(voxel=1.01), "map", "mask")
    with pytest.raises(InputError, match="origin"):
        check_same_grid(_grid(), _grid(origin=(0.1, 0.0, 0.0)), "map", "mask")


# ----------------------------------------------------------------------------- bad input

def test_missing_file(tmp_path):
    with pytest.raises(InputError) as error:
        read_map(tmp_path / "nothere.mrc")
    assert_one_line_advice(error, "not found", "check the path")


def test_folder_instead_of_file(tmp_path):
    with pytest.raises(InputError) as error:
        read_map(tmp_path)
    assert_one_line_advice(error, "not a file")


@pytest.mark.parametrize("size", [100, 5000])
def test_random_bytes_are_not_a_map(tmp_path, size):
    path = tmp_path / "noise.mrc"
    path.write_bytes(RNG.integers(0, 256, size, dtype=np.uint8).tobytes())
    with pytest.raises(InputError) as error:
        read_map(path)
    assert_one_line_advice(error, "not an MRC map")


def test_truncated_file(tmp_path):
    path = write_raw(tmp_path / "cut.mrc", RNG.normal(size=(10, 10, 10)).astype(np.float32))
    whole = path.read_bytes()
    path.write_bytes(whole[:-1000])
    with pytest.raises(InputError) as error:
        read_map(path)
    assert_one_line_advice(error, "truncated", "4000 bytes", "3000", "download")


def test_truncated_gzip_file(tmp_path):
    path = write_raw(tmp_path / "cut.mrc.gz", RNG.normal(size=(10, 10, 10)).astype(np.float32),
                     compression="gzip")
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(InputError) as error:
        read_map(path)
    assert_one_line_advice(error, "truncated", "download")


def test_gzip_of_a_non_map(tmp_path):
    path = tmp_path / "text.mrc.gz"
    path.write_bytes(gzip.compress(b"hello " * 400))
    with pytest.raises(InputError) as error:
        read_map(path)
    assert_one_line_advice(error, "not an MRC map")


def test_data_longer_than_header_says(tmp_path):
    path = write_raw(tmp_path / "long.mrc", RNG.normal(size=(6, 6, 6)).astype(np.float32))
    path.write_bytes(path.read_bytes() + b"\0" * 64)
    with pytest.raises(InputError) as error:
        read_map(path)
    assert_one_line_advice(error, "longer than its header")


@pytest.mark.parametrize("bad, label", [(np.nan, "NaN"), (np.inf, "Inf"), (-np.inf, "-Inf")])
def test_non_finite_values(tmp_path, bad, label):
    data = RNG.normal(size=(8, 8, 8)).astype(np.float32)
    data[1, 2, 3] = data[4, 5, 6] = data[7, 7, 7] = bad
    with pytest.raises(InputError) as error:
        read_map(write_raw(tmp_path / "bad.mrc", data))
    assert_one_line_advice(error, "contains 3 NaN/Inf values", "replace")


def test_all_zero_and_constant_maps_are_read_but_not_enhanced(tmp_path):
    zero = read_map(write_raw(tmp_path / "zero.mrc", np.zeros((8, 8, 8), np.float32)))
    with pytest.raises(InputError) as error:
        check_map_values(zero, "input map")
    assert_one_line_advice(error, "input map", "all zeros", "unmasked, unsharpened")
    constant = zero.with_data(np.full((8, 8, 8), 3.5, np.float32))
    with pytest.raises(InputError) as error:
        check_map_values(constant, "half map 2")
    assert_one_line_advice(error, "half map 2", "constant", "3.5", "unmasked, unsharpened")
    nan = zero.with_data(np.where(np.broadcast_to(np.eye(8, dtype=bool), (8, 8, 8)), np.nan, 1.0))
    with pytest.raises(InputError) as error:
        check_map_values(nan, "input map")
    assert_one_line_advice(error, "NaN/Inf")
    check_map_values(zero.with_data(RNG.normal(size=(8, 8, 8))), "input map")


def test_2d_image_and_single_section_are_not_maps(tmp_path):
    image = write_raw(tmp_path / "image.mrc", RNG.normal(size=(16, 12)).astype(np.float32), ispg=0)
    with pytest.raises(InputError) as error:
        read_map(image)
    assert_one_line_advice(error, "2D image", "12 x 16", "3D map")
    section = write_raw(tmp_path / "section.mrc", RNG.normal(size=(1, 16, 12)).astype(np.float32), ispg=1)
    with pytest.raises(InputError) as error:
        read_map(section)
    assert_one_line_advice(error, "single section", "3D map")


def test_volume_stack_is_not_one_map(tmp_path):
    path = tmp_path / "stack.mrc"
    with mrcfile.new(path) as mrc:
        mrc.set_data(RNG.normal(size=(2, 4, 5, 6)).astype(np.float32))
    with pytest.raises(InputError) as error:
        read_map(path)
    assert_one_line_advice(error, "stack of 2 volumes", "extract")


def test_complex_and_unknown_modes(tmp_path):
    complex_path = write_raw(tmp_path / "fft.mrc", (RNG.normal(size=(4, 4, 4)) * 1j).astype(np.complex64))
    with pytest.raises(InputError) as error:
        read_map(complex_path)
    assert_one_line_advice(error, "complex", "real-space")
    odd = write_raw(tmp_path / "mode3.mrc", RNG.normal(size=(4, 4, 4)).astype(np.float32))
    raw = bytearray(odd.read_bytes())
    raw[12:16] = np.int32(3).tobytes()  # mode word: complex int16, which nothing reads
    odd.write_bytes(bytes(raw))
    with pytest.raises(InputError) as error:
        read_map(odd)
    assert_one_line_advice(error, "unsupported mode", "convert")


def test_invalid_axis_order(tmp_path):
    path = write_raw(tmp_path / "axes.mrc", RNG.normal(size=(4, 4, 4)).astype(np.float32))
    with mrcfile.open(path, mode="r+") as mrc:
        mrc.header.mapc = mrc.header.mapr = mrc.header.maps = 0
    with pytest.raises(InputError) as error:
        read_map(path)
    assert_one_line_advice(error, "axis order", "(0, 0, 0)", "fix the header")


# ----------------------------------------------------------------------------- safe writing

def _small_map() -> Map:
    data = RNG.normal(size=(6, 7, 8)).astype(np.float32)
    return Map(data, Geometry.for_grid(data.shape, 1.2))


def test_existing_output_is_kept_without_overwrite(tmp_path):
    out = tmp_path / "out.mrc"
    out.write_bytes(b"precious")
    with pytest.raises(InputError) as error:
        write_map(_small_map(), out)
    assert str(error.value) == f"output {out} exists; allow overwriting it or choose another name"
    assert error.value.setting == "overwrite"  # the command line names its --force
    assert out.read_bytes() == b"precious"
    m = _small_map()
    write_map(m, out, overwrite=True)
    np.testing.assert_array_equal(read_map(out).data, m.data)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mrc"]


def test_missing_output_folder_and_bad_names(tmp_path):
    with pytest.raises(InputError) as error:
        write_map(_small_map(), tmp_path / "no" / "such" / "out.mrc")
    assert_one_line_advice(error, "does not exist", "create it")
    with pytest.raises(InputError) as error:
        write_map(_small_map(), tmp_path / "out.txt")
    assert_one_line_advice(error, ".mrc", "rename")
    (tmp_path / "dir.mrc").mkdir()
    with pytest.raises(InputError) as error:
        write_map(_small_map(), tmp_path / "dir.mrc", overwrite=True)
    assert_one_line_advice(error, "folder")


@contextlib.contextmanager
def file_size_limit(limit: int):
    """Writes past ``limit`` bytes fail with EFBIG, as on a full disk (Python ignores SIGXFSZ)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


@pytest.mark.skipif(resource is None, reason="needs POSIX resource limits")
@pytest.mark.parametrize("name", ["out.mrc", "out.mrc.gz"])
def test_failure_mid_write_leaves_no_partial_file(tmp_path, name):
    data = RNG.normal(size=(20, 20, 20)).astype(np.float32)  # 32 kB: well past the limit, even gzipped
    m = Map(data, Geometry.for_grid(data.shape, 1.0))
    with file_size_limit(4096), pytest.raises(ResourceError) as error:
        write_map(m, tmp_path / name)
    assert_one_line_advice(error, "too large", "disk space")
    assert list(tmp_path.iterdir()) == []

    old = tmp_path / name
    old.write_bytes(b"old result")
    with file_size_limit(4096), pytest.raises(ResourceError):
        write_map(m, old, overwrite=True)
    assert old.read_bytes() == b"old result"
    assert [p.name for p in tmp_path.iterdir()] == [name]


def test_interrupt_during_write_leaves_no_partial_file(tmp_path, monkeypatch):
    def interrupted(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_map(_small_map(), tmp_path / "out.mrc")
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- real maps

def _atoms(path: Path) -> np.ndarray:
    import gemmi
    structure = gemmi.read_structure(str(path))
    return np.array([atom.pos.tolist() for chain in structure[0] for residue in chain for atom in residue])


def _density_at(m: Map, xyz: np.ndarray) -> np.ndarray:
    """Nearest-voxel density at X, Y, Z points of an axis-order (1, 2, 3) map; NaN outside the box."""
    assert m.geometry.axis_order == (1, 2, 3)
    corner = reference_centre_from_map(m)
    columns_rows_sections = np.rint((xyz - corner) / np.array(m.geometry.voxel_size)).astype(int)
    index = columns_rows_sections[:, ::-1]
    inside = np.all((index >= 0) & (index < np.array(m.data.shape)), axis=1)
    values = np.full(len(xyz), np.nan)
    values[inside] = m.data[tuple(index[inside].T)]
    return values


def reference_centre_from_map(m: Map) -> np.ndarray:
    """ChimeraX's position of voxel (0, 0, 0) from the geometry fields, for axis order (1, 2, 3)."""
    g = m.geometry
    if any(g.origin):
        return np.array(g.origin)
    return np.array(g.nstart) * np.array(g.voxel_size)


def test_emd21457_origin_and_nstart_place_the_map_alike(shared_data, tmp_path):
    folder = shared_data / "maps" / "emd21457"
    by_origin = read_map(folder / "emd_21457_seg.mrc")
    by_nstart = read_map(folder / "emd_21457_seg_nstart.mrc")
    unplaced = read_map(folder / "emd_21457_seg_orig0.mrc")
    assert by_origin.geometry.nstart == (0, 0, 0) and any(by_origin.geometry.origin)
    assert by_nstart.geometry.nstart == (155, 220, 195) and not any(by_nstart.geometry.origin)
    corner = voxel_centre_xyz(by_origin, (0, 0, 0))
    np.testing.assert_allclose(corner, [162.75, 231.0, 204.75], atol=1e-3)
    np.testing.assert_allclose(voxel_centre_xyz(by_nstart, (0, 0, 0)), corner, atol=1e-3)
    np.testing.assert_allclose(voxel_centre_xyz(unplaced, (0, 0, 0)), [0, 0, 0])

    atoms = _atoms(folder / "6vyb_Ndom.pdb")
    shifted = _atoms(folder / "6vyb_Ndom_shifted.pdb")
    for m, model in ((by_origin, atoms), (by_nstart, atoms), (unplaced, shifted)):
        at_atoms = _density_at(m, model)
        assert np.mean(np.isfinite(at_atoms)) > 0.99  # the model lies inside the box
        assert np.nanmean(at_atoms) > m.data.mean() + m.data.std()  # ... and on the density
        centroid = _density_at(m, model.mean(axis=0, keepdims=True))[0]
        assert centroid > np.percentile(m.data, 90)
        copy = read_map(write_map(m, tmp_path / "copy.mrc", overwrite=True))
        assert copy.geometry == m.geometry
        np.testing.assert_array_equal(voxel_centre_xyz(copy, (0, 0, 0)), voxel_centre_xyz(m, (0, 0, 0)))
        np.testing.assert_array_equal(_density_at(copy, model), at_atoms)


def test_emd5168_negative_nstart(shared_data, tmp_path):
    folder = shared_data / "maps" / "emd5168_emd5170"
    m = read_map(folder / "emd_5168.map")
    assert m.geometry.nstart == (-50, -50, -50) and m.geometry.origin == (0.0, 0.0, 0.0)
    assert m.isotropic_voxel_size == float(np.float32(1.742))
    np.testing.assert_allclose(voxel_centre_xyz(m, (0, 0, 0)), [-50 * 1.742] * 3, atol=1e-4)
    density = _density_at(m, _atoms(folder / "3MFP.pdb"))
    assert np.mean(np.isfinite(density)) > 0.99
    assert np.nanmean(density) > m.data.mean() + 2 * m.data.std()
    out = write_map(m, tmp_path / "copy.map")
    assert header_fields(out) == header_fields(folder / "emd_5168.map")


def test_emd11007_axis_order_321(shared_data, tmp_path):
    path = shared_data / "maps" / "emd11007" / "emd_11007.map.gz"
    m = read_map(path)
    assert m.geometry.axis_order == (3, 2, 1) and m.data.shape == (240, 240, 240)
    with mrcfile.open(path) as mrc:
        np.testing.assert_array_equal(m.data, mrc.data)  # as stored: no axis was swapped
    assert m.isotropic_voxel_size == float(np.float32(0.834))
    # column index runs along Z, section index along X
    np.testing.assert_allclose(voxel_centre_xyz(m, (5, 0, 0)), [5 * 0.834, 0, 0], atol=1e-4)
    np.testing.assert_allclose(voxel_centre_xyz(m, (0, 0, 7)), [0, 0, 7 * 0.834], atol=1e-4)
    out = write_map(m, tmp_path / "copy.mrc")
    assert header_fields(out) == header_fields(path)


def test_emd3001_anisotropic_skewed_crystal_map(shared_data, tmp_path):
    import gemmi
    for name in ("EMD-3001.map", "emd_3001.map.gz"):
        path = shared_data / "maps" / "formats" / name
        m = read_map(path)
        g = m.geometry
        assert g.axis_order == (3, 1, 2) and g.nstart == (0, -21, -12) and m.data.shape == (25, 43, 73)
        with pytest.raises(InputError) as error:
            m.isotropic_voxel_size
        assert_one_line_advice(error, "anisotropic", "resample")
        # placement in the skewed cell, against gemmi's fractional -> Cartesian conversion
        cell = gemmi.UnitCell(*g.cell_lengths, *g.cell_angles)
        for index in [(0, 0, 0), (24, 42, 72), (3, 10, 50)]:
            section, row, column = index
            grid = {3: column + g.nstart[0], 1: row + g.nstart[1], 2: section + g.nstart[2]}
            fractional = gemmi.Fractional(*(grid[a] / g.sampling[a - 1] for a in (1, 2, 3)))
            expected = cell.orthogonalize(fractional).tolist()
            np.testing.assert_allclose(voxel_centre_xyz(m, index), expected, atol=1e-4)
        out = write_map(m, tmp_path / "copy.map", overwrite=True)
        assert header_fields(out) == header_fields(path)


def test_emd3197(shared_data, tmp_path):
    path = shared_data / "maps" / "formats" / "EMD-3197.map"
    m = read_map(path)
    assert m.data.shape == (20, 20, 20) and m.geometry.nstart == (-2, 0, 0)
    assert m.isotropic_voxel_size == float(np.float32(11.4))
    np.testing.assert_allclose(voxel_centre_xyz(m, (0, 0, 0)), [-2 * 11.4, 0, 0], atol=1e-4)
    check_map_values(m, "EMD-3197")
    out = write_map(m, tmp_path / "copy.mrc.gz")
    assert header_fields(out) == header_fields(path)
    np.testing.assert_array_equal(read_map(out).data, m.data)


def test_read_header_matches_read_map_without_the_data(tmp_path):
    from deepemhancer.mapio import read_header

    data = np.random.default_rng(3).normal(size=(6, 7, 8)).astype(np.float32)
    m = Map(data, Geometry.for_grid(data.shape, 1.3, origin=(1.0, -2.0, 3.5)))
    path = write_map(m, tmp_path / "h.mrc")
    shape, geometry = read_header(path)
    assert shape == (6, 7, 8) and geometry == read_map(path).geometry
    with pytest.raises(InputError, match="not found"):
        read_header(tmp_path / "missing.mrc")
