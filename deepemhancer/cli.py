"""Command line compatible with the original ``deepemhancer`` (0.16/0.17), plus ``models`` subcommands."""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Sequence

from . import __version__
from .errors import DeepEMhancerError

log = logging.getLogger("deepemhancer")


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows a default only where it says something (not None/False, not already in the text)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default:" in text or action.default in (None, False, argparse.SUPPRESS):
            return text
        return super()._get_help_string(action)


def _enhance_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="deepemhancer",
        description="Enhance a cryo-EM map (or two half maps) with DeepEMhancer on PyTorch. "
                    "The output keeps the input's voxel size, origin, nstart and axis order. "
                    "Model management: 'deepemhancer models {list,download,import}'.",
        formatter_class=_HelpFormatter)
    parser.add_argument("-i", "--inputMap", help="input map, or half map 1 (unmasked, unsharpened); required")
    parser.add_argument("-i2", "--halfMap2", help="half map 2; the two halves are averaged")
    parser.add_argument("-o", "--outputMap", help="output map (.mrc, .map, .mrc.gz); required, never overwritten without --force")
    parser.add_argument("-p", "--processingType", default=None,
                        help="model name: tightTarget, wideTarget, highRes (official, when installed) or any "
                             "name from 'deepemhancer models list'; default: tightTarget when installed, "
                             "else the bundled model")
    parser.add_argument("-s", "--samplingRate", type=float, default=None,
                        help="voxel size in Å/voxel; default: the header's")
    parser.add_argument("--noiseStats", type=float, nargs=2, metavar=("MEAN", "STD"), default=None,
                        help="noise mean and standard deviation for normalisation (negative means are fine); "
                             "default: estimated automatically")
    parser.add_argument("-m", "--binaryMask", default=None,
                        help="binary mask on the input's grid: masked normalisation with the masked model "
                             "(-p not allowed)")
    parser.add_argument("--deepLearningModelPath", default=None,
                        help="folder with official deepEMhancer_*.hd5 files (or one .hd5 / model .json); "
                             ".hd5 files are converted on first use and cached")
    parser.add_argument("--cleaningStrengh", type=float, default=-1,
                        help="remove connected components smaller than this fraction (0<s<1); -1 is off")
    parser.add_argument("-g", "--gpuIds", default="0",
                        help="GPU ids, comma separated ('0', '0,1'), 'all', or -1 for the CPU; "
                             "falls back to the CPU when there is no GPU")
    parser.add_argument("-b", "--batch_size", type=int, default=None,
                        help="cubes per GPU per step; default: sized from free memory, halved on out-of-memory")
    parser.add_argument("--download", nargs="?", const="", default=None, metavar="DEST",
                        help="download the official models (into DEST, default the original's folder) "
                             "and import them, then exit")
    parser.add_argument("--legacy", action="store_true",
                        help="reproduce the original's numerics step by step (count+1 blending, its padding "
                             "and resampling); the header placement is kept in both modes")
    parser.add_argument("--force", action="store_true", help="overwrite an existing output map")
    parser.add_argument("--precision", choices=("fp32", "tf32", "bf16", "fp16"), default="fp32",
                        help="arithmetic precision of the network")
    parser.add_argument("--blending", choices=("count", "gaussian"), default="count",
                        help="default mode only: average overlapping cubes by count or a Gaussian window")
    parser.add_argument("--stride", type=int, default=None, help="cube stride in voxels; default: the model's (16)")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads (default: torch's, which honours OMP_NUM_THREADS)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar or notes, only errors")
    parser.add_argument("--version", action="version", version=f"deepemhancer {__version__}")
    return parser


def _models_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="deepemhancer models", description="Manage models.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list installed and bundled models")
    download = sub.add_parser("download", help="download the official models (Zenodo 7432763) and import them")
    download.add_argument("dest", nargs="?", default=None, help="where to keep the zip and .hd5 files")
    download.add_argument("--url", default=None, help="alternative address of deepEMhancerModels_tf2.zip")
    imp = sub.add_parser("import", help="import official .hd5 files (one file or a folder, e.g. "
                                        "Scipion's deepEMhancer_v016/production_checkpoints)")
    imp.add_argument("source", help=".hd5 file or folder")
    return parser


