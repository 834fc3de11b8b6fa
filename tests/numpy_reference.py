"""Independent numpy reference of the Keras/TensorFlow layers of the official networks.

Written from the definitions (TensorFlow 'same' padding, transposed convolution as the
scatter-add adjoint of the convolution, keras-contrib GroupNormalization's reshape without
transpose), on channels-last float64 arrays (N, D, H, W, C). Small sizes only: it loops over
kernel offsets. It must not import deepemhancer.
"""
from __future__ import annotations

import numpy as np


def tf_same_pads(n: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow 'same': output ceil(n / stride); the odd voxel of padding goes after."""
    out = -(-n // stride)
    total = max((out - 1) * stride + kernel - n, 0)
    return total // 2, total - total // 2


def conv3d_same(x: np.ndarray, kernel: np.ndarray, bias: np.ndarray | None, stride: int) -> np.ndarray:
    """Keras Conv3D, padding 'same': x (N, D, H, W, Cin), kernel (kd, kh, kw, Cin, Cout); cross-correlation."""
    k = kernel.shape[:3]
    pads = [tf_same_pads(n, kk, stride) for n, kk in zip(x.shape[1:4], k)]
    xp = np.pad(x, [(0, 0), *pads, (0, 0)])
    out_shape = [-(-n // stride) for n in x.shape[1:4]]
    out = np.zeros((x.shape[0], *out_shape, kernel.shape[4]))
    for a in range(k[0]):
        for b in range(k[1]):
            for c in range(k[2]):
                window = xp[:, a:a + stride * (out_shape[0] - 1) + 1:stride,
                            b:b + stride * (out_shape[1] - 1) + 1:stride,
                            c:c + stride * (out_shape[2] - 1) + 1:stride]
                out += np.einsum("ndhwi,io->ndhwo", window, kernel[a, b, c])
    return out if bias is None else out + bias


def conv3d_transpose_same(x: np.ndarray, kernel: np.ndarray, bias: np.ndarray | None, stride: int) -> np.ndarray:
    """Keras Conv3DTranspose, padding 'same': the adjoint of `conv3d_same` from size n*stride to n.

    x (N, D, H, W, Cin), kernel (kd, kh, kw, Cout, Cin). Each input voxel i scatters kernel
    offset a to output position i*stride + a - pad_before, where pad_before is the 'same'
    padding of the forward convolution on the n*stride grid.
    """
    k = kernel.shape[:3]
    n = x.shape[1:4]
    full = [(m - 1) * stride + kk for m, kk in zip(n, k)]
    acc = np.zeros((x.shape[0], *full, kernel.shape[3]))
    for a in range(k[0]):
        for b in range(k[1]):
            for c in range(k[2]):
                acc[:, a:a + stride * (n[0] - 1) + 1:stride,
                    b:b + stride * (n[1] - 1) + 1:stride,
                    c:c + stride * (n[2] - 1) + 1:stride] += np.einsum("ndhwi,oi->ndhwo", x, kernel[a, b, c])
    out_n = [m * stride for m in n]
    before = [tf_same_pads(m, kk, stride)[0] for m, kk in zip(out_n, k)]
    # Positions past the full transposed output (kernel smaller than stride) receive nothing.
    size = [max(f, bb + m) for f, bb, m in zip(full, before, out_n)]
    padded = np.zeros((x.shape[0], *size, kernel.shape[3]))
    padded[:, :full[0], :full[1], :full[2]] = acc
    out = padded[:, before[0]:before[0] + out_n[0], before[1]:before[1] + out_n[1], before[2]:before[2] + out_n[2]]
    return out if bias is None else out + bias


def group_norm_keras(x: np.ndarray, groups: int, epsilon: float,
                     gamma: np.ndarray | None, beta: np.ndarray | None) -> np.ndarray:
    """keras-contrib GroupNormalization on (N, D, H, W, C), literally as defined.

    Reshape to (N, G, D, H, W, C/G) with no transpose, mean and biased variance over all axes
    but the first two, gamma/beta reshaped to (1, G, 1, 1, 1, C/G), reshape back.
    """
    n, d, h, w, c = x.shape
    grouped = x.reshape(n, groups, d, h, w, c // groups)
    mean = grouped.mean(axis=(2, 3, 4, 5), keepdims=True)
    var = grouped.var(axis=(2, 3, 4, 5), keepdims=True)
    out = (grouped - mean) / np.sqrt(var + epsilon)
    if gamma is not None:
        out = out * gamma.reshape(1, groups, 1, 1, 1, c // groups)
    if beta is not None:
        out = out + beta.reshape(1, groups, 1, 1, 1, c // groups)
    return out.reshape(x.shape)


def group_norm_standard(x: np.ndarray, groups: int, epsilon: float) -> np.ndarray:
    """Textbook group normalisation (groups of consecutive channels over all voxels), no affine."""
    n, d, h, w, c = x.shape
    grouped = x.reshape(n, d, h, w, groups, c // groups)
    mean = grouped.mean(axis=(1, 2, 3, 5), keepdims=True)
    var = grouped.var(axis=(1, 2, 3, 5), keepdims=True)
    return ((grouped - mean) / np.sqrt(var + epsilon)).reshape(x.shape)


def prelu(x: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Keras PReLU: x where positive, alpha * x where negative (alpha broadcast channels-last)."""
    return np.where(x > 0, x, alpha * x)


def _activation(x: np.ndarray, name: str) -> np.ndarray:
    if name == "linear":
        return x
    if name == "relu":
        return np.maximum(x, 0.0)
    raise ValueError(f"reference has no activation {name}")


def _layer_forward(layer: dict, inputs: list[np.ndarray], weights: list[np.ndarray]) -> np.ndarray:
    kind, config = layer["class_name"], layer["config"]
    w = [np.asarray(v, dtype=np.float64) for v in weights]
    if kind in ("Conv3D", "Conv3DTranspose"):
        strides = set(config["strides"])
        assert len(strides) == 1 and config["padding"] == "same"
        bias = w[1] if config["use_bias"] else None
        op = conv3d_same if kind == "Conv3D" else conv3d_transpose_same
        return _activation(op(inputs[0], w[0], bias, strides.pop()), config.get("activation", "linear"))
    if kind == "GroupNormalization":
        gamma = w.pop(0) if config["scale"] else None
        beta = w.pop(0) if config["center"] else None
        return group_norm_keras(inputs[0], config["groups"], config["epsilon"], gamma, beta)
    if kind == "PReLU":
        return prelu(inputs[0], w[0])
    if kind == "Concatenate":
        return np.concatenate(inputs, axis=config["axis"])
    raise ValueError(f"reference has no layer {kind}")


def keras_forward_numpy(model_config: dict, weights: dict[str, list[np.ndarray]], x_ndhwc: np.ndarray) -> np.ndarray:
    """Run a Keras 2.2 functional `model_config` on channels-last input; float64 output."""
    config = model_config["config"]
    outputs: dict[str, np.ndarray] = {}
    for layer in config["layers"]:
        name = layer["name"]
        if layer["class_name"] == "InputLayer":
            outputs[name] = np.asarray(x_ndhwc, dtype=np.float64)
            continue
        inputs = [outputs[source[0]] for source in layer["inbound_nodes"][0]]
        outputs[name] = _layer_forward(layer, inputs, weights.get(name, []))
    return outputs[config["output_layers"][0][0]]
