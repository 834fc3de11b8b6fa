"""Many maps with one model: the command line's several inputs and the plugin's set of volumes.

Each map, or pair of half maps, is a ``Job``: its inputs and where its results go. ``run`` checks
every job before the long part, loads the model once, then enhances and writes the jobs one after
another. A job that fails is reported and the others go on; a job's outputs (the map, its confidence
map, ...) appear together or not at all, and an existing file is replaced only when allowed. A single
map is a batch of one that stops at its first error.
"""
from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from .errors import DeepEMhancerError, InputError
from .mapio import MAP_SUFFIXES, Map, check_output_path, map_file_bytes, read_header, read_map, write_maps

log = logging.getLogger("deepemhancer")

RESULT_TAG = "_deepemhancer"  # a map's result in an output folder: NAME.mrc -> NAME_deepemhancer.mrc
# What one job may fail with while the others go on (anything else is a bug, or an interruption).
FAILURES = (DeepEMhancerError, OSError, MemoryError)


@dataclass(frozen=True)
class Job:
    """One map, or half map 1 and half map 2, and where the results go.

    confidence: where the confidence map goes (``run`` with ``augmentations``); enhanced_halves: where
    each half map enhanced on its own goes (a confidence run on half maps with a single-map model).
    voxel_size: replaces the inputs' header voxel size where it differs.
    """

    inputs: tuple[Path, ...]
    output: Path
    confidence: Path | None = None
    enhanced_halves: tuple[Path, Path] | None = None
    voxel_size: float | None = None

    def __post_init__(self) -> None:
        if len(self.inputs) not in (1, 2):
            raise InputError(f"give one map or two half maps, not {len(self.inputs)}")
        paths = {"inputs": tuple(Path(p) for p in self.inputs), "output": Path(self.output),
                 "confidence": Path(self.confidence) if self.confidence else None,
                 "enhanced_halves": tuple(Path(p) for p in self.enhanced_halves) if self.enhanced_halves else None}
        for name, value in paths.items():  # paths as given (text or Path), kept as Paths
            object.__setattr__(self, name, value)

    @property
    def outputs(self) -> tuple[Path, ...]:
        """Every file the job may write: the enhanced map first."""
        return (self.output, *((self.confidence,) if self.confidence else ()), *(self.enhanced_halves or ()))

    @property
    def name(self) -> str:
        return " + ".join(str(path) for path in self.inputs)


@dataclass(frozen=True)
class Outcome:
    """What became of a job: the files written, or the error that stopped it (one of FAILURES)."""

    job: Job
    written: tuple[Path, ...] = ()
    error: BaseException | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def error_text(error: BaseException) -> str:
    """One line for one of FAILURES: a DeepEMhancerError's own message, or what a failed disk or a
    lack of memory means for the user."""
    if isinstance(error, MemoryError):
        return "out of memory; close other programs, crop the box, or use a machine with more memory"
    if isinstance(error, OSError):  # the disk or the file system failed where no check could foresee it
        where = f"{error.filename}: " if error.filename else ""
        return f"{where}{error.strerror or error}; check free disk space and permissions"
    return str(error)


def sibling(output: Path, tag: str) -> Path:
    """``output`` with ``tag`` before its map suffix: out.mrc.gz -> out{tag}.mrc.gz."""
    stem, suffix = _split_suffix(output.name)
    return output.with_name(stem + tag + (suffix or ".mrc"))


def named_job(inputs: Sequence[str | Path], output: Path, *, confidence: bool = False, separate_halves: bool = False,
              voxel_size: float | None = None) -> Job:
    """A job writing ``output`` and, for a confidence map, OUTPUT_confidence beside it (and OUTPUT_half1,
    OUTPUT_half2 when the halves are enhanced on their own)."""
    halves = (sibling(output, "_half1"), sibling(output, "_half2")) if confidence and separate_halves else None
    return Job(tuple(inputs), output, confidence=sibling(output, "_confidence") if confidence else None,
               enhanced_halves=halves, voxel_size=voxel_size)


def jobs_for(first: Sequence[str | Path], second: Sequence[str | Path], output: Path, **naming) -> list[Job]:
    """One job per map, or per half map 1 with the half map 2 at the same place in ``second``.

    ``output`` is the enhanced map's file, or with several inputs the folder that gets
    NAME_deepemhancer.mrc for each input NAME.mrc. ``naming``: ``named_job``'s options.
    """
    if second and len(second) != len(first):
        raise InputError(f"{len(first)} input map(s) and {len(second)} second half map(s) were given; "
                         "give one second half map for each first one, in the same order", setting="halves")
    groups = [tuple(pair) for pair in zip(first, second)] if second else [(path,) for path in first]
    output = Path(output)
    if len(groups) == 1:
        return [named_job(groups[0], output, **naming)]
    if not output.is_dir():
        raise InputError(f"{len(groups)} maps are enhanced into a folder, and {output} is not one; "
                         "create it first, or name an existing folder", setting="output")
    return [named_job(group, output / result_name(Path(group[0])), **naming) for group in groups]


def result_name(source: Path) -> str:
    """The file name of a map's result in an output folder: NAME.mrc -> NAME_deepemhancer.mrc."""
    stem, suffix = _split_suffix(source.name)
    return stem + RESULT_TAG + (suffix or ".mrc")


