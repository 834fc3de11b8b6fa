"""Side by side with the original DeepEMhancer (TensorFlow/Keras, 2021): same weights, same maps,
runs alternated, wall and CPU time, medians and their ratio, peak memory.

The original is not part of this project and is never imported here: it runs as a subprocess from
its own virtual environment, installed outside the repository from its public source, e.g.

    git clone https://github.com/rsanchezgarc/deepEMhancer /work/original-src   # measured at 961f028
    /root/.pyenv/versions/3.11.7/bin/python -m venv /work/original-venv
    /work/original-venv/bin/pip install "tensorflow-cpu==2.15.*" numpy==1.23.5 scipy==1.9.3 \\
        scikit-image==0.20.0 "mrcfile==1.4.*" "joblib==1.2.*" tqdm==4.66.3 "requests==2.32.*" h5py setuptools
    DEEPEMHANCER_CPU_ONLY=1 /work/original-venv/bin/pip install --no-deps --no-build-isolation -e /work/original-src

(its setup.py pins tensorflow 2.10 and scikit-image 0.19, which have no wheels for Python 3.11;
TF 2.15 and scikit-image 0.20 are the nearest that do). ``--original-venv`` or
``DEEPEMHANCER_ORIGINAL_VENV`` names the environment; without a working one every case is
skipped and the reason written to the results.

Weights: the official files cannot be downloaded here, so both programs load one stand-in file
written by this script in the official layout (Keras 2.2 HDF5 with ``model_config``,
``model_weights``, ``code/normFun``, ``code/custom_objects``, ``configParams``): a U-Net of the
official layer kinds (Conv3D, Conv3DTranspose, keras-contrib GroupNormalization, PReLU shared over
space, Concatenate), kernel 5, our Supplementary-Table-1 channel plan 16-256 and the official
layers 23/24's detour up to 128³ and back, with seeded random weights (speed does not depend on
their values). Its embedded code is for the original only: ``normFun`` binds the original's own
``inputNormalization_3`` and ``custom_objects`` holds a GroupNormalization with keras-contrib's
arithmetic (reshape to groups without a transpose) for tf.keras; our import reads the file with
h5py and never runs that code.

Per case and mode the runs alternate (ours, original, ours, original, ...), each a fresh process
whose wall time, user and system CPU time and peak resident memory come from ``os.wait4``.
Threads are pinned to the same count for both: ours ``--threads N`` and ``OMP_NUM_THREADS``;
the original through a launcher that sets TensorFlow's intra-op threads to N (and inter-op to 1)
before calling its command line, plus ``OMP_NUM_THREADS``. Modes:

- ``legacy``: ours ``--legacy -b B`` against the original ``-b B`` (B = 8, the original's default);
- ``default``: each program's own defaults (ours picks its batch size, stride and blending).

Both run on the CPU (``-g -1``), with the automatic noise estimate unless the case gives noise
statistics (EMD-3488 is masked, its solvent exactly zero: the estimate has nothing to measure).

    .venv/bin/python benchmarks/original_side_by_side.py --cases emd3488 emd11007@96 --repeats 3
    .venv/bin/python benchmarks/original_side_by_side.py --cases emd11007 --modes default \\
        --programs original --repeats 1 --tag emd11007_original      # one long run, e.g. under nice

Writes benchmarks/original_results/<tag>.json and .md (rewritten after every run).
"""
from __future__ import annotations

import argparse
import datetime
import gzip
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("DEEPEMHANCER_SHARED_DATA", REPO.parent / "shared" / "data"))
RESULTS = REPO / "benchmarks" / "original_results"
ORIGINAL_VENV = Path(os.environ.get("DEEPEMHANCER_ORIGINAL_VENV", "/work/original-venv"))
ORIGINAL_SRC = Path(os.environ.get("DEEPEMHANCER_ORIGINAL_SRC", "/work/original-src"))
MAPS = {
    "emd3488": SHARED / "maps" / "emd3488" / "emd_3488.mrc",
    "emd11007": SHARED / "maps" / "emd11007" / "emd_11007.map.gz",
}
# EMD-3488 is deposited masked: 71 % of its voxels are exactly zero, so no noise can be estimated
# from its solvent. Both programs get these statistics (the map's non-zero voxels' mean and std),
# the same numbers to each, computed once by `noise_stats_nonzero`.
NEEDS_NOISE_STATS = {"emd3488"}
PROGRAMS = ("ours", "original")
MODES = ("legacy", "default")
ORIGINAL_BATCH = 8  # the original's default batch size (config.BATCH_SIZE)
CUBE = 64
STRIDE = 16
STANDIN_CHANNELS = (16, 32, 64, 128, 256)
STANDIN_GROUPS = 8
STANDIN_SEED = 2021

# ------------------------------------------------------------------------------------------------
# The stand-in weight file, in the official layout

NORM_FUN_CODE = (
    "# Stand-in for the official code/normFun: the original's own function, by import.\n"
    "from deepEMhancer.utils.normalization import inputNormalization_3\n"
    "normFun = inputNormalization_3\n"
)

