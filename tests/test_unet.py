"""Our own U-Net: shapes, rebuild from its architecture dict, parameter count, store round trip."""
from __future__ import annotations

import pytest
import torch

from deepemhancer.errors import InputError, ModelError
from deepemhancer.models.store import load_network, save_model
from deepemhancer.nn import UNet, build_network, count_parameters


def expected_parameters(channels: list[int], k: int = 5) -> int:
    """Count from the design: two convs per level, up-conv + two convs per decoder level, 1-channel head."""
    conv = lambda cin, cout: cin * cout * k ** 3 + cout  # noqa: E731 - weights + bias
    norm_act = lambda c: 3 * c  # noqa: E731 - GroupNorm gamma, beta; PReLU alpha
    total = conv(1, channels[0]) + conv(channels[0], channels[0]) + 2 * norm_act(channels[0])
    for lo, hi in zip(channels, channels[1:]):
        total += conv(lo, hi) + conv(hi, hi) + 2 * norm_act(hi)  # encoder
        total += conv(hi, lo) + conv(2 * lo, lo) + conv(lo, lo) + 3 * norm_act(lo)  # decoder
    return total + conv(channels[0], 1)


@pytest.mark.parametrize("size", [(16, 16, 16), (32, 16, 48)])
def test_tiny_unet_keeps_shape(size):
    network = UNet(width=0.125, groups=2).eval()
    x = torch.randn(2, 1, *size)
    with torch.no_grad():
        out = network(x)
    assert out.shape == x.shape and torch.isfinite(out).all()


def test_unet_runs_on_a_64_cube():
    network = UNet(width=0.125, groups=2).eval()
    with torch.no_grad():
        assert network(torch.randn(1, 1, 64, 64, 64)).shape == (1, 1, 64, 64, 64)


@pytest.mark.parametrize("sampling", ["strided", "interpolated"])
def test_architecture_round_trip_gives_the_same_network(sampling):
    network = UNet(width=0.25, groups=4, channels=(8, 16, 32), kernel_size=3, sampling=sampling).eval()
    rebuilt = build_network(network.architecture()).eval()
    assert network.architecture() == {"type": "unet", "width": 0.25, "groups": 4, "channels": [8, 16, 32],
                                      "kernel_size": 3, "sampling": sampling}
    rebuilt.load_state_dict(network.state_dict(), strict=True)
    x = torch.randn(1, 1, 8, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x), network(x))


def test_parameter_count_at_width_one():
    assert count_parameters(UNet()) == expected_parameters([16, 32, 64, 128, 256]) == 29_962_849


def test_width_scales_channels_to_group_multiples():
    network = UNet(width=0.1, groups=4)
    assert count_parameters(network) == expected_parameters([4, 4, 8, 12, 24])


def test_sizes_not_multiple_of_16_refused():
    with pytest.raises(InputError, match="multiples of 16"):
        UNet(width=0.125, groups=2)(torch.randn(1, 1, 24, 16, 16))


def test_bad_architectures_refused():
    with pytest.raises(ModelError, match="depth"):
        build_network({"type": "unet", "depth": 3})
    with pytest.raises(ModelError, match="invalid U-Net"):
        build_network({"type": "unet", "kernel_size": 4})


def test_store_round_trip(tmp_path):
    network = UNet(width=0.125, groups=2).eval()
    metadata = {"name": "tiny", "description": "test", "architecture": network.architecture(),
                "normalization": "noise", "cube_size": 16, "stride": 4, "voxel_size": 1.0, "trained": False}
    path = save_model(tmp_path / "tiny.json", metadata, network.state_dict())
    loaded, meta = load_network(path)
    x = torch.randn(1, 1, 16, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), network(x))
    assert meta["architecture"]["type"] == "unet"


def test_a_json_without_sampling_is_the_strided_network():
    """Models saved before the setting existed keep loading as what they are."""
    architecture = {"type": "unet", "width": 0.25, "groups": 4, "channels": [8, 16], "kernel_size": 3}
    assert build_network(architecture).sampling == "strided"
    with pytest.raises(ModelError, match="sampling"):
        build_network({**architecture, "sampling": "nearest"})
