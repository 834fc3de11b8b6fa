"""Reading and writing MRC/CCP4 maps with the geometry that places them in space.

A ``Map`` carries the array exactly as stored (sections, rows, columns; mrcfile's order, never
reordered) together with a ``Geometry`` taken from the header, so that the written output lies
exactly where the input lay: same voxel size, origin, nstart, axis order, sampling and cell.

Placement follows ChimeraX (``map_data/mrc/mrc_format.py``): the origin field is the X, Y, Z
position in Å of array index (0, 0, 0) and is used when any of its components is non-zero;
otherwise the map starts at ``nstart * voxel_size`` (nstart given per column, row, section and
mapped to X, Y, Z through mapc, mapr, maps). Non-orthogonal cells are skewed as ChimeraX does.
"""
from __future__ import annotations

import contextlib
import dataclasses
import gzip
import os
import re
import shutil
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import mrcfile
import numpy as np
from mrcfile.constants import MAP_ID
from mrcfile.dtypes import HEADER_DTYPE
from mrcfile.utils import machine_stamp_from_byte_order

from .errors import InputError, ResourceError
from .files import atomic_path, remove_quietly, sweep_stale_temporaries, temporary_path

MAP_SUFFIXES = (".mrc", ".map", ".ccp4", ".mrc.gz", ".map.gz", ".ccp4.gz")
VOXEL_SIZE_RANGE = (0.01, 100.0)  # Å: beyond it a header or a typed value is a mistake, not a map
_VOXEL_RTOL = 1e-4
_ORIGIN_ATOL = 1e-3  # Å


@dataclass(frozen=True)
class Geometry:
    """Header fields that size and place a map; enough to write the header back exactly.

    voxel_size: Å along X, Y, Z (cella / (mx, my, mz)), float32 header values as Python floats.
    origin: the MRC2014 origin field (X, Y, Z) in Å.
    nstart: nxstart, nystart, nzstart: first column, row and section, in voxels.
    axis_order: (mapc, mapr, maps): the X/Y/Z axis (1/2/3) along columns, rows and sections.
    sampling: (mx, my, mz), the unit-cell sampling along X, Y, Z.
    cell_lengths: cella as stored (kept so that it is written back bit for bit).
    cell_angles: cellb (alpha, beta, gamma) in degrees.
    space_group: ispg.
    """

    voxel_size: tuple[float, float, float]
    origin: tuple[float, float, float]
    nstart: tuple[int, int, int]
    axis_order: tuple[int, int, int]
    sampling: tuple[int, int, int]
    cell_lengths: tuple[float, float, float]
    cell_angles: tuple[float, float, float] = (90.0, 90.0, 90.0)
    space_group: int = 1

    def __post_init__(self) -> None:
        # Normalise to plain Python tuples so that equality and printing behave.
        for name, kind in (("voxel_size", float), ("origin", float), ("nstart", int), ("axis_order", int),
                           ("sampling", int), ("cell_lengths", float), ("cell_angles", float)):
            values = tuple(kind(v) for v in getattr(self, name))
            if len(values) != 3:
                raise ValueError(f"Geometry.{name} needs 3 values, got {values}")
            object.__setattr__(self, name, values)
        object.__setattr__(self, "space_group", int(self.space_group))
        if sorted(self.axis_order) != [1, 2, 3]:
            raise ValueError(f"Geometry.axis_order must be a permutation of (1, 2, 3), got {self.axis_order}")
        expected = _voxel_size_from_cell(self.cell_lengths, self.sampling)
        if not np.allclose(self.voxel_size, expected, rtol=1e-5, atol=0.0, equal_nan=True):
            raise ValueError(f"Geometry.voxel_size {self.voxel_size} disagrees with cell_lengths / sampling "
                             f"{expected}")

    @classmethod
    def for_grid(cls, shape: tuple[int, int, int], voxel_size: float,
                 origin: tuple[float, float, float] = (0.0, 0.0, 0.0)) -> "Geometry":
        """Geometry for a new array of ``shape`` (sections, rows, columns) with axes (1, 2, 3)."""
        sections, rows, columns = (int(n) for n in shape)
        sampling = (columns, rows, sections)
        return cls(voxel_size=(float(voxel_size),) * 3, origin=origin, nstart=(0, 0, 0), axis_order=(1, 2, 3),
                   sampling=sampling, cell_lengths=tuple(float(voxel_size) * m for m in sampling))


