"""Command line compatible with the original ``deepemhancer`` (0.16/0.17), plus ``models`` and ``evaluate``."""
from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from . import __version__
from .errors import DeepEMhancerError, InputError

if TYPE_CHECKING:
    from .mapio import Map

log = logging.getLogger("deepemhancer")

# The flag that sets each engine setting an error may name (DeepEMhancerError.setting).
FLAGS = {"voxel_size": "-s/--samplingRate", "noise_stats": "--noiseStats", "mask": "-m/--binaryMask",
         "blending": "--blending", "stride": "--stride", "cleaning_strength": "--cleaningStrengh",
         "gpu_ids": "-g/--gpuIds", "batch_size": "-b/--batch_size", "precision": "--precision",
         "threads": "--threads", "legacy": "--legacy", "overwrite": "--force", "url": "--url",
         "halves": "-i2/--halfMap2", "output": "-o/--outputMap",
         "skip_solvent": "--predictSolvent", "normalisation": "--noiseStats MEAN STD, or -m/--binaryMask"}


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the program is, so that it cleans up exactly as on Ctrl-C."""


_HANDLER_PID = os.getpid()


def _raise_terminated(signum, frame):
    if os.getpid() != _HANDLER_PID:
        # A forked worker (e.g. the training pool's) inherits the handler; a pool stops its workers
        # with SIGTERM, which must end them quietly, not as an interrupted run.
        os._exit(128 + signum)
    raise Terminated


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
                    "Several maps (e.g. classes) in one call: -i A.mrc B.mrc ... -o FOLDER (half maps: "
                    "-i A_half1.mrc B_half1.mrc -i2 A_half2.mrc B_half2.mrc, paired in order); the model is loaded "
                    "once, FOLDER gets A_deepemhancer.mrc, ..., one line per map says 'enhanced' or 'FAILED' "
                    "and a failed map does not stop the others (exit status 1 if any failed). "
                    "Model management: 'deepemhancer models {list,download,import}'; measures and a report: "
                    "'deepemhancer evaluate'.",
        formatter_class=_HelpFormatter)
    parser.add_argument("-i", "--inputMap", nargs="+", action="extend", metavar="MAP",
                        help="input map, or half map 1 (unmasked, unsharpened); required. Several (listed or -i "
                             "repeated): each is enhanced, into the folder -o")
    parser.add_argument("-i2", "--halfMap2", nargs="+", action="extend", metavar="MAP",
                        help="half map 2; the two halves are averaged. With several -i: one for each, in the same order")
    parser.add_argument("-o", "--outputMap",
                        help="output map (.mrc, .map, .mrc.gz); with several -i an existing folder, which gets "
                             "NAME_deepemhancer.mrc for each input NAME.mrc; required, never overwritten "
                             "without --force")
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
    parser.add_argument("--force", action="store_true", help="overwrite existing output maps")
    parser.add_argument("--confidence", action="store_true",
                        help="also write OUTPUT_confidence.mrc, a per-voxel confidence map in 0..1 (1: independent "
                             "predictions agree; docs/trust.md) and, with -i2, each half enhanced on its own as "
                             "OUTPUT_half1.mrc and OUTPUT_half2.mrc (same suffix as -o); costs N+2 enhance runs "
                             "with half maps, N without (N = --confidenceAugmentations)")
    parser.add_argument("--confidenceAugmentations", type=int, choices=(1, 8, 24), default=8,
                        help="test-time augmentations for --confidence: 1 (none; needs half maps and a single-map model), 8 flips, "
                             "24 rotations of the cube")
    parser.add_argument("--precision", choices=("fp32", "tf32", "bf16", "fp16"), default="fp32",
                        help="arithmetic precision of the network")
    parser.add_argument("--blending", choices=("gaussian", "count"), default=None,
                        help="default mode only: average overlapping cubes with a Gaussian window or by count "
                             "(default: gaussian; count leaves cube-edge patterns, see docs/trust.md)")
    parser.add_argument("--stride", type=int, default=None,
                        help="cube stride in voxels; default: the model's (24 for open-halves, 16 for the others)")
    parser.add_argument("--predictSolvent", action="store_true",
                        help="default mode only: predict every cube; by default the solvent farther than 10 Å "
                             "from the molecule's automatic mask is not predicted and comes out 0")
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


def _evaluate_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="deepemhancer evaluate", formatter_class=_HelpFormatter,
        description="Measure maps (Guinier B; with an atomic model map-model FSC, CC_mask, CC_box and median "
                    "local CC; with half maps their FSC resolution; with enhanced halves the independent-halves "
                    "check) and write report.json, PNG plots and a self-contained report.html into a folder.")
    parser.add_argument("--map", action="append", default=None, metavar="NAME=PATH", dest="maps",
                        help="a map to measure, named NAME in the report (PATH alone: named after the file); repeat")
    parser.add_argument("--halfMaps", nargs=2, metavar=("HALF1", "HALF2"), default=None,
                        help="the two raw (unfiltered) half maps: FSC and resolution")
    parser.add_argument("--enhancedHalves", nargs=2, metavar=("ENHANCED1", "ENHANCED2"), default=None,
                        help="the halves enhanced separately (enhance --confidence -i2 writes them): "
                             "the independent-halves check; needs --halfMaps")
    parser.add_argument("--atomicModel", default=None, metavar="MODEL",
                        help="fitted atomic model (PDB or mmCIF) for the map-model measures")
    parser.add_argument("--resolution", type=float, default=None,
                        help="resolution in Å for the model map and the Guinier fit; default: the half maps' "
                             "FSC = 0.143 resolution")
    parser.add_argument("--mask", default=None,
                        help="mask (values 0..1) on the maps' grid: masked, phase-randomisation corrected half-map "
                             "FSC, masked map-model FSC and halves check")
    parser.add_argument("-s", "--samplingRate", type=float, default=None,
                        help="voxel size in Å/voxel for every input; default: the headers'")
    parser.add_argument("-o", "--outputDir", required=True,
                        help="report folder; never replaced without --force")
    parser.add_argument("--force", action="store_true", help="replace an existing report folder")
    parser.add_argument("-q", "--quiet", action="store_true", help="only errors")
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


def _named_map_paths(entries: Sequence[str]) -> dict[str, Path]:
    """NAME=PATH (or PATH, named after the file) to an ordered name -> path dict; InputError on a repeated name."""
    from .mapio import MAP_SUFFIXES

    named: dict[str, Path] = {}
    for entry in entries:
        name, sep, path = entry.partition("=")
        if not sep:
            path = entry
            name = next((entry[:-len(s)] for s in MAP_SUFFIXES if entry.lower().endswith(s)), entry)
            name = Path(name).name
        if not name or not path:
            raise InputError(f"--map {entry!r}: give NAME=PATH or PATH")
        if name in named:
            raise InputError(f"two maps are named {name!r}; give distinct names with NAME=PATH")
        named[name] = Path(path)
    return named


def _run_evaluate(argv: Sequence[str]) -> int:
    from .evaluate import evaluate
    from .mapio import check_writable_folder, read_map
    from .report import check_report_dir, write_report

    args = _evaluate_parser().parse_args(argv)
    _configure_logging(args.quiet)
    out_dir = Path(args.outputDir)
    check_report_dir(out_dir, args.force)  # fail before the measures, not after them
    check_writable_folder(out_dir.resolve().parent)

    def read(path) -> "Map":
        m = read_map(path)
        return m.with_voxel_size(args.samplingRate) if args.samplingRate is not None else m

    maps = {name: read(path) for name, path in _named_map_paths(args.maps or []).items()}
    halves = tuple(read(p) for p in args.halfMaps) if args.halfMaps else None
    enhanced = tuple(read(p) for p in args.enhancedHalves) if args.enhancedHalves else None
    mask = read(args.mask) if args.mask else None
    structure = Path(args.atomicModel) if args.atomicModel else None
    results = evaluate(maps, halves, structure, args.resolution, mask, enhanced_halves=enhanced)
    paths = write_report(results, out_dir, maps, force=args.force)
    if "halves_check" in results:
        print(f"halves check: {results['halves_check']['verdict']}")
    print(f"wrote {paths['html']}")
    return 0


def _run_enhance(argv: Sequence[str]) -> int:
    from . import batch
    from .devices import keep_freed_memory
    from .pipeline import EnhanceOptions
    from .mapio import read_map
    from .models import download, registry
    from .models.store import HALVES_NORMALIZATIONS, read_metadata

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
    if args.confidence and args.confidenceAugmentations == 1 and not args.halfMap2:
        parser.error("--confidence with --confidenceAugmentations 1 needs half maps (-i2): one prediction has no spread")
    # The bundled half-map model needs two halves and the default mode (it measures the noise itself).
    use_halves = bool(args.halfMap2) and not (args.legacy or args.noiseStats or args.binaryMask)
    model_json = registry.resolve_model(args.processingType, args.deepLearningModelPath,
                                        masked=args.binaryMask is not None, halves=use_halves)
    pair_model = read_metadata(model_json)["normalization"] in HALVES_NORMALIZATIONS
    if args.confidence and args.confidenceAugmentations == 1 and pair_model:
        parser.error("--confidence with --confidenceAugmentations 1: the half-map model predicts from both halves "
                     "at once, so one prediction has no spread; give 8 or 24")
    jobs = batch.jobs_for(args.inputMap, args.halfMap2 or [], Path(args.outputMap), confidence=args.confidence,
                          separate_halves=bool(args.halfMap2) and not pair_model, voxel_size=args.samplingRate)
    options = EnhanceOptions(
        legacy=args.legacy, noise_stats=tuple(args.noiseStats) if args.noiseStats else None,
        blending=args.blending, stride=args.stride,
        cleaning_strength=None if args.cleaningStrengh == -1 else args.cleaningStrengh,
        gpu_ids=args.gpuIds, batch_size=args.batch_size, precision=args.precision, threads=args.threads,
        progress=not args.quiet, skip_solvent=not args.predictSolvent)
    keep_freed_memory()  # this process is ours: reuse the network's freed activations
    settings = dict(mask=read_map(args.binaryMask, args.samplingRate) if args.binaryMask else None,
                    augmentations=args.confidenceAugmentations if args.confidence else None, overwrite=args.force)
    if len(jobs) > 1:
        return batch.command_line(jobs, model_json, options, describe=_error_text, **settings)
    batch.run(jobs, model_json, options, keep_going=False, **settings,
              report=lambda outcome: log.info("wrote %s", ", ".join(map(str, outcome.written))))
    return 0


def _message(error: DeepEMhancerError) -> str:
    """The error's line, naming the flag of the setting at fault."""
    flag = FLAGS.get(error.setting or "")
    return f"{error} ({flag})" if flag and flag not in str(error) else str(error)


