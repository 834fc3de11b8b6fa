import os

from pwem.objects import VolumeMask
from pwem.protocols import ProtCreateMask3D
from pyworkflow.protocol import params

from ..constants import (MASK_FILE, MASK_FROM_MAP, MASK_FROM_MODEL, MASK_INFO_FILE, OUTPUT_MASK, THRESHOLD_AUTO,
                         THRESHOLD_CHOICES, THRESHOLD_DENSITY, THRESHOLD_VOLUME)
from ..convert import (is_mrc, map_path, origin_shifts, output_volume, placed_as_in_scipion, read_json,
                       read_volume_file, write_json)


class ProtDeepEMhancerMask(ProtCreateMask3D):
    """A tight mask of the molecule, from a map or from a fitted atomic model.

    From a map, as RELION's and cryoSPARC's auto-masks: the map is low-pass filtered (15 Å), contoured
    at a threshold chosen automatically from its solvent noise (or at your density threshold, or at
    the level enclosing a given volume), and only the connected molecule is kept: pieces that never
    reach far above the noise are dropped. The summary gives the threshold and how much of the box
    the mask covers.

    From an atomic model: the map simulated from the model at a given resolution on the reference
    map's grid, thresholded at its 95th percentile, as the DeepEMhancer paper made its training masks
    (Supplementary Note 6).

    Either can then be dilated and given a soft edge. Keep it binary (no soft edge) for
    DeepEMhancer's binary-mask normalisation; give it a soft edge (e.g. 6 Å) for masked FSC and
    sharpening.
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
        form.addParam("thresholdMode", params.EnumParam, choices=THRESHOLD_CHOICES,
                      default=THRESHOLD_AUTO, condition=f"source == {MASK_FROM_MAP}",
                      display=params.EnumParam.DISPLAY_HLIST, label="Threshold",
                      help="automatic: 3 standard deviations of the solvent noise above the solvent level of the "
                           "low-passed map (the summary shows it; the wizard of 'Density threshold' computes it "
                           "beforehand). density threshold: your own. enclosed volume: the level enclosing a "
                           "volume.")
        form.addParam("threshold", params.FloatParam, default=0.0,
                      condition=f"source == {MASK_FROM_MAP} and thresholdMode == {THRESHOLD_DENSITY}",
                      label="Density threshold",
                      help="The contour of the low-passed map. The wizard shows the automatic one as a start.")
        form.addParam("enclosedVolume", params.FloatParam, default=0.0,
                      condition=f"source == {MASK_FROM_MAP} and thresholdMode == {THRESHOLD_VOLUME}",
                      label="Enclosed volume (Å³)",
                      help="The contour enclosing this volume (about 1.21 Å³ per dalton of protein).")
        form.addParam("lowpass", params.FloatParam, default=15.0, condition=f"source == {MASK_FROM_MAP}",
                      expertLevel=params.LEVEL_ADVANCED, label="Low-pass filter (Å)",
                      help="The map is low-pass filtered to this resolution before the threshold (RELION: 15 Å); "
                           "0 thresholds the map as it is.")
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
            self._insertFunctionStep(self.mapMaskStep, map_path(volume.getFileName()), volume.getSamplingRate(),
                                     {**self._thresholdRule(), "lowpass_A": self.lowpass.get(), **shape},
                                     needsGPU=False)
        else:
            like = self.getReferenceVolume()
            self._insertFunctionStep(self.modelMaskStep, os.path.abspath(self.inputStructure.get().getFileName()),
                                     map_path(like.getFileName()), like.getSamplingRate(), origin_shifts(like),
                                     {"resolution": self.modelResolution.get(), "percentile": self.percentile.get(),
                                      **shape}, needsGPU=False)
        self._insertFunctionStep(self.createOutputStep, needsGPU=False)

    def _thresholdRule(self) -> dict:
        """The engine's threshold arguments for the chosen mode (none: automatic)."""
        if self.thresholdMode.get() == THRESHOLD_DENSITY:
            return {"threshold": self.threshold.get()}
        if self.thresholdMode.get() == THRESHOLD_VOLUME:
            return {"enclosed_volume_A3": self.enclosedVolume.get()}
        return {}

    def mapMaskStep(self, mapFile, sampling, settings):
        from deepemhancer.molecule_masks import map_mask

        source = read_volume_file(mapFile, sampling)
        made = map_mask(source.data, voxel_size=source.isotropic_voxel_size, **settings)
        write_json(self._getExtraPath(MASK_INFO_FILE),
                   {"threshold": made.threshold, "automatic": made.automatic, "pieces": made.pieces,
                    "kept": made.kept, "coverage": made.coverage})
        return self._writeMask(source.with_data(made.mask))

    def modelMaskStep(self, structureFile, likeFile, sampling, shifts, settings):
        from deepemhancer.molecule_masks import model_mask

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
            if not self.lowpass.get() >= 0:
                errors.append("The low-pass resolution must be zero (none) or positive.")
        else:
            if self.inputStructure.get() is None:
                errors.append("Select the atomic model.")
            if not self.modelResolution.get() > 0:
                errors.append("The model map resolution must be positive.")
            if not 0 < self.percentile.get() < 100:
                errors.append("The percentile must be between 0 and 100.")
        return errors

    def getResult(self) -> dict | None:
        """How a mask from a map came out: threshold, pieces, coverage (None before the run, or from a model)."""
        path = self._getExtraPath(MASK_INFO_FILE)
        return read_json(path) if os.path.exists(path) else None

    def _rule(self) -> str:
        if self.source.get() == MASK_FROM_MODEL:
            return (f"atomic model simulated at {self.modelResolution.get():g} Å, above its "
                    f"{self.percentile.get():g}th percentile")
        mode = self.thresholdMode.get()
        rule = {THRESHOLD_AUTO: "automatic threshold", THRESHOLD_DENSITY: f"threshold {self.threshold.get():g}",
                THRESHOLD_VOLUME: f"contour enclosing {self.enclosedVolume.get():g} Å³"}[mode]
        lowpass = f" of the map low-passed to {self.lowpass.get():g} Å" if self.lowpass.get() else " of the map"
        return rule + lowpass

    def _summary(self):
        from deepemhancer.molecule_masks import NEAR_FULL_BOX

        summary = [f"Mask: {self._rule()}; dilation {self.dilation.get():g} Å, soft edge {self.softEdge.get():g} Å"]
        result = self.getResult()
        if result is not None:
            summary.append(f"Threshold {result['threshold']:.4g}{' (automatic)' if result['automatic'] else ''}; "
                           f"kept {result['kept']} of {result['pieces']} pieces above it (the others never reach "
                           f"far above the noise); the mask covers {100 * result['coverage']:.1f}% of the box"
                           + (" - it hardly masks anything: make it tighter" if result["coverage"] > NEAR_FULL_BOX
                              else ""))
        return summary

    def _methods(self):
        shape = f", dilated by {self.dilation.get():g} Å with a {self.softEdge.get():g} Å soft edge"
        if self.source.get() == MASK_FROM_MODEL:
            return [f"A mask was made from the atomic model simulated at {self.modelResolution.get():g} Å "
                    f"[Wojdyr2022] and thresholded at its {self.percentile.get():g}th percentile, as for "
                    f"DeepEMhancer's training targets [SanchezGarcia2021]{shape}."]
        result = self.getResult()
        threshold = f" (threshold {result['threshold']:.4g}, the connected molecule kept)" if result else ""
        return [f"A mask was made from the map ({self._rule()}){threshold}{shape}."]

    def _citations(self):
        return ["SanchezGarcia2021", "Wojdyr2022"] if self.source.get() == MASK_FROM_MODEL else []