@dataclass(frozen=True, eq=False)
class Map:
    """A map: float32 ``data`` as stored (sections, rows, columns) and its ``geometry``.

    Treat ``data`` as read-only: make new maps with ``with_data``.
    """

    data: np.ndarray
    geometry: Geometry

    def __post_init__(self) -> None:
        if not isinstance(self.data, np.ndarray) or self.data.ndim != 3 or self.data.dtype != np.float32:
            raise ValueError("Map.data must be a 3D float32 numpy array")

    def with_data(self, data: np.ndarray) -> "Map":
        """The same geometry around a new array of the same shape (stored as float32)."""
        array = np.asarray(data, dtype=np.float32)
        if array.shape != self.data.shape:
            raise ValueError(f"new data shape {array.shape} differs from the map's {self.data.shape}")
        return Map(array, self.geometry)

    def with_voxel_size(self, size: float) -> "Map":
        """Override the voxel size with an isotropic ``size`` in Å (the -s/--samplingRate flag).

        The origin field stays as stored in Å and nstart stays in voxels: a map placed by nstart
        moves with the new voxel size, one placed by the origin field does not.
        """
        check_voxel_size(size, "the voxel size given")
        sampling = self.geometry.sampling
        if min(sampling) <= 0:
            # No usable mx, my, mz in the header: sample the cell by the grid itself.
            sampling = _grid_size_xyz(self.data.shape, self.geometry.axis_order)
        size = float(size)
        geometry = dataclasses.replace(self.geometry, voxel_size=(size,) * 3, sampling=sampling,
                                       cell_lengths=tuple(size * m for m in sampling))
        return Map(self.data, geometry)

    @property
    def isotropic_voxel_size(self) -> float:
        """The single voxel size in Å (the header's X value); InputError when there is none."""
        x, y, z = self.geometry.voxel_size
        for value in (x, y, z):
            check_voxel_size(value, f"the map header's voxel size ({x:g}, {y:g}, {z:g}) Å")
        if max(x, y, z) - min(x, y, z) > _VOXEL_RTOL * max(x, y, z):
            raise InputError(f"the map has anisotropic voxels ({x:.6g}, {y:.6g}, {z:.6g} Å along x, y, z); "
                             "resample it to a cubic voxel first (e.g. ChimeraX 'volume resample')")
        return x


def check_voxel_size(size, what: str) -> None:
    """InputError unless ``size`` is a voxel size in Å within VOXEL_SIZE_RANGE."""
    low, high = VOXEL_SIZE_RANGE
    if isinstance(size, bool) or not isinstance(size, (int, float, np.floating, np.integer)) \
            or not low <= size <= high:
        raise InputError(f"{what} is not a voxel size between {low:g} and {high:g} Å (got {size!r}); "
                         "give the map's real voxel size, e.g. 1.06", setting="voxel_size")


def read_map(path: str | Path, voxel_size: float | None = None) -> Map:
    """Read an MRC/CCP4 map (optionally gzipped) as float32 with its geometry; ``voxel_size``, when
    given and different from the header's, replaces it (``Map.with_voxel_size``).

    Raises InputError, with one line saying what to do, for anything that is not a finite,
    real-valued 3D map.
    """
    path, header, data = _open_map(path, header_only=False)
    _check_is_volume(path, data)
    geometry = _geometry_from_header(path, header)
    array = _as_float32(data)
    _check_finite(array, str(path))
    m = Map(array, geometry)
    if voxel_size is not None and not np.allclose(geometry.voxel_size, voxel_size, rtol=_VOXEL_RTOL, atol=0.0):
        m = m.with_voxel_size(voxel_size)
    return m


def read_header(path: str | Path) -> tuple[tuple[int, int, int], Geometry]:
    """The array shape (sections, rows, columns) and geometry of a map, without reading its data
    (for checks before long work)."""
    path, header, _ = _open_map(path, header_only=True)
    shape = (int(header.nz), int(header.ny), int(header.nx))
    return shape, _geometry_from_header(path, header)


