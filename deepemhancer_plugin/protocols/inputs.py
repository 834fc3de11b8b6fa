"""The input every protocol of this plugin starts from: a Volume (its map, or the half maps
attached to it, as refinements output them) or two half-map Volumes; for enhancement also a
SetOfVolumes (e.g. the classes of a 3D classification)."""
from __future__ import annotations

import os

from pwem.emlib.image import ImageHandler
from pyworkflow.protocol import params

from ..constants import INPUT_SET, INPUT_TWO_HALVES, INPUT_VOLUME, OUTPUT_FSC, OUTPUT_VOLUME
from ..convert import fsc_object, is_mrc, map_path


class HalfMapInput:
    """Form and helpers for protocols whose input is a Volume with half maps, or two Volumes.

    Subclasses say whether a Volume's own map is acceptable (``_acceptsWholeMap``) and whether a set
    of volumes is (``_acceptsSets``: each volume of the set is one input, as a single volume is).
    """

    _acceptsWholeMap = False
    _acceptsSets = False

    def _defineInputParams(self, form):
        volumeLabel = "a volume" if self._acceptsWholeMap else "a volume with half maps"
        choices = [volumeLabel, "two half-map volumes"] + (["a set of volumes"] if self._acceptsSets else [])
        form.addParam("inputChoice", params.EnumParam, choices=choices,
                      default=INPUT_VOLUME, display=params.EnumParam.DISPLAY_HLIST, label="Input",
                      help="A volume from a 3D refinement (with its half maps attached when it has "
                           "them), or the two half maps as two separate volumes"
                           + (", or a set of volumes (e.g. the classes of a 3D classification), each "
                              "processed on its own with the same settings." if self._acceptsSets else "."))
        form.addParam("inputVolume", params.PointerParam, pointerClass="Volume", important=True,
                      condition=f"inputChoice == {INPUT_VOLUME}", label="Input volume",
                      help="The unfiltered, unsharpened, unmasked map of a refinement"
                           + (", or a volume whose half maps are attached." if self._acceptsWholeMap
                              else "; its two half maps must be attached (import it with 'Set half maps')."))
        if self._acceptsSets:
            form.addParam("inputVolumes", params.PointerParam, pointerClass="SetOfVolumes", important=True,
                          condition=f"inputChoice == {INPUT_SET}", label="Input volumes",
                          help="A set of volumes, e.g. the classes of a 3D classification or a series of "
                               "focused refinements: each volume is processed on its own with the same settings "
                               "(the model is loaded once), and the results form a set of volumes with the same "
                               "ids, sampling rates and origins. A volume that fails is left out of the output "
                               "and named, with the reason, in the summary.")
        if self._acceptsWholeMap:
            form.addParam("useHalfMaps", params.BooleanParam, default=False,
                          condition=f"inputChoice != {INPUT_TWO_HALVES}", label="Use its half maps instead?",
                          help="Yes: use the average of the two half maps attached to the volume (to each volume "
                               "of a set), as the original DeepEMhancer does with two half maps. No: use the "
                               "volume's own map.")
        form.addParam("inputHalf1", params.PointerParam, pointerClass="Volume", important=True,
                      condition=f"inputChoice == {INPUT_TWO_HALVES}", label="Half map 1")
        form.addParam("inputHalf2", params.PointerParam, pointerClass="Volume", important=True,
                      condition=f"inputChoice == {INPUT_TWO_HALVES}", label="Half map 2")

    # --------------------------- what the input is -----------------------------------
    def _usesTwoVolumes(self) -> bool:
        return self.inputChoice.get() == INPUT_TWO_HALVES

    def usesSet(self) -> bool:
        return self._acceptsSets and self.inputChoice.get() == INPUT_SET

    def usesHalfMaps(self) -> bool:
        if self._usesTwoVolumes():
            return True
        return not self._acceptsWholeMap or bool(self.useHalfMaps.get())

    def getReferenceVolume(self):
        """The Volume whose sampling rate and origin the outputs inherit (of a set: its first volume)."""
        if self.usesSet():
            volumes = self.inputVolumes.get()
            return volumes.getFirstItem() if volumes is not None and volumes.getSize() else None
        return self.inputHalf1.get() if self._usesTwoVolumes() else self.inputVolume.get()

    def _inputPointers(self) -> list:
        if self.usesSet():
            return [self.inputVolumes]
        return [self.inputHalf1, self.inputHalf2] if self._usesTwoVolumes() else [self.inputVolume]

    def getHalfMapFiles(self) -> list[str]:
        """The two half-map files (project-relative, no ':mrc'), or [] when the input is a whole map
        (or a set, whose volumes each have their own: ``getSetSources``)."""
        if self._usesTwoVolumes():
            volumes = [self.inputHalf1.get(), self.inputHalf2.get()]
            return [map_path(v.getFileName()) for v in volumes] if None not in volumes else []
        return [] if self.usesSet() else _attachedHalves(self.inputVolume.get())

    def _sourceFiles(self) -> list[str]:
        """The map files the engine reads: the two half maps, or the volume's own map."""
        if self.usesHalfMaps():
            return self.getHalfMapFiles()
        return [map_path(self.inputVolume.get().getFileName())]

    def getSetSources(self) -> list[tuple[int, list[str], float]]:
        """For a set: (id, the files the engine reads, sampling rate) of each volume, as plain values."""
        return [(int(volume.getObjId()),
                 _attachedHalves(volume) if self.usesHalfMaps() else [map_path(volume.getFileName())],
                 float(volume.getSamplingRate()))
                for volume in self.inputVolumes.get().iterItems()]

    def getChainKey(self) -> tuple[str, ...]:
        """What identifies the data this run works on (for the comparison viewer): its half maps
        when there are any, else its input map (of a set: every file of it, which no other run shares)."""
        if self.usesSet():
            files = [path for _, sources, _ in self.getSetSources() for path in sources]
        else:
            volume = self.getReferenceVolume()
            files = self.getHalfMapFiles() or ([map_path(volume.getFileName())] if volume is not None else [])
        return tuple(sorted(os.path.abspath(f) for f in files))

    # --------------------------- validation -----------------------------------------
    def _validateInput(self) -> list[str]:
        """Errors for missing, unreadable or mismatched inputs, each saying what to do."""
        pointers = self._inputPointers()
        if any(p.get() is None for p in pointers):
            return ["Select the input volume(s)."]
        if self.usesSet():
            return self._validateSet()
        if self.usesHalfMaps() and not self._usesTwoVolumes() and not self.inputVolume.get().hasHalfMaps():
            return ["The input volume has no half maps attached: select 'two half-map volumes' and give them "
                    "separately" + (", or answer No to 'Use its half maps instead?'." if self._acceptsWholeMap
                                    else ", or import the volume with 'Set half maps'.")]
        return self._validateFiles(self._sourceFiles())

    def _validateFiles(self, files: list[str]) -> list[str]:
        """The map, or the two half maps, of one input."""
        if len(files) == 2 and len(set(os.path.abspath(f) for f in files)) == 1:
            return ["Half map 1 and half map 2 are the same file: give the two independent half maps."]
        errors = [f"{f} is not an MRC/CCP4 map (.mrc, .map): convert it to MRC first, e.g. with "
                  f"'xmipp3 - convert' or 'relion_image_handler'." for f in files if not is_mrc(f)]
        errors += [f"{f} does not exist: check the input protocol's outputs." for f in files if not os.path.exists(f)]
        if errors or len(files) < 2:
            return errors
        return self._validateSameGrid(files)

    def _validateSet(self) -> list[str]:
        """Every volume of the set as a single input would be validated (its own half maps, when used)."""
        sources = self.getSetSources()
        if not sources:
            return ["The input set has no volumes: select a set with at least one."]
        without = [str(volumeId) for volumeId, files, _ in sources if not files]
        if without:
            return [f"Volumes {', '.join(without)} of the set have no half maps attached: answer No to 'Use its "
                    f"half maps instead?' to enhance their own maps."]
        return [error for _, files, _ in sources for error in self._validateFiles(files)]

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
        from deepemhancer.molecule_masks import full_box_warning

        path = self._maskPath()
        warning = full_box_warning(read_map(path).data) if path and os.path.exists(path) else None
        return [f"The{warning[3:]}."] if warning else []

    def _validateMask(self) -> list[str]:
        """An optional ``inputMask`` must be an MRC map on the half maps' grid."""
        mask = self.inputMask.get()
        return [] if mask is None else self._maskGridErrors(mask, self._sourceFiles()[0], "the half maps'")

    @staticmethod
    def _maskGridErrors(mask, source: str | None, grid: str) -> list[str]:
        """The form's check of a mask: an MRC map with the box of the map file ``source`` (None: not
        known yet; ``grid``: whose grid, for the message). It is the engine's shape rule (``metrics.check_mask``), read
        from the headers when the form is validated so that no run starts only to fail; the engine
        checks the mask again, its values too, when the step runs."""
        if not is_mrc(mask.getFileName()):
            return [f"The mask {map_path(mask.getFileName())} is not an MRC map: convert it to MRC first."]
        if source and ImageHandler().getDimensions(map_path(mask.getFileName()))[:3] != \
                ImageHandler().getDimensions(source)[:3]:
            return [f"The mask's box differs from {grid}: make the mask on {grid} grid."]
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
        if self.usesSet():
            return (f"Input: a set of {self.inputVolumes.get().getSize()} volumes, "
                    + ("the half maps attached to each" if self.usesHalfMaps() else "each volume's map"))
        return ("Input: the half maps attached to the volume" if self.usesHalfMaps()
                else "Input: the volume's map")


def _attachedHalves(volume) -> list[str]:
    """The two half-map files attached to a Volume (project-relative, no ':mrc'), or []."""
    if volume is not None and volume.hasHalfMaps():
        return [map_path(str(path)) for path in volume.getHalfMaps(asList=True)]
    return []
