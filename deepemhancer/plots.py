"""Figures: central orthogonal slices of maps side by side."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from .mapio import Map


def central_slices(volume: np.ndarray) -> list[np.ndarray]:
    """The three central orthogonal sections of an array (axis 0, 1, 2 held at its middle)."""
    c0, c1, c2 = (n // 2 for n in volume.shape)
    return [volume[c0, :, :], volume[:, c1, :], volume[:, :, c2]]


def display_range(volume: np.ndarray) -> tuple[float, float]:
    """One colour scaling rule for every map: its 1st to 99.9th percentile."""
    low, high = np.percentile(volume, [1.0, 99.9])
    return float(low), float(high if high > low else low + 1.0)


def save_central_slices(maps: Sequence[Map], titles: Sequence[str], path: str | Path,
                        suptitle: str | None = None) -> Path:
    """Write a PNG with one row per map and its three central sections; returns the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    fig, axes = plt.subplots(len(maps), 3, figsize=(9, 3 * len(maps)), squeeze=False)
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
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(path)
    return path