def _open_map(path: str | Path, header_only: bool):
    """(path, header copy, data or None), or InputError with one line."""
    path = _as_path(path, "a map")
    if not path.exists():
        raise InputError(f"map {path} not found; check the path")
    if not path.is_file():
        raise InputError(f"{path} is not a file; give the path of a map file (.mrc, .map)")
    try:
        with warnings.catch_warnings():
            # Strict reading: the only warning mrcfile gives then (data longer than the header
            # says) means the header may not describe the data, so it is an error too.
            warnings.simplefilter("error", RuntimeWarning)
            with mrcfile.open(path, mode="r", permissive=False, header_only=header_only) as mrc:
                return path, mrc.header.copy(), None if header_only else mrc.data
    except (ValueError, RuntimeWarning, OSError, EOFError, zlib.error) as error:
        raise InputError(_explain_read_error(path, error)) from None


def write_map(m: Map, path: str | Path, overwrite: bool = False) -> Path:
    """Write ``m`` as float32 (mode 2) with its geometry; gzipped when the name ends in '.gz'.

    The file appears whole or not at all (``files.atomic_path``): a failure leaves no partial file
    and an existing file untouched.
    """
    _check_is_map(m)
    path = _as_path(path, "an output map")
    check_output_path(path, overwrite, map_file_bytes(m.data.shape))
    with _as_resource_error(path), atomic_path(path) as temporary:
        _write_file(m, temporary, gzipped=path.name.lower().endswith(".gz"))
    return path


def write_maps(outputs: Sequence[tuple[Map, Path]], overwrite: bool = False) -> None:
    """Write maps that belong together (a map and its confidence map, ...): every one goes to a hidden
    file beside its target (``files.atomic_path``) and all are renamed at the end, so a failure
    leaves none of them. Callers check the outputs before long work; one that appeared meanwhile
    is refused unless ``overwrite``."""
    outputs = [(m, _as_path(path, "an output map")) for m, path in outputs]
    with _as_resource_error(None), contextlib.ExitStack() as renames:
        for m, path in outputs:
            _check_is_map(m)
            check_output_path(path, True, map_file_bytes(m.data.shape))
            _write_file(m, renames.enter_context(atomic_path(path)), gzipped=path.name.lower().endswith(".gz"))
        for _, path in outputs:
            if path.exists() and not overwrite:
                raise InputError(f"output {path} appeared meanwhile; allow overwriting it or choose another name",
                                 setting="overwrite")


def average_halves(first: Map, second: Map) -> Map:
    """The voxel-wise mean of two half maps, after checking they share one grid and placement and
    are not one map twice."""
    check_same_grid(first, second, "half map 1", "half map 2",
                    advice="use the two unfiltered half maps of one refinement")
    if np.array_equal(first.data, second.data):
        # Identical halves have no noise to measure: confidence would read 1 and the FSC reach Nyquist.
        raise InputError("the two half maps are identical; give the two independently refined half maps, "
                         "or the one map alone")
    return first.with_data((0.5 * (first.data + second.data)).astype(np.float32))


def _check_is_map(m) -> None:
    if not isinstance(m, Map):
        raise InputError(f"write_map writes a Map, not {type(m).__name__}; make one with Map(data, geometry)")


def _write_file(m: Map, path: Path, gzipped: bool) -> None:
    """The MRC file of ``m`` at ``path`` (a new file)."""
    data = np.ascontiguousarray(m.data, dtype="<f4")  # the header below says little-endian
    with open(path, "xb") as raw, (gzip.GzipFile(fileobj=raw, mode="wb") if gzipped
                                   else contextlib.nullcontext(raw)) as stream:
        stream.write(_header(m).tobytes())
        stream.write(memoryview(data).cast("B"))


@contextlib.contextmanager
def _as_resource_error(target: Path | None):
    """An OSError while writing (disk full, no permission) as one ResourceError line naming
    ``target`` (None: the file the error names)."""
    try:
        yield
    except OSError as error:
        where = target or error.filename or "the output"
        raise ResourceError(f"cannot write {where}: {error.strerror or error}; check free disk space and write "
                            "permission") from None


