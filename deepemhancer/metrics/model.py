"""Map-model agreement: model maps on a map's own grid, the molecular mask, phenix's correlations.

Definitions follow phenix.map_model_cc (Afonine et al. 2018, Acta Cryst. D74, 814-840; cctbx
mmtbx/maps/correlation.py, ``five_cc``):

- model map: the model's structure factors (electron scattering factors, the model's own B-factors
  and occupancies) up to d_min = the map's resolution with a sharp cut-off, on the map's grid.
- molecular mask: the bulk-solvent mask of Jiang & Brünger (1994) as cctbx computes it: grid points
  within r_vdW + 1.11 Å of a non-hydrogen atom (cctbx van der Waals radii), less the points of the
  outer shell that lie within 0.9 Å of solvent (shrink-truncation). gemmi's SolventMasker with the
  Cctbx radii reproduces it.
- non-protein mask: the same mask made from the model's non-polymer groups of at least 6 heavy atoms
  only (ligands, hemes, glycans; waters, ions and terminal caps are not counted): where the map
  must show what is not protein.
- CC_box: Pearson correlation of map and model map over the whole box.
- CC_mask: over the points inside the molecular mask.
- CC_volume: over the N highest points of the model map, N = number of points in the mask.
- CC_peaks: over the union of the N highest points of the model map and the N highest of the map.

gemmi computes on a periodic cell, so the work is done on a grid padded around the map's box (atoms
farther out are left out) and cut back, which keeps density from wrapping into the box.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import gemmi
import numpy as np
import scipy.fft

from ..errors import InputError
from ..mapio import Map, voxel_centre_xyz
from .fourier import radial_frequency_grid
from .mask_check import check_mask

SOLVENT_RADIUS = 1.11  # Å, cctbx mmtbx.masks default
SHRINK_TRUNCATION_RADIUS = 0.9  # Å, cctbx mmtbx.masks default
NON_PROTEIN_MIN_ATOMS = 6  # heavy atoms: a ligand, heme or sugar has more, an ion or an acetyl cap fewer
_MIN_MARGIN = 10.0  # Å of padding around the box; atoms up to half of it outside the box contribute


@dataclass(frozen=True)
class MapModelCC:
    """phenix.map_model_cc's correlations (see the module docstring) and the mask size they used."""

    cc_box: float
    cc_mask: float
    cc_volume: float
    cc_peaks: float
    n_mask_voxels: int


@dataclass(frozen=True)
class _Frame:
    """An X, Y, Z grid over a map's box padded by ``pad`` voxels: where gemmi computes."""

    shape_xyz: tuple[int, int, int]
    spacing: tuple[float, float, float]
    corner: np.ndarray  # X, Y, Z in Å of padded grid point (0, 0, 0)
    pad: int


