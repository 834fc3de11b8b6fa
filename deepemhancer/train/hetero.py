"""Non-protein groups added to a protein model before it is simulated: N-glycan trees on exposed
asparagines, heme-like discs and small ligands in surface pockets.

The training structures are protein complexes: 11 of 230 hold a ligand (heme, FAD, NADP, GTP, ATP,
PLP), none a glycan. Real maps carry all three, and a network that has only seen protein treats
their density as noise or reshapes it into protein. The groups join the model itself, so that the
half maps and the target both hold them; glycans grow more mobile (higher B) away from the protein,
ligands get partial occupancy.

The geometry is idealised, not chemical: at 2.5-8 Å what counts is the density's shape and weight.
A sugar is a six-membered ring (1.5 Å bonds) with five exocyclic atoms, linked 5.5 Å from its
parent; a heme-like disc is a planar porphyrin-sized ring system (about 10 Å across, 39 atoms) with an
iron at its centre; a ligand is a compact tree of 10-40 C/N/O atoms with an occasional P or S.
"""
from __future__ import annotations

import gemmi
import numpy as np
from scipy.spatial import cKDTree

CLASH = 2.8  # Å: no added atom comes closer than this to a protein atom or to another group
GLYCANS = (0, 3)  # inclusive ranges of how many groups of each kind one structure gets
HEMES = (0, 1)
LIGANDS = (1, 3)
SUGAR_LINK = 5.5  # Å between linked sugars' ring centres
GLYCAN_B_STEP = (5.0, 20.0)  # Å² added per sugar away from the protein
LIGAND_OCCUPANCY = (0.5, 1.0)


