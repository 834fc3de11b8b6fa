"""Screenshots of the plugin in Scipion's own windows, on a virtual display: the project window (the
protocol tree with our four protocols, the runs of a small chain, the summary of an enhancement of a
set of volumes), the enhance form (its Input and Enhancement tabs) and the model list of its wizard.

The project is made in a temporary Scipion home (as the tests make theirs) from synthetic maps:
import (with half maps) -> half-map FSC -> tight mask -> B-factor sharpening -> enhancement with the
bundled half-map model; and three classes, one of them empty, enhanced as a set. The windows are
pyworkflow's, as `scipion3 project NAME` opens them.

Needs Xvfb and ImageMagick's `import` (Debian: apt-get install -y xvfb imagemagick) and the
repository's environment (`make test` makes .venv). Takes about a minute:

    .venv/bin/python scripts/screenshots.py              # PNGs into docs/images/
    .venv/bin/python scripts/screenshots.py --out /tmp/shots --display :42
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROJECT = "DeepEMhancerScreenshots"
SCREEN = "1440x900x24"
PAUSE_MS = 2500  # between GUI steps: time for windows to map and draw


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images", help="folder for the PNGs")
    parser.add_argument("--display", default=":99", help="X display number for Xvfb")
    args = parser.parse_args()
    for program in ("Xvfb", "import"):
        if shutil.which(program) is None:
            sys.exit(f"screenshots: {program} not found; install it: apt-get install -y xvfb imagemagick")
    args.out.mkdir(parents=True, exist_ok=True)
    home = Path(tempfile.mkdtemp(prefix="deepemhancer-screenshots-"))
    display = subprocess.Popen(["Xvfb", args.display, "-screen", "0", SCREEN, "-nolisten", "tcp"],
                               stderr=subprocess.DEVNULL)
    try:
        _wait_for_display(args.display)
        os.environ["DISPLAY"] = args.display
        sys.path.insert(0, str(ROOT))
        from conftest import use_scipion_home

        use_scipion_home(home)  # before pyworkflow is imported
        runs = make_project(home)
        shots = take_screenshots(runs, args.out)
    finally:
        display.terminate()
        display.wait()
        shutil.rmtree(home, ignore_errors=True)
    for path in shots:
        print(f"wrote {path}")
    return 0


def _wait_for_display(display: str) -> None:
    socket = Path("/tmp/.X11-unix") / f"X{display.lstrip(':')}"
    for _ in range(100):
        if socket.exists():
            return
        time.sleep(0.1)
    sys.exit(f"screenshots: Xvfb did not start on {display}")


def make_project(home: Path) -> dict:
    """The project and its runs: a chain on one volume with half maps, and a set of three classes."""
    import numpy as np
    from pwem.protocols import ProtImportVolumes
    from pyworkflow.project import Manager

    from deepemhancer_plugin.constants import INPUT_SET, MASK_FROM_MAP, NORM_NOISE_STATS, THRESHOLD_VOLUME
    from deepemhancer_plugin.protocols import (ProtDeepEMhancer, ProtDeepEMhancerHalfMapFSC, ProtDeepEMhancerMask,
                                               ProtDeepEMhancerSharpen)
    from deepemhancer_plugin.tests.helpers import SAMPLING, half_maps, molecule, write_mrc

    project = Manager().createProject(PROJECT)
    os.chdir(project.getPath())  # Scipion works with paths relative to the project folder
    data = home / "maps"
    (data / "classes").mkdir(parents=True)

    def launch(cls, label=None, **settings):
        """A run, named ``label`` as a user would rename it, else by its default name."""
        run = project.newProtocol(cls, **settings)
        if label:
            run.setObjLabel(label)
        project.launchProtocol(run, wait=True)
        if not run.isFinished():
            log = Path(run.getLogPaths()[1]).read_text().strip().splitlines()
            sys.exit(f"screenshots: the run {label!r} failed: {log[-1] if log else 'no log'}")
        return run

    halves = [write_mrc(data / f"half{i}.mrc", half) for i, half in enumerate(half_maps(), 1)]
    refined = launch(ProtImportVolumes, "import refined map", filesPath=write_mrc(data / "refined.mrc", molecule()),
                     samplingRate=SAMPLING, setHalfMaps=True, half1map=halves[0], half2map=halves[1])
    # Our runs keep their default names: those are what the screenshots check.
    fsc = launch(ProtDeepEMhancerHalfMapFSC, inputVolume=refined.outputVolume)
    mask = launch(ProtDeepEMhancerMask, inputVolume=fsc.outputVolume, source=MASK_FROM_MAP,
                  thresholdMode=THRESHOLD_VOLUME, enclosedVolume=4000.0, softEdge=4.0)
    launch(ProtDeepEMhancerSharpen, inputVolume=fsc.outputVolume, inputMask=mask.outputMask)
    launch(ProtDeepEMhancer, inputVolume=fsc.outputVolume, useHalfMaps=True, useGpu=False, numberOfThreads=1)

    rng = np.random.default_rng(0)
    noise = 0.25  # the classes' solvent noise, given as noise statistics (these small boxes hold little solvent)
    for number in (1, 2, 3):  # class 2 is empty: the set run enhances the others and names it
        density = np.zeros_like(molecule()) if number == 2 else molecule(seed=number) + rng.normal(0, noise, (40,) * 3)
        write_mrc(data / "classes" / f"run_class{number:03d}.mrc", density)
    classes = launch(ProtImportVolumes, "import 3D classes", filesPath=str(data / "classes"),
                     filesPattern="run_class*.mrc", samplingRate=SAMPLING)
    enhanceSet = launch(ProtDeepEMhancer, "DeepEMhancer - enhance 3D classes", inputChoice=INPUT_SET,
                        inputVolumes=classes.outputVolumes, normalization=NORM_NOISE_STATS, noiseStd=noise,
                        useGpu=False, numberOfThreads=1)
    return {"project": project, "average": fsc.outputVolume, "enhanceSet": enhanceSet}


def take_screenshots(runs: dict, out: Path) -> list[Path]:
    """Open the project window and walk through the views, one step every PAUSE_MS."""
    from pyworkflow.gui.project import ProjectWindow

    from deepemhancer_plugin.protocols import ProtDeepEMhancer

    project = runs["project"]
    window = ProjectWindow(project.getPath())
    view = window.getViewWidget()
    shots: list[Path] = []
    state: dict = {}

    def snap(widget, name: str) -> None:
        widget.update_idletasks()
        path = out / f"{name}.png"
        subprocess.run(["import", "-window", str(widget.winfo_id()), str(path)], check=True)
        shots.append(path)

    def open_our_protocols() -> None:
        window.root.geometry(f"{window.root.winfo_screenwidth()}x{window.root.winfo_screenheight()}+0+0")
        # (what a window manager does with Scipion's maximise request; Xvfb runs none)
        tree = view.protTree
        for item in _tree_items(tree):
            if tree.item(item, "text") in ("3D", "Postprocess"):
                tree.item(item, open=True)
        ours = [item for item in _tree_items(tree) if tree.item(item, "text").startswith("DeepEMhancer")]
        tree.see(ours[-1])
        node = view.runsGraph.getNode(str(runs["enhanceSet"].getObjId()))
        view._selectNode(node)  # its summary in the lower panel

    def project_window() -> None:
        snap(window.root, "scipion_project")

    def open_form() -> None:
        state["form"] = None
        # A new run on the average with half maps, as a user starts one: the model list then has both kinds.
        prot = project.newProtocol(ProtDeepEMhancer, inputVolume=runs["average"], useHalfMaps=True)
        view._openProtocolForm(prot)  # blocks in the form's event loop

    def form_input() -> None:
        state["form"] = _toplevel(window.root, "Protocol Run")
        snap(state["form"], "scipion_enhance_form")

    def select_enhancement() -> None:
        _notebook(state["form"]).select(1)  # Enhancement: normalisation and the Model field

    def form_enhancement() -> None:
        snap(state["form"], "scipion_enhance_form_model")

    def open_wizard() -> None:
        form_window = _form_window(view)
        form_window.widgetDict["modelName"]._showWizard()  # blocks in the dialog's event loop

    def wizard_list() -> None:
        dialog = _toplevel(window.root, "DeepEMhancer models")
        snap(dialog, "scipion_enhance_models")
        dialog.destroy()

    def close() -> None:
        window.root.master.destroy()  # pyworkflow's hidden Tk root: every window and event loop ends

    steps = [open_our_protocols, project_window, open_form, form_input, select_enhancement, form_enhancement,
             open_wizard, wizard_list, close]

    def run(index: int = 0) -> None:
        if index + 1 < len(steps):
            window.root.after(PAUSE_MS, run, index + 1)  # scheduled first: some steps block in a dialog
        steps[index]()

    window.root.after(4 * PAUSE_MS, run)
    window.show()
    return shots


def _tree_items(tree, parent: str = "") -> list[str]:
    items = []
    for item in tree.get_children(parent):
        items += [item] + _tree_items(tree, item)
    return items


def _toplevel(root, title: str):
    """The open window whose title contains ``title``."""
    import tkinter as tk

    def descendants(widget):
        for child in widget.winfo_children():
            yield child
            yield from descendants(child)

    windows = [w for w in descendants(root) if isinstance(w, tk.Toplevel)]
    found = [w for w in windows if title in w.title()]
    if not found:
        raise RuntimeError(f"no window titled {title!r} among {[w.title() for w in windows]}")
    return found[-1]


def _notebook(widget):
    from tkinter import ttk

    if isinstance(widget, ttk.Notebook):
        return widget
    for child in widget.winfo_children():
        found = _notebook(child)
        if found is not None:
            return found
    return None


def _form_window(view):
    """The FormWindow object behind the open form (the project window keeps no handle on it)."""
    import gc

    from pyworkflow.gui.form import FormWindow

    return next(obj for obj in gc.get_objects() if isinstance(obj, FormWindow) and obj.root.winfo_exists())


if __name__ == "__main__":
    sys.exit(main())
