from __future__ import annotations

import importlib.util
import os

from pwem.viewers import EmProtocolViewer
from pyworkflow.protocol import params
from pyworkflow.viewer import DESKTOP_TKINTER, View

from ..constants import CHIMERAX_SCRIPT, FSC_PNG, HALVES_CHECK_PNG, SLICES_PNG, VIEWER_AVERAGE_FILE
from ..protocols import ProtDeepEMhancer, ProtDeepEMhancerHalfMapFSC, ProtDeepEMhancerMask, ProtDeepEMhancerSharpen
from . import comparison


class PngView(View):
    """Shows a PNG in a Scipion plot window."""

    def __init__(self, path: str, title: str):
        self.path = path
        self.title = title

    def show(self):
        import matplotlib.image as mpimg
        from pyworkflow.gui.plotter import Plotter

        image = mpimg.imread(self.path)
        plotter = Plotter(windowTitle=self.title, figsize=(image.shape[1] / 100, image.shape[0] / 100))
        axes = plotter.getFigure().add_axes([0, 0, 1, 1])
        axes.imshow(image)
        axes.axis("off")
        plotter.show()


def chimerax_program() -> str | None:
    """ChimeraX as Scipion's chimera plugin installs it, or None."""
    from pwem.viewers.viewer_chimera import Chimera

    program = Chimera.getProgram()
    return program if program and os.path.exists(program) else None


def chimerax_missing() -> str:
    """What is missing for Scipion to start ChimeraX: the chimera plugin, or ChimeraX itself."""
    from pwem.viewers.viewer_chimera import Chimera

    if importlib.util.find_spec("chimera") is None:
        return ("ChimeraX was not found: Scipion starts it through the scipion-em-chimera plugin, which is not "
                "installed ('scipion3 installp -p scipion-em-chimera', then 'scipion3 installb chimerax').")
    return (f"ChimeraX is not installed where the chimera plugin looks ({Chimera.getProgram()}): install it "
            f"with 'scipion3 installb chimerax', or set CHIMERA_HOME in scipion.conf to your ChimeraX folder.")


class DeepEMhancerComparisonViewer(EmProtocolViewer):
    """Raw, B-factor-sharpened and enhanced maps of one data set side by side: central slices, the
    half-map FSC and a ChimeraX session. Every finished run of this plugin on the same half maps
    (or the same map) takes part, whichever of them is opened."""
    _label = "compare raw, sharpened and enhanced maps"
    _targets = [ProtDeepEMhancer, ProtDeepEMhancerHalfMapFSC, ProtDeepEMhancerSharpen, ProtDeepEMhancerMask]
    _environments = [DESKTOP_TKINTER]

    def _defineParams(self, form):
        form.addSection(label="Comparison")
        form.addParam("displaySlices", params.LabelParam, label="Central slices",
                      help="The three central sections of every map, each scaled from its 1st to 99.9th percentile.")
        form.addParam("displayFsc", params.LabelParam, label="Half-map FSC",
                      help="The half-map FSC curves with their 0.143 resolution; for an enhancement run that "
                           "enhanced the halves on their own, also their FSC against the raw halves'.")
        form.addParam("enclosedVolume", params.FloatParam, default=0.0,
                      label="Volume inside the contours (Å³, 0: automatic)",
                      help="Every map is contoured at the level that encloses this volume. Automatic: the "
                           "volume of a 'tight mask' of the same data when there is one, else 1% of the box.")
        form.addParam("displayChimerax", params.LabelParam, label="Maps in ChimeraX",
                      help="Opens the maps tiled, at their sampling rate and origin, with comparable contours.")

    def _getVisualizeDict(self):
        return {"displaySlices": self._showSlices, "displayFsc": self._showFsc,
                "displayChimerax": self._showChimerax}

    def _chain(self) -> comparison.Chain:
        if isinstance(self.protocol, ProtDeepEMhancer) and self.protocol.usesSet():
            return comparison.set_chain(self.protocol)
        chain = comparison.collect_chain(self.protocol, self.getProject().getRuns())
        reference = self.protocol.getReferenceVolume()
        if reference is not None:
            comparison.ensure_raw(chain, reference, self.protocol._getExtraPath(), VIEWER_AVERAGE_FILE)
        return chain

    def _showSlices(self, param=None):
        chain = self._chain()
        if not chain.maps:
            return [self.infoMessage("No finished map of this data set to show yet.", "Comparison")]
        path = comparison.write_slices(chain, self.protocol._getExtraPath(SLICES_PNG))
        return [PngView(path, "Raw / sharpened / enhanced: central slices")]

    def _showFsc(self, param=None):
        path = comparison.write_fsc(self._chain(), self.protocol._getExtraPath(FSC_PNG))
        if path is None:
            return [self.infoMessage("This data set has no half maps, so no half-map FSC.", "Comparison")]
        views = [PngView(path, "Half-map FSC")]
        check = comparison.write_halves_check(self.protocol, self.protocol._getExtraPath(HALVES_CHECK_PNG))
        if check is not None:
            views.append(PngView(check, "Independent halves: raw and enhanced"))
        return views

    def _showChimerax(self, param=None):
        from pwem.viewers.viewer_chimera import ChimeraView

        chain = self._chain()
        if not chain.maps:
            return [self.infoMessage("No finished map of this data set to show yet.", "Comparison")]
        script = os.path.abspath(self.protocol._getExtraPath(CHIMERAX_SCRIPT))
        comparison.write_chimerax(chain, script, self.enclosedVolume.get() or 0.0)
        if chimerax_program() is not None:
            return [ChimeraView(script)]
        return [self.infoMessage(
            f"{chimerax_missing()}\n\nThe script is ready at:\n{script}\n\nOpen it with:  chimerax {script}\n"
            f"or, in ChimeraX:  open {script}", "ChimeraX script")]
