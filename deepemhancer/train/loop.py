"""The training loop: AdamW, linear warm-up then cosine decay, optional bf16 autocast, atomic
checkpoints with resume, a JSON-lines log of losses and validation metrics, and the export of the
trained network as a model JSON + safetensors.

Checkpoints are one safetensors file: the network's tensors (fp32), the optimiser's moments (bf16,
to stay small enough to commit) and the RNG state as tensors; everything else (step, time, config,
optimiser and scheduler settings) as JSON in its metadata. Nothing is unpickled: resuming never
runs code from the run folder.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from ..errors import InputError
from ..files import atomic_path
from ..halves_input import CHANNELS as HALVES_CHANNELS
from ..models.store import HALVES_NORMALIZATIONS, save_model
from ..nn import UNet, count_parameters
from .config import TrainConfig
from .dataset import CubeStream, build_pool, fixed_cubes, split_structures

log = logging.getLogger("deepemhancer")

CHECKPOINT = "checkpoint.safetensors"
LOG = "log.jsonl"
# The stride an exported model asks for: 16, the original's. A coarser one is set in a model's JSON
# only once measured to keep r >= 0.999 with 16 on real maps (open-halves: 24; open-tight-small
# failed at 24 on EMD-11007: benchmarks/bench_speed.py, docs/performance.md).
EXPORT_STRIDE = 16
STRUCTURE_PATTERNS = ("*.pdb", "*.pdb.gz", "*.ent", "*.ent.gz", "*.cif", "*.cif.gz")


@dataclass(frozen=True)
class TrainResult:
    """What a run did: the steps reached, the seconds it trained (this invocation), the model written."""

    step: int
    seconds: float
    model_json: Path
    last_loss: float


def lr_factor(step: int, warmup: int, total: int, min_ratio: float) -> float:
    """Learning-rate multiplier: linear warm-up over ``warmup`` steps, then a cosine from 1 down to
    ``min_ratio`` at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def l1_with_gradients(prediction: torch.Tensor, target: torch.Tensor, weight: float = 1.0) -> torch.Tensor:
    """L1 on the voxels plus ``weight`` times L1 on the differences between neighbours along each of
    the last three axes (their mean). Voxel L1 weighs a Fourier shell by its amplitude, which falls
    steeply with resolution; a difference multiplies shell s by 2 sin(pi s voxel), so the fine shells
    the target holds count too."""
    loss = torch.nn.functional.l1_loss(prediction, target)
    differences = [torch.nn.functional.l1_loss(torch.diff(prediction, dim=axis), torch.diff(target, dim=axis))
                   for axis in (-3, -2, -1)]
    return loss + weight * sum(differences) / 3.0