def _configure_logging(quiet: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("deepemhancer: %(message)s"))
    log.handlers[:] = [handler]
    log.setLevel(logging.WARNING if quiet else logging.INFO)
    log.propagate = False


def _logger_state() -> tuple:
    return list(log.handlers), log.level, log.propagate


def _restore_logger(state: tuple) -> None:
    """Leave the package logger as it was: in-process callers (the plugin, tests) keep their own."""
    log.handlers[:], log.level, log.propagate = state[0], state[1], state[2]


def _run_models(argv: Sequence[str]) -> int:
    from .models import download, registry

    args = _models_parser().parse_args(argv)
    if args.command == "list":
        models = registry.list_models()
        width = max((len(m.name) for m in models), default=4)
        for m in models:
            state = "" if m.trained else "  [untrained demo]"
            print(f"{m.name:<{width}}  {m.origin:<9}  {m.normalization:<6}  {m.description}{state}")
        if not any(m.origin == "installed" for m in models):
            print("(no official models installed: 'deepemhancer models download' or "
                  "'deepemhancer models import FOLDER')")
        return 0
    if args.command == "download":
        paths = download.download_official_models(Path(args.dest) if args.dest else None, url=args.url)
    else:
        paths = registry.import_models(Path(args.source))
    for path in paths:
        print(f"imported {path}")
    return 0


def _run_enhance(argv: Sequence[str]) -> int:
    from .pipeline import EnhanceOptions, enhance, load_model
    from .mapio import check_output_path, read_map, write_map
    from .models import download, registry

    parser = _enhance_parser()
    args = parser.parse_args(argv)
    _configure_logging(args.quiet)
    if args.download is not None:
        for path in download.download_official_models(Path(args.download) if args.download else None):
            print(f"imported {path}")
        return 0
    if not args.inputMap or not args.outputMap:
        parser.error("-i/--inputMap and -o/--outputMap are required")
    if args.binaryMask and args.processingType:
        parser.error("-p/--processingType is not allowed with -m/--binaryMask (the masked model is used)")
    if args.binaryMask and args.noiseStats:
        parser.error("--noiseStats and -m/--binaryMask are two normalisation modes; give only one")
    output = Path(args.outputMap)
    check_output_path(output, args.force)  # fail before the long part, not after it

    model_json = registry.resolve_model(args.processingType, args.deepLearningModelPath,
                                        masked=args.binaryMask is not None)
    model = load_model(model_json)
    log.info("model %s (%s)", model.name, model_json)

    def read(path: str):
        m = read_map(path)
        return m.with_voxel_size(args.samplingRate) if args.samplingRate is not None else m

    inputs = read(args.inputMap)
    if args.halfMap2:
        inputs = (inputs, read(args.halfMap2))
    mask = read(args.binaryMask) if args.binaryMask else None
    options = EnhanceOptions(
        legacy=args.legacy, noise_stats=tuple(args.noiseStats) if args.noiseStats else None, mask=mask,
        blending=args.blending, stride=args.stride,
        cleaning_strength=None if args.cleaningStrengh == -1 else args.cleaningStrengh,
        gpu_ids=args.gpuIds, batch_size=args.batch_size, precision=args.precision, threads=args.threads,
        progress=not args.quiet)
    result = enhance(inputs, model, options)
    write_map(result, output, overwrite=args.force)
    log.info("wrote %s", output)
    if not model.metadata.get("trained", True):
        log.warning("%s was made by an UNTRAINED demonstration network, not a real enhancement", output)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    logger_state = _logger_state()
    try:
        if argv[:1] == ["models"]:
            _configure_logging(False)
            return _run_models(argv[1:])
        return _run_enhance(argv)
    except DeepEMhancerError as error:
        print(f"deepemhancer: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("deepemhancer: interrupted; no output was written", file=sys.stderr)
        return 130
    finally:
        _restore_logger(logger_state)


if __name__ == "__main__":
    sys.exit(main())
