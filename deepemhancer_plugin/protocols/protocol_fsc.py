from __future__ import annotations

import os

from deepemhancer.metrics import HALF_MAP_FSC_THRESHOLD
from pwem.objects import FSC, Volume
from pwem.protocols import ProtAnalysis3D
from pyworkflow.protocol import params

from ..constants import AVERAGE_FILE, FSC_FILE, OUTPUT_FSC, OUTPUT_VOLUME
from ..convert import output_volume, read_json, read_volume_file, write_json
from .inputs import HalfMapInput


class ProtDeepEMhancerHalfMapFSC(HalfMapInput, ProtAnalysis3D):
    """Averages the two half maps of a refinement and computes their Fourier shell correlation.

    The halves must share box, sampling rate and placement. The output volume is their voxel-wise
    average with the halves attached, ready for 'B-factor sharpening' and 'enhance (DeepEMhancer)';
    the FSC curve opens in Scipion's FSC viewer, and the summary gives the resolution where it falls
    below 0.143. With a mask, the FSC is the masked one corrected for the mask's own correlation by
    phase randomisation (Chen et al. 2013), unless the unmasked FSC reaches further: then, as RELION
    does, the mask is set aside (the summary says so). Sharpening and the engine's reports measure
    the halves the same way.
    """
    _label = "half-map FSC"
    _possibleOutputs = {OUTPUT_VOLUME: Volume, OUTPUT_FSC: FSC}

    def _defineParams(self, form):
        form.addSection(label="Input")
        self._defineInputParams(form)
        form.addParam("inputMask", params.PointerParam, pointerClass="VolumeMask", allowsNull=True,
                      label="Mask (optional)",
                      help="A soft mask around the molecule on the halves' grid (e.g. from 'tight mask' with a "
                           "soft edge): gives the masked FSC, corrected by phase randomisation.")

    # --------------------------- STEPS -------------------------------------------------
    def _insertAllSteps(self):
        files = self._sourceFiles()
        sampling = self.getReferenceVolume().getSamplingRate()
        mask = self._maskPath()
        self._insertFunctionStep(self.averageStep, files, sampling, needsGPU=False)
        self._insertFunctionStep(self.fscStep, files, sampling, mask, needsGPU=False)
        self._insertFunctionStep(self.createOutputStep, needsGPU=False)

    def averageStep(self, files, sampling):
        from deepemhancer.mapio import average_halves, write_map

        average = average_halves(*(read_volume_file(path, sampling) for path in files))
        return str(write_map(average, self._getExtraPath(AVERAGE_FILE), overwrite=True))

    def fscStep(self, files, sampling, maskFile):
        from deepemhancer.mapio import read_map
        from deepemhancer.metrics import half_map_fsc

        half1, half2 = (read_volume_file(path, sampling) for path in files)
        measured = half_map_fsc(half1.data, half2.data, half1.isotropic_voxel_size,
                                read_map(maskFile).data if maskFile else None)
        return write_json(self._getExtraPath(FSC_FILE),
                          {**measured.curve.to_dict(), "masked": measured.masking != "unmasked",
                           "resolution": measured.resolution})

    def createOutputStep(self):
        average = output_volume(self._getExtraPath(AVERAGE_FILE), self.getReferenceVolume())
        average.setHalfMaps(self.getHalfMapFiles())
        self._defineVolumeAndFsc(average, read_json(self._getExtraPath(FSC_FILE)))

    # --------------------------- INFO --------------------------------------------------
    def getResult(self) -> dict | None:
        """The FSC curve and its 0.143 resolution, once computed."""
        path = self._getExtraPath(FSC_FILE)
        return read_json(path) if os.path.exists(path) else None

    def _validate(self):
        errors = self._validateInput()
        return errors or self._validateMask()

    def _warnings(self):
        return self._maskWarnings()

    def _summary(self):
        summary = [self._inputSummary()]
        result = self.getResult()
        if result is not None:
            nyquist = 2.0 * result["voxel_size"]
            at_nyquist = result["resolution"] <= nyquist * (1 + 1e-6)
            if result["masked"]:
                masking = " (masked, corrected)"
            elif self.inputMask.get() is not None:
                masking = " (unmasked: the unmasked FSC reaches further than the masked one, so, as RELION does, " \
                          "the mask was set aside)"
            else:
                masking = " (unmasked)"
            summary.append(f"FSC = {HALF_MAP_FSC_THRESHOLD} resolution: {result['resolution']:.2f} Å" + masking
                           + (" - the FSC stays above 0.143 up to Nyquist: the halves may not be independent"
                              if at_nyquist else ""))
        return summary

    def _methods(self):
        result = self.getResult()
        if result is None:
            return []
        return ["The two half maps were averaged and their Fourier shell correlation computed"
                + (" inside a mask, corrected by phase randomisation [Chen2013]" if result["masked"] else "")
                + f"; it falls below {HALF_MAP_FSC_THRESHOLD} [Rosenthal2003] at {result['resolution']:.2f} Å."]

    def _citations(self):
        return ["Rosenthal2003", "Scheres2012"] + (["Chen2013"] if self.inputMask.get() is not None else [])
