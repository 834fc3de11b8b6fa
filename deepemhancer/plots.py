"""Figures: central orthogonal slices of maps, FSC curves, Guinier plots and the independent-halves check."""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from .files import atomic_path
from .mapio import Map
from .metrics import HALF_MAP_FSC_THRESHOLD, FSCCurve, GuinierFit, HalvesCheck, share_text


def central_slices(volume: np.ndarray) -> list[np.ndarray]:
    """The three central orthogonal sections of an array (axis 0, 1, 2 held at its middle)."""
    c0, c1, c2 = (n // 2 for n in volume.shape)
    return [volume[c0, :, :], volume[:, c1, :], volume[:, :, c2]]


def display_range(volume: np.ndarray) -> tuple[float, float]:
    """One colour scaling rule for every map: its 1st to 99.9th percentile."""
    low, high = np.percentile(volume, [1.0, 99.9])
    return float(low), float(high if high > low else low + 1.0)


def _subplots(rows: int = 1, cols: int = 1, figsize: tuple[float, float] = (7, 4.2), **kwargs):
    """A figure without pyplot: no global backend switch, so a GUI host (Scipion) keeps its own."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    return fig, fig.subplots(rows, cols, **kwargs)


def _save(fig, path: str | Path) -> Path:
    """Write ``fig`` as a PNG, whole or not at all (``files.atomic_path``)."""
    path = Path(path)
    with atomic_path(path) as temporary:
        fig.savefig(temporary, dpi=100, format="png")
    return path


def save_central_slices(maps: Sequence[Map], titles: Sequence[str], path: str | Path,
                        suptitle: str | None = None) -> Path:
    """Write a PNG with one row per map and its three central sections; returns the path."""
    fig, axes = _subplots(len(maps), 3, figsize=(9, 3 * len(maps)), squeeze=False)
    for row, (m, title) in enumerate(zip(maps, titles)):
        low, high = display_range(m.data)
        for col, (section, axis_name) in enumerate(zip(central_slices(m.data), ("section", "row", "column"))):
            ax = axes[row][col]
            ax.imshow(section, cmap="gray", vmin=low, vmax=high, origin="lower")
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(f"central {axis_name}", fontsize=10)
            if col == 0:
                ax.set_ylabel(title, fontsize=9)
    if suptitle:
        fig.suptitle(suptitle, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def _resolution_axis(ax, curves: Sequence[FSCCurve]) -> None:
    """Linear in spatial frequency up to Nyquist, ticks labelled as resolution in Å."""
    nyquist = max(float(c.frequency[-1]) for c in curves)
    ticks = np.linspace(0.0, nyquist, 6)[1:]
    ax.set_xlim(0.0, nyquist)
    ax.set_xticks(ticks)
    ax.set_xticklabels([f"{1.0 / t:.1f}" for t in ticks])
    ax.set_xlabel("resolution (Å)")


def save_fsc_curves(curves: Mapping[str, FSCCurve], path: str | Path, title: str = "Fourier shell correlation",
                    thresholds: Sequence[float] = (HALF_MAP_FSC_THRESHOLD,)) -> Path:
    """Write a PNG of FSC curves (one line per name) with dashed threshold lines; returns the path."""
    fig, ax = _subplots()
    for name, curve in curves.items():
        ax.plot(curve.frequency, curve.correlation, label=name, linewidth=1.5)
    for level in thresholds:
        ax.axhline(level, color="grey", linestyle="--", linewidth=0.8)
        ax.text(0.005, level + 0.01, f"{level:g}", color="grey", fontsize=8, transform=ax.get_yaxis_transform())
    ax.axhline(0.0, color="black", linewidth=0.5)
    ax.set_ylim(-0.1, 1.05)
    ax.set_ylabel("FSC")
    _resolution_axis(ax, list(curves.values()))
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def save_guinier(fits: Mapping[str, GuinierFit], path: str | Path) -> Path:
    """Write a PNG of Guinier plots (ln mean |F| against s²), each with its fitted line over the fitted shells."""
    fig, ax = _subplots()
    for name, fit in fits.items():
        finite = np.isfinite(fit.ln_amplitude)
        line, = ax.plot(fit.s_squared[finite], fit.ln_amplitude[finite], linewidth=1.2,
                        label=f"{name} (B = {fit.b_factor:.0f} Å²)")
        ax.plot(fit.s_squared[fit.in_fit], fit.line()[fit.in_fit], linestyle="--", color=line.get_color(), linewidth=1)
    ax.set_xlabel("s² (1/Å²)")
    ax.set_ylabel("ln(mean |F|)")
    ax.legend(fontsize=8)
    ax.set_title("Guinier plot (dashed: fitted range)", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def save_halves_check(check: HalvesCheck, path: str | Path) -> Path:
    """Write a PNG of the raw and enhanced halves' FSC, the raw FSC plus the noise margin, and the flagged shells."""
    fig, ax = _subplots()
    s = check.raw.frequency
    ax.plot(s, check.raw.correlation, label="raw halves", linewidth=1.5)
    ax.plot(s, check.enhanced.correlation, label="enhanced halves", linewidth=1.5)
    ax.fill_between(s, check.raw.correlation, check.raw.correlation + check.margin, color="grey", alpha=0.25,
                    label="raw + noise margin")
    if check.flagged.any():
        ax.scatter(s[check.flagged], check.enhanced.correlation[check.flagged], color="red", zorder=3,
                   label="agree beyond the data")
    ax.axvline(1.0 / check.raw_resolution, color="grey", linestyle=":", linewidth=1)
    ax.axhline(HALF_MAP_FSC_THRESHOLD, color="grey", linestyle="--", linewidth=0.8)
    ax.axhline(0.0, color="black", linewidth=0.5)
    ax.set_ylim(-0.1, 1.05)
    ax.set_ylabel("FSC")
    _resolution_axis(ax, [check.raw])
    ax.legend(fontsize=8)
    ax.set_title(f"Independent halves: raw 0.143 at {check.raw_resolution:.2f} Å; shared power beyond it: "
                 f"enhanced {share_text(check.enhanced_shared_beyond)}, raw {share_text(check.raw_shared_beyond)}",
                 fontsize=9)
    fig.tight_layout()
    return _save(fig, path)