# keras-contrib's GroupNormalization arithmetic for tf.keras (the original executes this text when it
# loads the file; our import only reads it). Groups are contiguous chunks of the channels-last
# memory: (N, D, H, W, C) reshaped to (N, G, D, H, W, C/G) with no transpose.
CUSTOM_OBJECTS_CODE = '''
import tensorflow as tf
from tensorflow.keras import backend as K
from tensorflow.keras.layers import Layer, InputSpec


class GroupNormalization(Layer):
    def __init__(self, groups=32, axis=-1, epsilon=1e-5, center=True, scale=True,
                 beta_initializer="zeros", gamma_initializer="ones", beta_regularizer=None,
                 gamma_regularizer=None, beta_constraint=None, gamma_constraint=None, **kwargs):
        super(GroupNormalization, self).__init__(**kwargs)
        self.supports_masking = True
        self.groups, self.axis, self.epsilon = groups, axis, epsilon
        self.center, self.scale = center, scale
        self.beta_initializer = tf.keras.initializers.get(beta_initializer)
        self.gamma_initializer = tf.keras.initializers.get(gamma_initializer)

    def build(self, input_shape):
        dim = input_shape[self.axis]
        if dim < self.groups or dim % self.groups != 0:
            raise ValueError("channels %s not a multiple of groups %s" % (dim, self.groups))
        self.input_spec = InputSpec(ndim=len(input_shape), axes={self.axis: dim})
        shape = (dim,)
        self.gamma = self.beta = None
        if self.scale:
            self.gamma = self.add_weight(shape=shape, name="gamma", initializer=self.gamma_initializer)
        if self.center:
            self.beta = self.add_weight(shape=shape, name="beta", initializer=self.beta_initializer)
        self.built = True

    def call(self, inputs, **kwargs):
        input_shape = K.int_shape(inputs)
        tensor_input_shape = K.shape(inputs)
        broadcast_shape = [1] * len(input_shape)
        broadcast_shape[self.axis] = input_shape[self.axis] // self.groups
        broadcast_shape.insert(1, self.groups)
        group_axes = [tensor_input_shape[i] for i in range(len(input_shape))]
        group_axes[self.axis] = input_shape[self.axis] // self.groups
        group_axes.insert(1, self.groups)
        group_shape = K.stack(group_axes)
        inputs = K.reshape(inputs, group_shape)
        reduction_axes = list(range(2, len(group_axes)))
        mean = K.mean(inputs, axis=reduction_axes, keepdims=True)
        variance = K.var(inputs, axis=reduction_axes, keepdims=True)
        outputs = (inputs - mean) / (K.sqrt(variance + self.epsilon))
        if self.scale:
            outputs = outputs * K.reshape(self.gamma, broadcast_shape)
        if self.center:
            outputs = outputs + K.reshape(self.beta, broadcast_shape)
        return K.reshape(outputs, tensor_input_shape)

    def get_config(self):
        config = {"groups": self.groups, "axis": self.axis, "epsilon": self.epsilon,
                  "center": self.center, "scale": self.scale}
        config.update(super(GroupNormalization, self).get_config())
        return config

    def compute_output_shape(self, input_shape):
        return input_shape


custom_objects = {"GroupNormalization": GroupNormalization}
'''


def _initializer(name: str) -> dict[str, Any]:
    return {"class_name": name, "config": {}}


class _GraphBuilder:
    """Keras 2.2 layer dicts named as standalone Keras 2.2 names them (conv3d_1, p_re_lu_3, ...)."""

    def __init__(self, cube: int) -> None:
        self.layers: list[dict] = [{
            "name": "input_1", "class_name": "InputLayer",
            "config": {"batch_input_shape": [None, cube, cube, cube, 1], "dtype": "float32",
                       "sparse": False, "name": "input_1"}, "inbound_nodes": []}]
        self.counts: dict[str, int] = {}

    def _add(self, prefix: str, class_name: str, config: dict, *sources: str) -> str:
        self.counts[prefix] = self.counts.get(prefix, 0) + 1
        name = f"{prefix}_{self.counts[prefix]}"
        self.layers.append({"name": name, "class_name": class_name,
                            "config": {"name": name, "trainable": True, **config},
                            "inbound_nodes": [[[s, 0, 0, {}] for s in sources]]})
        return name

    def conv(self, source: str, filters: int, stride: int, transpose: bool = False, use_bias: bool = True) -> str:
        config = {"filters": filters, "kernel_size": [5, 5, 5], "strides": [stride] * 3, "padding": "same",
                  "data_format": "channels_last", "dilation_rate": [1, 1, 1], "activation": "linear",
                  "use_bias": use_bias, "kernel_initializer": _initializer("VarianceScaling"),
                  "bias_initializer": _initializer("Zeros"), "kernel_regularizer": None, "bias_regularizer": None,
                  "activity_regularizer": None, "kernel_constraint": None, "bias_constraint": None}
        if transpose:
            config["output_padding"] = None
            return self._add("conv3d_transpose", "Conv3DTranspose", config, source)
        return self._add("conv3d", "Conv3D", config, source)

    def group_norm(self, source: str, groups: int, scale: bool = True) -> str:
        config = {"groups": groups, "axis": -1, "epsilon": 1e-5, "center": True, "scale": scale,
                  "beta_initializer": _initializer("Zeros"), "gamma_initializer": _initializer("Ones"),
                  "beta_regularizer": None, "gamma_regularizer": None, "beta_constraint": None,
                  "gamma_constraint": None}
        return self._add("group_normalization", "GroupNormalization", config, source)

    def prelu(self, source: str) -> str:
        config = {"alpha_initializer": _initializer("Zeros"), "alpha_regularizer": None,
                  "alpha_constraint": None, "shared_axes": [1, 2, 3]}
        return self._add("p_re_lu", "PReLU", config, source)

    def concat(self, *sources: str) -> str:
        return self._add("concatenate", "Concatenate", {"axis": -1}, *sources)

    def block(self, source: str, filters: int, stride: int, groups: int, transpose: bool = False) -> str:
        return self.prelu(self.group_norm(self.conv(source, filters, stride, transpose), groups))