def check_same_grid(a: Map, b: Map, what_a: str, what_b: str, *, advice: str | None = None) -> None:
    """InputError unless ``a`` and ``b`` share shape, voxel size, axis order, nstart and origin."""
    ga, gb = a.geometry, b.geometry
    checks = (
        ("shape", a.data.shape, b.data.shape, a.data.shape == b.data.shape),
        ("voxel size (Å)", ga.voxel_size, gb.voxel_size,
         np.allclose(ga.voxel_size, gb.voxel_size, rtol=_VOXEL_RTOL, atol=0.0)),
        ("axis order (mapc, mapr, maps)", ga.axis_order, gb.axis_order, ga.axis_order == gb.axis_order),
        ("nstart", ga.nstart, gb.nstart, ga.nstart == gb.nstart),
        ("origin (Å)", ga.origin, gb.origin, np.allclose(ga.origin, gb.origin, rtol=0.0, atol=_ORIGIN_ATOL)),
    )
    for what, value_a, value_b, same in checks:
        if not same:
            hint = advice or f"give {what_b} on the grid of {what_a} (same box, voxel size and placement)"
            raise InputError(f"{what_a} and {what_b} disagree in {what}: {_format(value_a)} vs "
                             f"{_format(value_b)}; {hint}")


def check_map_values(m: Map, name: str) -> None:
    """InputError when ``m``'s values cannot be enhanced or sharpened: non-finite, all zero or constant."""
    _check_finite(m.data, name)
    low, high = float(m.data.min()), float(m.data.max())
    if low == high == 0.0:
        raise InputError(f"{name} is all zeros; give the unmasked, unsharpened map (or half maps) "
                         "from the refinement")
    if low == high:
        raise InputError(f"{name} is constant (every voxel is {low:g}); give the unmasked, unsharpened map "
                         "(or half maps) from the refinement")


def voxel_centre_xyz(m: Map, index_zyx) -> np.ndarray:
    """X, Y, Z position in Å of the centre of array voxel(s) ``index_zyx`` (..., 3), as ChimeraX places it.

    Array index (section, row, column) is mapped to X, Y, Z through (mapc, mapr, maps). The origin
    field gives the position of index (0, 0, 0) when non-zero; otherwise nstart (per column, row,
    section) does, in voxels.
    """
    g = m.geometry
    crs = np.asarray(index_zyx, dtype=np.float64)[..., ::-1]  # column, row, section
    xyz_to_crs = [g.axis_order.index(axis) for axis in (1, 2, 3)]
    grid_xyz = crs[..., xyz_to_crs]
    step = np.asarray(g.voxel_size, dtype=np.float64)
    skew = _skew_axes(g.cell_angles)
    if any(g.origin):
        return np.asarray(g.origin) + (grid_xyz * step) @ skew.T
    start_xyz = np.asarray(g.nstart, dtype=np.float64)[xyz_to_crs]
    return ((grid_xyz + start_xyz) * step) @ skew.T


def _voxel_size_from_cell(cell: tuple[float, float, float], sampling: tuple[int, int, int]) -> tuple[float, ...]:
    """cella / (mx, my, mz) rounded to float32 as mrcfile does (1.3 reads as 1.2999999523); 0 when mx is 0."""
    return tuple(float(np.float32(c / m)) if m != 0 else 0.0 for c, m in zip(cell, sampling))


def _grid_size_xyz(shape: tuple[int, ...], axis_order: tuple[int, int, int]) -> tuple[int, int, int]:
    """Number of voxels along X, Y, Z for an array of ``shape`` (sections, rows, columns)."""
    counts_crs = (shape[2], shape[1], shape[0])
    return tuple(int(counts_crs[axis_order.index(axis)]) for axis in (1, 2, 3))


def _geometry_from_header(path: Path, header) -> Geometry:
    """The Geometry stored in an mrcfile header."""
    axis_order = (int(header.mapc), int(header.mapr), int(header.maps))
    if sorted(axis_order) != [1, 2, 3]:
        raise InputError(f"{path} has an invalid axis order (mapc, mapr, maps) = {axis_order}; fix the header "
                         "(for a plain map set it to 1, 2, 3) and try again")
    sampling = (int(header.mx), int(header.my), int(header.mz))
    cell = tuple(float(header.cella[field]) for field in ("x", "y", "z"))
    return Geometry(
        voxel_size=_voxel_size_from_cell(cell, sampling),
        origin=tuple(float(header.origin[field]) for field in ("x", "y", "z")),
        nstart=(int(header.nxstart), int(header.nystart), int(header.nzstart)),
        axis_order=axis_order,
        sampling=sampling,
        cell_lengths=cell,
        cell_angles=tuple(float(header.cellb[field]) for field in ("alpha", "beta", "gamma")),
        space_group=int(header.ispg),
    )


