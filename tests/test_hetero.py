"""Non-protein groups in the simulation (train.hetero) and their score (LC7 inside their mask)."""
from __future__ import annotations

from pathlib import Path

import gemmi
import numpy as np
import pytest
from scipy.spatial import cKDTree

from deepemhancer.mapio import Geometry, Map
from deepemhancer.metrics import model_agreement, model_reference
from deepemhancer.metrics.model import non_protein_mask
from deepemhancer.train import hetero, simulate

from test_train import write_structure


def with_asparagines(path: Path, seed: int) -> Path:
    """``write_structure``'s compact backbone plus four asparagine side chains pointing out of it."""
    write_structure(path, seed, residues=30)
    structure = gemmi.read_structure(str(path))
    atoms = np.array([a.pos.tolist() for r in structure[0]["A"] for a in r])
    centre = atoms.mean(axis=0)
    lines = [line for line in path.read_text().splitlines() if line.startswith("ATOM")]
    serial = len(lines) + 1
    for k, direction in enumerate(np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [-1, 0, 0]], float)):
        tip = centre + (np.abs((atoms - centre) @ direction).max() + 2.0) * direction
        for name, element, xyz in (("CG", "C", tip - 1.5 * direction), ("ND2", "N", tip)):
            lines.append(f"ATOM  {serial:5d}  {name:<3} ASN B{k + 1:4d}    {xyz[0]:8.3f}{xyz[1]:8.3f}{xyz[2]:8.3f}"
                         f"  1.00 30.00           {element}")
            serial += 1
    path.write_text("\n".join(lines + ["END"]) + "\n")
    return path


def test_groups_are_added_after_the_protein_without_clashes(tmp_path):
    path = with_asparagines(tmp_path / "AAAA_target.pdb", 3)
    original = gemmi.read_structure(str(path))
    kinds = set()
    for seed in range(6):
        decorated, added_b = hetero.decorate(original, np.random.default_rng(seed))
        assert original[0].count_atom_sites() == 128  # the file's structure is left as it was
        chains = list(decorated[0])
        protein = np.array([a.pos.tolist() for c in chains[:-1] for r in c for a in r])
        new = [(r.name, np.array([a.pos.tolist() for a in r]), [a.b_iso for a in r], r.het_flag) for r in chains[-1]]
        assert len(protein) == 128 and new and all(flag == "H" for *_, flag in new)
        atoms = np.vstack([a for _, a, *_ in new])
        assert len(added_b) == len(atoms) and np.all(added_b >= 0)
        assert cKDTree(protein).query(atoms)[0].min() >= hetero.CLASH
        for i, (_, a, *_) in enumerate(new):  # groups keep apart too; sugars of one tree are 5.5 Å apart
            others = np.vstack([b for j, (_, b, *_) in enumerate(new) if j != i] or [np.full((1, 3), 1e3)])
            assert cKDTree(others).query(a)[0].min() >= hetero.CLASH
        kinds |= {name for name, *_ in new}
        offset = 0
        for name, a, *_ in new:  # sugars are mobile (more B), ligands and hemes as ordered as the protein
            group_b = added_b[offset:offset + len(a)]
            assert np.all(group_b > 0) if name in ("NAG", "MAN") else np.all(group_b == 0)
            offset += len(a)
    assert {"NAG", "HEM", "LIG"} <= kinds


def test_a_glycan_tree_grows_out_from_its_asparagine():
    tree = cKDTree(np.array([[0.0, 0.0, -3.0]]))
    for seed in range(5):
        sugars, elements, depths = hetero.glycan(np.zeros(3), np.array([0.0, 0.0, 1.0]), tree, [],
                                                 np.random.default_rng(seed))
        centres = np.array([s[:6].mean(axis=0) for s in sugars])
        assert depths[0] == 0 and all(d >= 1 for d in depths[1:]) and len(sugars) <= 9
        assert np.linalg.norm(centres[0]) == pytest.approx(2.9)
        # every other sugar sits 5.5 Å from one a level closer to the protein
        for c, d in zip(centres[1:], depths[1:]):
            parents = centres[[i for i, e in enumerate(depths) if e == d - 1]]
            assert np.min(np.linalg.norm(parents - c, axis=1)) == pytest.approx(hetero.SUGAR_LINK)


