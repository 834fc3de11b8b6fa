from __future__ import annotations

import os

from pwem.objects import SetOfVolumes, Volume
from pwem.protocols import ProtAnalysis3D
from pyworkflow.protocol import params

from .. import Plugin, __version__
from ..constants import (AUGMENTATIONS, BLENDINGS, CONFIDENCE_FILE, CPU_DEVICE, DEFAULT_DEVICE, DEFAULT_MASKED_MODEL,
                         DEFAULT_MODEL, ENHANCED_FILE, ENHANCED_HALF_FILES, ENHANCED_SET_FILE, HALVES_CHECK_FILE,
                         NORM_AUTO, NORM_MASK, NORM_NOISE_STATS, NORMALIZATION_CHOICES, OUTPUT_CONFIDENCE,
                         OUTPUT_VOLUME, OUTPUT_VOLUMES, PRECISIONS, RECOMMENDED_MODEL, SET_OUTCOMES_FILE)
from ..convert import (origin_shifts, output_volume, placed_as_in_scipion, read_json,
                       read_volume_file, write_json)
from .inputs import HalfMapInput


class ProtDeepEMhancer(HalfMapInput, ProtAnalysis3D):
    """Enhances a cryo-EM map with DeepEMhancer (Sanchez-Garcia et al., Communications Biology 2021), a 3D
    U-Net that suppresses noise around the molecule and sharpens it locally, on PyTorch.

    Give the unfiltered, unsharpened, unmasked map of a refinement, or better its two half maps, or a
    set of volumes (e.g. the classes of a 3D classification: each is enhanced on its own, the model
    loaded once, into a set of volumes). The output keeps the input's box, sampling rate and origin;
    its values are in the network's normalised units. An enhanced map helps interpretation and model building; it is not
    experimental density: check it against the raw and the B-factor-sharpened maps (Analyze results).

    Normalisation: 'automatic' estimates the solvent noise from the map (it may fail on hollow or
    filamentous maps), 'noise statistics' takes its mean and standard deviation from you, 'binary
    mask' uses a tight mask of the molecule and the masked model.

    Trust: optionally, each half map is also enhanced on its own and the map is enhanced under cube
    symmetries; the spread of these independent predictions gives a per-voxel confidence map, the
    enhanced halves are attached to the output, and their FSC is checked against the raw halves':
    the network must not make the halves agree beyond what the data support.
    """
    _label = "enhance"
    _acceptsWholeMap = True
    _acceptsSets = True
    _possibleOutputs = {OUTPUT_VOLUME: Volume, OUTPUT_CONFIDENCE: Volume, OUTPUT_VOLUMES: SetOfVolumes}

    # --------------------------- DEFINE param functions --------------------------------
    def _defineParams(self, form):
        device = Plugin.getDefaultDevice()
        form.addSection(label="Input")
        form.addHidden(params.USE_GPU, params.BooleanParam, default=device.lower() != CPU_DEVICE,
                       label="Use GPU?", help="No: run on the CPU (much slower; set the threads below).")
        form.addHidden(params.GPU_LIST, params.StringParam,
                       default=DEFAULT_DEVICE if device.lower() == CPU_DEVICE else device,
                       label="GPU IDs", help="GPUs to use, e.g. 0 or 0 1. Under a queue system the job uses the "
                                             "GPUs the queue gives it.")
        self._defineInputParams(form)

        form.addSection(label="Enhancement")
        form.addParam("normalization", params.EnumParam, choices=NORMALIZATION_CHOICES, default=NORM_AUTO,
                      label="Input normalisation",
                      help="automatic: estimate the solvent noise from the map (may fail on hollow or "
                           "filamentous maps: then use noise statistics).\nnoise statistics: the mean and "
                           "standard deviation of the solvent noise, measured by you.\nbinary mask: a tight "
                           "mask of the molecule (1 inside, 0 outside); uses the masked model.")
        form.addParam("noiseMean", params.FloatParam, default=0.0, condition=f"normalization == {NORM_NOISE_STATS}",
                      label="Noise mean", help="Mean of the solvent noise of the input map.")
        form.addParam("noiseStd", params.FloatParam, default=1.0, condition=f"normalization == {NORM_NOISE_STATS}",
                      label="Noise standard deviation", help="Standard deviation of the solvent noise (> 0).")
        form.addParam("inputMask", params.PointerParam, pointerClass="VolumeMask", allowsNull=True,
                      condition=f"normalization == {NORM_MASK}", label="Binary mask",
                      help="A tight mask of the molecule on the map's grid (e.g. from 'tight mask'). Empty: "
                           "the mask made from the atomic model below.")
        form.addParam("inputStructure", params.PointerParam, pointerClass="AtomStruct", allowsNull=True,
                      condition=f"normalization == {NORM_MASK}", label="or an atomic model",
                      help="A model fitted into the map: the mask is the map simulated from it, above its 95th "
                           "percentile (as the DeepEMhancer paper made its masks). Used when no mask is given.")
        form.addParam("structureResolution", params.FloatParam, default=4.0,
                      condition=f"normalization == {NORM_MASK}", expertLevel=params.LEVEL_ADVANCED,
                      label="Model map resolution (Å)", help="Resolution of the map simulated from the atomic model.")
        form.addParam("modelName", params.StringParam, default=DEFAULT_MODEL,
                      condition=f"normalization != {NORM_MASK}", label="Model",
                      help="recommended: the official tightTarget when installed; else our bundled open "
                           "models, open-halves for half maps and open-tight-small for one map (small models "
                           "trained on a CPU: read their model cards). The wizard lists the installed models "
                           "with a line on each, e.g. tightTarget, wideTarget (less aggressive, keeps weak "
                           "regions) and highRes (maps better than 4 Å), the official models installed by "
                           "'scipion3 installb deepemhancerWeights' or found in Scipion's xmipp bundle.")
        form.addParam("maskedModelName", params.StringParam, default=DEFAULT_MASKED_MODEL,
                      condition=f"normalization == {NORM_MASK}", label="Masked model",
                      help="A model trained for masked normalisation: the official masked one.")
        form.addParam("cleaning", params.BooleanParam, default=False, label="Remove small blobs?",
                      help="Remove small connected components of the result (likely noise); may remove "
                           "small real features.")
        form.addParam("cleaningStrength", params.FloatParam, default=0.05, condition="cleaning",
                      label="Smallest blob kept (fraction)",
                      help="Components smaller than this fraction of the labelled volume are removed (0 to 1).")
        form.addParam("legacy", params.BooleanParam, default=False, expertLevel=params.LEVEL_ADVANCED,
                      label="Legacy mode?",
                      help="Yes: reproduce the original program step by step, its flaws included. No "
                           "(recommended): blend overlapping cubes by their true average and keep the map "
                           "exactly in place.")
        form.addParam("blending", params.EnumParam, choices=BLENDINGS, default=0, condition="not legacy",
                      expertLevel=params.LEVEL_ADVANCED, label="Blending of overlapping cubes",
                      help="gaussian (recommended): a smooth window. count: the plain average; cube edges "
                           "then leave a faint pattern at the stride that both halves share.")
        form.addParam("predictSolvent", params.BooleanParam, default=False, condition="not legacy",
                      expertLevel=params.LEVEL_ADVANCED, label="Predict the solvent too?",
                      help="No (faster): the solvent farther than 10 Å from the molecule's automatic mask is "
                           "not predicted and fades to 0. Yes: every cube is predicted.")
        form.addParam("precision", params.EnumParam, choices=PRECISIONS, default=0,
                      expertLevel=params.LEVEL_ADVANCED, label="Precision",
                      help="fp32: reproducible (default). tf32, bf16 and fp16 are faster on recent GPUs.")
        form.addParam("batchSize", params.IntParam, default=0, expertLevel=params.LEVEL_ADVANCED,
                      label="Batch size (0: automatic)",
                      help="Cubes per GPU per step; 0 sizes the batch from the free GPU memory.")
        form.addParam("stride", params.IntParam, default=0, expertLevel=params.LEVEL_ADVANCED,
                      label="Cube stride (0: the model's)",
                      help="Voxels between neighbouring cubes; larger is faster (the official models use 16).")

        form.addSection(label="Trust")
        form.addParam("confidence", params.BooleanParam, default=False,
                      label="Enhance the halves on their own and map the confidence?",
                      help="Yes: the map is also enhanced under cube symmetries and, with half maps, each half "
                           "on its own. The spread of these independent predictions gives a confidence map "
                           "(1 where they agree); the enhanced halves are attached to the output and their FSC "
                           "is compared with the raw halves' (see the summary and Analyze results). Costs one "
                           "enhancement per prediction.")
        form.addParam("augmentations", params.EnumParam, choices=AUGMENTATIONS, default=1, condition="confidence",
                      label="Predictions of the map",
                      help="1: the map as it is; 8: also flipped over every set of axes; 24: the cube's rotations. "
                           "Without half maps at least 8 are needed.")
        form.addParallelSection(threads=4, mpi=0)

    # --------------------------- INSERT steps functions --------------------------------
    def _insertAllSteps(self):
        # The settings travel with the step, so that 'continue' recomputes only when they change.
        if self.usesSet():
            self._insertFunctionStep(self.enhanceSetStep, self.getSetSources(), self._settings())
            self._insertFunctionStep(self.createSetOutputStep, needsGPU=False)
            return
        sources, sampling = self._sourceFiles(), self.getReferenceVolume().getSamplingRate()
        self._insertFunctionStep(self.enhanceStep, sources, sampling, self._settings())
        if self._enhancesHalves():
            self._insertFunctionStep(self.halvesCheckStep, sources, sampling, needsGPU=False)
        self._insertFunctionStep(self.createOutputStep, needsGPU=False)

    def _settings(self) -> dict:
        """Everything that decides the result, as plain values."""
        normalization = self.normalization.get()
        cleaning = self.cleaningStrength.get() if self.cleaning.get() else None
        return {
            "model": self.getModelName(),
            "noise_stats": ([self.noiseMean.get(), self.noiseStd.get()]
                            if normalization == NORM_NOISE_STATS else None),
            "mask": self._maskPath() if normalization == NORM_MASK else None,
            "mask_model": self._maskModel() if normalization == NORM_MASK else None,
            "legacy": bool(self.legacy.get()),
            "blending": None if self.legacy.get() else BLENDINGS[self.blending.get()],
            "skip_solvent": not self.legacy.get() and not self.predictSolvent.get(),
            "precision": PRECISIONS[self.precision.get()],
            "batch_size": self.batchSize.get() or None,
            "stride": self.stride.get() or None,
            "cleaning_strength": cleaning,
            "augmentations": int(AUGMENTATIONS[self.augmentations.get()]) if self.confidence.get() else None,
        }

    def _maskModel(self) -> list | None:
        """[atomic model file, resolution, Scipion's origin of the map] when the model makes the mask."""
        structure = self.inputStructure.get()
        if self.inputMask.get() is not None or structure is None:
            return None
        return [os.path.abspath(structure.getFileName()), self.structureResolution.get(),
                list(origin_shifts(self.getReferenceVolume()))]

    def _enhancesHalves(self) -> bool:
        """Whether each half map is also enhanced on its own: with the confidence map, from half maps,
        by a single-map model (a half-map model needs both halves for every prediction)."""
        from deepemhancer.models.store import HALVES_NORMALIZATIONS

        from ..models import find_choice

        choice = find_choice(self.getModelName())
        return bool(self.confidence.get()) and self.usesHalfMaps() and not self.usesSet() \
            and choice is not None and choice.normalization not in HALVES_NORMALIZATIONS

    def getModelName(self) -> str:
        """The chosen model; the recommended one is resolved for this run's input (models.default_model_name)."""
        from ..models import default_model_name

        if self.normalization.get() == NORM_MASK:
            return (self.maskedModelName.get() or "").strip()
        name = (self.modelName.get() or "").strip()
        return default_model_name(self.usesHalfMaps()) if name in ("", RECOMMENDED_MODEL) else name

    # --------------------------- STEPS functions ---------------------------------------
    def enhanceStep(self, sources, sampling, settings):
        """The engine's batch on one job: the map (or half maps) enhanced, with the confidence map
        and the enhanced halves when asked; the engine's error ends the step.

        A function step rather than runJob of the command line: the run is already a process of its
        own (started locally, or by the queue system through hosts.conf on the node that has the
        GPU), so GPU memory is released when it ends; and the engine's errors reach the run's log
        and error message as the engine's one clear line, with nothing to quote or parse.
        """
        from deepemhancer.batch import Job

        confidence = settings["augmentations"] is not None
        halves = tuple(self._getExtraPath(name) for name in ENHANCED_HALF_FILES)
        job = Job(tuple(sources), self._getExtraPath(ENHANCED_FILE),
                  confidence=self._getExtraPath(CONFIDENCE_FILE) if confidence else None,
                  enhanced_halves=halves if confidence and len(sources) == 2 else None, voxel_size=sampling)
        outcome, = self._runEngine([job], settings, keep_going=False)
        return [str(path) for path in outcome.written]

    def enhanceSetStep(self, sources, settings):
        """Every volume of the set through the engine's batch (one model load): a volume that fails is
        recorded, with the engine's reason, and the others go on; the step fails only if all do."""
        from deepemhancer.batch import Job, error_text
        from deepemhancer.errors import DeepEMhancerError

        jobs = [Job(tuple(files), self._getExtraPath(ENHANCED_SET_FILE.format(volumeId)), voxel_size=sampling)
                for volumeId, files, sampling in sources]

        def log(outcome):
            self.info(f"{outcome.job.name}: " + (f"enhanced into {outcome.job.output}" if outcome.ok
                                                 else f"FAILED: {error_text(outcome.error)}"))

        outcomes = self._runEngine(jobs, settings, keep_going=True, report=log)
        record = {str(volumeId): ({"file": str(outcome.job.output)} if outcome.ok
                                  else {"error": error_text(outcome.error)})
                  for (volumeId, _, _), outcome in zip(sources, outcomes)}
        write_json(self._getExtraPath(SET_OUTCOMES_FILE), record)
        if not any(outcome.ok for outcome in outcomes):
            raise DeepEMhancerError("no volume of the set could be enhanced: "
                                    + "; ".join(f"volume {key}: {entry['error']}" for key, entry in record.items()))
        return [entry["file"] for entry in record.values() if "file" in entry]

    def _runEngine(self, jobs, settings: dict, **how):
        """``deepemhancer.batch.run`` with this run's model and options; files are replaced (reruns)."""
        from deepemhancer.batch import run
        from deepemhancer.devices import keep_freed_memory

        from ..models import resolve_model

        keep_freed_memory()  # this run's process is ours (see docs/performance.md)
        return run(jobs, resolve_model(settings["model"]), self._engineOptions(settings),
                   mask=self._binaryMask(settings, jobs[0].inputs[0], jobs[0].voxel_size),
                   augmentations=settings["augmentations"], overwrite=True, **how)

    def _engineOptions(self, settings: dict):
        """The engine's EnhanceOptions: the stored settings, plus this run's devices and threads."""
        from deepemhancer.pipeline import EnhanceOptions

        return EnhanceOptions(
            legacy=settings["legacy"],
            noise_stats=tuple(settings["noise_stats"]) if settings["noise_stats"] else None,
            blending=settings["blending"],
            skip_solvent=settings.get("skip_solvent", True),  # settings stored by older runs lack it
            stride=settings["stride"],
            cleaning_strength=settings["cleaning_strength"],
            gpu_ids=self._gpuIds(),
            batch_size=settings["batch_size"],
            precision=settings["precision"],
            threads=self.numberOfThreads.get() or None,
        )

    @staticmethod
    def _binaryMask(settings: dict, source, sampling: float):
        """The mask of binary-mask normalisation: the given one, or made from the atomic model on the
        grid of the map ``source`` (the first of a set)."""
        from deepemhancer.mapio import read_map
        from deepemhancer.molecule_masks import model_mask

        if settings["mask"]:
            return read_map(settings["mask"])
        if not settings.get("mask_model"):  # runs stored before atomic models were accepted lack the key
            return None
        structure, resolution, shifts = settings["mask_model"]
        like = read_volume_file(str(source), sampling)
        # Atoms are placed where Scipion shows the map: at Scipion's origin.
        return like.with_data(model_mask(structure, placed_as_in_scipion(like, shifts), resolution))

    def halvesCheckStep(self, sources, sampling):
        """The FSC of the separately enhanced halves against the raw halves' (the engine's check)."""
        from deepemhancer.mapio import read_map
        from deepemhancer.metrics import halves_check

        raw = [read_volume_file(path, sampling) for path in sources]
        enhanced = [read_map(self._getExtraPath(name)) for name in ENHANCED_HALF_FILES]
        return write_json(self._getExtraPath(HALVES_CHECK_FILE), halves_check(*raw, *enhanced).to_dict())

    def createOutputStep(self):
        like = self.getReferenceVolume()
        outputs = {OUTPUT_VOLUME: output_volume(self._getExtraPath(ENHANCED_FILE), like)}
        if self._enhancesHalves():
            outputs[OUTPUT_VOLUME].setHalfMaps([self._getExtraPath(name) for name in ENHANCED_HALF_FILES])
        if self.confidence.get():
            outputs[OUTPUT_CONFIDENCE] = output_volume(self._getExtraPath(CONFIDENCE_FILE), like)
        self._defineOutputs(**outputs)
        for pointer in self._inputPointers():
            for output in outputs.values():
                self._defineTransformRelation(pointer, output)

    def createSetOutputStep(self):
        """The enhanced volumes as a set: each with its input's id, sampling rate and origin."""
        outcomes = self.getSetOutcomes()
        inputs = self.inputVolumes.get()
        volumes = self._createSetOfVolumes()
        volumes.copyInfo(inputs)
        for item in inputs.iterItems():
            entry = outcomes.get(str(item.getObjId()), {})
            if "file" in entry:
                volume = output_volume(entry["file"], item)
                volume.setObjId(item.getObjId())
                volumes.append(volume)
        self._defineOutputs(**{OUTPUT_VOLUMES: volumes})
        self._defineTransformRelation(self.inputVolumes, volumes)

    def getSetOutcomes(self) -> dict:
        """Of a run on a set: volume id (text) -> {"file": the enhanced map} or {"error": why it failed}."""
        path = self._getExtraPath(SET_OUTCOMES_FILE)
        return read_json(path) if os.path.exists(path) else {}

    def getHalvesCheck(self) -> dict | None:
        """The independent-halves check of a finished run (engine's HalvesCheck.to_dict), if made."""
        path = self._getExtraPath(HALVES_CHECK_FILE)
        return read_json(path) if os.path.exists(path) else None

    def _gpuIds(self) -> str:
        """The engine's -g value: the CPU, every GPU the queue system gave the job, or the chosen ones."""
        if not self.usesGpu():
            return "-1"
        if self.useQueue():
            return "all"  # the queue system exposes only the job's GPUs (CUDA_VISIBLE_DEVICES)
        return ",".join(str(gpu) for gpu in self.getGpuList()) or "0"

    # --------------------------- INFO functions ----------------------------------------
    def _validate(self):
        errors = self._validateInput()
        sources = [] if errors else (self.getSetSources()[0][1] if self.usesSet() else self._sourceFiles())
        normalization = self.normalization.get()
        if normalization == NORM_NOISE_STATS and not (self.noiseStd.get() or 0) > 0:
            errors.append("The noise standard deviation must be positive.")
        if normalization == NORM_MASK:
            errors += self._validateBinaryMask(sources)
        if self.cleaning.get() and not 0 < (self.cleaningStrength.get() or 0) < 1:
            errors.append("The blob-cleaning fraction must be between 0 and 1 (exclusive).")
        if self.confidence.get() and AUGMENTATIONS[self.augmentations.get()] == "1" and not self.usesHalfMaps():
            errors.append("A confidence map needs at least two predictions: use half maps, or 8 or 24 predictions "
                          "of the map.")
        if self.confidence.get() and self.usesSet():
            errors.append("The confidence map is made for one volume at a time: for a set of volumes answer No to "
                          "'Enhance the halves on their own and map the confidence?', or enhance the volumes one "
                          "by one.")
        if (self.batchSize.get() or 0) < 0 or (self.stride.get() or 0) < 0:
            errors.append("Batch size and stride must be 0 (automatic) or positive.")
        return errors + self._validateModel()

    def _validateBinaryMask(self, sources: list) -> list:
        mask = self.inputMask.get()
        if mask is None and self.inputStructure.get() is None:
            return ["Binary mask normalisation needs a mask (e.g. from 'tight mask') or a fitted atomic model: "
                    "select one."]
        if mask is None:
            return [] if self.structureResolution.get() > 0 else ["The model map resolution must be positive."]
        return self._maskGridErrors(mask, sources[0] if sources else None, "the map's")

    def _validateModel(self) -> list:
        from deepemhancer.models.store import HALVES_NORMALIZATIONS

        from ..models import accepted_normalizations, find_choice, unknown_model_message

        name = self.getModelName()
        if not name:
            return ["Give a model name (use the wizard to list the installed models)."]
        choice = find_choice(name)
        if choice is None:
            return [unknown_model_message(name) + "."]
        masked = self.normalization.get() == NORM_MASK
        if choice.normalization in accepted_normalizations(masked, self.usesHalfMaps()):
            if choice.normalization in HALVES_NORMALIZATIONS and self.confidence.get() \
                    and AUGMENTATIONS[self.augmentations.get()] == "1":
                return [f"Model {name!r} predicts from both half maps at once: a confidence map needs 8 or 24 "
                        "predictions of the map."]
            return []
        if choice.normalization in HALVES_NORMALIZATIONS:
            return [f"Model {name!r} takes two half maps: give them (or answer Yes to 'Use its half maps "
                    f"instead?'), or choose a model for one map."]
        return [f"Model {name!r} expects {choice.normalization} normalisation but "
                f"'{NORMALIZATION_CHOICES[self.normalization.get()]}' is selected: choose a "
                + ("model trained for masked input (masked)." if masked
                   else "model for unmasked input (e.g. tightTarget), or binary-mask normalisation.")]

    def _warnings(self):
        from ..models import find_choice

        choice = find_choice(self.getModelName())
        if choice is not None and not choice.trained:
            return [f"Model {choice.name!r} is an UNTRAINED network: the result only demonstrates the pipeline "
                    f"and is not an enhanced map."]
        return []

    def _summary(self):
        summary = [self._inputSummary(),
                   f"Model: {self.getModelName()}, normalisation: {self._normalizationText()}, "
                   f"{'legacy' if self.legacy.get() else 'corrected'} mode, {PRECISIONS[self.precision.get()]}"]
        if self.hasAttribute(OUTPUT_VOLUME):
            summary.append(f"Output: {OUTPUT_VOLUME} (in the network's normalised units; compare it with the raw "
                           f"and sharpened maps through Analyze results)")
        outcomes = self.getSetOutcomes() if self.usesSet() else {}
        if outcomes:
            enhanced = sum("file" in entry for entry in outcomes.values())
            summary.append(f"Output: {OUTPUT_VOLUMES}, {enhanced} of {len(outcomes)} volumes enhanced (in the "
                           f"network's normalised units)")
            summary += [f"Volume {key} failed: {entry['error']}" for key, entry in outcomes.items() if "error" in entry]
        if self.hasAttribute(OUTPUT_CONFIDENCE):
            summary.append(f"Confidence map: {OUTPUT_CONFIDENCE} (1 where the independent predictions agree)")
        check = self.getHalvesCheck()
        if check is not None:
            summary.append(f"Independent halves: {check['verdict']}")
        return summary

    def _methods(self):
        if self.hasAttribute(OUTPUT_VOLUMES):
            what = f"The {getattr(self, OUTPUT_VOLUMES).getSize()} maps were each"
        elif self.hasAttribute(OUTPUT_VOLUME):
            what = "The map was"
        else:
            return []
        return [f"{what} post-processed with DeepEMhancer [SanchezGarcia2021] (PyTorch implementation, "
                f"Scipion plugin {__version__}), model {self.getModelName()}, "
                f"{self._normalizationText()} normalisation, "
                f"{'legacy' if self.legacy.get() else 'corrected'} pipeline."]

    def _normalizationText(self) -> str:
        text = NORMALIZATION_CHOICES[self.normalization.get()]
        if self.normalization.get() == NORM_MASK and self._maskModel() is not None:
            text += (f" (the mask made from the atomic model simulated at {self.structureResolution.get():g} Å, "
                     f"above its 95th percentile)")
        return text

    def _citations(self):
        model = self.normalization.get() == NORM_MASK and self._maskModel() is not None
        return ["SanchezGarcia2021"] + (["Wojdyr2022"] if model else [])