def _error_text(error: BaseException) -> str:
    """The one line (after 'error: ') for an error that ends a run or fails one map of a batch."""
    from .batch import error_text

    return _message(error) if isinstance(error, DeepEMhancerError) else error_text(error)


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """SIGTERM stops the run like Ctrl-C while main() runs (signals can be caught in the main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    global _HANDLER_PID
    _HANDLER_PID = os.getpid()
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    logger_state = _logger_state()
    try:
        with _sigterm_as_interrupt():
            return _dispatch(argv)
    except (DeepEMhancerError, OSError, MemoryError) as error:
        print(f"deepemhancer: error: {_error_text(error)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as stop:
        terminated = isinstance(stop, Terminated)
        what = stop.args[0] if stop.args else "no output was written"
        print(f"deepemhancer: {'terminated' if terminated else 'interrupted'}; {what}", file=sys.stderr)
        return 128 + (signal.SIGTERM if terminated else signal.SIGINT)
    finally:
        _restore_logger(logger_state)


def _dispatch(argv: list[str]) -> int:
    if argv[:1] == ["models"]:
        _configure_logging(False)
        return _run_models(argv[1:])
    if argv[:1] == ["evaluate"]:
        return _run_evaluate(argv[1:])
    if argv[:1] in (["train"], ["validate"]):
        from .train_cli import main as train_main

        return train_main(argv)
    return _run_enhance(argv)


if __name__ == "__main__":
    sys.exit(main())
