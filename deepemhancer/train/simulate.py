"""Training data simulated from an atomic model: two noisy half maps and a sharp, masked target.

One structure becomes, on a 1 Å grid around it (``simulate``):

- signal: the model's density (gemmi, electron scattering factors) with B-factors that vary in
  space (a better-ordered core, a weaker periphery, flexible low-contact loops), a bulk-solvent
  level, a weak structured background, optionally a detergent-micelle-like belt and
  preferred-orientation anisotropy;
- half maps: signal plus independent coloured noise, scaled so that the half-map FSC reaches 0.143
  at a resolution drawn from 2.5-6 Å;
- local resolution: the global resolution scaled by sqrt(B_atom / B_median) (at fixed SNR a shell's
  signal falls as exp(-B s^2 / 2)), smoothed over the grid. The global resolution is the drawn one
  (``target_resolution = "drawn"``) or what the halves share inside the molecule ("masked-fsc": their
  FSC in the half-map models' automatic mask, ``halves_input.fsc_mask``). The drawn resolution
  holds over the whole box; a small molecule in a large box shares detail well beyond it, and a
  target limited to the drawn resolution teaches the network to discard that detail;
- optionally (``phase_randomised_probability``) both halves get independent random phases beyond a
  resolution d_r coarser than the drawn one, and the local resolution is limited to d_r;
- optionally (``empty_probability``) the box holds no molecule: the halves share only the structured
  background, at a coarse resolution (``empty_resolution_range``), and the target is empty. Real
  maps have boxes of solvent and junk, and pure noise whose lowest shells pass the FSC by chance:
  the network must make nothing of them, at the cube's faces too;
- optionally (``hetero_probability``) the model first gets non-protein groups (``hetero.decorate``:
  glycan trees, heme-like discs, small ligands) that the halves and the target both hold;
- target (Supplementary Note 6): the model's density at a low, uniform B times a binary mask of the
  model map above its 95th percentile (tight) or a dilated copy (wide), then low-passed voxel by
  voxel to that local resolution: it never asks for detail the input cannot support.

Pure functions on numpy arrays; all randomness comes from the generator passed in.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import gemmi
import numpy as np
import scipy.fft
from scipy import ndimage
from scipy.spatial import cKDTree

from ..errors import InputError
from ..halves_input import fsc_mask
from ..mapio import Geometry, Map
from ..metrics import (HALF_MAP_FSC_THRESHOLD, half_map_fsc, radial_frequency_grid, randomisation_start,
                       randomise_phases, read_structure)
from .hetero import decorate

# FSC = SNR / (1 + SNR) for two halves
SNR_AT_THRESHOLD = HALF_MAP_FSC_THRESHOLD / (1.0 - HALF_MAP_FSC_THRESHOLD)
VOXEL = 1.0  # Å: the models' grid
TARGET_RESOLUTIONS = ("drawn", "masked-fsc")
LADDER = np.array([2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0, 6.0, 7.0, 8.5, 10.0, 12.0, 15.0])  # Å, local low-pass steps


@dataclass(frozen=True)
class SimulationSettings:
    """Ranges the simulation draws from (B in Å², lengths in Å, probabilities in [0, 1])."""

    resolution_range: tuple[float, float] = (2.5, 6.0)
    b_core_range: tuple[float, float] = (20.0, 80.0)
    b_periphery_range: tuple[float, float] = (10.0, 80.0)
    b_loop_range: tuple[float, float] = (0.0, 80.0)
    target_b: float = 10.0
    margin: float = 12.0
    solvent_level_range: tuple[float, float] = (0.0, 0.3)  # of the mean protein density
    background_level: float = 0.05
    micelle_probability: float = 0.3
    anisotropy_probability: float = 0.3
    anisotropy_b_range: tuple[float, float] = (50.0, 200.0)
    noise_b_range: tuple[float, float] = (0.0, 60.0)
    mask_percentile: float = 95.0
    wide_dilation: float = 4.0
    max_local_resolution_factor: float = 2.5
    # The target's low-pass at local resolution d falls from 1 at 0.85 / d to 0 at this / d (1/Å):
    # 1 keeps the target coarser than d; above 1 it reaches past d, as RELION's edge centred at d does.
    target_lowpass_end: float = 1.0
    # Half maps whose phases beyond a resolution d_r are replaced by random ones (amplitudes kept),
    # with the target limited to d_r: teaches the network not to make detail the data do not carry.
    phase_randomised_probability: float = 0.0
    phase_randomised_factor_range: tuple[float, float] = (1.0, 2.5)  # d_r / drawn resolution
    target_resolution: str = "drawn"  # or "masked-fsc": the halves' FSC inside the molecule (module docstring)
    # Boxes with no molecule (module docstring): halves sharing a smooth background, the target empty.
    empty_probability: float = 0.0
    empty_resolution_range: tuple[float, float] = (10.0, 30.0)  # Å: where such halves' FSC crosses 0.143
    # Structures given glycans, heme-like discs and ligands (module docstring) before they are simulated.
    hetero_probability: float = 0.0

    def __post_init__(self) -> None:
        # Checked here, where a config is read, not in the pool's workers once simulation has begun.
        if self.target_resolution not in TARGET_RESOLUTIONS:
            raise InputError(f"target_resolution must be one of {', '.join(TARGET_RESOLUTIONS)}, "
                             f"not {self.target_resolution!r}")
        if not 0.85 < self.target_lowpass_end <= 1.5:
            raise InputError(f"target_lowpass_end must be above 0.85 and at most 1.5, not {self.target_lowpass_end}")


@dataclass(frozen=True, eq=False)
class SimulatedMap:
    """One simulated structure on a cubic 1 Å grid whose voxel (0, 0, 0) sits at ``origin`` (X, Y, Z Å).

    half1, half2: the noisy half maps; input: their average, normalised as at inference;
    target: the masked, locally low-passed sharp map (tight or wide mask as asked); mask: that mask;
    envelope: voxels near atoms (where cubes are sampled); local_resolution: Å per voxel;
    resolution: the half-map FSC = 0.143 resolution drawn; target_resolution: the global resolution the
    local resolution scales (the drawn one or the masked FSC's, as the settings say);
    noise_mean, noise_std: solvent statistics;
    phases_randomised_beyond: d_r in Å when the halves' phases were randomised beyond it, else None;
    extra_halves: further half maps with independent noise (``simulate``'s ``extra_pairs``);
    model: the atomic model as simulated when non-protein groups were added to it, else None (the file's).
    """

    half1: np.ndarray
    half2: np.ndarray
    input: np.ndarray
    target: np.ndarray
    mask: np.ndarray
    envelope: np.ndarray
    local_resolution: np.ndarray
    resolution: float
    target_resolution: float
    origin: np.ndarray
    noise_mean: float
    noise_std: float
    phases_randomised_beyond: float | None = None
    extra_halves: tuple[np.ndarray, ...] = ()
    model: gemmi.Structure | None = None


def atom_arrays(structure: gemmi.Structure) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Positions (n, 3), per-atom residue index (n,) and whether the atom is a CA, for the first model's
    non-hydrogen, non-water atoms."""
    positions, residues, is_ca = [], [], []
    index = 0
    for chain in structure[0]:
        for residue in chain:
            if residue.is_water():
                continue
            for atom in residue:
                if atom.is_hydrogen():
                    continue
                positions.append(atom.pos.tolist())
                residues.append(index)
                is_ca.append(atom.name == "CA")
            index += 1
    if not positions:
        raise InputError("the structure holds no non-hydrogen atoms; give a protein model")
    return np.asarray(positions), np.asarray(residues), np.asarray(is_ca)


def spatial_bfactors(positions: np.ndarray, residues: np.ndarray, is_ca: np.ndarray,
                     rng: np.random.Generator, settings: SimulationSettings) -> np.ndarray:
    """Per-atom B (Å²): core + periphery * (r / R)² + loop * (how few neighbours its residue has),
    plus a little per-residue scatter."""
    centre = positions.mean(axis=0)
    r = np.linalg.norm(positions - centre, axis=1)
    radius = max(float(np.percentile(r, 95)), 1.0)
    b_core = rng.uniform(*settings.b_core_range)
    b_periphery = rng.uniform(*settings.b_periphery_range)
    b_loop = rng.uniform(*settings.b_loop_range)
    anchors = positions[is_ca] if is_ca.sum() >= 4 else positions
    anchor_residues = residues[is_ca] if is_ca.sum() >= 4 else residues
    counts = np.asarray([len(n) for n in cKDTree(anchors).query_ball_point(anchors, 10.0)], dtype=float)
    # Few neighbours within 10 Å: an exposed, probably flexible stretch.
    exposure = np.clip((np.median(counts) - counts) / np.median(counts), 0.0, 1.0)
    per_residue = np.zeros(residues.max() + 1)
    per_residue[anchor_residues] = exposure
    per_residue = ndimage.uniform_filter1d(per_residue, 5)  # loops are stretches, not single residues
    scatter = rng.normal(0.0, 3.0, residues.max() + 1)
    b = b_core + b_periphery * np.minimum(r / radius, 1.5) ** 2 + b_loop * per_residue[residues] + scatter[residues]
    return np.maximum(b, 5.0)


def box_for(positions: np.ndarray, margin: float) -> tuple[int, np.ndarray]:
    """Side (even, voxels) of a cubic 1 Å box holding every atom ``margin`` Å from its faces, and
    the position (X, Y, Z Å) of voxel (0, 0, 0)."""
    low, high = positions.min(axis=0), positions.max(axis=0)
    side = int(np.ceil((high - low).max() + 2 * margin))
    side += side % 2
    origin = np.round((low + high) / 2 - side * VOXEL / 2)
    return side, origin


def density(structure: gemmi.Structure, b_factors: np.ndarray, side: int, origin: np.ndarray) -> np.ndarray:
    """The model's density with the given per-atom B on the cubic box (array axes Z, Y, X), band-limited
    at Nyquist; gemmi's anti-aliasing blur is taken out again in Fourier space."""
    model = structure[0].clone()
    model.remove_hydrogens()
    shift = gemmi.Transform()
    shift.vec.fromlist([float(v) for v in -origin])
    model.transform_pos_and_adp(shift)
    i = 0
    for cra in model.all():
        if cra.residue.is_water():
            cra.atom.occ = 0.0
            continue
        cra.atom.b_iso = float(b_factors[i])
        cra.atom.aniso = gemmi.SMat33f(0, 0, 0, 0, 0, 0)
        i += 1
    calculator = gemmi.DensityCalculatorE()
    calculator.d_min = 2.0 * VOXEL
    calculator.rate = 1.0
    calculator.grid.set_unit_cell(gemmi.UnitCell(side * VOXEL, side * VOXEL, side * VOXEL, 90, 90, 90))
    calculator.grid.spacegroup = gemmi.SpaceGroup("P 1")
    calculator.grid.set_size(side, side, side)
    calculator.set_refmac_compatible_blur(model)
    calculator.add_model_density_to_grid(model)
    xyz = np.array(calculator.grid, copy=True)
    s = radial_frequency_grid(xyz.shape, VOXEL)
    transform = scipy.fft.rfftn(xyz, workers=-1)
    transform *= np.where(s <= 0.5 / VOXEL, np.exp(np.float32(calculator.blur / 4.0) * s * s), 0.0)
    out = scipy.fft.irfftn(transform, s=xyz.shape, workers=-1)
    return np.ascontiguousarray(np.transpose(out, (2, 1, 0)), dtype=np.float32)


def local_resolution_map(positions_zyx: np.ndarray, b_factors: np.ndarray, side: int, resolution: float,
                         max_factor: float) -> np.ndarray:
    """Å per voxel: resolution * sqrt(B / median B) at the atoms, clipped to [Nyquist, max_factor *
    resolution], spread by a 3 Å Gaussian; voxels far from atoms get the worst value."""
    per_atom = np.clip(resolution * np.sqrt(b_factors / np.median(b_factors)), 2.0 * VOXEL, max_factor * resolution)
    index = np.clip(np.round(positions_zyx).astype(int), 0, side - 1)
    flat = np.ravel_multi_index(index.T, (side,) * 3)
    weight = np.bincount(flat, minlength=side ** 3).reshape((side,) * 3).astype(np.float32)
    total = np.bincount(flat, per_atom, minlength=side ** 3).reshape((side,) * 3).astype(np.float32)
    weight, total = ndimage.gaussian_filter(weight, 3.0), ndimage.gaussian_filter(total, 3.0)
    worst = np.float32(max_factor * resolution)
    return np.where(weight > 1e-3, total / np.maximum(weight, 1e-12), worst).astype(np.float32)


def lowpass(volume: np.ndarray, resolution: float, end: float = 1.0) -> np.ndarray:
    """A raised-cosine low-pass falling from 1 at 0.85 / resolution to 0 at end / resolution (1/Å)."""
    s = radial_frequency_grid(volume.shape, VOXEL)
    cutoff, start = end / resolution, 0.85 / resolution
    gain = np.clip((cutoff - s) / (cutoff - start), 0.0, 1.0)
    gain = 0.5 - 0.5 * np.cos(np.pi * gain)
    transform = scipy.fft.rfftn(volume, workers=-1) * gain.astype(np.float32)
    return scipy.fft.irfftn(transform, s=volume.shape, workers=-1).astype(np.float32)


def locally_lowpassed(volume: np.ndarray, local_resolution: np.ndarray, end: float = 1.0) -> np.ndarray:
    """``volume`` low-passed voxel by voxel to ``local_resolution`` (``lowpass``'s ``end``): linear
    interpolation, in 1/d, between copies low-passed on a ladder of resolutions."""
    ladder = np.unique(np.clip(LADDER, float(local_resolution.min()), float(local_resolution.max())))
    frequencies = np.sort(1.0 / ladder)  # increasing, as np.interp needs
    wanted = 1.0 / local_resolution
    out = np.zeros_like(volume)
    for k, f in enumerate(frequencies):
        weight = np.interp(wanted, frequencies, np.eye(len(frequencies))[k]).astype(np.float32)
        if np.any(weight > 0):
            out += weight * lowpass(volume, float(1.0 / f), end)
    return out


def shell_power(volume: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Shell frequencies (1/Å, one Fourier voxel wide) and the mean |F|² in each."""
    s = radial_frequency_grid(volume.shape, VOXEL)
    ds = 1.0 / (volume.shape[0] * VOXEL)
    shell = np.round(s / ds).astype(np.int64).ravel()
    power = np.abs(scipy.fft.rfftn(volume, workers=-1)).ravel() ** 2
    counts = np.bincount(shell)
    mean = np.bincount(shell, power) / np.maximum(counts, 1)
    return np.arange(mean.size) * ds, mean


def coloured_noise(shape: tuple[int, ...], noise_b: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian noise whose amplitude spectrum is exp(-noise_b s² / 4) + 0.2 (unit white level)."""
    white = rng.standard_normal(shape).astype(np.float32)
    s = radial_frequency_grid(shape, VOXEL)
    transform = scipy.fft.rfftn(white, workers=-1) * noise_spectrum(s, noise_b)
    return scipy.fft.irfftn(transform, s=shape, workers=-1).astype(np.float32)


def noise_spectrum(s: np.ndarray, noise_b: float) -> np.ndarray:
    """The noise's amplitude shape at frequency ``s``."""
    return (np.exp(-noise_b * s * s / 4.0) + 0.2).astype(np.float32)


def noise_scale(signal: np.ndarray, noise_b: float, resolution: float) -> float:
    """Multiplier of ``coloured_noise`` that puts the half-map FSC = 0.143 at ``resolution``:
    signal power / noise power = 0.143 / 0.857 in that shell (three shells averaged)."""
    frequencies, power = shell_power(signal)
    k = int(np.argmin(np.abs(frequencies - 1.0 / resolution)))
    signal_power = float(np.mean(power[max(k - 1, 1):k + 2]))
    # white unit noise has E|F|² = N per coefficient with the unnormalised FFT
    noise_power = signal.size * float(noise_spectrum(np.asarray(frequencies[k]), noise_b)) ** 2
    return float(np.sqrt(signal_power / (noise_power * SNR_AT_THRESHOLD)))


def anisotropy(volume: np.ndarray, b_aniso: float, rng: np.random.Generator) -> np.ndarray:
    """Preferred orientation: amplitudes times exp(-b_aniso (s . n)² / 4) along a random direction n."""
    n = rng.normal(size=3)
    n /= np.linalg.norm(n)
    side = volume.shape[0]
    fz = np.fft.fftfreq(side, VOXEL)[:, None, None]
    fy = np.fft.fftfreq(side, VOXEL)[None, :, None]
    fx = np.fft.rfftfreq(side, VOXEL)[None, None, :]
    along = (fz * n[0] + fy * n[1] + fx * n[2]).astype(np.float32)
    transform = scipy.fft.rfftn(volume, workers=-1) * np.exp(-b_aniso * along * along / 4.0)
    return scipy.fft.irfftn(transform, s=volume.shape, workers=-1).astype(np.float32)


def structured_background(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """A smooth random field (white noise blurred by 4 voxels) of unit standard deviation."""
    background = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), 4.0)
    return background / (background.std() + 1e-12)


def micelle_belt(envelope: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A detergent-micelle-like belt (0..1 density, smooth, lumpy) around the molecule's middle."""
    side = envelope.shape[0]
    centre = np.array(ndimage.center_of_mass(envelope))
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    grid = np.indices(envelope.shape, dtype=np.float32).reshape(3, -1).T - centre
    height = grid @ axis
    radial = np.linalg.norm(grid - height[:, None] * axis, axis=1)
    extent = float(np.sqrt(envelope.sum() / np.pi / max(side / 2, 1)))
    r_in, r_out = 0.5 * extent, 0.5 * extent + rng.uniform(10.0, 20.0)
    half_height = rng.uniform(12.0, 20.0)
    belt = ((radial > r_in) & (radial < r_out) & (np.abs(height) < half_height)).reshape(envelope.shape)
    lumps = ndimage.gaussian_filter(rng.standard_normal(envelope.shape).astype(np.float32), 2.0)
    lumps = np.clip(0.5 + lumps / (4 * lumps.std() + 1e-12), 0.0, 1.0)
    return ndimage.gaussian_filter(belt.astype(np.float32), 2.0) * lumps


def shared_resolution(half1: np.ndarray, half2: np.ndarray) -> float:
    """The halves' FSC = 0.143 resolution inside the half-map models' automatic mask (Å), as their
    baseline sharpening measures it."""
    geometry = Geometry.for_grid(half1.shape, VOXEL)
    mask = fsc_mask(Map(half1, geometry), Map(half2, geometry))
    return float(half_map_fsc(half1, half2, VOXEL, mask).resolution)


def target_mask(model_density: np.ndarray, percentile: float, dilation: float) -> np.ndarray:
    """Binary mask: the model map above its ``percentile``-th percentile over the box, dilated by
    ``dilation`` Å (0: the tight mask)."""
    binary = model_density > np.percentile(model_density, percentile)
    if dilation > 0:
        distance = ndimage.distance_transform_edt(~binary, sampling=VOXEL)
        binary = distance <= dilation
    return binary


def simulate(structure_path: str | Path, rng: np.random.Generator, settings: SimulationSettings = SimulationSettings(),
             target: str = "tight", resolution: float | None = None, extra_pairs: int = 0) -> SimulatedMap:
    """Simulate one structure (see the module docstring); ``resolution`` None draws one.

    ``extra_pairs`` more pairs of half maps (same signal, independent noise, drawn after everything
    else so that the rest does not change) go to ``extra_halves``: independent pairs for checking
    half-map models."""
    if target not in ("tight", "wide"):
        raise InputError(f"target must be 'tight' or 'wide', not {target!r}")
    structure = read_structure(structure_path)
    structure.setup_entities()
    added_b = None
    # Drawn only when asked for, so that runs without these groups keep their draws.
    if settings.hetero_probability > 0 and rng.random() < settings.hetero_probability:
        structure, added_b = decorate(structure, rng)
    positions, residues, is_ca = atom_arrays(structure)
    if resolution is None:
        resolution = float(rng.uniform(*settings.resolution_range))
    b_factors = spatial_bfactors(positions, residues, is_ca, rng, settings)
    if added_b is not None and added_b.size:  # the new chain's atoms come last
        b_factors[-added_b.size:] += added_b
    side, origin = box_for(positions, settings.margin)
    # Drawn only when asked for, so that runs without empty boxes keep their draws.
    if settings.empty_probability > 0 and rng.random() < settings.empty_probability:
        return empty_box(side, origin, rng, settings, extra_pairs)

    signal = density(structure, b_factors, side, origin)
    sharp = density(structure, np.full(len(b_factors), settings.target_b), side, origin)
    positions_zyx = (positions - origin)[:, ::-1] / VOXEL
    envelope = ndimage.gaussian_filter(lowpass(sharp, 8.0), 1.0) > 0.1 * float(np.percentile(sharp, 99.5))

    protein_level = float(signal[envelope].mean())
    solvent = rng.uniform(*settings.solvent_level_range) * protein_level
    signal += solvent * (1.0 - ndimage.gaussian_filter(envelope.astype(np.float32), 2.0))
    signal += settings.background_level * protein_level * structured_background(signal.shape, rng)
    if rng.random() < settings.micelle_probability:
        signal += rng.uniform(0.2, 0.5) * protein_level * micelle_belt(envelope, rng)
    if rng.random() < settings.anisotropy_probability:
        signal = anisotropy(signal, rng.uniform(*settings.anisotropy_b_range), rng)

    noise_b = rng.uniform(*settings.noise_b_range)
    scale = noise_scale(signal, noise_b, resolution)
    half1 = signal + scale * coloured_noise(signal.shape, noise_b, rng)
    half2 = signal + scale * coloured_noise(signal.shape, noise_b, rng)

    randomised_beyond = None
    if rng.random() < settings.phase_randomised_probability:
        randomised_beyond = float(rng.uniform(*settings.phase_randomised_factor_range) * resolution)
        start = randomisation_start(signal.shape, VOXEL, randomised_beyond)
        half1, half2 = (randomise_phases(h, VOXEL, start, rng) for h in (half1, half2))
    supported = resolution if settings.target_resolution == "drawn" else shared_resolution(half1, half2)
    local = local_resolution_map(positions_zyx, b_factors, side, supported, settings.max_local_resolution_factor)
    if randomised_beyond is not None:  # the target's low-pass ends at d_r: nothing past it is shared
        local = np.maximum(local, np.float32(randomised_beyond * max(settings.target_lowpass_end, 1.0)))
    mask = target_mask(lowpass(sharp, resolution), settings.mask_percentile,
                       0.0 if target == "tight" else settings.wide_dilation)
    # Masked first, then limited: the mask's edge would otherwise add detail finer than the data.
    goal = locally_lowpassed(sharp * mask, local, settings.target_lowpass_end)
    goal /= max(float(np.percentile(goal[mask], 99)), 1e-12)  # scale: the protein's high values near 1

    extra = [signal + scale * coloured_noise(signal.shape, noise_b, rng) for _ in range(2 * extra_pairs)]
    if randomised_beyond is not None:
        extra = [randomise_phases(h, VOXEL, start, rng) for h in extra]

    simulated = simulated_map(half1, half2, goal, mask, envelope, local, resolution, supported, origin,
                              randomised_beyond, extra)
    return simulated if added_b is None else dataclasses.replace(simulated, model=structure)


def empty_box(side: int, origin: np.ndarray, rng: np.random.Generator, settings: SimulationSettings,
              extra_pairs: int = 0) -> SimulatedMap:
    """A ``side``³ box with no molecule: the halves share a ``structured_background`` whose FSC
    crosses 0.143 at a resolution drawn from ``empty_resolution_range``; the target, its mask and the
    envelope are empty."""
    background = structured_background((side,) * 3, rng)
    resolution = float(rng.uniform(*settings.empty_resolution_range))
    noise_b = rng.uniform(*settings.noise_b_range)
    scale = noise_scale(background, noise_b, resolution)
    half1, half2, *extra = (background + scale * coloured_noise(background.shape, noise_b, rng)
                            for _ in range(2 + 2 * extra_pairs))
    nothing = np.zeros(background.shape, dtype=bool)
    return simulated_map(half1, half2, np.zeros(background.shape, np.float32), nothing, nothing,
                         np.full(background.shape, resolution, np.float32), resolution, resolution, origin, None,
                         extra)


def simulated_map(half1: np.ndarray, half2: np.ndarray, goal: np.ndarray, mask: np.ndarray, envelope: np.ndarray,
                  local: np.ndarray, resolution: float, supported: float, origin: np.ndarray,
                  randomised_beyond: float | None, extra: list[np.ndarray]) -> SimulatedMap:
    """The SimulatedMap of these arrays, with the average normalised as at inference by the noise of
    the solvent (voxels over 6 Å from the envelope; the whole box when it holds no molecule)."""
    average = 0.5 * (half1 + half2)
    solvent_voxels = ndimage.distance_transform_edt(~envelope) > 6.0 if envelope.any() else ~envelope
    noise_mean, noise_std = float(average[solvent_voxels].mean()), float(average[solvent_voxels].std())
    normalised = (average - noise_mean) / (10.0 * noise_std)  # normalization.normalize_with_noise
    return SimulatedMap(half1=half1.astype(np.float32), half2=half2.astype(np.float32),
                        input=normalised.astype(np.float32), target=goal.astype(np.float32), mask=mask,
                        envelope=envelope, local_resolution=local, resolution=resolution,
                        target_resolution=supported, origin=origin,
                        noise_mean=noise_mean, noise_std=noise_std, phases_randomised_beyond=randomised_beyond,
                        extra_halves=tuple(h.astype(np.float32) for h in extra))
