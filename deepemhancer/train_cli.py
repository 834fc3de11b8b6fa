"""`deepemhancer train` and `deepemhancer validate`: train our own model on maps simulated from
atomic models, and score a model against B-factor sharpening on held-out structures and EMD-3488."""
from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Sequence

from .errors import InputError

log = logging.getLogger("deepemhancer")


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="training config file (.toml or .json); see configs/")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override one config value (repeatable), e.g. --set steps=200")


def train_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="deepemhancer train",
                                     description="Train a U-Net on half maps simulated from atomic models.")
    _common(parser)
    parser.add_argument("--out", help="run folder (checkpoint, log.jsonl, pool cache, model); default: config 'out'")
    parser.add_argument("--steps", type=int, help="total optimisation steps (overrides the config)")
    parser.add_argument("--no-resume", action="store_true", help="start afresh even if the run folder has a checkpoint")
    parser.add_argument("--pool-cache", help="folder caching simulated maps (default: <out>/pool)")
    return parser


def validate_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="deepemhancer validate",
                                     description="Compare a model with the raw average and B-factor sharpening.")
    _common(parser)
    parser.add_argument("--model", required=True, help="model JSON (or a name the registry knows)")
    parser.add_argument("--count", type=int, default=0,
                        help="held-out structures to score, smallest first (default 0: all)")
    parser.add_argument("--resolutions", default="3,4.5,6",
                        help="comma-separated half-map resolutions (Å) each structure is simulated at (default "
                             "3,4.5,6); 'random' draws one per structure from the config's range")
    parser.add_argument("--halves-check", type=int, default=2, help="cases that also get the independent-halves check")
    parser.add_argument("--groups", type=int, default=0,
                        help="this many held-out structures (smallest first) are also scored, at each resolution, "
                             "with ligands, hemes and glycans added (default 0)")
    parser.add_argument("--seed", type=int, default=7, help="simulation seed of the held-out maps (default 7)")
    parser.add_argument("--emd3488", default="../shared/data/maps/emd3488",
                        help="folder with emd_3488.mrc and 5me2.pdb; 'none' skips the real map")
    parser.add_argument("--stride", type=int, help="cube stride for enhance (default: the model's)")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (default 2)")
    parser.add_argument("--out", default="validation", help="writes OUT.md and OUT.json (default: validation)")
    return parser


def train_main(argv: Sequence[str]) -> int:
    from .train.config import make_config
    from .train.loop import train

    args = train_parser().parse_args(list(argv))
    overrides = list(args.overrides)
    if args.out:
        overrides.append(f"out={args.out}")
    if args.steps is not None:
        overrides.append(f"steps={args.steps}")
    config = make_config(args.config, overrides)
    result = train(config, resume=not args.no_resume,
                   pool_cache=Path(args.pool_cache) if args.pool_cache else None)
    print(f"trained to step {result.step} ({result.seconds:.0f} s of training); last loss {result.last_loss:.5f}; "
          f"model: {result.model_json}")
    return 0


