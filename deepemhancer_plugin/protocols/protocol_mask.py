import os

from pwem.objects import VolumeMask
from pwem.protocols import ProtCreateMask3D
from pyworkflow.protocol import params

from ..constants import (MASK_FILE, MASK_FROM_MAP, MASK_FROM_MODEL, OUTPUT_MASK, THRESHOLD_DENSITY,
                         THRESHOLD_VOLUME)
from ..convert import (is_mrc, map_path, origin_shifts, output_volume, placed_as_in_scipion, read_volume_file)


class ProtDeepEMhancerMask(ProtCreateMask3D):
    """A tight mask of the molecule, from a map or from a fitted atomic model.

    From a map: the voxels above a density threshold, or the densest voxels that enclose a given
    volume (Å³). From an atomic model: the map simulated from the model at a given resolution on the
    reference map's grid, thresholded at its 95th percentile, as the DeepEMhancer paper made its
    training masks (Supplementary Note 6). Either can then be dilated and given a soft edge.

    Keep it binary (no soft edge) for DeepEMhancer's binary-mask normalisation; give it a soft edge
    (e.g. 6 Å) for masked FSC and sharpening.
    """
    _label = "tight mask"
    _possibleOutputs = {OUTPUT_MASK: VolumeMask}

    def _defineParams(self, form):
        form.addSection(label="Input")
        form.addParam("source", params.EnumParam, choices=["a map", "an atomic model"], default=MASK_FROM_MAP,
                      display=params.EnumParam.DISPLAY_HLIST, label="Mask from")
        form.addParam("inputVolume", params.PointerParam, pointerClass="Volume", important=True,
                      condition=f"source == {MASK_FROM_MAP}", label="Map",
                      help="The map to threshold, e.g. the half-map average (low-pass filtered maps give smoother masks).")
        form.addParam("thresholdMode", params.EnumParam, choices=["density threshold", "enclosed volume"],
                      default=THRESHOLD_DENSITY, condition=f"source == {MASK_FROM_MAP}",
                      display=params.EnumParam.DISPLAY_HLIST, label="Threshold by")
        form.addParam("threshold", params.FloatParam, default=0.0,
                      condition=f"source == {MASK_FROM_MAP} and thresholdMode == {THRESHOLD_DENSITY}",
                      label="Density threshold", help="Voxels above this value are inside.")
        form.addParam("enclosedVolume", params.FloatParam, default=0.0,
                      condition=f"source == {MASK_FROM_MAP} and thresholdMode == {THRESHOLD_VOLUME}",
                      label="Enclosed volume (Å³)",
                      help="The densest voxels enclosing this volume are inside (about 1.21 Å³ per dalton of "
                           "protein).")
        form.addParam("inputStructure", params.PointerParam, pointerClass="AtomStruct", important=True,
                      condition=f"source == {MASK_FROM_MODEL}", label="Atomic model",
                      help="An atomic model fitted into the map.")
        form.addParam("referenceVolume", params.PointerParam, pointerClass="Volume", allowsNull=True,
                      condition=f"source == {MASK_FROM_MODEL}", label="Map giving the grid",
                      help="The mask is made on this map's box, sampling rate and origin. Empty: the volume "
                           "attached to the atomic model.")
        form.addParam("modelResolution", params.FloatParam, default=4.0,
                      condition=f"source == {MASK_FROM_MODEL}", label="Model map resolution (Å)",
                      help="Resolution of the map simulated from the model (e.g. the map's resolution).")
        form.addParam("percentile", params.FloatParam, default=95.0, condition=f"source == {MASK_FROM_MODEL}",
                      expertLevel=params.LEVEL_ADVANCED, label="Threshold percentile",
                      help="The simulated map is thresholded at this percentile of its values (the paper: 95).")
        form.addSection(label="Shape")
        form.addParam("dilation", params.FloatParam, default=0.0, label="Dilation (Å)",
                      help="Grow the mask by this distance.")
        form.addParam("softEdge", params.FloatParam, default=0.0, label="Soft edge (Å)",
                      help="Width of a raised-cosine edge beyond the dilated mask; 0 keeps it binary.")

    # --------------------------- STEPS -------------------------------------------------
    def _insertAllSteps(self):
        shape = {"dilation_A": self.dilation.get(), "soft_edge_A": self.softEdge.get()}
        if self.source.get() == MASK_FROM_MAP:
            volume = self.inputVolume.get()
            rule = ({"threshold": self.threshold.get()} if self.thresholdMode.get() == THRESHOLD_DENSITY
                    else {"enclosed_volume_A3": self.enclosedVolume.get()})
            self._insertFunctionStep(self.mapMaskStep, map_path(volume.getFileName()), volume.getSamplingRate(),
                                     {**rule, **shape}, needsGPU=False)
        else:
            like = self.getReferenceVolume()
            self._insertFunctionStep(self.modelMaskStep, os.path.abspath(self.inputStructure.get().getFileName()),
                                     map_path(like.getFileName()), like.getSamplingRate(), origin_shifts(like),
                                     {"resolution": self.modelResolution.get(), "percentile": self.percentile.get(),
                                      **shape}, needsGPU=False)
        self._insertFunctionStep(self.createOutputStep, needsGPU=False)

    def mapMaskStep(self, mapFile, sampling, settings):
        from deepemhancer.masks import threshold_mask

        source = read_volume_file(mapFile, sampling)
        mask = threshold_mask(source.data, voxel_size=source.isotropic_voxel_size, **settings)
        return self._writeMask(source.with_data(mask))

    def modelMaskStep(self, structureFile, likeFile, sampling, shifts, settings):
        from deepemhancer.masks import model_mask

        # Atoms are placed where Scipion (and its ChimeraX views) show the map: at Scipion's origin.
        like = placed_as_in_scipion(read_volume_file(likeFile, sampling), shifts)
        mask = model_mask(structureFile, like, settings["resolution"], percentile=settings["percentile"],
                          dilation_A=settings["dilation_A"], soft_edge_A=settings["soft_edge_A"])
        return self._writeMask(like.with_data(mask))

    def _writeMask(self, mask) -> str:
        from deepemhancer.mapio import write_map

        return str(write_map(mask, self._getExtraPath(MASK_FILE), overwrite=True))

    def createOutputStep(self):
        like = self.getReferenceVolume()
        mask = output_volume(self._getExtraPath(MASK_FILE), like, cls=VolumeMask)
        self._defineOutputs(**{OUTPUT_MASK: mask})
        source = self.inputVolume if self.source.get() == MASK_FROM_MAP else self.inputStructure
        self._defineSourceRelation(source, mask)

    # --------------------------- helpers -----------------------------------------------
    def getReferenceVolume(self):
        """The map whose grid, sampling rate and origin the mask takes."""
        if self.source.get() == MASK_FROM_MAP:
            return self.inputVolume.get()
        if self.referenceVolume.get() is not None:
            return self.referenceVolume.get()
        structure = self.inputStructure.get()
        return structure.getVolume() if structure is not None and structure.hasVolume() else None

    def getChainKey(self) -> tuple:
        """The half maps (else the map) the mask was made for, to pair it with the comparison viewer."""
        volume = self.getReferenceVolume()
        if volume is None:
            return ()
        files = ([map_path(str(f)) for f in volume.getHalfMaps(asList=True)] if volume.hasHalfMaps()
                 else [map_path(volume.getFileName())])
        return tuple(sorted(os.path.abspath(f) for f in files))

    # --------------------------- INFO --------------------------------------------------
    def _validate(self):
        errors = []
        like = self.getReferenceVolume()
        if like is None:
            return ["Select the map." if self.source.get() == MASK_FROM_MAP else
                    "Select the map giving the grid (the atomic model has no attached volume)."]
        if not is_mrc(like.getFileName()):
            errors.append(f"{map_path(like.getFileName())} is not an MRC map: convert it to MRC first.")
        if self.dilation.get() < 0 or self.softEdge.get() < 0:
            errors.append("Dilation and soft edge must be zero or positive.")
        if self.source.get() == MASK_FROM_MAP:
            if self.thresholdMode.get() == THRESHOLD_VOLUME and not self.enclosedVolume.get() > 0:
                errors.append("Give the enclosed volume in Å³ (positive).")
        else:
            if self.inputStructure.get() is None:
                errors.append("Select the atomic model.")
            if not self.modelResolution.get() > 0:
                errors.append("The model map resolution must be positive.")
            if not 0 < self.percentile.get() < 100:
                errors.append("The percentile must be between 0 and 100.")
        return errors

    def _rule(self) -> str:
        if self.source.get() == MASK_FROM_MAP:
            return (f"density above {self.threshold.get():g}" if self.thresholdMode.get() == THRESHOLD_DENSITY
                    else f"densest {self.enclosedVolume.get():g} Å³")
        return (f"atomic model simulated at {self.modelResolution.get():g} Å, above its "
                f"{self.percentile.get():g}th percentile")

    def _summary(self):
        return [f"Mask: {self._rule()}; dilation {self.dilation.get():g} Å, soft edge {self.softEdge.get():g} Å"]

    def _methods(self):
        shape = f", dilated by {self.dilation.get():g} Å with a {self.softEdge.get():g} Å soft edge"
        if self.source.get() == MASK_FROM_MODEL:
            return [f"A mask was made from the atomic model simulated at {self.modelResolution.get():g} Å "
                    f"[Wojdyr2022] and thresholded at its {self.percentile.get():g}th percentile, as for "
                    f"DeepEMhancer's training targets [SanchezGarcia2021]{shape}."]
        return [f"A mask was made from the map ({self._rule()}){shape}."]

    def _citations(self):
        return ["SanchezGarcia2021", "Wojdyr2022"] if self.source.get() == MASK_FROM_MODEL else []
