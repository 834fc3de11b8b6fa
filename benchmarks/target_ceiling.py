"""How far can training take the model's scores? The training target itself (the masked sharp map
low-passed to the local resolution the halves support, ``train.simulate``), made for the simulated
cases of the LocScale side by side exactly as training makes it, scored with the project's one
scorer (``metrics.model_agreement``) beside a model's validation report and LocScale's recorded
scores (``locscale_results/locscale_side_by_side.json``).

A network that reproduced its targets perfectly would score as the target does: where the target
loses a case, no amount of training on such targets wins it.

    .venv/bin/python benchmarks/target_ceiling.py --against-report docs/models/validation/open-halves.json
    .venv/bin/python benchmarks/target_ceiling.py --against-report R.json --set simulation.target_lowpass_end=1.15

About 30 s on the 2-core development machine. Prints a markdown table and how often each map is better than LocScale.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from locscale_side_by_side import CONFIG, RESOLUTIONS, RESULTS, SEED, better  # noqa: E402

from deepemhancer.mapio import Map  # noqa: E402
from deepemhancer.halves_input import baseline_sharpening  # noqa: E402
from deepemhancer.metrics import model_agreement, model_reference  # noqa: E402
from deepemhancer.train import validate  # noqa: E402
from deepemhancer.train.config import make_config  # noqa: E402
from deepemhancer.train.loop import training_split  # noqa: E402

LOCSCALE_AS_WRITTEN = "locscale_pseudomodel"
METRICS = ("fsc05", "cc_mask", "lc7")


def target_scores(overrides: list[str]) -> dict[str, dict[str, float]]:
    """Each simulated case's training target, scored as validation scores a map."""
    config = make_config(str(CONFIG), overrides)
    scores = {}
    for structure in validate.smallest(training_split(config)[2], 8):
        for resolution in RESOLUTIONS:
            sim = validate.held_out_simulation(structure, SEED, config.settings(), resolution)
            half1 = Map(sim.half1, validate.simulated_geometry(sim))
            # scored at the halves' measured resolution, as validation scores
            measured = baseline_sharpening(half1, half1.with_data(sim.half2)).resolution
            reference = model_reference(structure, half1, measured)
            agreement = model_agreement(sim.target, reference)
            scores[structure.name.split("_")[0] + f"@{resolution:g}"] = {
                "fsc05": agreement.fsc05, "cc_mask": agreement.cc_mask, "lc7": agreement.lc7}
    return scores


def table(targets: dict[str, dict[str, float]], model: dict[str, dict], locscale: dict[str, dict]) -> str:
    def cell(s: dict | None) -> str:
        return "failed" if s is None else f"{s['fsc05']:.2f} / {s['cc_mask']:.3f} / {s['lc7']:.3f}"

    lines = ["| case | LocScale, as written | model | training target |", "|---|---|---|---|"]
    lines += [f"| {name} | {cell(locscale.get(name))} | {cell(model.get(name))} | {cell(t)} |"
              for name, t in targets.items()]
    for label, arm in (("model", model), ("training target", targets)):
        pairs = [(arm[n], locscale[n]) for n in targets if n in arm and locscale.get(n) is not None]
        wins = {m: sum(better(ours[m], theirs[m], m) for ours, theirs in pairs) for m in METRICS}
        ties = sum(round(ours["fsc05"], 2) == round(theirs["fsc05"], 2) for ours, theirs in pairs)
        lines.append(f"- {label} better than LocScale as written on CC_mask in {wins['cc_mask']}, LC7 in "
                     f"{wins['lc7']}, FSC0.5 in {wins['fsc05']} of {len(pairs)} (FSC0.5 equal to 0.01 Å in {ties})")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--against-report", type=Path, required=True, metavar="REPORT_JSON",
                        help="a model's validation report (deepemhancer validate's JSON) on these cases")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override the training config's value, as deepemhancer train --set does")
    args = parser.parse_args()
    if not args.against_report.is_file():
        parser.error(f"{args.against_report} does not exist; give a validation report (deepemhancer validate's JSON)")
    report = json.loads(args.against_report.read_text())
    recorded = json.loads((RESULTS / "locscale_side_by_side.json").read_text())
    locscale = {c["name"]: c["scores"].get(LOCSCALE_AS_WRITTEN) for c in recorded["cases"]}
    model = {c["name"]: c["scores"]["model"] for c in report["cases"]}
    print(table(target_scores(args.overrides), model, locscale), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