def standin_model_config(channels: Sequence[int] = STANDIN_CHANNELS, groups: int = STANDIN_GROUPS,
                         cube: int = CUBE) -> dict:
    """The stand-in graph as a Keras 2.2 `model_config` (class Model).

    Encoder: two 5³ convolutions at each level, down-sampling by a stride-2 convolution; decoder: a
    stride-2 transposed convolution, concatenation (decoder first, skip second), two convolutions;
    GroupNormalization + PReLU after every hidden convolution; then the official layers 23/24's
    detour (a transposed convolution up to twice the cube size with the first level's channels,
    PReLU, a stride-2 convolution back) and a linear one-channel 5³ convolution.
    """
    g = _GraphBuilder(cube)
    x = g.block(g.block("input_1", channels[0], 1, groups), channels[0], 1, groups)
    skips = [x]
    for c in channels[1:]:
        x = g.block(g.block(x, c, 2, groups), c, 1, groups)
        skips.append(x)
    x = skips.pop()
    for c in reversed(channels[:-1]):
        up = g.block(x, c, 2, groups, transpose=True)
        x = g.concat(up, skips.pop())
        x = g.block(g.block(x, c, 1, groups), c, 1, groups)
    x = g.prelu(g.conv(x, channels[0], 2, transpose=True))  # up to 2 × cube
    x = g.prelu(g.group_norm(g.conv(x, channels[0], 2, use_bias=False), groups, scale=False))  # back down
    out = g.conv(x, 1, 1)
    return {"class_name": "Model",
            "config": {"name": "model_1", "layers": g.layers, "input_layers": [["input_1", 0, 0]],
                       "output_layers": [[out, 0, 0]]}}


def _channels_out(layer: dict, channels: dict[str, int]) -> int:
    kind, config = layer["class_name"], layer["config"]
    sources = [s[0] for s in layer["inbound_nodes"][0]] if layer["inbound_nodes"] else []
    if kind == "InputLayer":
        return config["batch_input_shape"][-1]
    if kind in ("Conv3D", "Conv3DTranspose"):
        return config["filters"]
    if kind == "Concatenate":
        return sum(channels[s] for s in sources)
    return channels[sources[0]]


def standin_weights(model_config: dict, seed: int = STANDIN_SEED) -> dict[str, list[tuple[str, np.ndarray]]]:
    """Seeded random float32 weights per layer, as (Keras weight name, array) in Keras order and layout;
    scaled (He-like) so activations stay of order one through the depth of the network."""
    rng = np.random.default_rng(seed)
    channels: dict[str, int] = {}
    weights: dict[str, list[tuple[str, np.ndarray]]] = {}
    for layer in model_config["config"]["layers"]:
        name, kind, config = layer["name"], layer["class_name"], layer["config"]
        sources = [s[0] for s in layer["inbound_nodes"][0]] if layer["inbound_nodes"] else []
        c_in = channels[sources[0]] if sources else 1
        values: list[tuple[str, np.ndarray]] = []
        if kind in ("Conv3D", "Conv3DTranspose"):
            f = config["filters"]
            shape = (5, 5, 5, c_in, f) if kind == "Conv3D" else (5, 5, 5, f, c_in)
            scale = np.float32(np.sqrt(1.0 / (125 * c_in)))
            values.append(("kernel", rng.standard_normal(shape, dtype=np.float32) * scale))
            if config["use_bias"]:
                values.append(("bias", rng.normal(0.0, 0.05, f).astype(np.float32)))
        elif kind == "GroupNormalization":
            if config["scale"]:
                values.append(("gamma", rng.uniform(0.5, 1.5, c_in).astype(np.float32)))
            if config["center"]:
                values.append(("beta", rng.normal(0.0, 0.1, c_in).astype(np.float32)))
        elif kind == "PReLU":
            values.append(("alpha", rng.uniform(0.05, 0.3, (1, 1, 1, c_in)).astype(np.float32)))
        weights[name] = values
        channels[name] = _channels_out(layer, channels)
    return weights


def count_parameters(weights: dict[str, list[tuple[str, np.ndarray]]]) -> int:
    return int(sum(a.size for values in weights.values() for _, a in values))


def write_standin_hd5(path: Path, channels: Sequence[int] = STANDIN_CHANNELS, groups: int = STANDIN_GROUPS,
                      seed: int = STANDIN_SEED, cube: int = CUBE, stride: int = STRIDE) -> int:
    """Write the stand-in model in the official layout (as Keras 2.2 with h5py 2 wrote it); return
    its parameter count."""
    if str(REPO / "tests") not in sys.path:
        sys.path.insert(0, str(REPO / "tests"))
    from official_hd5 import write_keras_file  # the official layout's one writer (the tests' helper)

    model_config = standin_model_config(channels, groups, cube)
    weights = standin_weights(model_config, seed)
    path = Path(path)
    partial = path.with_name(path.name + ".partial")
    write_keras_file(partial, model_config,
                     {layer: [(f"{layer}/{n}:0", value) for n, value in pairs] for layer, pairs in weights.items()},
                     custom_objects=CUSTOM_OBJECTS_CODE, norm_source=NORM_FUN_CODE, config_params=(cube, stride))
    partial.replace(path)
    return count_parameters(weights)


# ------------------------------------------------------------------------------------------------
# Cases and what each program does with them (pure)

@dataclass(frozen=True)
class Case:
    """A benchmark input: `source` map, cropped to a centred `crop`³ box of its stored array (None: whole)."""

    name: str
    source: str
    crop: int | None = None


def parse_case(spec: str) -> Case:
    """`emd3488`, `emd11007` (whole map) or `emd11007@96` (a centred 96³ crop of the stored array)."""
    source, _, crop = spec.partition("@")
    if source not in MAPS:
        raise ValueError(f"unknown map {source!r}; choose one of {', '.join(MAPS)}")
    if not crop:
        return Case(spec, source)
    if not crop.isdigit() or int(crop) < CUBE:
        raise ValueError(f"crop in {spec!r} must be a whole number of voxels, at least {CUBE}")
    return Case(spec, source, int(crop))


