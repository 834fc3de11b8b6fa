"""Running the network over many cubes: batches sized from free memory, out-of-memory retries,
several devices sharing the work, one progress report with a time estimate over a whole job."""
from __future__ import annotations

import contextlib
import copy
import logging
import queue
import sys
import threading
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
from tqdm import tqdm

from .devices import (KEEP_FREED_BYTES, autocast_dtype, available_memory_bytes, is_out_of_memory,
                      release_cached_memory)
from .errors import DeepEMhancerError
from .tiling import CubePredictor, Origin, cut_cubes

log = logging.getLogger("deepemhancer")

MAX_BATCH = {"cuda": 64, "mps": 16, "cpu": 8}
MEMORY_SHARE = 0.6  # of free memory one device's batch may take, leaving room for fragmentation
# Room beside the largest layer output, measured with the official-size network on 64³ cubes (128 MiB
# per cube): 3 cubes per pass still faulted 97,000 pages in, 2 cubes 29,000 (1 cube: 17,000)
ALLOCATION_SLACK = 2.0
LOG_EVERY_S = 30.0  # without a terminal (a log file, Scipion's run log): one progress line at most this often


class Progress:
    """One progress report with a time estimate over a job of ``runs`` enhancements (the confidence
    map runs several): a bar on a terminal, else a plain line at most every 30 s and at the end.

    Each run announces its cube count with ``start_run``; runs not yet started are counted as
    holding as many cubes as the last one, so the estimate covers the whole job from the start.
    """

    def __init__(self, runs: int = 1, enabled: bool = True, label: str = "enhancing"):
        self.runs, self.enabled, self.label = runs, enabled, label
        self.started_runs, self.done, self.cubes_started = 0, 0, 0
        self.total = 0
        self.bar: tqdm | None = None
        self.began = self.last_line = time.monotonic()

    def start_run(self, cubes: int) -> None:
        self.started_runs += 1
        self.cubes_started += cubes
        self.total = self.cubes_started + cubes * max(self.runs - self.started_runs, 0)
        if not self.enabled:
            return
        if sys.stderr.isatty():
            if self.bar is None:
                self.bar = tqdm(total=self.total, unit="cube", dynamic_ncols=True, desc=self.label)
            else:
                self.bar.total = self.total
                self.bar.refresh()

    def update(self, cubes: int) -> None:
        self.done += cubes
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.update(cubes)
        elif time.monotonic() - self.last_line >= LOG_EVERY_S or self.done == self.total:
            self.last_line = time.monotonic()
            log.info("%s", self.line())

    def line(self) -> str:
        """'enhancing: 40% (123/308 cubes), 1:23 elapsed, about 2:05 left'."""
        elapsed = time.monotonic() - self.began
        left = elapsed / self.done * (self.total - self.done) if self.done else float("nan")
        percent = 100.0 * self.done / self.total if self.total else 100.0
        remaining = f", about {_clock(left)} left" if self.done < self.total and self.done else ""
        return f"{self.label}: {percent:.0f}% ({self.done}/{self.total} cubes), {_clock(elapsed)} elapsed{remaining}"

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _clock(seconds: float) -> str:
    if not np.isfinite(seconds):
        return "?"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _autocast(device: torch.device, precision: str):
    dtype = autocast_dtype(precision)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


@dataclass(frozen=True)
class ActivationSize:
    """Memory of one cube's forward pass: ``total`` (the measured peak on CUDA; elsewhere the sum of
    every layer's output, an upper bound on what is alive at once) and ``largest`` (the largest
    single layer output; the total where it is measured)."""

    total: int
    largest: int


