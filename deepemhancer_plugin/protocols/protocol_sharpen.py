from __future__ import annotations

import os

from deepemhancer.metrics import HALF_MAP_FSC_THRESHOLD
from pwem.objects import FSC, Volume
from pwem.protocols import ProtAnalysis3D
from pyworkflow.protocol import params

from ..constants import OUTPUT_FSC, OUTPUT_VOLUME, SHARPENED_FILE, SHARPENING_FILE
from ..convert import output_volume, read_json, read_volume_file, write_json
from .inputs import HalfMapInput


class ProtDeepEMhancerSharpen(HalfMapInput, ProtAnalysis3D):
    """Global B-factor sharpening of two half maps, as RELION's postprocess does it: the baseline to
    compare an enhanced map with.

    The halves are averaged; each Fourier shell is weighted by the half-map FSC
    (sqrt(2 FSC / (1 + FSC)), Rosenthal & Henderson 2003); the B-factor is fitted on the Guinier plot
    between 10 Å and the FSC = 0.143 resolution (or given by you); the map is sharpened by it and
    low-pass filtered at the resolution. A detector MTF file (RELION STAR or two columns) is divided
    out first. A mask only shapes the FSC; the output map is not masked.
    """
    _label = "B-factor sharpening"
    _possibleOutputs = {OUTPUT_VOLUME: Volume, OUTPUT_FSC: FSC}

    def _defineParams(self, form):
        form.addSection(label="Input")
        self._defineInputParams(form)
        form.addParam("inputMask", params.PointerParam, pointerClass="VolumeMask", allowsNull=True,
                      label="Mask for the FSC (optional)",
                      help="A soft mask around the molecule: the FSC (and so the weighting and the resolution) "
                           "is the masked one, corrected by phase randomisation.")
        form.addSection(label="Sharpening")
        form.addParam("autoResolution", params.BooleanParam, default=True,
                      label="Resolution from the FSC?",
                      help="Yes: low-pass at the FSC = 0.143 resolution of the halves. No: give it.")
        form.addParam("resolution", params.FloatParam, default=4.0, condition="not autoResolution",
                      label="Resolution (Å)", help="Low-pass resolution, at least twice the sampling rate.")
        form.addParam("autoBfactor", params.BooleanParam, default=True, label="Fit the B-factor?",
                      help="Yes: fit it on the Guinier plot of the FSC-weighted map between the low-resolution "
                           "limit and the resolution. No: give it.")
        form.addParam("bFactor", params.FloatParam, default=100.0, condition="not autoBfactor",
                      label="B-factor to remove (Å²)",
                      help="Positive sharpens (RELION's --adhoc_bfac -100 is 100 here).")
        form.addParam("lowResolution", params.FloatParam, default=10.0, condition="autoBfactor",
                      expertLevel=params.LEVEL_ADVANCED, label="Guinier fit from (Å)",
                      help="Low-resolution end of the Guinier fit (RELION: 10 Å).")
        form.addParam("mtfFile", params.PathParam, default="", label="Detector MTF (optional)",
                      help="RELION's MTF STAR file (_rlnResolutionInversePixel, _rlnMtfValue) or a two-column text "
                           "file of frequency (1/pixel) and MTF.")
        form.addParam("mtfPixelSize", params.FloatParam, default=0.0, expertLevel=params.LEVEL_ADVANCED,
                      label="MTF pixel size (Å, 0: the map's)",
                      help="Pixel size of the micrographs the MTF refers to, when the map was rescaled.")

    # --------------------------- STEPS -------------------------------------------------
    def _insertAllSteps(self):
        mask = self._maskPath()
        settings = {"resolution": None if self.autoResolution.get() else self.resolution.get(),
                    "b_factor": None if self.autoBfactor.get() else self.bFactor.get(),
                    "low_resolution": self.lowResolution.get(),
                    "mtf": os.path.abspath(self.mtfFile.get()) if self.mtfFile.get() else "",
                    "mtf_pixel_size": self.mtfPixelSize.get() or None,
                    "mask": mask}
        self._insertFunctionStep(self.sharpenStep, self._sourceFiles(),
                                 self.getReferenceVolume().getSamplingRate(), settings, needsGPU=False)
        self._insertFunctionStep(self.createOutputStep, needsGPU=False)

    def sharpenStep(self, files, sampling, settings):
        from deepemhancer.mapio import read_map, write_map
        from deepemhancer.sharpen import read_mtf, sharpen

        half1, half2 = (read_volume_file(path, sampling) for path in files)
        result = sharpen(half1, half2, resolution=settings["resolution"], b_factor=settings["b_factor"],
                         low_resolution=settings["low_resolution"],
                         mtf=read_mtf(settings["mtf"]) if settings["mtf"] else None,
                         mtf_pixel_size=settings["mtf_pixel_size"],
                         mask=read_map(settings["mask"]).data if settings["mask"] else None)
        write_map(result.map, self._getExtraPath(SHARPENED_FILE), overwrite=True)
        return [self._getExtraPath(SHARPENED_FILE),
                write_json(self._getExtraPath(SHARPENING_FILE),
                           {**result.fsc.to_dict(), "masked": result.fsc_masking != "unmasked",
                            "b_factor": result.b_factor, "fitted": result.guinier is not None,
                            "resolution": result.resolution})]

    def createOutputStep(self):
        volume = output_volume(self._getExtraPath(SHARPENED_FILE), self.getReferenceVolume())
        self._defineVolumeAndFsc(volume, read_json(self._getExtraPath(SHARPENING_FILE)))

    # --------------------------- INFO --------------------------------------------------
    def getResult(self) -> dict | None:
        """B-factor, resolution and FSC of a finished run."""
        path = self._getExtraPath(SHARPENING_FILE)
        return read_json(path) if os.path.exists(path) else None

    def _validate(self):
        errors = self._validateInput()
        sampling = self.getReferenceVolume().getSamplingRate() if not errors else None
        if sampling and not self.autoResolution.get() and not self.resolution.get() >= 2 * sampling * (1 - 1e-6):
            errors.append(f"The resolution must be at least twice the sampling rate ({2 * sampling:g} Å).")
        if self.autoBfactor.get() and not self.autoResolution.get() and self.resolution.get() >= self.lowResolution.get():
            errors.append("The resolution must be finer (smaller) than the Guinier fit's low-resolution limit.")
        if self.mtfFile.get() and not os.path.isfile(self.mtfFile.get()):
            errors.append(f"The MTF file {self.mtfFile.get()} does not exist.")
        return errors or self._validateMask()

    def _warnings(self):
        return self._maskWarnings()

    def _summary(self):
        summary = [self._inputSummary()]
        result = self.getResult()
        if result is not None:
            summary.append(f"B-factor removed: {result['b_factor']:.1f} Å² (RELION's sign: {-result['b_factor']:.1f}; "
                           f"{'fitted' if result['fitted'] else 'given'}), "
                           f"resolution: {result['resolution']:.2f} Å"
                           + (f" (FSC = {HALF_MAP_FSC_THRESHOLD}, {'masked' if result['masked'] else 'unmasked'})"
                              if self.autoResolution.get() else " (given)"))
        return summary

    def _methods(self):
        result = self.getResult()
        if result is None:
            return []
        return [f"The average of the half maps was weighted by the half-map FSC [Rosenthal2003], sharpened with a "
                f"B-factor of {result['b_factor']:.1f} Å² ({'fitted on the Guinier plot' if result['fitted'] else 'given'})"
                f" and low-pass filtered at {result['resolution']:.2f} Å, as in RELION's postprocess."]

    def _citations(self):
        return ["Rosenthal2003"] + (["Chen2013"] if self.inputMask.get() is not None else [])
