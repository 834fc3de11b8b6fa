"""Between Scipion objects and the engine: file names, voxel sizes, origins, FSC curves.

Scipion's metadata is authoritative for a Volume: its sampling rate overrides the voxel size in the
file header, and outputs carry their input's sampling rate and origin.
"""
from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

from pwem.objects import FSC, Transform, Volume

_FILE_TYPE = re.compile(r":(mrc|mrcs|map|ccp4|vol|spi|em|hdf|hdf5|st|ali|rec)$")
MRC_SUFFIXES = (".mrc", ".map", ".ccp4", ".mrc.gz", ".map.gz", ".ccp4.gz", ".rec")


def map_path(filename: str) -> str:
    """A Scipion file name without its ':mrc'-style type suffix."""
    return _FILE_TYPE.sub("", filename)


def is_mrc(filename: str) -> bool:
    return map_path(filename).lower().endswith(MRC_SUFFIXES)


def read_volume_file(filename: str, sampling: float | None = None):
    """The engine Map of a file; Scipion's sampling rate (when given) replaces the header's voxel size."""
    from deepemhancer.mapio import read_map

    return read_map(map_path(filename), sampling or None)


def origin_shifts(volume: Volume) -> tuple[float, float, float]:
    """Scipion's origin of a Volume (the MRC origin convention: Å position of voxel 0)."""
    return tuple(float(v) for v in volume.getOrigin(force=True).getShifts())


def placed_as_in_scipion(m, shifts: tuple[float, float, float]):
    """A Map whose header origin is Scipion's (used where atoms must land where Scipion shows the map)."""
    geometry = dataclasses.replace(m.geometry, origin=tuple(shifts), nstart=(0, 0, 0))
    return type(m)(m.data, geometry)


def output_volume(filename: str, like: Volume, cls=Volume) -> Volume:
    """A new Volume (or VolumeMask) for a file, with ``like``'s sampling rate and origin."""
    volume = cls()
    volume.setFileName(filename)
    volume.setSamplingRate(like.getSamplingRate())
    origin = Transform()
    origin.setShifts(*origin_shifts(like))
    volume.setOrigin(origin)
    return volume


def write_json(path: str, content: dict) -> str:
    """Write a small JSON result, whole or not at all (the engine's one writer); returns the path (a
    step's result file)."""
    from deepemhancer.files import write_atomic

    return str(write_atomic(path, json.dumps(content, indent=1)))


def read_json(path: str) -> dict:
    return json.loads(Path(path).read_text())


def fsc_object(curve: dict, label: str) -> FSC:
    """A pwem FSC (x: frequency in 1/Å, y: correlation) from an engine ``FSCCurve.to_dict()``."""
    fsc = FSC(objLabel=label)
    fsc.setData(list(curve["resolution_inv_angstrom"]), list(curve["correlation"]))
    return fsc