def loss_function(name: str, gradient_weight: float = 1.0) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The training loss by name (the original trained with L1); ``gradient_weight`` weighs the
    neighbour differences of ``l1_gradients``."""
    functions = {"l1": torch.nn.functional.l1_loss, "mse": torch.nn.functional.mse_loss,
                 "smooth_l1": lambda a, b: torch.nn.functional.smooth_l1_loss(a, b, beta=0.1),
                 "l1_gradients": lambda a, b: l1_with_gradients(a, b, gradient_weight)}
    return functions[name]


def find_structures(folder: str | Path) -> list[Path]:
    """The atomic models in a folder."""
    folder = Path(folder)
    found = sorted({p for pattern in STRUCTURE_PATTERNS for p in folder.glob(pattern)})
    if not found:
        raise InputError(f"no atomic models (*.pdb, *.cif, optionally .gz) in {folder}; set 'structures' in the config")
    return found


def training_split(config: TrainConfig) -> tuple[list[Path], list[Path], list[Path]]:
    """(train, monitor, held_out) structures: held-out ones are never simulated for training; the
    monitor ones (taken from the training split's end) only give the validation loss."""
    train, held_out = split_structures(find_structures(config.structures), config.holdout_every,
                                       config.holdout_offset)
    monitor = train[len(train) - config.monitor_count:] if config.monitor_count else []
    train = train[:len(train) - config.monitor_count]
    if config.max_structures:
        # an evenly spread subset, so that small runs still see varied structures
        picks = np.linspace(0, len(train) - 1, min(config.max_structures, len(train))).round().astype(int)
        train = [train[i] for i in sorted(set(picks))]
    if not train:
        raise InputError("no structure is left for training; lower holdout/monitor counts or add structures")
    return train, monitor, held_out


def build_network(config: TrainConfig) -> UNet:
    """The project's U-Net with this config's width, groups, channels and kernel."""
    in_channels = input_channels(config)
    return UNet(config.width, config.groups, config.channels, config.kernel_size, config.sampling,
                in_channels=in_channels, residual=config.residual)


def input_channels(config: TrainConfig) -> int:
    """How many input channels the config's network reads: the half-map input's first channel or both."""
    return HALVES_CHANNELS if config.inputs in HALVES_NORMALIZATIONS and config.noise_channel else 1


def training_device(name: str) -> torch.device:
    """The device a config asks for ('auto': the first GPU when there is one)."""
    if name == "cuda" and not torch.cuda.is_available():
        raise InputError("device 'cuda' was asked for but no CUDA GPU is visible; use device=cpu or auto")
    return torch.device("cuda" if name != "cpu" and torch.cuda.is_available() else "cpu")


def _autocast(device: torch.device, precision: str):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def save_checkpoint(path: Path, step: int, network: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    scheduler: torch.optim.lr_scheduler.LRScheduler, config: TrainConfig, seconds: float) -> None:
    """Write the training state atomically (a crash never leaves a half-written checkpoint)."""
    tensors = {f"network.{k}": v.detach().cpu().contiguous() for k, v in network.state_dict().items()}
    optimizer_state = optimizer.state_dict()
    plain: dict[str, dict[str, object]] = {}
    for index, values in optimizer_state["state"].items():
        for key, value in values.items():
            if isinstance(value, torch.Tensor):
                # moments in bf16: a checkpoint small enough to commit (loading casts them back)
                stored = value.to(torch.bfloat16) if value.is_floating_point() and value.ndim else value
                tensors[f"optimizer.{index}.{key}"] = stored.detach().cpu().contiguous()
            else:
                plain.setdefault(str(index), {})[key] = value
    tensors["torch_rng"] = torch.get_rng_state()
    state = {"step": step, "seconds": seconds, "config": dataclasses.asdict(config),
             "optimizer_param_groups": optimizer_state["param_groups"], "optimizer_plain": plain,
             "scheduler": scheduler.state_dict()}
    with atomic_path(path) as temporary:
        save_file(tensors, str(temporary), metadata={"state": json.dumps(state)})


def load_checkpoint(path: Path, network: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    scheduler: torch.optim.lr_scheduler.LRScheduler, device: torch.device) -> tuple[int, float]:
    """Restore what ``save_checkpoint`` wrote; returns (step, seconds). InputError if it is unreadable."""
    try:
        tensors = load_file(str(path), device=str(device))
        with safe_open(str(path), framework="pt") as handle:  # the JSON part lives in the header
            state = json.loads(handle.metadata()["state"])
        network.load_state_dict({k[len("network."):]: v for k, v in tensors.items() if k.startswith("network.")})
        per_parameter: dict[int, dict[str, object]] = {}
        for key, value in tensors.items():
            if key.startswith("optimizer."):
                _, index, name = key.split(".", 2)
                per_parameter.setdefault(int(index), {})[name] = value
        for index, values in state["optimizer_plain"].items():
            per_parameter.setdefault(int(index), {}).update(values)
        optimizer.load_state_dict({"state": per_parameter, "param_groups": state["optimizer_param_groups"]})
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(tensors["torch_rng"].cpu())
        return int(state["step"]), float(state["seconds"])
    except (OSError, SafetensorError, ValueError, KeyError, TypeError, RuntimeError) as error:
        raise InputError(f"the checkpoint {path} cannot be read ({error}); start afresh with --no-resume "
                         "or remove it") from None


def _append_log(path: Path, record: dict) -> None:
    with path.open("a") as handle:
        handle.write(json.dumps(record) + "\n")


@torch.no_grad()
def validation_metrics(network: torch.nn.Module, cubes: tuple[torch.Tensor, torch.Tensor],
                       criterion: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                       precision: str, device: torch.device) -> dict[str, float]:
    """Loss and mean per-cube Pearson correlation of the prediction and of the input with the target."""
    network.eval()
    inputs, targets = cubes
    predictions = []
    for i in range(inputs.shape[0]):  # one at a time: 64³ cubes on a small machine
        with _autocast(device, precision):
            predictions.append(network(inputs[i:i + 1].to(device)).float().cpu())
    network.train()
    prediction = torch.cat(predictions)

    def mean_cc(a: torch.Tensor, b: torch.Tensor) -> float:
        a = a.flatten(1) - a.flatten(1).mean(1, keepdim=True)
        b = b.flatten(1) - b.flatten(1).mean(1, keepdim=True)
        cc = (a * b).sum(1) / ((a.norm(dim=1) * b.norm(dim=1)).clamp_min(1e-12))
        return float(cc.mean())

    return {"validation_loss": float(criterion(prediction, targets)),
            "validation_cc": mean_cc(prediction, targets), "input_cc": mean_cc(inputs[:, :1], targets)}


def export(network: torch.nn.Module, config: TrainConfig, json_path: Path, step: int, seconds: float,
           held_out: Sequence[Path]) -> Path:
    """Write the network as a bundled-style model (weights stored in bf16 to stay small)."""
    state = {k: v.detach().cpu().to(torch.bfloat16) if v.is_floating_point() else v.cpu()
             for k, v in network.state_dict().items()}
    description = config.description or (
        f"CPU-trained small model ({count_parameters(network):,} parameters, {step} steps); simulated "
        f"{config.target}-target training data; see docs/models/{config.name}.md")
    normalization = config.inputs if config.inputs in HALVES_NORMALIZATIONS else "noise"
    metadata = {"name": config.name, "description": description, "architecture": network.architecture(),
                "normalization": normalization, "cube_size": 64, "stride": EXPORT_STRIDE, "voxel_size": 1.0,
                "trained": True, "default": False,
                "training": {"steps": step, "seconds": round(seconds, 1), "seed": config.seed,
                             "target": config.target, "loss": config.loss, "cube": config.cube,
                             "held_out": [Path(p).name for p in held_out]}}
    return save_model(json_path, metadata, state)


def train(config: TrainConfig, resume: bool = True, pool_cache: Path | None = None) -> TrainResult:
    """Run (or continue) a training run in ``config.out``; returns where the model was written."""
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    train_paths, monitor_paths, held_out = training_split(config)
    (out / "split.json").write_text(json.dumps({
        "train": [p.name for p in train_paths], "monitor": [p.name for p in monitor_paths],
        "held_out": [p.name for p in held_out]}, indent=1))

    device = training_device(config.device)
    network = build_network(config).to(device)
    optimizer = torch.optim.AdamW(network.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, config.warmup_steps, config.steps, config.min_lr_ratio))
    step, seconds = 0, 0.0
    checkpoint = out / CHECKPOINT
    if resume and checkpoint.is_file():
        step, seconds = load_checkpoint(checkpoint, network, optimizer, scheduler, device)
        log.info("resuming from step %d (%s)", step, checkpoint)

    logfile = out / LOG
    if step == 0:
        logfile.unlink(missing_ok=True)  # a fresh run gets a fresh log
    started = time.monotonic()
    cache = pool_cache if pool_cache is not None else out / "pool"
    settings = config.settings()
    pool = build_pool(train_paths, range(config.realisations), config.target, settings, config.cube,
                      config.pool_workers, cache, config.inputs)
    monitor = (fixed_cubes(build_pool(monitor_paths, [1000], config.target, settings, config.validation_cube,
                                      config.pool_workers, cache, config.inputs),
                           config.validation_cube, config.validation_cubes, config.on_molecule, config.seed)
               if monitor_paths and config.validation_cubes else None)
    log.info("pool of %d simulated maps ready in %.0f s", len(pool), time.monotonic() - started)
    if config.inputs in HALVES_NORMALIZATIONS and not config.noise_channel:  # the same cached maps, channel 0
        pool = [dataclasses.replace(entry, input=entry.input[:1]) for entry in pool]
        monitor = None if monitor is None else (monitor[0][:, :1], monitor[1])

    stream = CubeStream(pool, config.cube, config.on_molecule, config.seed, start_step=step)
    loader = torch.utils.data.DataLoader(stream, batch_size=config.batch_size, num_workers=config.workers,
                                         persistent_workers=False)
    criterion = loss_function(config.loss, config.gradient_weight)
    network.train()
    loss_value = float("nan")
    tick = time.monotonic()
    for inputs, targets in loader:
        if step >= config.steps:
            break
        inputs, targets = inputs.to(device, non_blocking=True), targets.to(device, non_blocking=True)
        with _autocast(device, config.precision):
            prediction = network(inputs)
        loss = criterion(prediction.float(), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(network.parameters(), config.grad_clip)
        optimizer.step()
        scheduler.step()
        step += 1
        loss_value = float(loss.detach())
        now = time.monotonic()
        seconds, tick = seconds + (now - tick), now
        if step % config.log_every == 0 or step == config.steps:
            _append_log(logfile, {"step": step, "loss": loss_value, "lr": scheduler.get_last_lr()[0],
                                  "seconds": round(seconds, 2)})
            log.info("step %d loss %.5f lr %.2e", step, loss_value, scheduler.get_last_lr()[0])
        if monitor is not None and (step % config.validate_every == 0 or step == config.steps):
            metrics = validation_metrics(network, monitor, criterion, config.precision, device)
            _append_log(logfile, {"step": step, **metrics})
            log.info("step %d %s", step, " ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
            tick = time.monotonic()  # validation time is not training time
        if step % config.checkpoint_every == 0 or step == config.steps:
            save_checkpoint(checkpoint, step, network, optimizer, scheduler, config, seconds)
    model_json = export(network, config, out / f"{config.name}.json", step, seconds, held_out)
    return TrainResult(step=step, seconds=seconds, model_json=model_json, last_loss=loss_value)
