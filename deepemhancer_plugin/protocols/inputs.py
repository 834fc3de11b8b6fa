"""The input every protocol of this plugin starts from: a Volume (its map, or the half maps
attached to it, as refinements output them) or two half-map Volumes."""
from __future__ import annotations

import os

from pwem.emlib.image import ImageHandler
from pyworkflow.protocol import params

from ..constants import INPUT_TWO_HALVES, INPUT_VOLUME, OUTPUT_FSC, OUTPUT_VOLUME
from ..convert import fsc_object, is_mrc, map_path


class HalfMapInput:
    """Form and helpers for protocols whose input is a Volume with half maps, or two Volumes.

    Subclasses say whether a Volume's own map is acceptable (``_acceptsWholeMap``).
    """

    _acceptsWholeMap = False

    def _defineInputParams(self, form):
        volumeLabel = "a volume" if self._acceptsWholeMap else "a volume with half maps"
        form.addParam("inputChoice", params.EnumParam, choices=[volumeLabel, "two half-map volumes"],
                      default=INPUT_VOLUME, display=params.EnumParam.DISPLAY_HLIST, label="Input",
                      help="A volume from a 3D refinement (with its half maps attached when it has "
                           "them), or the two half maps as two separate volumes.")
        form.addParam("inputVolume", params.PointerParam, pointerClass="Volume", important=True,
                      condition=f"inputChoice == {INPUT_VOLUME}", label="Input volume",
                      help="The unfiltered, unsharpened, unmasked map of a refinement"
                           + (", or a volume whose half maps are attached." if self._acceptsWholeMap
                              else "; its two half maps must be attached (import it with 'Set half maps')."))
        if self._acceptsWholeMap:
            form.addParam("useHalfMaps", params.BooleanParam, default=False,
                          condition=f"inputChoice == {INPUT_VOLUME}", label="Use its half maps instead?",
                          help="Yes: use the average of the two half maps attached to the volume (as the "
                               "original DeepEMhancer does with -i and -i2). No: use the volume's own map.")
        form.addParam("inputHalf1", params.PointerParam, pointerClass="Volume", important=True,
                      condition=f"inputChoice == {INPUT_TWO_HALVES}", label="Half map 1")
        form.addParam("inputHalf2", params.PointerParam, pointerClass="Volume", important=True,
                      condition=f"inputChoice == {INPUT_TWO_HALVES}", label="Half map 2")

    # --------------------------- what the input is -----------------------------------
    def _usesTwoVolumes(self) -> bool:
        return self.inputChoice.get() == INPUT_TWO_HALVES

    def usesHalfMaps(self) -> bool:
        if self._usesTwoVolumes():
            return True
        return not self._acceptsWholeMap or bool(self.useHalfMaps.get())

    def getReferenceVolume(self):
        """The Volume whose sampling rate and origin the outputs inherit."""
        return self.inputHalf1.get() if self._usesTwoVolumes() else self.inputVolume.get()

    def _inputPointers(self) -> list:
        return [self.inputHalf1, self.inputHalf2] if self._usesTwoVolumes() else [self.inputVolume]

    def getHalfMapFiles(self) -> list[str]:
        """The two half-map files (project-relative, no ':mrc'), or [] when the input is a whole map."""
        if self._usesTwoVolumes():
            volumes = [self.inputHalf1.get(), self.inputHalf2.get()]
            return [map_path(v.getFileName()) for v in volumes] if None not in volumes else []
        volume = self.inputVolume.get()
        if volume is not None and volume.hasHalfMaps():
            return [map_path(str(path)) for path in volume.getHalfMaps(asList=True)]
        return []

    def _sourceFiles(self) -> list[str]:
        """The map files the engine reads: the two half maps, or the volume's own map."""
        if self.usesHalfMaps():
            return self.getHalfMapFiles()
        return [map_path(self.inputVolume.get().getFileName())]

    def getChainKey(self) -> tuple[str, ...]:
        """What identifies the data this run works on (for the comparison viewer): its half maps
        when there are any, else its input map."""
        volume = self.getReferenceVolume()
        halves = self.getHalfMapFiles()
        files = halves or ([map_path(volume.getFileName())] if volume is not None else [])
        return tuple(sorted(os.path.abspath(f) for f in files))

    # --------------------------- validation -----------------------------------------
    def _validateInput(self) -> list[str]:
        """Errors for missing, unreadable or mismatched inputs, each saying what to do."""
        pointers = self._inputPointers()
        if any(p.get() is None for p in pointers):
            return ["Select the input volume(s)."]
        if self.usesHalfMaps() and not self._usesTwoVolumes() and not self.inputVolume.get().hasHalfMaps():
            return ["The input volume has no half maps attached: select 'two half-map volumes' and give them "
                    "separately" + (", or answer No to 'Use its half maps instead?'." if self._acceptsWholeMap
                                    else ", or import the volume with 'Set half maps'.")]
        files = self._sourceFiles()
        if len(files) == 2 and len(set(os.path.abspath(f) for f in files)) == 1:
            return ["Half map 1 and half map 2 are the same file: give the two independent half maps."]
        errors = [f"{f} is not an MRC/CCP4 map (.mrc, .map): convert it to MRC first, e.g. with "
                  f"'xmipp3 - convert' or 'relion_image_handler'." for f in files if not is_mrc(f)]
        errors += [f"{f} does not exist: check the input protocol's outputs." for f in files if not os.path.exists(f)]
        if errors or len(files) < 2:
            return errors
        return self._validateSameGrid(files)

    def _validateSameGrid(self, files: list[str]) -> list[str]:
        """The two halves must share box and, as Scipion records them, sampling rate and origin."""
        dims = [tuple(ImageHandler().getDimensions(f)) for f in files]
        if dims[0] != dims[1]:
            return [f"The half maps have different boxes ({' x '.join(map(str, dims[0][:3]))} and "
                    f"{' x '.join(map(str, dims[1][:3]))} voxels): give the two half maps of one refinement."]
        if not self._usesTwoVolumes():
            return []
        half1, half2 = self.inputHalf1.get(), self.inputHalf2.get()
        if abs(half1.getSamplingRate() - half2.getSamplingRate()) > 1e-4 * half1.getSamplingRate():
            return [f"The half maps have different sampling rates ({half1.getSamplingRate():g} and "
                    f"{half2.getSamplingRate():g} Å/px): give the two half maps of one refinement."]
        shifts = [half.getOrigin(force=True).getShifts() for half in (half1, half2)]
        if any(abs(a - b) > 1e-3 for a, b in zip(*shifts)):
            return [f"The half maps have different origins ({tuple(shifts[0])} and {tuple(shifts[1])} Å): "
                    f"give the two half maps of one refinement."]
        return []

    def _maskPath(self) -> str:
        """The optional ``inputMask``'s file, or "" (a plain value, as step arguments must be)."""
        mask = self.inputMask.get()
        return map_path(mask.getFileName()) if mask is not None else ""

    def _maskWarnings(self) -> list[str]:
        """Before a run: a mask covering nearly the whole box hardly masks anything (the engine's rule)."""
        from deepemhancer.mapio import read_map
        from deepemhancer.masks import full_box_warning

        path = self._maskPath()
        warning = full_box_warning(read_map(path).data) if path and os.path.exists(path) else None
        return [f"The{warning[3:]}."] if warning else []

    def _validateMask(self) -> list[str]:
        """An optional ``inputMask`` must be an MRC map on the half maps' grid."""
        mask = self.inputMask.get()
        if mask is None:
            return []
        if not is_mrc(mask.getFileName()):
            return [f"The mask {map_path(mask.getFileName())} is not an MRC map: convert it first."]
        if ImageHandler().getDimensions(map_path(mask.getFileName()))[:3] != \
                ImageHandler().getDimensions(self._sourceFiles()[0])[:3]:
            return ["The mask's box differs from the half maps': make the mask on their grid."]
        return []

    def _defineVolumeAndFsc(self, volume, result: dict) -> None:
        """Register a map and the half-map FSC of ``result`` as outputs, related to the inputs."""
        fsc = fsc_object(result, "half-map FSC" + (" (masked, corrected)" if result["masked"] else ""))
        self._defineOutputs(**{OUTPUT_VOLUME: volume, OUTPUT_FSC: fsc})
        for pointer in self._inputPointers():
            self._defineTransformRelation(pointer, volume)
            self._defineSourceRelation(pointer, fsc)

    # --------------------------- info ------------------------------------------------
    def _inputSummary(self) -> str:
        if self._usesTwoVolumes():
            return "Input: two half-map volumes"
        return ("Input: the half maps attached to the volume" if self.usesHalfMaps()
                else "Input: the volume's map")
