"""Cube inference: batching, out-of-memory retries, several devices sharing the cubes."""
import numpy as np
import pytest
import torch

from deepemhancer import devices, predict, tiling
from deepemhancer.errors import DeepEMhancerError, InputError


class Scale(torch.nn.Module):
    """A network with a known answer: output = 2 * input + 1 (per cube)."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.tensor(2.0))

    def forward(self, x):
        return x * self.weight + 1


class OutOfMemoryAbove(Scale):
    """Raises the CUDA-style out-of-memory error for batches larger than ``limit``."""

    def __init__(self, limit):
        super().__init__()
        self.limit = limit
        self.sizes = []

    def forward(self, x):
        self.sizes.append(x.shape[0])
        if x.shape[0] > self.limit:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return super().forward(x)


def run(network, volume, device_list, batch_size, cube=8, stride=4):
    predictor = predict.network_predictor(network, device_list, cube=cube, batch_size=batch_size)
    return tiling.sliding_window(volume, predictor, tiling.Tiling(cube, stride, blending="count"))


@pytest.fixture
def volume():
    return np.random.default_rng(0).normal(size=(16, 20, 12)).astype(np.float32)


def test_every_cube_predicted_once_and_blended(volume):
    result = run(Scale(), volume, [torch.device("cpu")], batch_size=3)
    np.testing.assert_allclose(result, 2 * volume + 1, rtol=1e-6, atol=1e-6)


def test_out_of_memory_halves_the_batch_and_finishes(volume):
    network = OutOfMemoryAbove(limit=2)
    result = run(network, volume, [torch.device("cpu")], batch_size=8)
    np.testing.assert_allclose(result, 2 * volume + 1, rtol=1e-6, atol=1e-6)
    # after the one-cube probe (batches on a CPU are bounded by the layers' sizes): 8, then halved
    assert network.sizes[:2] == [1, 8] and max(network.sizes[network.sizes.index(2):]) == 2


def test_out_of_memory_with_one_cube_is_a_clear_error(volume):
    with pytest.raises(DeepEMhancerError, match="single cube"):
        run(OutOfMemoryAbove(limit=0), volume, [torch.device("cpu")], batch_size=4)


def test_other_errors_propagate(volume):
    class Broken(Scale):
        def forward(self, x):
            raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        run(Broken(), volume, [torch.device("cpu")], batch_size=2)


def test_two_devices_share_cubes_with_uneven_counts(volume):
    # 3 x 5 x 2 = 30 cubes over two workers with batch 4: counts do not divide evenly
    result = run(Scale(), volume, [torch.device("cpu"), torch.device("cpu")], batch_size=4)
    np.testing.assert_allclose(result, 2 * volume + 1, rtol=1e-6, atol=1e-6)


def test_automatic_batch_size_is_positive_and_bounded():
    size = predict.batch_size_for(Scale(), 8, torch.device("cpu"), "fp32")
    assert 1 <= size <= predict.MAX_BATCH["cpu"]


def test_cpu_batches_keep_every_layer_output_below_the_reused_size(monkeypatch, volume):
    # one 8³ cube's largest layer output: 8³ float32 values = 2 KiB; with 9 KiB kept and twice the
    # output's room per cube, 2 cubes per pass
    monkeypatch.setattr(predict, "KEEP_FREED_BYTES", 9 * 1024)
    cpu = torch.device("cpu")
    assert predict.activation_size_per_cube(Scale(), 8, cpu, "fp32").largest == 8 ** 3 * 4
    assert predict.batch_size_for(Scale(), 8, cpu, "fp32", requested=8) == 2
    assert predict.batch_size_for(Scale(), 8, cpu, "fp32", requested=1) == 1
    seen: list[int] = []

    class Counting(Scale):
        def forward(self, x):
            seen.append(x.shape[0])
            return super().forward(x)

    result = run(Counting(), volume, [cpu], batch_size=8)
    assert max(seen[1:]) == 2  # after the one-cube probe, passes of at most 2 cubes
    np.testing.assert_allclose(result, 2 * volume + 1, rtol=1e-6, atol=1e-6)


def test_bf16_autocast_runs_and_is_close(volume):
    class Conv(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv3d(1, 1, 3, padding=1)

        def forward(self, x):
            return self.conv(x)

    torch.manual_seed(0)
    network = Conv()
    cpu = [torch.device("cpu")]
    a, b = (tiling.sliding_window(volume, predict.network_predictor(network, cpu, cube=8, batch_size=4,
                                                                    precision=precision),
                                  tiling.Tiling(8, 4, blending="count")) for precision in ("fp32", "bf16"))
    assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.999


@pytest.mark.parametrize("text", ["-1", "cpu"])
def test_cpu_device_selection(text):
    assert devices.resolve_devices(text) == [torch.device("cpu")]


def test_gpu_request_without_cuda_falls_back(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    assert devices.resolve_devices("0")[0].type in ("cpu", "mps")


def test_missing_gpu_id_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(InputError, match="do not exist"):
        devices.resolve_devices("0,3")
    assert devices.resolve_devices("all") == [torch.device("cuda", 0), torch.device("cuda", 1)]
    assert devices.resolve_devices("1,1") == [torch.device("cuda", 1)]


@pytest.mark.parametrize("text", ["zero", "0,-1", ""])
def test_bad_gpu_ids(text):
    with pytest.raises(InputError):
        devices.resolve_devices(text)


def test_precision_names():
    assert devices.autocast_dtype("fp32") is None
    assert devices.autocast_dtype("bf16") is torch.bfloat16
    with pytest.raises(InputError, match="unknown"):
        devices.autocast_dtype("int8")


def test_one_progress_report_covers_every_run_of_a_job(caplog, monkeypatch):
    now = [0.0]
    monkeypatch.setattr(predict.time, "monotonic", lambda: now[0])
    report = predict.Progress(runs=3, label="confidence")  # not a terminal here: plain lines
    report.start_run(10)
    assert report.total == 30  # the runs still to come counted as this one
    with caplog.at_level("INFO", logger="deepemhancer"):
        now[0] = 40.0
        report.update(10)  # a line: at most one every 30 s
        report.start_run(12)
        assert report.total == 10 + 12 + 12
        now[0] = 50.0
        report.update(1)  # 10 s after the last line: none
        now[0] = 80.0
        report.update(11)
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == "confidence: 33% (10/30 cubes), 0:40 elapsed, about 1:20 left"
    assert lines[1] == "confidence: 65% (22/34 cubes), 1:20 elapsed, about 0:44 left"
    assert len(lines) == 2


def test_the_cubes_of_a_run_reach_its_progress_report(volume):
    report = predict.Progress(enabled=False)
    predictor = predict.network_predictor(Scale(), [torch.device("cpu")], cube=8, batch_size=3, progress=report)
    tiling.sliding_window(volume, predictor, tiling.Tiling(8, 4))
    assert report.done == report.total == len(tiling.cube_origins(volume.shape, 8, 4))  # no padding needed