def activation_size_per_cube(network: torch.nn.Module, cube: int, device: torch.device,
                             precision: str) -> ActivationSize:
    """What one cube needs in a forward pass (one probe pass of a zero cube)."""
    probe = torch.zeros((1, getattr(network, "in_channels", 1), cube, cube, cube), device=device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        with torch.inference_mode(), _autocast(device, precision):
            network(probe)
        torch.cuda.synchronize(device)
        peak = max(int(torch.cuda.max_memory_allocated(device) - before), 1)
        return ActivationSize(peak, peak)
    outputs: list[int] = []

    def count(_module, _inputs, output):
        if isinstance(output, torch.Tensor):
            outputs.append(output.numel() * output.element_size())

    leaves = [m for m in network.modules() if not list(m.children())]
    handles = [m.register_forward_hook(count) for m in leaves]
    try:
        with torch.inference_mode(), _autocast(device, precision):
            network(probe)
    finally:
        for handle in handles:
            handle.remove()
    return ActivationSize(max(sum(outputs), 1), max(outputs, default=1))


def batch_size_for(network: torch.nn.Module, cube: int, device: torch.device, precision: str,
                   requested: int | None = None) -> int:
    """Cubes per forward pass on ``device``: ``requested``, or None for the largest batch that fits in
    a share of the device's free memory (at least 1, at most ``MAX_BATCH``).

    On a CPU, never more cubes than keep each layer's output below ``devices.KEEP_FREED_BYTES``:
    glibc hands larger blocks back to the system when they are freed, and faulting them in again
    for every batch cost the official-size network a third of its CPU time at batch 8
    (docs/performance.md). A cube's result does not depend on the batch it ran in.
    """
    if requested is not None and device.type != "cpu":
        return requested
    size = activation_size_per_cube(network, cube, device, precision)
    if requested is not None:
        batch = requested
    else:
        fits = int(MEMORY_SHARE * available_memory_bytes(device) // size.total)
        batch = max(1, min(fits, MAX_BATCH.get(device.type, 8)))
    if device.type == "cpu":
        reusable = max(1, int(KEEP_FREED_BYTES // (ALLOCATION_SLACK * size.largest)))
        if reusable < batch:
            log.info("batch size %d on the CPU instead of %d: larger batches' layer outputs (%.0f MiB per cube) "
                     "would be handed back to the system and faulted in again for every batch",
                     reusable, batch, size.largest / 2**20)
            batch = reusable
    log.info("batch size %d on %s (about %.0f MiB per cube)", batch, device, size.total / 2**20)
    return batch


def _run_batch(network: torch.nn.Module, cubes: np.ndarray, device: torch.device, precision: str) -> np.ndarray:
    batch = torch.from_numpy(cubes)
    if batch.ndim == 4:  # single-channel cubes
        batch = batch.unsqueeze(1)
    if device.type == "cuda":
        batch = batch.pin_memory().to(device, non_blocking=True)
    else:
        batch = batch.to(device)
    with torch.inference_mode(), _autocast(device, precision):
        prediction = network(batch)
    return prediction.float().squeeze(1).cpu().numpy()


def _single_cube_error(device: torch.device) -> DeepEMhancerError:
    return DeepEMhancerError(f"{device} ran out of memory with a single cube; free memory on it, or run on "
                             "another GPU or on the CPU")


def _worker(network, device, precision, batch_size, volume, cube, work, add, lock, progress, errors):
    """Take groups of origins from ``work`` until it is empty; halve the batch on out-of-memory."""
    pending: list[tuple[int, int, int]] = []
    while not errors:
        if not pending:
            try:
                pending = work.get_nowait()
            except queue.Empty:
                return
        batch, pending = pending[:batch_size], pending[batch_size:]
        cubes = cut_cubes(volume, batch, cube)
        try:
            predictions = _run_batch(network, cubes, device, precision)
        except Exception as error:  # noqa: BLE001 - out-of-memory is recognised by content
            if not is_out_of_memory(error):
                errors.append(error)
                return
            release_cached_memory(device)
            if batch_size == 1:
                errors.append(_single_cube_error(device))
                return
            batch_size //= 2
            log.warning("%s ran out of memory; retrying with batch size %d", device, batch_size)
            pending = batch + pending
            continue
        with lock:
            for origin, prediction in zip(batch, predictions):
                add(origin, prediction)
            progress.update(len(batch))


def network_predictor(network: torch.nn.Module, devices: Sequence[torch.device], *, cube: int,
                      batch_size: int | None = None, precision: str = "fp32",
                      progress: Progress | None = None) -> CubePredictor:
    """A ``tiling.CubePredictor`` that runs ``network`` (C input channels) on ``devices``.

    Each device runs its own copy of the network (the caller's stays where it is) and pulls groups
    of cubes from a shared queue, so devices of unequal speed finish together and cube counts need
    not divide evenly. ``batch_size`` is per device; None sizes it from free memory. ``progress``
    hears of every cube (None: no report).
    """
    def predict_cubes(volume: np.ndarray, origins: Sequence[Origin], add: Callable[[Origin, np.ndarray], None]) -> None:
        report = progress if progress is not None else Progress(enabled=False)
        report.start_run(len(origins))
        training = network.training
        replicas = [network if d == _device_of(network) else copy.deepcopy(network).to(d) for d in devices]
        for replica in replicas:
            replica.eval()
        try:
            _run_all(replicas, devices, volume, origins, add, report)
        finally:
            network.train(training)

    def _run_all(replicas, devices, volume, origins, add, report) -> None:
        try:
            sizes = [batch_size_for(r, cube, d, precision, batch_size) for r, d in zip(replicas, devices)]
        except Exception as error:  # noqa: BLE001 - out-of-memory is recognised by content
            if is_out_of_memory(error):
                raise _single_cube_error(devices[0]) from error
            raise
        work: queue.Queue = queue.Queue()
        group = max(sizes)
        for start in range(0, len(origins), group):
            work.put(list(origins[start:start + group]))
        lock = threading.Lock()
        errors: list[BaseException] = []
        args = [(r, d, precision, s, volume, cube, work, add, lock, report, errors)
                for r, d, s in zip(replicas, devices, sizes)]
        if len(devices) == 1:
            _worker(*args[0])
        else:
            threads = [threading.Thread(target=_worker, args=a, daemon=True) for a in args]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        if errors:
            raise errors[0]

    return predict_cubes


def _device_of(network: torch.nn.Module) -> torch.device:
    parameter = next(network.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")
