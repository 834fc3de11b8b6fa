"""Running the network over many cubes: batches sized from free memory, out-of-memory retries,
several devices sharing the work, a progress bar with a time estimate."""
from __future__ import annotations

import contextlib
import copy
import logging
import queue
import threading
from typing import Sequence

import numpy as np
import torch
from tqdm import tqdm

from .devices import autocast_dtype, available_memory_bytes, is_out_of_memory, release_cached_memory
from .errors import DeepEMhancerError
from .tiling import Blender

log = logging.getLogger("deepemhancer")

MAX_BATCH = {"cuda": 64, "mps": 16, "cpu": 8}
MEMORY_SHARE = 0.6  # of free memory one device's batch may take, leaving room for fragmentation


def _autocast(device: torch.device, precision: str):
    dtype = autocast_dtype(precision)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def activation_bytes_per_cube(network: torch.nn.Module, cube: int, device: torch.device, precision: str) -> int:
    """Memory one cube needs in a forward pass.

    On CUDA it is measured (peak allocation of a one-cube pass); elsewhere it is the sum of every
    layer's output size, an upper bound on what is alive at once.
    """
    probe = torch.zeros((1, getattr(network, "in_channels", 1), cube, cube, cube), device=device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        with torch.inference_mode(), _autocast(device, precision):
            network(probe)
        torch.cuda.synchronize(device)
        return max(int(torch.cuda.max_memory_allocated(device) - before), 1)
    total = 0

    def count(_module, _inputs, output):
        nonlocal total
        if isinstance(output, torch.Tensor):
            total += output.numel() * output.element_size()

    leaves = [m for m in network.modules() if not list(m.children())]
    handles = [m.register_forward_hook(count) for m in leaves]
    try:
        with torch.inference_mode(), _autocast(device, precision):
            network(probe)
    finally:
        for handle in handles:
            handle.remove()
    return max(total, 1)


def auto_batch_size(network: torch.nn.Module, cube: int, device: torch.device, precision: str) -> int:
    """The largest batch that fits in a share of the device's free memory (at least 1)."""
    per_cube = activation_bytes_per_cube(network, cube, device, precision)
    fits = int(MEMORY_SHARE * available_memory_bytes(device) // per_cube)
    batch = max(1, min(fits, MAX_BATCH.get(device.type, 8)))
    log.info("batch size %d on %s (about %.0f MiB per cube)", batch, device, per_cube / 2**20)
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


def _worker(network, device, precision, batch_size, volume, cube, work, blender, lock, bar, errors):
    """Take groups of origins from ``work`` until it is empty; halve the batch on out-of-memory."""
    pending: list[tuple[int, int, int]] = []
    while not errors:
        if not pending:
            try:
                pending = work.get_nowait()
            except queue.Empty:
                return
        batch, pending = pending[:batch_size], pending[batch_size:]
        cubes = np.stack([volume[..., i:i + cube, j:j + cube, k:k + cube] for i, j, k in batch]).astype(np.float32, copy=False)
        try:
            predictions = _run_batch(network, cubes, device, precision)
        except Exception as error:  # noqa: BLE001 - out-of-memory is recognised by content
            if not is_out_of_memory(error):
                errors.append(error)
                return
            release_cached_memory(device)
            if batch_size == 1:
                errors.append(DeepEMhancerError(
                    f"{device} ran out of memory with a single cube; free the device, use another GPU "
                    "with -g, or the CPU with -g -1"))
                return
            batch_size //= 2
            log.warning("%s ran out of memory; retrying with batch size %d", device, batch_size)
            pending = batch + pending
            continue
        with lock:
            for origin, prediction in zip(batch, predictions):
                blender.add(origin, prediction)
            bar.update(len(batch))


def predict_into(blender: Blender, volume: np.ndarray, origins: Sequence[tuple[int, int, int]],
                 network: torch.nn.Module, devices: Sequence[torch.device], *, cube: int,
                 batch_size: int | None = None, precision: str = "fp32", progress: bool = True) -> None:
    """Predict every cube at ``origins`` of ``volume`` ((Z, Y, X), or (C, Z, Y, X) for a network with
    C input channels) and add it to ``blender``.

    Each device gets its own copy of the network and pulls groups of cubes from a shared queue, so
    devices of unequal speed finish together and cube counts need not divide evenly.
    ``batch_size`` is per device; None sizes it from free memory.
    """
    replicas = [network.to(devices[0])] + [copy.deepcopy(network).to(d) for d in devices[1:]]
    for replica in replicas:
        replica.eval()
    sizes = [batch_size or auto_batch_size(r, cube, d, precision) for r, d in zip(replicas, devices)]
    work: queue.Queue = queue.Queue()
    group = max(sizes)
    for start in range(0, len(origins), group):
        work.put(list(origins[start:start + group]))
    lock = threading.Lock()
    errors: list[BaseException] = []
    with tqdm(total=len(origins), unit="cube", disable=not progress, dynamic_ncols=True,
              desc="enhancing") as bar:
        args = [(r, d, precision, s, volume, cube, work, blender, lock, bar, errors)
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