def run(jobs: Sequence[Job], model_json: str | Path, options, *, mask: Map | None = None,
        augmentations: int | None = None, overwrite: bool = False, keep_going: bool = True,
        report: Callable[[Outcome], None] | None = None) -> list[Outcome]:
    """Enhance every job with one model, loaded once; the outcomes in the jobs' order.

    First every job is checked (inputs readable as maps, outputs writable, with room, and not there
    unless ``overwrite``), then the model is loaded and the jobs are enhanced in order. ``mask``: the
    binary mask of masked normalisation, the same for every job (``pipeline.enhance``'s). ``augmentations``:
    also a confidence map (``confidence.enhance_with_confidence``; every job then names its file).
    ``keep_going``: a job failing with one of FAILURES becomes a failed Outcome and the rest go on;
    otherwise the error is raised. ``report`` gets each Outcome when it is known (failed checks first).
    A model that cannot be loaded, or jobs that would write one file twice, stop everything.
    """
    from .models.loaded import load_model

    _check_distinct(jobs)
    if augmentations is not None and any(job.confidence is None for job in jobs):
        raise InputError("a confidence map needs a file name for every map")
    outcomes: dict[int, Outcome] = {}

    def settle(index: int, outcome: Outcome) -> None:
        outcomes[index] = outcome
        if report is not None:
            report(outcome)

    ready = []
    for index, job in enumerate(jobs):
        try:
            _check(job, overwrite)
            ready.append(index)
        except FAILURES as error:
            if not keep_going:
                raise
            settle(index, Outcome(job, error=error))
    model = load_model(model_json) if ready else None
    if model is not None:
        log.info("model %s (%s)", model.name, model_json)
    for index in ready:
        if len(jobs) > 1:
            log.info("map %d of %d: %s", index + 1, len(jobs), jobs[index].name)
        try:
            written = _enhance(jobs[index], model, options, mask, augmentations, overwrite)
        except FAILURES as error:
            if not keep_going:
                raise
            settle(index, Outcome(jobs[index], error=error))
        else:
            settle(index, Outcome(jobs[index], written=written))
    return [outcomes[index] for index in range(len(jobs))]


def command_line(jobs: Sequence[Job], model_json: str | Path, options, *, describe: Callable[[BaseException], str],
                 **settings) -> int:
    """``run`` for the command line: one line per map on standard output as it finishes ("enhanced"
    or "FAILED" with ``describe(error)``), a closing line on standard error naming the maps that
    failed; the exit status (1 when any failed). An interruption names what is complete in its
    message. ``settings``: ``run``'s."""
    enhanced = []

    def print_outcome(outcome: Outcome) -> None:
        if outcome.ok:
            enhanced.append(outcome)
            print(f"enhanced {outcome.job.name} -> {', '.join(map(str, outcome.written))}", flush=True)
        else:
            print(f"FAILED   {outcome.job.name}: {describe(outcome.error)}", flush=True)

    try:
        outcomes = run(jobs, model_json, options, report=print_outcome, **settings)
    except KeyboardInterrupt as stop:
        if enhanced:  # the line that ends the run says what is complete
            raise type(stop)(f"the map in progress was not written; the {len(enhanced)} enhanced above are "
                             "complete") from None
        raise
    failed = [outcome.job.name for outcome in outcomes if not outcome.ok]
    if failed:
        rest = "the others were written" if len(failed) < len(outcomes) else "nothing was written"
        print(f"deepemhancer: error: {len(failed)} of {len(outcomes)} maps failed ({'; '.join(failed)}); {rest}",
              file=sys.stderr)
        return 1
    return 0


def _split_suffix(name: str) -> tuple[str, str]:
    """(stem, map suffix as written) of a file name; the suffix is "" when it is not a map's."""
    suffix = next((s for s in MAP_SUFFIXES if name.lower().endswith(s)), "")
    return (name[:-len(suffix)], name[-len(suffix):]) if suffix else (name, "")


def _check_distinct(jobs: Sequence[Job]) -> None:
    """No file written twice, and none read by one job and written by another."""
    writers: dict[Path, Job] = {}
    inputs = {path.resolve() for job in jobs for path in job.inputs}
    for job in jobs:
        for path in job.outputs:
            key = path.resolve()
            if key in writers:
                raise InputError(f"{writers[key].name} and {job.name} would both be written to {path}; "
                                 "give the inputs distinct file names", setting="output")
            if key in inputs:
                raise InputError(f"{path} is an input and would also be written as an output; "
                                 "choose another output", setting="output")
            writers[key] = job


def _check(job: Job, overwrite: bool) -> None:
    """Before the long part: the inputs are maps, and every output can be written."""
    shapes = [read_header(path)[0] for path in job.inputs]  # every input is read as a map header
    for path in job.outputs:  # each output is the size of the (first) input
        check_output_path(path, overwrite, map_file_bytes(shapes[0]) * len(job.outputs))


def _enhance(job: Job, model, options, mask: Map | None, augmentations: int | None,
             overwrite: bool) -> tuple[Path, ...]:
    """Read, enhance and write one job; the files written."""
    from .pipeline import enhance

    maps = [read_map(path, job.voxel_size) for path in job.inputs]
    source = maps[0] if len(maps) == 1 else maps
    if augmentations is None:
        results = [enhance(source, model, options, mask=mask)]
    else:
        from .confidence import enhance_with_confidence

        found = enhance_with_confidence(source, model, options, augmentations, mask=mask)
        results = [found.map, found.confidence, *(found.half_maps or ())]
    written = list(zip(results, job.outputs))
    write_maps(written, overwrite)
    if not model.metadata.get("trained", True):
        log.warning("%s was made by an UNTRAINED demonstration network, not a real enhancement", job.output)
    return tuple(path for _, path in written)