def validate_main(argv: Sequence[str]) -> int:
    from .models.registry import resolve_model
    from .models.loaded import load_model
    from .pipeline import EnhanceOptions
    from .train import validate
    from .train.config import make_config
    from .train.loop import training_split

    args = validate_parser().parse_args(list(argv))
    if min(args.count, args.groups, args.halves_check) < 0:
        raise InputError("--count, --groups and --halves-check count cases: give 0 or more")
    config = make_config(args.config, args.overrides)
    path = Path(args.model)
    model = load_model(path if path.suffix == ".json" else resolve_model(args.model))
    options = EnhanceOptions(gpu_ids="-1", threads=args.threads, stride=args.stride, progress=False)
    resolutions = _resolutions(args.resolutions)
    _, _, held_out = training_split(config)
    results = []
    structures = validate.smallest(held_out, args.count or len(held_out))
    if args.emd3488 != "none":  # the real map first: it is in every partial report
        results.append(validate.emd3488_case(Path(args.emd3488), model, options, args.seed, args.halves_check > 0))
    cases = [(s, r, False) for s in structures for r in resolutions]
    cases += [(s, r, True) for s in validate.smallest(held_out, args.groups) for r in resolutions] if args.groups else []
    with tempfile.TemporaryDirectory() as scratch:
        for i, (structure, resolution, with_groups) in enumerate(cases):
            started = time.monotonic()
            name = (structure.name.split("_")[0] + ("+groups" if with_groups else "")
                    + ("" if resolution is None else f"@{resolution:g}"))
            scored = Path(scratch) / f"{name}.pdb" if with_groups else structure  # the model as simulated
            halves = validate.simulated_halves(structure, args.seed, config.settings(), resolution,
                                               groups_model=scored if with_groups else None)
            result = validate.evaluate_case(name, halves, scored, model, options, i < args.halves_check)
            result.with_groups = with_groups
            results.append(result)
            log.info("%s scored in %.0f s", name, time.monotonic() - started)
            _write_validation(args, path, results, resolutions)  # a long run can be read as it goes
    table, stats = _write_validation(args, path, results, resolutions)
    print(table)
    print("summary:", json.dumps(stats))
    return 0


def _write_validation(args: argparse.Namespace, model_path: Path, results: list, resolutions: list) -> tuple[str, dict]:
    """Write OUT.md and OUT.json for the cases scored so far; returns the table and the summary."""
    from .train import validate

    simulated = [r for r in results if r.name != "EMD-3488" and not r.with_groups]
    with_groups = [r for r in results if r.with_groups]
    table = validate.markdown_table(results)
    stats = validate.summary(simulated) if simulated else {}
    groups_stats = validate.summary(with_groups) if with_groups else {}
    by_resolution = {f"{r:g}": validate.summary(group) for r in resolutions if r is not None
                     for group in [[c for c in simulated if c.name.endswith(f"@{r:g}")]] if group}
    Path(f"{args.out}.md").write_text(table + "\nSimulated held-out summary: " + json.dumps(stats) + "\n" + "".join(
        f"At {r} Å: {json.dumps(group)}\n" for r, group in by_resolution.items())
        + (f"With ligands, hemes and glycans added: {json.dumps(groups_stats)}\n" if with_groups else ""))
    Path(f"{args.out}.json").write_text(json.dumps({
        "model": str(model_path), "stride": args.stride, "seed": args.seed, "summary": stats,
        "summary_by_resolution": by_resolution, "summary_with_groups": groups_stats,
        "cases": [{"name": r.name, "resolution": r.resolution, "notes": r.notes, "with_groups": r.with_groups,
                   "halves": None if r.halves is None else r.halves.to_dict(),
                   "scores": {a: {m: getattr(s, m) for m in (*validate.METRICS, "lc7_non_protein")}
                              for a, s in r.scores.items()}}
                  for r in results]}, indent=1))
    return table, stats


def _resolutions(text: str) -> list[float | None]:
    """``--resolutions``: 'random', or a comma-separated list of resolutions between 2 and 20 Å."""
    if text.strip() == "random":
        return [None]
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise InputError(f"--resolutions {text!r}: give comma-separated numbers of Å, e.g. 3,4.5,6, or 'random'") from None
    if not values or not all(2.0 <= v <= 20.0 for v in values):
        raise InputError(f"--resolutions {text!r}: each resolution must lie between 2 and 20 Å")
    return values


def main(argv: Sequence[str] | None = None) -> int:
    """`train ...` or `validate ...`, called by ``cli.main``, the one front door: its errors end the
    run there as every command's do (one line, status 1; a command line it cannot parse, 2)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = {"train": train_main, "validate": validate_main}
    if not argv or argv[0] not in commands:
        print("usage: deepemhancer {train,validate} ...", file=sys.stderr)
        return 2
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(message)s")
    return commands[argv[0]](argv[1:])
