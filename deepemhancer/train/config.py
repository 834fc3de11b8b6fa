"""Training configuration: a dataclass, read from a TOML or JSON file, overridden by ``KEY=VALUE`` flags."""
from __future__ import annotations

import dataclasses
import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from ..errors import InputError
from ..models.store import HALVES_NORMALIZATIONS
from ..nn.unet import SAMPLINGS
from .simulate import SimulationSettings

LOSSES = ("l1", "mse", "smooth_l1", "l1_gradients")
INPUTS = ("average", *HALVES_NORMALIZATIONS)  # the half-map models' input is named as their normalisation
PRECISIONS = ("fp32", "bf16")


@dataclass
class TrainConfig:
    """Everything a training run depends on; saved inside every checkpoint."""

    name: str = "open-tight-small"
    description: str = ""
    structures: str = "../shared/data/models/bm5"  # folder of *.pdb / *.pdb.gz / *.cif models
    holdout_every: int = 10  # every 10th structure (name order) from holdout_offset is held out
    holdout_offset: int = 5
    monitor_count: int = 3  # training-split structures kept out of the pool for the validation loss
    max_structures: int = 0  # 0: every training structure
    realisations: int = 1  # simulated maps per structure (different seeds)
    target: str = "tight"
    # "average": the halves' average, noise-normalised (single-map models); "sharpened-halves": the
    # B-factor-sharpened average and the sharpened half difference; "wiener-halves": the same two
    # Wiener-weighted, keeping the shells beyond the halves' resolution (halves_input.py)
    inputs: str = "average"
    # Half-map inputs only: false leaves out channel 1 (the half-map noise), the ablation of that
    # channel (the network then sees the sharpened average alone)
    noise_channel: bool = True
    out: str = ".train/run"
    # network (the project's U-Net)
    width: float = 0.125
    groups: int = 8
    channels: list[int] = field(default_factory=lambda: [16, 32, 64, 128, 256])
    kernel_size: int = 5
    sampling: str = "strided"  # the paper's; or "interpolated" (see nn/unet.py and docs/trust.md)
    residual: bool = False  # learn a correction of the first input channel (nn/unet.py)
    # optimisation
    steps: int = 1000
    batch_size: int = 4
    cube: int = 48
    validation_cube: int = 64
    on_molecule: float = 0.85
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 50
    min_lr_ratio: float = 0.05
    grad_clip: float = 1.0
    loss: str = "l1"
    gradient_weight: float = 1.0  # l1_gradients: weight of the neighbour-difference term
    precision: str = "fp32"
    device: str = "auto"  # auto (a GPU when there is one), cpu or cuda
    seed: int = 2024
    threads: int = 2
    workers: int = 1  # DataLoader worker processes
    pool_workers: int = 2  # processes that simulate the pool
    log_every: int = 10
    validate_every: int = 100
    validation_cubes: int = 8
    checkpoint_every: int = 100
    simulation: dict[str, Any] = field(default_factory=dict)  # SimulationSettings overrides

    def settings(self) -> SimulationSettings:
        """The simulation settings with this config's overrides."""
        known = {f.name for f in dataclasses.fields(SimulationSettings)}
        unknown = sorted(set(self.simulation) - known)
        if unknown:
            raise InputError(f"unknown simulation settings {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in self.simulation.items()}
        return SimulationSettings(**values)

    def check(self) -> "TrainConfig":
        """Raise InputError on values that cannot work."""
        if self.loss not in LOSSES:
            raise InputError(f"loss {self.loss!r} is unknown; choose one of {', '.join(LOSSES)}")
        if not self.gradient_weight >= 0:
            raise InputError(f"gradient_weight must be 0 or more, not {self.gradient_weight!r}")
        if self.precision not in PRECISIONS:
            raise InputError(f"precision {self.precision!r} is unknown; choose one of {', '.join(PRECISIONS)}")
        multiple = 2 ** (len(self.channels) - 1)
        for what in ("cube", "validation_cube"):
            if getattr(self, what) % multiple:
                raise InputError(f"{what} {getattr(self, what)} must be a multiple of {multiple} for this U-Net")
        if self.sampling not in SAMPLINGS:
            raise InputError(f"sampling must be one of {', '.join(SAMPLINGS)}, not {self.sampling!r}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise InputError(f"device must be auto, cpu or cuda, not {self.device!r}")
        if self.inputs not in INPUTS:
            raise InputError(f"inputs must be one of {', '.join(INPUTS)}, not {self.inputs!r}")
        if not self.noise_channel and self.inputs not in HALVES_NORMALIZATIONS:
            raise InputError(f"noise_channel = false needs inputs = one of {', '.join(HALVES_NORMALIZATIONS)}: "
                             "only half-map models have a noise channel to leave out")
        if self.target not in ("tight", "wide"):
            raise InputError(f"target must be 'tight' or 'wide', not {self.target!r}")
        if self.steps < 1 or self.batch_size < 1 or self.holdout_every < 2:
            raise InputError("steps and batch_size must be at least 1 and holdout_every at least 2")
        self.settings()
        return self


def read_config_file(path: str | Path) -> dict[str, Any]:
    """A TOML (.toml) or JSON file's settings as a dict."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise InputError(f"cannot read config file {path} ({exc.strerror or exc})") from None
    try:
        return tomllib.loads(text) if path.suffix.lower() == ".toml" else json.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"config file {path} is not valid {path.suffix[1:].upper() or 'JSON'}: {exc}") from None


def _parse_value(key: str, text: str, current: Any) -> Any:
    """A flag's text converted to the type of the field's current value."""
    try:
        if isinstance(current, bool):
            if text.lower() not in ("true", "false", "1", "0"):
                raise ValueError(text)
            return text.lower() in ("true", "1")
        if isinstance(current, (list, dict)):
            return json.loads(text)
        if isinstance(current, tuple):
            return tuple(json.loads(text))
        return type(current)(text)
    except (ValueError, TypeError, json.JSONDecodeError):
        raise InputError(f"--set {key}={text}: expected a value like {current!r}") from None


def make_config(file: str | Path | None = None, overrides: Sequence[str] = ()) -> TrainConfig:
    """Defaults, then the config file, then ``KEY=VALUE`` overrides (in that order of precedence)."""
    values = dataclasses.asdict(TrainConfig())
    if file is not None:
        given = read_config_file(file)
        unknown = sorted(set(given) - set(values))
        if unknown:
            raise InputError(f"config file {file} has unknown keys {', '.join(unknown)}")
        values.update(given)
    for item in overrides:
        key, sep, text = item.partition("=")
        section, dot, setting = key.partition(".")
        if sep and dot and section == "simulation":  # one simulation setting, e.g. simulation.micelle_probability=0.5
            known = {f.name: f.default for f in dataclasses.fields(SimulationSettings)}
            if setting not in known:
                raise InputError(f"--set {item!r}: unknown simulation setting; known: {', '.join(sorted(known))}")
            current = values["simulation"].get(setting, known[setting])
            values["simulation"] = {**values["simulation"], setting: _parse_value(key, text, current)}
            continue
        if not sep or key not in values:
            raise InputError(f"--set {item!r}: give KEY=VALUE with a known key ({', '.join(sorted(values))})")
        values[key] = _parse_value(key, text, values[key])
    return TrainConfig(**values).check()