def perpendicular_pair(normal: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Two unit vectors perpendicular to ``normal`` and to each other, at a random rotation."""
    normal = normal / np.linalg.norm(normal)
    while True:
        u = np.cross(normal, rng.normal(size=3))
        if np.linalg.norm(u) > 1e-3:
            u /= np.linalg.norm(u)
            return u, np.cross(normal, u)


def ring(centre: np.ndarray, u: np.ndarray, v: np.ndarray, members: int, bond: float, phase: float = 0.0) -> np.ndarray:
    """The atoms of a regular planar ring of ``members`` atoms ``bond`` Å apart, in the plane of u, v."""
    radius = bond / (2.0 * np.sin(np.pi / members))
    angles = phase + 2.0 * np.pi * np.arange(members) / members
    return centre + radius * (np.cos(angles)[:, None] * u + np.sin(angles)[:, None] * v)


def sugar(centre: np.ndarray, normal: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, list[str]]:
    """A pyranose-like ring (5 C, 1 O) with an exocyclic O on four ring carbons and a C6."""
    normal = normal / np.linalg.norm(normal)
    u, v = perpendicular_pair(normal, rng)
    atoms = ring(centre, u, v, 6, 1.5)
    outward = (atoms - centre) / np.linalg.norm(atoms - centre, axis=1, keepdims=True)
    tilt = np.where(np.arange(6) % 2 == 0, 1.0, -1.0)[:, None] * normal  # chair-like: up, down, up...
    exocyclic = atoms[1:5] + 1.43 * (0.8 * outward[1:5] + 0.6 * tilt[1:5])
    c6 = atoms[5] + 1.5 * (0.8 * outward[5] + 0.6 * tilt[5])
    return np.vstack([atoms, exocyclic, c6]), ["O", "C", "C", "C", "C", "C", "O", "O", "O", "O", "C"]


def heme_like(centre: np.ndarray, normal: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, list[str]]:
    """A planar porphyrin-like disc: iron, four pyrrole rings, meso carbons, eight substituents and
    two propionate-like arms (39 atoms)."""
    normal = normal / np.linalg.norm(normal)
    u, v = perpendicular_pair(normal, rng)
    positions, elements = [centre], ["FE"]
    for k in range(4):
        a = k * np.pi / 2
        axis = np.cos(a) * u + np.sin(a) * v
        side = np.cos(a + np.pi / 2) * u + np.sin(a + np.pi / 2) * v
        middle = centre + 3.15 * axis
        pyrrole = ring(middle, axis, side, 5, 1.4, phase=np.pi)  # the N points at the iron
        positions += list(pyrrole)
        elements += ["N", "C", "C", "C", "C"]
        for beta in pyrrole[2:4]:  # the two far carbons carry substituents, straight out from the ring
            positions.append(beta + 1.5 * (beta - middle) / np.linalg.norm(beta - middle))
            elements.append("C")
        diagonal = np.cos(a + np.pi / 4) * u + np.sin(a + np.pi / 4) * v
        positions.append(centre + 3.4 * diagonal)  # meso carbon
        elements.append("C")
    substituents = [1 + 8 * k + 5 + j for k in range(4) for j in range(2)]  # after each pyrrole's five atoms
    for arm in rng.choice(substituents, size=2, replace=False):  # two of them grow into propionate-like arms
        base = positions[arm]
        out = (base - centre) / np.linalg.norm(base - centre)
        positions += [base + 1.5 * (out + 0.5 * normal) / np.linalg.norm(out + 0.5 * normal)]
        positions += [positions[-1] + 1.25 * out, positions[-1] + 1.25 * (0.5 * out - normal)]
        elements += ["C", "O", "O"]
    return np.asarray(positions), elements


def compact_ligand(centre: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, list[str]]:
    """A compact tree of 10-40 atoms grown from ``centre`` with 1.5 Å bonds, no two atoms closer than 2.3 Å
    unless bonded."""
    count = int(rng.integers(10, 41))
    positions, bonds = [np.asarray(centre, dtype=float)], [0]
    for _ in range(50 * count):
        if len(positions) == count:
            break
        open_ = [i for i, b in enumerate(bonds) if b < 3]
        parent = int(rng.choice(open_))
        step = rng.normal(size=3)
        candidate = positions[parent] + 1.5 * step / np.linalg.norm(step)
        distances = np.linalg.norm(np.asarray(positions) - candidate, axis=1)
        distances[parent] = np.inf
        # stay compact: closer to the centre than a sphere of this many atoms is wide
        if distances.min() < 2.3 or np.linalg.norm(candidate - centre) > 1.2 * count ** (1 / 3) + 1.5:
            continue
        positions.append(candidate)
        bonds[parent] += 1
        bonds.append(1)
    elements = rng.choice(["C", "N", "O", "P", "S"], size=len(positions), p=[0.68, 0.12, 0.15, 0.03, 0.02])
    return np.asarray(positions), [str(e) for e in elements]


def rotation(rng: np.random.Generator) -> np.ndarray:
    """A uniformly random 3x3 rotation matrix."""
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q *= np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


def pocket_placement(group: np.ndarray, protein: np.ndarray, tree: cKDTree, placed: list[np.ndarray],
                     rng: np.random.Generator, sites: int = 256) -> np.ndarray | None:
    """``group`` (atoms around the origin) turned and moved into the most buried of ``sites`` spots off
    the protein's surface where it fits (most protein atoms within its radius + 6 Å); None if none does."""
    radius = float(np.linalg.norm(group, axis=1).max())
    clearance = 0.6 * radius + CLASH  # lets an irregular group's edges reach into a cleft
    directions = rng.normal(size=(sites, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    spots = protein[rng.integers(len(protein), size=sites)] + rng.uniform(clearance, radius + CLASH + 1.5, (sites, 1)) * directions
    spots = spots[tree.query(spots)[0] >= clearance]
    buried = np.asarray([len(n) for n in tree.query_ball_point(spots, radius + 6.0)])
    for spot in spots[np.argsort(-buried)][:8]:
        for _ in range(8):
            candidate = spot + group @ rotation(rng).T
            if fits(candidate, tree, placed):
                return candidate
    return None


def fits(group: np.ndarray, tree: cKDTree, placed: list[np.ndarray]) -> bool:
    """No atom of ``group`` within CLASH Å of the protein or of the groups already placed."""
    if tree.query(group)[0].min() < CLASH:
        return False
    return all(cKDTree(other).query(group)[0].min() >= CLASH for other in placed)


def glycan(anchor: np.ndarray, outward: np.ndarray, tree: cKDTree, placed: list[np.ndarray],
           rng: np.random.Generator) -> tuple[list[np.ndarray], list[list[str]], list[int]]:
    """A tree of 1-9 sugars from ``anchor`` along ``outward``: a linear core of up to three, then
    branches of two from the third on. Each sugar's atoms, elements and depth (0: on the protein);
    a sugar that finds no room in ten tries ends the tree."""
    count = int(rng.integers(1, 10))
    centres: list[np.ndarray] = []
    directions: list[np.ndarray] = []
    depths: list[int] = []
    children: list[int] = []
    atoms: list[np.ndarray] = []
    elements: list[list[str]] = []
    for k in range(count):
        if k < 3:
            parent = k - 1
        else:
            open_ = [i for i in range(2, len(centres)) if children[i] < 2]
            if not open_:
                break
            parent = int(rng.choice(open_))
        base, direction, step = (anchor, outward, 2.9) if parent < 0 else (centres[parent], directions[parent], SUGAR_LINK)
        for _ in range(10):
            turn = direction / np.linalg.norm(direction) + 0.6 * rng.normal(size=3)
            turn /= np.linalg.norm(turn)
            group, names = sugar(base + step * turn, rng.normal(size=3), rng)
            if fits(group, tree, placed + atoms):
                break
        else:
            break
        centres.append(base + step * turn)
        directions.append(turn)
        depths.append(0 if parent < 0 else depths[parent] + 1)
        children.append(0)
        if parent >= 0:
            children[parent] += 1
        atoms.append(group)
        elements.append(names)
    return atoms, elements, depths


def exposed_asparagines(model: gemmi.Model, tree: cKDTree) -> list[tuple[np.ndarray, np.ndarray]]:
    """(ND2 position, unit vector CG->ND2) of every asparagine whose ND2 points into open solvent."""
    out = []
    for chain in model:
        for residue in chain:
            nd2, cg = residue.find_atom("ND2", "*"), residue.find_atom("CG", "*")
            if residue.name != "ASN" or nd2 is None or cg is None:
                continue
            tip, base = np.array(nd2.pos.tolist()), np.array(cg.pos.tolist())
            direction = (tip - base) / max(float(np.linalg.norm(tip - base)), 1e-6)
            if tree.query(tip + 4.0 * direction)[0] >= 3.0:
                out.append((tip, direction))
    return out


def decorate(structure: gemmi.Structure, rng: np.random.Generator) -> tuple[gemmi.Structure, np.ndarray]:
    """A copy of ``structure`` whose first model holds, in one new chain after its own: 0-3 glycan
    trees, 0-1 heme-like disc and 1-3 ligands (fewer where they find no room), and the B (Å²) to
    add to each new atom, in the order the chain holds them (glycans: more with each sugar)."""
    structure = structure.clone()
    model = structure[0]
    protein = np.asarray([atom.pos.tolist() for chain in model for residue in chain if not residue.is_water()
                          for atom in residue if not atom.is_hydrogen()])
    tree = cKDTree(protein)
    groups: list[tuple[str, np.ndarray, list[str], float, float]] = []  # name, atoms, elements, extra B, occupancy
    placed: list[np.ndarray] = []
    sites = exposed_asparagines(model, tree)
    for i in rng.permutation(len(sites))[:int(rng.integers(GLYCANS[0], GLYCANS[1] + 1))]:
        b_step = rng.uniform(*GLYCAN_B_STEP)
        sugars, names, depths = glycan(*sites[i], tree, placed, rng)
        for atoms, elements, depth in zip(sugars, names, depths):
            groups.append(("NAG" if depth < 2 else "MAN", atoms, elements, b_step * (depth + 1), 1.0))
            placed.append(atoms)
    kinds = ["HEM"] * int(rng.integers(HEMES[0], HEMES[1] + 1)) + ["LIG"] * int(rng.integers(LIGANDS[0], LIGANDS[1] + 1))
    for kind in kinds:
        group, elements = heme_like(np.zeros(3), np.array([0.0, 0.0, 1.0]), rng) if kind == "HEM" else compact_ligand(np.zeros(3), rng)
        atoms = pocket_placement(group, protein, tree, placed, rng)
        if atoms is not None:
            occupancy = 1.0 if kind == "HEM" else float(rng.uniform(*LIGAND_OCCUPANCY))
            groups.append((kind, atoms, elements, 0.0, occupancy))
            placed.append(atoms)
    if not groups:
        return structure, np.zeros(0)
    taken = {chain.name for chain in model}
    chain = gemmi.Chain(next(c for c in "ZYXWVUTSRQPONMLKJIHGFEDCBA987654321" if c not in taken))
    for number, (name, atoms, elements, _, occupancy) in enumerate(groups, start=1):
        residue = gemmi.Residue()
        residue.name, residue.seqid, residue.het_flag = name, gemmi.SeqId(number, " "), "H"
        for k, (position, element) in enumerate(zip(atoms, elements), start=1):
            atom = gemmi.Atom()
            atom.name, atom.element = f"{element}{k}"[:4], gemmi.Element(element)
            atom.pos, atom.occ, atom.b_iso = gemmi.Position(*position), occupancy, 30.0
            residue.add_atom(atom)
        chain.add_residue(residue)
    model.add_chain(chain)
    return structure, np.concatenate([np.full(len(atoms), extra) for _, atoms, _, extra, _ in groups])