def test_group_shapes():
    rng = np.random.default_rng(0)
    heme, elements = hetero.heme_like(np.zeros(3), np.array([0.0, 0.0, 1.0]), rng)
    assert len(heme) == 39 and elements[0] == "FE" and np.allclose(heme[0], 0.0)
    assert np.abs(heme[:33, 2]).max() < 1e-9  # the porphyrin disc is flat; only the two arms leave it
    assert 8.5 < np.ptp(heme[:33, 0]) < 12.5
    sugar, elements = hetero.sugar(np.zeros(3), np.array([0.0, 0.0, 1.0]), rng)
    ring = sugar[:6]
    assert len(sugar) == 11 and np.allclose(np.linalg.norm(ring - np.roll(ring, 1, axis=0), axis=1), 1.5)
    ligand, elements = hetero.compact_ligand(np.zeros(3), rng)
    distances = np.linalg.norm(ligand[:, None] - ligand[None], axis=-1) + 10 * np.eye(len(ligand))
    assert 10 <= len(ligand) <= 40 and distances.min() >= 1.5 - 1e-6
    assert np.allclose(distances.min(axis=1), 1.5)  # each atom is bonded to one at 1.5 Å


def test_simulation_puts_the_groups_in_halves_and_target(tmp_path):
    path = with_asparagines(tmp_path / "AAAA_target.pdb", 3)
    settings = simulate.SimulationSettings(hetero_probability=1.0)
    sim = simulate.simulate(path, np.random.default_rng(2), settings, resolution=3.0)
    plain = simulate.simulate(path, np.random.default_rng(2), resolution=3.0)
    assert plain.model is None and sim.model is not None
    assert sim.half1.shape == plain.half1.shape  # the box is the protein's: the groups fit in its margin
    groups = np.array([a.pos.tolist() for r in sim.model[0][len(sim.model[0]) - 1] for a in r])
    voxels = np.round((groups - sim.origin)[:, ::-1]).astype(int)
    inside = np.all((voxels >= 0) & (voxels < sim.half1.shape[0]), axis=1)
    at_groups = sim.target[tuple(voxels[inside].T)]
    # the target asks for the groups' density: near the protein's level, far above the solvent's
    assert inside.mean() > 0.9 and np.median(at_groups) > 0.2 * np.percentile(sim.target[sim.mask], 50)
    assert np.median(at_groups) > 10 * np.abs(plain.target[tuple(voxels[inside].T)]).mean() + 1e-3


def test_non_protein_mask_covers_ligands_only_and_is_scored(tmp_path):
    path = write_structure(tmp_path / "AAAA_target.pdb", 4)
    structure = gemmi.read_structure(str(path))
    rng = np.random.default_rng(1)
    ligand, _ = hetero.compact_ligand(np.zeros(3), rng)
    protein = np.array([a.pos.tolist() for r in structure[0]["A"] for a in r])
    ligand += protein.max(axis=0) + 2.0 - ligand.min(axis=0)  # beside the protein
    lines = [line for line in path.read_text().splitlines() if line.startswith("ATOM")]
    for k, xyz in enumerate(ligand, start=1):
        lines.append(f"HETATM{900 + k:5d}  C{k:<2} LIG C   1    {xyz[0]:8.3f}{xyz[1]:8.3f}{xyz[2]:8.3f}  1.00 30.00"
                     "           C")
    for k, xyz in enumerate(protein[:3] + 20.0, start=1):  # a three-atom group (a cap, an ion) does not count
        lines.append(f"HETATM{950 + k:5d}  C{k:<2} ACE D   1    {xyz[0]:8.3f}{xyz[1]:8.3f}{xyz[2]:8.3f}  1.00 30.00"
                     "           C")
    with_ligand = tmp_path / "BBBB.pdb"
    with_ligand.write_text("\n".join(lines + ["END"]) + "\n")
    low = np.minimum(protein.min(axis=0), ligand.min(axis=0)) - 8.0
    side = int(np.ceil((np.maximum(protein.max(axis=0), ligand.max(axis=0) + 21.0) - low).max()))
    like = Map(np.zeros((side,) * 3, np.float32), Geometry.for_grid((side,) * 3, 1.0, origin=tuple(low)))
    assert non_protein_mask(path, like) is None
    mask = non_protein_mask(with_ligand, like)
    centres = np.stack(np.nonzero(mask), axis=1)[:, ::-1] + low  # X, Y, Z Å of the masked voxels
    nearest = cKDTree(ligand).query(centres)[0]
    assert mask.sum() > 10 * len(ligand) and nearest.max() < 1.75 + 1.11 + 1.0  # carbon radius + probe + a voxel
    assert mask[tuple(np.round((ligand - low)[:, ::-1]).astype(int).T)].all()
    reference = model_reference(with_ligand, like, 4.0)
    score = model_agreement(reference.at_resolution, reference)
    assert score.lc7_non_protein == pytest.approx(1.0, abs=1e-6)  # the model map agrees with itself
    assert model_agreement(reference.at_resolution, model_reference(path, like, 4.0)).lc7_non_protein is None