def read_structure(path: str | Path) -> gemmi.Structure:
    """An atomic model (PDB or mmCIF, optionally gzipped); PDB lines are cut to 78 columns when
    gemmi rejects the text some files carry in columns 79-80."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"model {path} not found; check the path")
    try:
        structure = gemmi.read_structure(str(path))
    except (RuntimeError, ValueError) as error:
        if ".pdb" not in path.name.lower() and ".ent" not in path.name.lower():
            raise InputError(f"cannot read model {path}: {error}; give a valid PDB or mmCIF file") from None
        try:
            structure = gemmi.read_pdb(str(path), max_line_length=78)
        except (RuntimeError, ValueError) as second:
            raise InputError(f"cannot read model {path}: {second}; give a valid PDB or mmCIF file") from None
    if len(structure) == 0 or structure[0].count_atom_sites() == 0:
        raise InputError(f"model {path} holds no atoms; give the fitted atomic model")
    return structure


def model_map(structure_path: str | Path, like: Map, resolution: float) -> Map:
    """The model's density to ``resolution`` Å on ``like``'s grid and placement (phenix's model map)."""
    if not resolution > 0:
        raise InputError(f"model map resolution must be > 0 Å, got {resolution}")
    frame = _frame(like, resolution)
    model = _placed_model(read_structure(structure_path), like, frame, structure_path)
    calculator = gemmi.DensityCalculatorE()
    # Density sampled on the map's own spacing: gemmi's Refmac blur keeps it from aliasing, and is
    # taken out again in Fourier space below.
    calculator.d_min = 2.0 * max(frame.spacing)
    calculator.rate = 1.0
    _setup_grid(calculator.grid, frame)
    calculator.set_refmac_compatible_blur(model)
    calculator.add_model_density_to_grid(model)
    density = np.array(calculator.grid, copy=True)
    transform = scipy.fft.rfftn(density, workers=-1)
    s = radial_frequency_grid(density.shape, frame.spacing)
    transform *= np.where(s <= 1.0 / resolution, np.exp(np.float32(calculator.blur / 4.0) * s * s), 0.0)
    density = scipy.fft.irfftn(transform, s=density.shape, workers=-1)
    return like.with_data(_to_stored(density, like, frame))


def molecular_mask(structure_path: str | Path, like: Map) -> np.ndarray:
    """phenix's CC_mask region on ``like``'s grid (bool, stored axis order): the cctbx bulk-solvent
    mask's molecule (see the module docstring)."""
    return _solvent_mask(read_structure(structure_path), like, structure_path)


def non_protein_mask(structure_path: str | Path, like: Map) -> np.ndarray | None:
    """The molecular mask of the model's ligands, hemes and glycans alone (module docstring), or None
    when the model holds none."""
    structure = read_structure(structure_path)
    structure.setup_entities()
    groups = (gemmi.EntityType.NonPolymer, gemmi.EntityType.Branched)
    kept = 0
    for chain in structure[0]:
        for index in reversed(range(len(chain))):
            residue = chain[index]
            heavy = sum(not atom.is_hydrogen() for atom in residue)
            if residue.entity_type in groups and heavy >= NON_PROTEIN_MIN_ATOMS:
                kept += 1
            else:
                del chain[index]
    if kept == 0:
        return None
    return _solvent_mask(structure, like, structure_path)


def _solvent_mask(structure: gemmi.Structure, like: Map, path: str | Path) -> np.ndarray:
    """The cctbx molecular mask of ``structure``'s first model on ``like``'s grid."""
    frame = _frame(like, 0.0)
    model = _placed_model(structure, like, frame, path)
    masker = gemmi.SolventMasker(gemmi.AtomicRadiiSet.Cctbx)
    masker.rprobe = SOLVENT_RADIUS
    masker.rshrink = SHRINK_TRUNCATION_RADIUS
    grid = gemmi.FloatGrid(*frame.shape_xyz)
    _setup_grid(grid, frame)
    masker.put_mask_on_float_grid(grid, model)  # 0 inside the molecule, 1 in solvent (cctbx's convention)
    return _to_stored(np.array(grid, copy=False), like, frame) < 0.5


def map_model_correlations(map_data: np.ndarray, model_data: np.ndarray, mask: np.ndarray) -> MapModelCC:
    """CC_box, CC_mask, CC_volume and CC_peaks of a map and its model map; ``mask`` is the molecular mask."""
    if np.shape(map_data) != np.shape(model_data):
        raise InputError(f"map {np.shape(map_data)} and model map {np.shape(model_data)} must share one grid; "
                         "compute the model map on the map's grid")
    inside = np.asarray(mask, dtype=bool).ravel()
    n = int(inside.sum())
    if n < 2 and np.shape(mask) == np.shape(map_data):  # the usual cause, named before check_mask's generic one
        raise InputError("the molecular mask holds fewer than 2 voxels; check that the model lies in the map's box")
    check_mask(mask, np.shape(map_data), "the map's")
    x, y = np.ravel(map_data), np.ravel(model_data)
    top_model, top_map = _top(y, n), _top(x, n)
    return MapModelCC(cc_box=_pearson(x, y), cc_mask=_pearson(x[inside], y[inside]),
                      cc_volume=_pearson(x[top_model], y[top_model]),
                      cc_peaks=_pearson(x[top_model | top_map], y[top_model | top_map]), n_mask_voxels=n)


def _frame(like: Map, resolution: float) -> _Frame:
    """The padded X, Y, Z grid around ``like``'s box."""
    if tuple(like.geometry.cell_angles) != (90.0, 90.0, 90.0):
        raise InputError(f"the map's cell angles are {like.geometry.cell_angles}; model maps need an orthogonal "
                         "grid: resample the map first (e.g. ChimeraX 'volume resample')")
    spacing = tuple(float(v) for v in like.geometry.voxel_size)
    if not all(math.isfinite(v) and v > 0 for v in spacing):
        raise InputError(f"the map header gives a voxel size of {spacing} Å; pass the real voxel size")
    margin = max(_MIN_MARGIN, 3.0 * resolution)
    pad = math.ceil(margin / min(spacing))
    counts_crs = like.data.shape[::-1]  # columns, rows, sections
    counts_xyz = tuple(counts_crs[like.geometry.axis_order.index(axis)] for axis in (1, 2, 3))
    origin = voxel_centre_xyz(like, (0, 0, 0))
    corner = origin - pad * np.asarray(spacing)
    return _Frame(tuple(int(n) + 2 * pad for n in counts_xyz), spacing, corner, pad)


def _setup_grid(grid: gemmi.FloatGrid, frame: _Frame) -> None:
    """Size ``grid`` as ``frame``: a P1 cell exactly as large as the padded box."""
    a, b, c = (n * v for n, v in zip(frame.shape_xyz, frame.spacing))
    grid.set_unit_cell(gemmi.UnitCell(a, b, c, 90.0, 90.0, 90.0))
    grid.spacegroup = gemmi.SpaceGroup("P 1")
    grid.set_size(*frame.shape_xyz)
    grid.fill(0.0)


def _placed_model(structure: gemmi.Structure, like: Map, frame: _Frame, path: str | Path) -> gemmi.Model:
    """The first model moved into ``frame``'s cell; atoms that would wrap around it get zero occupancy."""
    model = structure[0].clone()
    shift = gemmi.Transform()
    shift.vec.fromlist([float(v) for v in -frame.corner])
    model.transform_pos_and_adp(shift)
    # Keep atoms within half the padding of the box: their density stays inside the padded cell.
    half = 0.5 * frame.pad * np.asarray(frame.spacing)
    low, high = half, np.asarray(frame.shape_xyz) * np.asarray(frame.spacing) - half
    kept = 0
    for cra in model.all():
        position = np.array(cra.atom.pos.tolist())
        if np.all(position >= low) and np.all(position <= high):
            kept += 1
        else:
            cra.atom.occ = 0.0
    if kept == 0:
        raise InputError(f"no atom of {path} lies in or near the map's box; check that the model is fitted to this "
                         "map (its origin/nstart placement)")
    return model


def _to_stored(xyz: np.ndarray, like: Map, frame: _Frame) -> np.ndarray:
    """Cut the padding off an X, Y, Z array and order its axes as ``like`` stores them (float32)."""
    p = frame.pad
    box = np.asarray(xyz)[p:xyz.shape[0] - p, p:xyz.shape[1] - p, p:xyz.shape[2] - p]
    mapc, mapr, maps = like.geometry.axis_order
    return np.ascontiguousarray(np.transpose(box, (maps - 1, mapr - 1, mapc - 1)), dtype=np.float32)


def _top(values: np.ndarray, n: int) -> np.ndarray:
    """Boolean selection of the ``n`` highest ``values``."""
    chosen = np.zeros(values.size, dtype=bool)
    chosen[np.argpartition(values, values.size - n)[values.size - n:]] = True
    return chosen


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation in float64; 0 when either is constant."""
    dx = x.astype(np.float64) - x.mean(dtype=np.float64)
    dy = y.astype(np.float64) - y.mean(dtype=np.float64)
    norm = math.sqrt(float(dx @ dx) * float(dy @ dy))
    return float(dx @ dy) / norm if norm > 0 else 0.0
