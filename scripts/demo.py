"""The README's main job: enhance the bundled EMD-3488 example with the default model.

Writes demo_output/emd_3488_enhanced.mrc and demo_output/emd_3488_slices.png (central sections
before and after). It runs the real command line, so it shows exactly what a user's run does.
"""
from __future__ import annotations

import sys
from pathlib import Path

from deepemhancer.cli import main as deepemhancer_main
from deepemhancer.mapio import read_map
from deepemhancer.models import registry
from deepemhancer.models.store import read_metadata
from deepemhancer.plots import save_central_slices

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "emd3488"
OUTPUT = REPO / "demo_output"


def main() -> int:
    OUTPUT.mkdir(exist_ok=True)
    source = EXAMPLE / "emd_3488.mrc.gz"
    enhanced = OUTPUT / "emd_3488_enhanced.mrc"
    figure = OUTPUT / "emd_3488_slices.png"
    model = read_metadata(registry.resolve_model())
    label = model["name"] if model.get("trained", True) else f"{model['name']} (UNTRAINED demo network)"
    print(f"demo: enhancing {source.relative_to(REPO)} with model {label} on the CPU")
    code = deepemhancer_main(["-i", str(source), "-o", str(enhanced), "-g", "-1", "--force"])
    if code != 0:
        return code
    save_central_slices([read_map(source), read_map(enhanced)], ["EMD-3488 input", f"enhanced, {label}"],
                        figure, suptitle=None if model.get("trained", True) else
                        "UNTRAINED network: this shows the pipeline, not a real enhancement")
    print(f"demo: wrote {enhanced.relative_to(REPO)} and {figure.relative_to(REPO)}")
    if not model.get("trained", True):
        print("demo: NOTE the bundled model is an untrained network until our trained model is bundled; "
              "install the official weights with 'deepemhancer models download' for real results")
    return 0


if __name__ == "__main__":
    sys.exit(main())