def centre_crop(array: np.ndarray, size: int) -> np.ndarray:
    """The centred size³ block of a 3-D array (every side at least `size`)."""
    if any(n < size for n in array.shape):
        raise ValueError(f"cannot crop {size}³ from a {array.shape} map")
    starts = [(n - size) // 2 for n in array.shape]
    return array[tuple(slice(s, s + size) for s in starts)]


def original_cubes(shape: Sequence[int], voxel_size: float, batch: int = ORIGINAL_BATCH,
                   cube: int = CUBE, stride: int = STRIDE) -> tuple[int, int]:
    """(cubes, cubes computed) by the original for a map of `shape` (stored order) at `voxel_size`.

    Its steps (processVol.py): resize to round(n × voxel) at 1 Å, pad each axis at the end by
    stride − n % stride (the third axis by the second's amount), cubes at every `stride` from 0 to
    padded − cube; every row of cubes along the third axis is filled up to a multiple of the batch
    with repeats of its last cube, which the network computes and the blending ignores.
    """
    resized = [int(round(n * voxel_size)) for n in shape]
    pads = [stride - resized[0] % stride, stride - resized[1] % stride, stride - resized[1] % stride]
    counts = [len(range(0, n + p - (cube - 1), stride)) for n, p in zip(resized, pads)]
    rows = counts[0] * counts[1]
    return rows * counts[2], rows * (-(-counts[2] // batch) * batch)


def median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """numerator / denominator, None when either is missing or the denominator is not positive."""
    if numerator is None or denominator is None or denominator <= 0:
        return None
    return numerator / denominator


def schedule(cases: Sequence[str], modes: Sequence[str], repeats: int,
             programs: Sequence[str] = PROGRAMS) -> list[tuple[str, str, int, str]]:
    """(case, mode, repeat, program) in run order: per case and mode, the programs alternate
    repeat by repeat (ours, original, ours, original, ...)."""
    return [(case, mode, r, program) for case in cases for mode in modes
            for r in range(repeats) for program in programs]


def summarise(runs: Sequence[dict]) -> list[dict]:
    """Per (case, mode): each program's run count, median wall and CPU (user + sys) seconds, median
    user and sys, peak RSS (the largest), and the ratios original ÷ ours (> 1: ours is faster).
    Failed runs (rc ≠ 0) are left out of the medians and counted."""
    rows: dict[tuple[str, str], dict] = {}
    for run in runs:
        row = rows.setdefault((run["case"], run["mode"]), {"case": run["case"], "mode": run["mode"]})
        side = row.setdefault(run["program"], {"runs": 0, "failed": 0, "wall": [], "cpu": [], "user": [], "sys": [],
                                               "rss": []})
        side["runs"] += 1
        if run["rc"] != 0:
            side["failed"] += 1
            continue
        side["wall"].append(run["wall_s"])
        side["cpu"].append(run["user_s"] + run["sys_s"])
        side["user"].append(run["user_s"])
        side["sys"].append(run["sys_s"])
        side["rss"].append(run["maxrss_mib"])
    out = []
    for row in rows.values():
        for program in PROGRAMS:
            side = row.get(program)
            if side is None:
                continue
            row[program] = {"runs": side["runs"], "failed": side["failed"],
                            "wall_median_s": median(side["wall"]), "cpu_median_s": median(side["cpu"]),
                            "user_median_s": median(side["user"]), "sys_median_s": median(side["sys"]),
                            "wall_s": side["wall"], "peak_rss_mib": max(side["rss"]) if side["rss"] else None}
        ours, original = row.get("ours", {}), row.get("original", {})
        row["wall_ratio"] = ratio(original.get("wall_median_s"), ours.get("wall_median_s"))
        row["cpu_ratio"] = ratio(original.get("cpu_median_s"), ours.get("cpu_median_s"))
        out.append(row)
    return out


def _fmt(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def _sci(value: float | None) -> str:
    return "–" if value is None else f"{value:.1e}"


def markdown_table(rows: Sequence[dict]) -> str:
    """The results table: wall medians, their ratio, CPU medians (user + sys, and sys), peak RSS."""
    lines = ["| map | mode | ours s | original s | original ÷ ours | ours CPU s (sys) | original CPU s (sys) "
             "| peak RSS MiB ours / original | runs |",
             "|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        ours, original = row.get("ours", {}), row.get("original", {})
        runs = "/".join(str(side.get("runs", 0) - side.get("failed", 0)) for side in (ours, original))
        failed = sum(side.get("failed", 0) for side in (ours, original))
        lines.append(
            f"| {row['case']} | {row['mode']} | {_fmt(ours.get('wall_median_s'))} "
            f"| {_fmt(original.get('wall_median_s'))} | {_fmt(row.get('wall_ratio'), 2)} "
            f"| {_fmt(ours.get('cpu_median_s'))} ({_fmt(ours.get('sys_median_s'))}) "
            f"| {_fmt(original.get('cpu_median_s'))} ({_fmt(original.get('sys_median_s'))}) "
            f"| {_fmt(ours.get('peak_rss_mib'), 0)} / {_fmt(original.get('peak_rss_mib'), 0)} "
            f"| {runs}{f' ({failed} failed)' if failed else ''} |")
    return "\n".join(lines)


def parse_our_cubes(log: str) -> tuple[int, int] | None:
    """(cubes, stride) from our log line '<n> cubes of 64³ at stride <s> on ...'."""
    import re

    found = re.findall(r"(\d+) cubes of \d+³ at stride (\d+)", log)
    return (int(found[-1][0]), int(found[-1][1])) if found else None


def program_commands(program: str, mode: str, input_map: Path, output_map: Path, model: Path, threads: int,
                     noise_stats: tuple[float, float] | None, original_python: Path,
                     legacy_batch: int = ORIGINAL_BATCH) -> list[str]:
    """The command line of one run."""
    stats = ["--noiseStats", f"{noise_stats[0]:.6g}", f"{noise_stats[1]:.6g}"] if noise_stats else []
    common = ["-i", str(input_map), "-o", str(output_map), "--deepLearningModelPath", str(model), "-g", "-1", *stats]
    if program == "ours":
        extra = ["--legacy", "-b", str(legacy_batch)] if mode == "legacy" else []
        return [sys.executable, "-m", "deepemhancer", *common, *extra, "--threads", str(threads)]
    if program == "original":
        extra = ["-b", str(legacy_batch)] if mode == "legacy" else []
        return [str(original_python), "-c", original_launcher(threads), *common, *extra]
    raise ValueError(f"unknown program {program!r}")


def original_launcher(threads: int) -> str:
    """Python run by the original's interpreter: pin TensorFlow's threads, then its command line."""
    return ("import sys, tensorflow as tf; "
            f"tf.config.threading.set_intra_op_parallelism_threads({threads}); "
            "tf.config.threading.set_inter_op_parallelism_threads(1); "
            "from deepEMhancer.exeDeepEMhancer import commanLineFun; "
            "sys.argv[0] = 'deepemhancer'; commanLineFun()")


def program_env(program: str, threads: int, models_dir: Path, ours_src: Path = REPO) -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    if program == "ours":
        env["DEEPEMHANCER_MODELS_DIR"] = str(models_dir)
        # The run's working folder and PYTHONPATH both name ours_src, so its deepemhancer package is the one
        # imported (before any installed copy, editable installs included).
        env["PYTHONPATH"] = os.pathsep.join([str(ours_src), *filter(None, [os.environ.get("PYTHONPATH")])])
    else:
        env.update(TF_NUM_INTRAOP_THREADS=str(threads), TF_NUM_INTEROP_THREADS="1", CUDA_VISIBLE_DEVICES="-1",
                   TF_CPP_MIN_LOG_LEVEL="2")
    return env


# ------------------------------------------------------------------------------------------------
# Running

def timed_run(command: Sequence[str], env: dict[str, str], log_path: Path, nice: int = 0,
              cwd: Path | None = None) -> dict:
    """Run one process; wall time, CPU time and peak RSS of it (and its waited-for children) from wait4."""
    load_before = os.getloadavg()
    started = time.perf_counter()
    with open(log_path, "wb") as log:
        process = subprocess.Popen(list(command), stdout=log, stderr=subprocess.STDOUT, env=env, cwd=cwd,
                                   preexec_fn=(lambda: os.nice(nice)) if nice else None)
        _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    return {"rc": process.returncode, "wall_s": wall, "user_s": usage.ru_utime, "sys_s": usage.ru_stime,
            "maxrss_mib": usage.ru_maxrss / 1024.0, "major_faults": usage.ru_majflt, "minor_faults": usage.ru_minflt,
            "load_before": list(load_before), "load_after": list(os.getloadavg())}


def original_status(python: Path) -> tuple[str | None, str | None]:
    """(TensorFlow version, None) when the original can be imported from `python`, else (None, reason)."""
    if not python.is_file():
        return None, f"no Python at {python} (install the original in its own venv; see this script's docstring)"
    probe = "import tensorflow as tf, deepEMhancer.exeDeepEMhancer; print(tf.__version__)"
    try:
        done = subprocess.run([str(python), "-c", probe], capture_output=True, text=True, timeout=600,
                              env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="-1"))
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"{python} cannot run the original ({exc})"
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no message"])[-1]
        return None, f"the original does not import in {python}: {last}"
    return done.stdout.strip().splitlines()[-1], None


def _git(args: Sequence[str], cwd: Path) -> str | None:
    try:
        done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def machine() -> dict:
    cpu = platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            cpu = next(line.split(":", 1)[1].strip() for line in handle if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    memory = None
    try:
        with open("/proc/meminfo") as handle:
            memory = round(int(next(line.split()[1] for line in handle if line.startswith("MemTotal"))) / 2**20, 1)
    except (OSError, StopIteration):
        pass
    import torch

    return {"cpu": cpu, "cores": os.cpu_count(), "usable_cores": len(os.sched_getaffinity(0)), "memory_gib": memory,
            "torch": torch.__version__, "python": platform.python_version(), "platform": platform.platform()}


def noise_stats_nonzero(array: np.ndarray) -> tuple[float, float]:
    """Mean and std of the non-zero voxels (for a map deposited masked, whose solvent is exactly zero)."""
    values = array[array != 0].astype(np.float64)
    return float(values.mean()), float(values.std())


def prepare_input(case: Case, workdir: Path) -> tuple[Path, tuple[int, ...], float, tuple[float, float] | None]:
    """Write the case's map into `workdir` as an uncompressed MRC both programs read; return
    (path, stored shape, voxel size, noise statistics or None)."""
    import mrcfile

    source = MAPS[case.source]
    if not source.is_file():
        raise FileNotFoundError(f"{source} is missing (shared data; set DEEPEMHANCER_SHARED_DATA)")
    path = workdir / f"{case.name.replace('@', '_crop')}.mrc"
    with mrcfile.open(source, permissive=True) as mrc:
        data = np.asarray(mrc.data, dtype=np.float32)
        voxel = float(mrc.voxel_size.x)
    if case.crop is None:
        if source.suffix == ".gz":  # the whole map exactly as deposited, header included, decompressed
            with gzip.open(source, "rb") as src, open(path, "wb") as dst:
                shutil.copyfileobj(src, dst)
        else:
            shutil.copyfile(source, path)
    else:  # a centred crop of the stored array, in a plain (1, 2, 3) MRC with the same voxel size
        data = np.ascontiguousarray(centre_crop(data, case.crop))
        with mrcfile.new(path, overwrite=True) as mrc:
            mrc.set_data(data)
            mrc.voxel_size = voxel
    stats = noise_stats_nonzero(data) if case.source in NEEDS_NOISE_STATS else None
    return path, tuple(data.shape), voxel, stats


def compare_outputs(ours: Path, original: Path) -> dict | None:
    """Pearson r and the largest difference (÷ the original's std) of the two output arrays as stored."""
    import mrcfile

    try:
        with mrcfile.open(ours, permissive=True) as a, mrcfile.open(original, permissive=True) as b:
            x, y = np.asarray(a.data, np.float64), np.asarray(b.data, np.float64)
    except (OSError, ValueError):
        return None
    if x.shape != y.shape:
        return {"shape_ours": list(x.shape), "shape_original": list(y.shape)}
    return {"pearson_r": float(np.corrcoef(x.ravel(), y.ravel())[0, 1]),
            "max_abs_diff_over_std": float(np.abs(x - y).max() / (y.std() or 1.0))}


# ------------------------------------------------------------------------------------------------
# The network alone: one batch of cubes through each framework, alternated

OURS_FORWARD = """
import json, sys, time
import numpy as np, torch
from deepemhancer.models.registry import converted_model
from deepemhancer.models.store import load_network
threads, batch, repeats = (int(v) for v in sys.argv[2:5])
torch.set_num_threads(threads)
network, _ = load_network(converted_model(sys.argv[1]))
x = torch.from_numpy(np.random.default_rng(0).standard_normal((batch, 1, 64, 64, 64), dtype=np.float32) * 0.1)
times = []
with torch.inference_mode():
    network(x)
    for _ in range(repeats):
        started = time.perf_counter()
        network(x)
        times.append(time.perf_counter() - started)
print("FORWARD " + json.dumps(times))
"""

ORIGINAL_FORWARD = """
import json, sys, time
import numpy as np, tensorflow as tf
threads, batch, repeats = (int(v) for v in sys.argv[2:5])
tf.config.threading.set_intra_op_parallelism_threads(threads)
tf.config.threading.set_inter_op_parallelism_threads(1)
from deepEMhancer.utils.loadModel import load_model
model = load_model(sys.argv[1])
x = (np.random.default_rng(0).standard_normal((batch, 64, 64, 64, 1), dtype=np.float32) * 0.1)
model.predict_on_batch(x)
times = []
for _ in range(repeats):
    started = time.perf_counter()
    model.predict_on_batch(x)
    times.append(time.perf_counter() - started)
print("FORWARD " + json.dumps(times))
"""


def forward_command(program: str, model: Path, threads: int, batch: int, repeats: int,
                    original_python: Path) -> list[str]:
    code = OURS_FORWARD if program == "ours" else ORIGINAL_FORWARD
    python = sys.executable if program == "ours" else str(original_python)
    return [python, "-c", code, str(model), str(threads), str(batch), str(repeats)]


def parse_forward(output: str) -> list[float] | None:
    for line in reversed(output.splitlines()):
        if line.startswith("FORWARD "):
            return [float(v) for v in json.loads(line[len("FORWARD "):])]
    return None


def forward_table(rows: Sequence[dict]) -> str:
    lines = ["| batch | ours s per cube | original s per cube | ours ÷ original | passes each |",
             "|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row['batch']} | {_fmt(row.get('ours'), 3)} | {_fmt(row.get('original'), 3)} "
                     f"| {_fmt(ratio(row.get('ours'), row.get('original')), 2)} | {row['passes']} |")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------
# Report

def write_results(path_stem: Path, meta: dict, runs: list[dict], comparisons: dict) -> None:
    rows = summarise(runs)
    for row in rows:
        row["outputs"] = comparisons.get(f"{row['case']}|{row['mode']}")
    document = {"meta": meta, "summary": rows, "runs": runs}
    path_stem.parent.mkdir(parents=True, exist_ok=True)
    path_stem.with_suffix(".json").write_text(json.dumps(document, indent=1) + "\n")
    path_stem.with_suffix(".md").write_text(markdown_report(meta, rows, runs) + "\n")


def _loads(values: Sequence[float] | None) -> str:
    return "–" if not values else ", ".join(f"{v:.2f}" for v in values)


def markdown_report(meta: dict, rows: Sequence[dict], runs: Sequence[dict]) -> str:
    m = meta["machine"]
    lines = [f"# Side by side with the original DeepEMhancer ({meta['tag']})", "",
             f"Date: {meta['started']} to {meta.get('finished') or '(running)'}. "
             f"Machine: {m['cpu']}, {m['cores']} cores ({m['usable_cores']} usable), {m['memory_gib']} GiB; "
             f"Python {m['python']}, torch {m['torch']}; original: TensorFlow {meta.get('tensorflow')}, "
             f"commit {meta.get('original_commit')}. Ours: commit {meta.get('our_commit')}"
             f"{' (with uncommitted changes)' if meta.get('our_dirty') else ''}. "
             f"Threads: {meta['threads']} each. Weights: {meta['weights']}.", "",
             f"Command: `{meta['command']}`", ""]
    start, end = meta.get("load_start"), meta.get("load_end")
    lines += [f"Load average (1, 5, 15 min) at the start: {_loads(start)}; at the end: {_loads(end)}.", ""]
    if meta.get("skipped"):
        lines += [f"**Skipped**: {meta['skipped']}", ""]
        return "\n".join(lines)
    if meta.get("forward"):
        lines += ["The network alone (one batch through the stand-in network, no pipeline; median seconds per "
                  "cube over every timed pass, processes alternated):", "", forward_table(meta["forward"]), ""]
    if not rows:
        return "\n".join(lines)
    lines += [markdown_table(rows), "",
              "Seconds are medians of wall time; CPU is user + system time of the process (os.wait4). "
              "\"original ÷ ours\" above 1 means ours is faster.", ""]
    loads = [v for run in runs for v in (run["load_before"][0], run["load_after"][0])]
    if loads:
        lines += [f"1-minute load average before/after the runs: {min(loads):.2f} to {max(loads):.2f} "
                  f"(above {m['usable_cores']} means other work shared the cores).", ""]
    lines += ["| map | stored shape | voxel Å | noise stats | cubes ours (stride) | cubes original "
              "(computed at batch) | outputs: r, max diff ÷ std |", "|---|---|---|---|---|---|---|"]
    for row in rows:
        info = meta["cases"].get(row["case"], {})
        ours_cubes = info.get("ours_cubes", {}).get(row["mode"])
        out = row.get("outputs") or {}
        lines.append(
            f"| {row['case']} ({row['mode']}) | {'×'.join(map(str, info.get('shape', [])))} "
            f"| {info.get('voxel_size', 0):.3f} "
            f"| {'given' if info.get('noise_stats') else 'automatic'} "
            f"| {f'{ours_cubes[0]} ({ours_cubes[1]})' if ours_cubes else '–'} "
            f"| {info.get('original_cubes', ['–'])[0]} "
            f"({info.get('original_cubes_computed', {}).get(row['mode'], '–')}) "
            f"| {_fmt(out.get('pearson_r'), 6)}, {_sci(out.get('max_abs_diff_over_std'))} |")
    lines += ["", "Every run:", "", "| # | map | mode | program | wall s | user s | sys s | peak RSS MiB | "
              "load 1-min before → after | rc |", "|---|---|---|---|---|---|---|---|---|---|"]
    for i, run in enumerate(runs, 1):
        lines.append(f"| {i} | {run['case']} | {run['mode']} | {run['program']} | {run['wall_s']:.1f} "
                     f"| {run['user_s']:.1f} | {run['sys_s']:.1f} | {run['maxrss_mib']:.0f} "
                     f"| {run['load_before'][0]:.2f} → {run['load_after'][0]:.2f} | {run['rc']} |")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------

@dataclass
class Session:
    """What every run of one invocation shares."""

    args: argparse.Namespace
    workdir: Path
    model: Path
    models_dir: Path
    ours_src: Path
    original_python: Path
    stem: Path
    meta: dict


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="*", default=["emd11007@96", "emd3488", "emd11007@160"],
                        help="emd3488, emd11007 (whole 240³ map) or emd11007@N (centred N³ crop); "
                             "none: only --forward")
    parser.add_argument("--forward", nargs="*", type=int, default=[], metavar="BATCH",
                        help="first time the network alone (no pipeline) at these batch sizes, both frameworks, "
                             "alternated, in fresh processes")
    parser.add_argument("--forward-rounds", type=int, default=3, help="processes per program and batch size")
    parser.add_argument("--forward-passes", type=int, default=3, help="timed passes per process (after one warm-up)")
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--programs", nargs="+", choices=PROGRAMS, default=list(PROGRAMS))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--legacy-batch", type=int, default=ORIGINAL_BATCH,
                        help="batch size of both programs in legacy mode (the original's default: 8)")
    parser.add_argument("--nice", type=int, default=0, help="run both programs at this niceness")
    parser.add_argument("--original-venv", type=Path, default=ORIGINAL_VENV)
    parser.add_argument("--workdir", type=Path, default=None,
                        help="inputs, outputs and logs (default: a temporary folder)")
    parser.add_argument("--tag", default="original_side_by_side", help="results file name")
    parser.add_argument("--keep-outputs", action="store_true")
    parser.add_argument("--ours-commit", default=None,
                        help="run our program as of this commit of the repository (exported with git archive into "
                             "the work folder), not the working tree, e.g. while the working tree is being edited")
    return parser


def _our_source(commit: str | None, workdir: Path, meta: dict) -> Path:
    """The folder our program runs from: the repository, or `commit` exported into the work folder."""
    if not commit:
        meta["our_commit"] = _git(["rev-parse", "--short", "HEAD"], REPO)
        meta["our_dirty"] = bool(_git(["status", "--porcelain", "--untracked-files=no", "deepemhancer"], REPO))
        return REPO
    meta["our_commit"] = _git(["rev-parse", "--short", commit], REPO)
    if not meta["our_commit"]:
        raise SystemExit(f"{commit} is not a commit of {REPO}")
    meta["our_dirty"] = False
    source = workdir / "ours-src"
    shutil.rmtree(source, ignore_errors=True)
    source.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", meta["our_commit"]], cwd=REPO, capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(source)], input=archive.stdout, check=True)
    return source


def _forward_check(session: Session) -> None:
    """The network alone, each framework in fresh processes, alternated; medians per cube into meta."""
    args, meta = session.args, session.meta
    meta["forward"] = []
    for batch in args.forward:
        row: dict[str, Any] = {"batch": batch, "ours_all": [], "original_all": [], "failed": 0}
        for r in range(args.forward_rounds):
            for program in args.programs:
                log_path = session.workdir / f"forward_b{batch}_{r}_{program}.log"
                print(f"forward batch {batch} round {r + 1} {program} ...", flush=True)
                command = forward_command(program, session.model, args.threads, batch, args.forward_passes,
                                          session.original_python)
                timed_run(command, program_env(program, args.threads, session.models_dir, session.ours_src),
                          log_path, args.nice, cwd=session.ours_src if program == "ours" else session.workdir)
                times = parse_forward(log_path.read_text(errors="replace"))
                if times is None:
                    row["failed"] += 1
                else:
                    row[f"{program}_all"] += [t / batch for t in times]
        for program in PROGRAMS:
            row[program] = median(row[f"{program}_all"])
        row["passes"] = len(row["ours_all"])
        meta["forward"].append(row)
        meta["load_end"] = list(os.getloadavg())
        write_results(session.stem, meta, [], {})
        print(forward_table(meta["forward"]), flush=True)


def _run_cases(session: Session, cases: Sequence[Case]) -> tuple[list[dict], dict[str, dict]]:
    """Every case, mode and repeat, the programs alternated; results rewritten after each run."""
    args, meta, workdir = session.args, session.meta, session.workdir
    inputs = {}
    for case in cases:
        path, shape, voxel, stats = prepare_input(case, workdir)
        cubes, computed = original_cubes(shape, voxel, args.legacy_batch)
        inputs[case.name] = (path, stats)
        meta["cases"][case.name] = {
            "shape": list(shape), "voxel_size": voxel, "noise_stats": stats, "original_cubes": [cubes],
            "original_cubes_computed": {"legacy": computed, "default": original_cubes(shape, voxel)[1]},
            "ours_cubes": {}}
    runs: list[dict] = []
    comparisons: dict[str, dict] = {}
    outputs: dict[tuple[str, str, int, str], Path] = {}
    order = schedule([c.name for c in cases], args.modes, args.repeats, args.programs)
    for i, (case, mode, repeat, program) in enumerate(order, 1):
        path, stats = inputs[case]
        label = f"{case.replace('@', '_crop')}_{mode}_{repeat}_{program}"
        output = workdir / f"{label}_out.mrc"
        output.unlink(missing_ok=True)
        command = program_commands(program, mode, path, output, session.model, args.threads, stats,
                                   session.original_python, args.legacy_batch)
        log_path = workdir / f"{label}.log"
        print(f"[{i}/{len(order)}] {case} {mode} #{repeat + 1} {program} ...", flush=True)
        result = timed_run(command, program_env(program, args.threads, session.models_dir, session.ours_src),
                           log_path, args.nice, cwd=session.ours_src if program == "ours" else workdir)
        log = log_path.read_text(errors="replace")
        result.update(case=case, mode=mode, repeat=repeat, program=program,
                      command=shlex.join(command).replace(original_launcher(args.threads), "<launcher>"),
                      finished=datetime.datetime.now().astimezone().isoformat(timespec="seconds"))
        if result["rc"] != 0:
            result["log_tail"] = log[-2000:]
        if program == "ours" and (cubes := parse_our_cubes(log)):
            meta["cases"][case]["ours_cubes"][mode] = list(cubes)
        runs.append(result)
        print(f"    {result['wall_s']:.1f} s wall, {result['user_s']:.1f} user, {result['sys_s']:.1f} sys, "
              f"{result['maxrss_mib']:.0f} MiB, rc {result['rc']}, load {result['load_after'][0]:.2f}", flush=True)
        outputs[(case, mode, repeat, program)] = output
        pair = [outputs.get((case, mode, repeat, p)) for p in args.programs]
        if all(p is not None for p in pair):  # this repeat is complete: compare its outputs once, then drop them
            key = f"{case}|{mode}"
            if len(pair) == 2 and key not in comparisons and all(p.is_file() for p in pair):
                comparisons[key] = compare_outputs(*pair) or {}
            if not args.keep_outputs:
                for p in pair:
                    p.unlink(missing_ok=True)
        meta["load_end"] = list(os.getloadavg())
        write_results(session.stem, meta, runs, comparisons)
    return runs, comparisons


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    cases = [parse_case(spec) for spec in args.cases]
    workdir = (args.workdir or Path(tempfile.mkdtemp(prefix="deepemhancer_vs_original_"))).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    original_python = args.original_venv / "bin" / "python"
    tensorflow, reason = original_status(original_python) if "original" in args.programs else (None, None)
    python = Path(sys.executable)
    python = python.relative_to(REPO) if python.is_relative_to(REPO) else python
    given = sys.argv[1:] if argv is None else list(argv)
    meta: dict[str, Any] = {
        "tag": args.tag, "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": shlex.join([str(python), "benchmarks/original_side_by_side.py", *given]),
        "machine": machine(), "threads": args.threads, "legacy_batch": args.legacy_batch, "nice": args.nice,
        "tensorflow": tensorflow, "original_venv": str(args.original_venv),
        "original_commit": _git(["rev-parse", "HEAD"], ORIGINAL_SRC),
        "load_start": list(os.getloadavg()), "cases": {}, "workdir": str(workdir)}
    ours_src = _our_source(args.ours_commit, workdir, meta)
    stem = RESULTS / args.tag
    if reason:
        meta.update(skipped=reason, weights="none")
        write_results(stem, meta, [], {})
        print(f"skipped: {reason}")
        return 0

    model = workdir / "deepEMhancer_standin.hd5"
    parameters = write_standin_hd5(model)
    meta["weights"] = (f"stand-in in the official layout, {parameters:,} parameters, seed {STANDIN_SEED} "
                       f"(`write_standin_hd5`), one file for both")
    models_dir = workdir / "models"
    subprocess.run([sys.executable, "-c", "import sys; from deepemhancer.models.registry import converted_model; "
                    "converted_model(sys.argv[1])", str(model)], check=True, cwd=ours_src,
                   env=program_env("ours", args.threads, models_dir, ours_src))  # convert once, untimed
    session = Session(args, workdir, model, models_dir, ours_src, original_python, stem, meta)
    if args.forward:
        _forward_check(session)
    runs, comparisons = _run_cases(session, cases) if cases else ([], {})
    meta["finished"] = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    write_results(stem, meta, runs, comparisons)
    print(markdown_table(summarise(runs)))
    print(f"wrote {stem.with_suffix('.json')} and .md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