def _explain_read_error(path: Path, error: BaseException) -> str:
    """One line for an error raised while mrcfile reads ``path``."""
    text = str(error)
    truncated = re.search(r"Expected (\d+) bytes in (data block|extended header) but "
                          r"(?:could only read|limit is) (-?\d+)", text)
    if truncated:
        expected, part, found = truncated.groups()
        return (f"{path} is truncated: its header promises {expected} bytes of {part} but the file holds "
                f"{max(int(found), 0)}; copy or download the map again")
    if isinstance(error, EOFError):
        return f"{path} is truncated (its compressed data end early); copy or download the map again"
    if isinstance(error, (gzip.BadGzipFile, zlib.error)):
        return f"{path} holds corrupt gzip data; copy or download the map again"
    if "larger than expected" in text:
        return (f"{path} is longer than its header describes ({text}); the header may not match the data: "
                "check the map (e.g. open it in ChimeraX) and write it again")
    if "Couldn't read enough bytes for MRC header" in text:
        return f"{path} is not an MRC map (shorter than the 1024-byte header); give an MRC/CCP4 map file"
    if "Map ID string not found" in text or "machine stamp" in text:
        return f"{path} is not an MRC map ({text}); give an MRC/CCP4 map file (.mrc, .map)"
    if "Unrecognised mode" in text:
        return (f"{path} stores its data in an unsupported mode ({text}); convert it to 32-bit float "
                "(mode 2) first, e.g. with ChimeraX 'save' or relion_image_handler")
    if isinstance(error, OSError):
        return f"cannot read {path}: {error.strerror or text}; check the file's permissions"
    return f"cannot read {path} as an MRC map ({text}); check that it is a valid MRC/CCP4 map"


def _check_is_volume(path: Path, data: np.ndarray) -> None:
    """InputError for complex data, images, image/volume stacks and single sections."""
    if np.iscomplexobj(data):
        raise InputError(f"{path} holds complex (Fourier-space) data; give the real-space map")
    if data.ndim == 2:
        raise InputError(f"{path} is a 2D image ({data.shape[1]} x {data.shape[0]}), not a 3D map; "
                         "give the 3D map from the refinement")
    if data.ndim == 4:
        raise InputError(f"{path} is a stack of {data.shape[0]} volumes, not one map; extract one volume first")
    if min(data.shape) < 2:
        raise InputError(f"{path} has a single section along one axis (shape {data.shape}), not a 3D map; "
                         "give the 3D map from the refinement")


def _as_float32(data: np.ndarray) -> np.ndarray:
    """Native-order float32 array, avoiding a copy when the file already holds float32."""
    if data.dtype == np.dtype("=f4"):
        array = data
        try:
            array.flags.writeable = True  # mrcfile's buffer is ours now; no need to copy it
        except ValueError:
            array = array.copy()
        return array
    return data.astype(np.float32)


def _check_finite(data: np.ndarray, name: str) -> None:
    """InputError when ``data`` holds NaN or Inf values."""
    bad = int(data.size - np.count_nonzero(np.isfinite(data)))
    if bad:
        raise InputError(f"{name} contains {bad} NaN/Inf values; replace them (e.g. by 0) in the program "
                         "that wrote the map and try again")


def check_output_path(path: Path, overwrite: bool, size_bytes: int = 0) -> None:
    """InputError or ResourceError when ``path`` cannot or must not be written, or its folder lacks
    ``size_bytes`` of free space (callers check before long work, and writing checks again)."""
    path = Path(path)
    if not path.name.lower().endswith(MAP_SUFFIXES):
        raise InputError(f"output {path} must end in one of {', '.join(MAP_SUFFIXES)}; rename it")
    if path.is_dir():
        raise InputError(f"output {path} is a folder; give a file name such as {path / 'enhanced.mrc'}")
    if path.exists() and not overwrite:
        raise InputError(f"output {path} exists; allow overwriting it or choose another name", setting="overwrite")
    if not path.parent.is_dir():
        raise InputError(f"output folder {path.parent} does not exist; create it first")
    sweep_stale_temporaries(path)
    check_writable_folder(path.parent, size_bytes)


