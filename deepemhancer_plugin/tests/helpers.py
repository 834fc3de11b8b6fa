"""Synthetic data for the plugin tests: half maps of a blob "molecule", its atomic model, tiny networks."""
from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
from pyworkflow.tests import BaseTest, setupTestProject

from deepemhancer_plugin.constants import MODELS_DIR_VAR

SAMPLING = 1.2  # Å per voxel
BOX = 40
N_ATOMS = 80
ATOM_SIGMA = 1.0  # voxels
HALF_NOISE = 0.25  # std of the independent noise of each half map
TINY_MODEL = "tiny-noise"
TINY_MASKED_MODEL = "tiny-masked"
TINY_HALVES_MODEL = "tiny-halves"
TINY_UNTRAINED_MODEL = "tiny-untrained"


def markup(text: str) -> list[str]:
    """Pieces of ``text`` that Scipion would render as bold (*x*) or italic (_x_)."""
    from pyworkflow.utils.utils import PATTERN_BOLD, PATTERN_ITALIC

    return [m.group().strip() for m in re.finditer(f"{PATTERN_BOLD}|{PATTERN_ITALIC}", text)]


def atom_positions(seed: int = 0, box: int = BOX) -> np.ndarray:
    """Voxel coordinates (section, row, column) of the atoms: a compact cluster at the centre."""
    rng = np.random.default_rng(seed)
    directions = rng.normal(size=(N_ATOMS, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    radii = 9.0 * rng.uniform(0, 1, N_ATOMS) ** (1 / 3)
    return box / 2 + directions * radii[:, None]


def molecule(box: int = BOX, seed: int = 0) -> np.ndarray:
    """Gaussian atoms at ``atom_positions``: signal down to about 3 Å."""
    grid = np.indices((box,) * 3, dtype=np.float32)
    density = np.zeros((box,) * 3, dtype=np.float32)
    for centre in atom_positions(seed, box):
        density += np.exp(-sum((g - c) ** 2 for g, c in zip(grid, centre)) / (2 * ATOM_SIGMA ** 2))
    return density


def half_maps(box: int = BOX, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The molecule plus independent white noise, twice."""
    rng = np.random.default_rng(seed + 1)
    signal = molecule(box, seed)
    return tuple((signal + rng.normal(0, HALF_NOISE, signal.shape)).astype(np.float32) for _ in range(2))


def write_mrc(path: Path, data: np.ndarray, voxel_size: float = SAMPLING) -> str:
    import mrcfile

    with mrcfile.new(str(path), overwrite=True) as mrc:
        mrc.set_data(np.asarray(data, dtype=np.float32))
        mrc.voxel_size = voxel_size
    return str(path)


def write_pdb(path: Path, positions_zyx: np.ndarray, origin_xyz: tuple[float, float, float],
              voxel_size: float = SAMPLING) -> str:
    """A PDB of carbon atoms at voxel positions, in Å for a map whose voxel 0 lies at ``origin_xyz``."""
    lines = []
    for serial, (z, y, x) in enumerate(positions_zyx, start=1):
        ax, ay, az = (origin_xyz[0] + x * voxel_size, origin_xyz[1] + y * voxel_size, origin_xyz[2] + z * voxel_size)
        lines.append(f"ATOM  {serial:5d}  CA  ALA A{serial:4d}    {ax:8.3f}{ay:8.3f}{az:8.3f}  1.00 20.00           C")
    Path(path).write_text("\n".join(lines + ["END"]) + "\n")
    return str(path)


def write_tiny_models(folder: str | None = None) -> None:
    """Random U-Nets of width 1/16 (16³ cubes at stride 8) in the engine's model folder: one per
    normalisation, and an untrained one."""
    import torch

    from deepemhancer.models.store import HALVES_NORMALIZATION, save_model
    from deepemhancer.nn import UNet

    folder = Path(folder or os.environ[MODELS_DIR_VAR])
    models = ((TINY_MODEL, "noise", True), (TINY_MASKED_MODEL, "masked", True),
              (TINY_HALVES_MODEL, HALVES_NORMALIZATION, True), (TINY_UNTRAINED_MODEL, "noise", False))
    for seed, (name, normalization, trained) in enumerate(models):
        torch.manual_seed(seed)
        network = UNet(width=0.0625, groups=2, in_channels=2 if normalization == HALVES_NORMALIZATION else 1)
        save_model(folder / f"{name}.json",
                   {"name": name, "description": f"tiny random {normalization} network for the plugin tests",
                    "architecture": network.architecture(), "normalization": normalization,
                    "cube_size": 16, "stride": 8, "voxel_size": 1.0, "trained": trained},
                   network.state_dict())


class PluginTest(BaseTest):
    """A test project per class, with its own model folder (so that the tests' tiny networks never
    reach a real one, also under 'scipion tests'); the working directory and the model folder
    variable are put back afterwards."""

    @classmethod
    def setUpClass(cls):
        cls._saved = os.getcwd(), os.environ.get(MODELS_DIR_VAR)
        setupTestProject(cls)
        cls.dataDir = Path(cls.proj.getPath("data"))
        cls.dataDir.mkdir(exist_ok=True)
        # Protocol runs are child processes: they inherit the variable.
        os.environ[MODELS_DIR_VAR] = cls.proj.getPath("models")

    @classmethod
    def tearDownClass(cls):
        cwd, models = cls._saved
        os.chdir(cwd)
        if models is None:
            os.environ.pop(MODELS_DIR_VAR, None)
        else:
            os.environ[MODELS_DIR_VAR] = models

    @classmethod
    def importVolume(cls, path: str, halves=None, sampling: float = SAMPLING, label: str = "import"):
        from pwem.protocols import ProtImportVolumes

        kwargs = dict(filesPath=path, samplingRate=sampling, objLabel=label)
        if halves:
            kwargs.update(setHalfMaps=True, half1map=halves[0], half2map=halves[1])
        return cls.launchProtocol(cls.newProtocol(ProtImportVolumes, **kwargs)).outputVolume

    @classmethod
    def importMask(cls, path: str, sampling: float = SAMPLING):
        from pwem.protocols import ProtImportMask

        return cls.launchProtocol(cls.newProtocol(ProtImportMask, maskPath=path, samplingRate=sampling)).outputMask