def check_writable_folder(folder: Path, size_bytes: int = 0) -> None:
    """ResourceError unless a file can be created in ``folder`` and it has ``size_bytes`` free."""
    probe = temporary_path(Path(folder) / "probe")
    try:
        probe.touch(exist_ok=False)
        probe.unlink()
        free = shutil.disk_usage(folder).free
    except OSError as error:
        remove_quietly(probe)
        raise ResourceError(f"cannot write into {folder}: {error.strerror or error}; choose a writable folder") from None
    if free < size_bytes:
        raise ResourceError(f"{folder} has {free / 2**20:.0f} MiB free but the output needs "
                            f"{size_bytes / 2**20:.0f} MiB; free some space or choose another folder")


def map_file_bytes(shape) -> int:
    """Size of an uncompressed float32 map of ``shape``: header and data."""
    return 1024 + 4 * int(np.prod([int(n) for n in shape], dtype=np.int64))


def _header(m: Map) -> np.recarray:
    """An MRC2014 little-endian header for ``m``: mode 2, its geometry and exact statistics."""
    header = np.zeros((), dtype=HEADER_DTYPE.newbyteorder("<")).view(np.recarray)
    header.map = MAP_ID
    header.machst = machine_stamp_from_byte_order("<")
    header.nversion = 20141
    header.mode = 2
    header.nz, header.ny, header.nx = m.data.shape
    g = m.geometry
    header.nxstart, header.nystart, header.nzstart = g.nstart
    header.mx, header.my, header.mz = g.sampling
    header.cella = g.cell_lengths
    header.cellb = g.cell_angles
    header.mapc, header.mapr, header.maps = g.axis_order
    header.origin = g.origin
    header.ispg = g.space_group
    header.dmin, header.dmax, header.dmean, header.rms = _statistics(m.data)
    header.label[0] = b"deepemhancer"
    header.nlabl = 1
    return header


def _statistics(data: np.ndarray, sections: int = 32) -> tuple[float, float, float, float]:
    """Minimum, maximum, mean and RMS deviation from the mean (MRC2014's rms), summed in float64.

    Works through blocks of sections so that a large map needs no full-size float64 copy.
    """
    starts = range(0, data.shape[0], sections)
    mean = sum(float(data[i:i + sections].sum(dtype=np.float64)) for i in starts) / data.size
    squares = sum(float(np.square(data[i:i + sections].astype(np.float64) - mean).sum()) for i in starts)
    return float(data.min()), float(data.max()), mean, float(np.sqrt(squares / data.size))


def _skew_axes(cell_angles: tuple[float, float, float]) -> np.ndarray:
    """Columns: unit vectors of cell axes a, b, c (a along X, b in the XY plane), as ChimeraX builds them."""
    alpha, beta, gamma = cell_angles
    if (alpha, beta, gamma) == (90.0, 90.0, 90.0) or not all(0 < v < 180 for v in cell_angles):
        return np.eye(3)  # orthogonal, or invalid angles that ChimeraX also treats as 90°
    ca, cb, cg = np.cos(np.radians([alpha, beta, gamma]))
    sg = np.sin(np.radians(gamma))
    c1 = (ca - cb * cg) / sg
    c2 = np.sqrt(1.0 - cb * cb - c1 * c1)
    return np.array([[1.0, cg, cb], [0.0, sg, c1], [0.0, 0.0, c2]])


def _as_path(path, what: str) -> Path:
    if not isinstance(path, (str, os.PathLike)):
        raise InputError(f"the path of {what} must be text or a Path, not {type(path).__name__}")
    return Path(path)


def _format(value) -> str:
    """Tuples of floats to 6 significant digits, others as they print."""
    if isinstance(value, tuple) and any(isinstance(v, float) for v in value):
        return "(" + ", ".join(f"{v:.6g}" for v in value) + ")"
    return str(tuple(value))
