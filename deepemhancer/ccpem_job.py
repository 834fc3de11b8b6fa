"""DeepEMhancer as a CCP-EM pipeliner job (ccpem-pipeliner 1.6): the `deepemhancer` command on a
map or two half maps, with an optional binary mask, a model, GPUs and the confidence map; outputs
the enhanced map, the confidence map as an evaluation metric, and a ChimeraX script colouring the
enhanced map by it (written by the pipeliner's own script, as its LocScale job does).

The pipeliner finds the job through the entry point group ``ccpem_pipeliner.jobs`` (engine/pyproject.toml).
Only the pipeliner imports this module.
"""
from __future__ import annotations

import os

from pipeliner.display_tools import make_maps_slice_montage_and_3d_display
from pipeliner.external_program_utils import ExternalProgram
from pipeliner.job_options import (BooleanJobOption, FileDescription, FloatJobOption, InputNodeJobOption,
                                   JobOptionCondition, JobOptionValidationResult, MultipleChoiceJobOption,
                                   StringJobOption)
from pipeliner.nodes import NODE_DENSITYMAP, NODE_EVALUATIONMETRIC, NODE_MASK3D, NODE_VISUALISATIONSCRIPT
from pipeliner.pipeliner_job import PipelinerCommand, PipelinerJob, Ref
from pipeliner.utils import get_job_script

RECOMMENDED = "recommended"
ENHANCED = "enhanced.mrc"
CONFIDENCE = "enhanced_confidence.mrc"  # the command line's name for -o enhanced.mrc --confidence
SCRIPT = "colour_by_confidence.cxc"
MAP_FILES = FileDescription("3D map", [".mrc", ".map"])


def model_names() -> list[str]:
    """Trained models the engine finds by name, "recommended" (its own default choice) first."""
    from .models import registry

    names = [info.name for info in registry.list_models() if info.trained]
    names += list(registry.official_hd5_files(registry.original_models_dir()))
    return [RECOMMENDED] + list(dict.fromkeys(names))


class DeepEMhancerJob(PipelinerJob):
    """Deep-learning post-processing of cryo-EM maps (DeepEMhancer on PyTorch)."""

    PROCESS_NAME = "deepemhancer.postprocess.enhance"
    OUT_DIR = "DeepEMhancer"
    CATEGORY_LABEL = "Map Postprocessing"

    def __init__(self) -> None:
        super().__init__()
        self.jobinfo.display_name = "DeepEMhancer"
        self.jobinfo.version = "0.1"
        self.jobinfo.short_desc = "Deep-learning enhancement of cryo-EM maps, with a confidence map"
        self.jobinfo.long_desc = (
            "A 3D U-Net that suppresses noise around the molecule and sharpens it locally (DeepEMhancer, on "
            "PyTorch). Give the two unfiltered half maps (or one map). The output keeps the input's box, voxel "
            "size and origin. Optionally, a confidence map from independent predictions (each half on its own, "
            "and the map under cube symmetries) shows where the result can be trusted.")
        self.jobinfo.programs = [ExternalProgram("deepemhancer")]
        self.jobinfo.references = [Ref(
            authors=["Sanchez-Garcia R", "Gomez-Blanco J", "Cuervo A", "Carazo JM", "Sorzano COS", "Vargas J"],
            title="DeepEMhancer: a deep learning solution for cryo-EM volume post-processing",
            journal="Communications Biology", year="2021", volume="4", pages="874",
            doi="10.1038/s42003-021-02399-1")]
        self.joboptions["input_map"] = InputNodeJobOption(
            label="Half map 1 (or the map)", node_type=NODE_DENSITYMAP, default_value="", pattern=MAP_FILES,
            help_text="The first unfiltered half map, or one unfiltered, unsharpened, unmasked map", is_required=True)
        self.joboptions["half_map_2"] = InputNodeJobOption(
            label="Half map 2", node_type=NODE_DENSITYMAP, default_value="", pattern=MAP_FILES,
            help_text="The second half map (recommended); empty when the input is one map")
        self.joboptions["mask"] = InputNodeJobOption(
            label="Binary mask (optional)", node_type=NODE_MASK3D, default_value="", pattern=MAP_FILES,
            help_text="A tight binary mask on the map's grid: masked normalisation with the official masked model")
        self.joboptions["model"] = MultipleChoiceJobOption(
            label="Model", choices=model_names(), default_value_index=0,
            help_text="recommended: the official tightTarget when installed, else the bundled model for the "
                      "input. A mask selects the masked model.",
            deactivate_if=JobOptionCondition([("mask", "!=", "")]))
        self.joboptions["gpu_ids"] = StringJobOption(
            label="GPU ids", default_value="0", help_text="Comma-separated GPU ids (0 or 0,1), all, or -1 for the CPU")
        self.joboptions["confidence"] = BooleanJobOption(
            label="Map the confidence?", default_value=False,
            help_text="Also enhance each half map on its own and the map under cube symmetries: the spread of "
                      "these predictions is the confidence map (1 where they agree)")
        self.joboptions["augmentations"] = MultipleChoiceJobOption(
            label="Predictions of the map", choices=["1", "8", "24"], default_value_index=1,
            help_text="1: as it is (needs half maps and a single-map model); 8: flipped; 24: rotated",
            deactivate_if=JobOptionCondition([("confidence", "=", False)]))
        self.joboptions["contour_level"] = FloatJobOption(
            label="ChimeraX contour level", default_value=0.1, suggested_min=0.0, suggested_max=1.0,
            step_value=0.01, help_text="Contour of the enhanced map in the ChimeraX script (normalised units)",
            deactivate_if=JobOptionCondition([("confidence", "=", False)]), jobop_group="Display")
        self.get_runtab_options()

    def additional_joboption_validation(self) -> list[JobOptionValidationResult]:
        if self.joboptions["confidence"].get_boolean() and self.joboptions["augmentations"].get_string() == "1" \
                and not self.joboptions["half_map_2"].get_string():
            return [JobOptionValidationResult(
                "error", [self.joboptions["augmentations"], self.joboptions["half_map_2"]],
                "A confidence map needs at least two predictions: give half map 2, or 8 or 24 predictions")]
        return []

    def create_output_nodes(self) -> None:
        self.add_output_node(ENHANCED, NODE_DENSITYMAP, ["deepemhancer", "enhanced"])
        if self.joboptions["confidence"].get_boolean():
            self.add_output_node(CONFIDENCE, NODE_EVALUATIONMETRIC, ["deepemhancer", "confidence"])
            self.add_output_node(_json_of(SCRIPT), NODE_VISUALISATIONSCRIPT, ["colour_by_confidence", "chimerax"])

    def get_commands(self) -> list[PipelinerCommand]:
        self.working_dir = self.output_dir
        options = self.joboptions
        command = [self.jobinfo.programs[0].command, "-i", self._relative("input_map"), "-o", ENHANCED,
                   "-g", options["gpu_ids"].get_string()]
        if options["half_map_2"].get_string():
            command += ["-i2", self._relative("half_map_2")]
        if options["mask"].get_string():
            command += ["-m", self._relative("mask")]
        elif options["model"].get_string() != RECOMMENDED:
            command += ["-p", options["model"].get_string()]
        if not options["confidence"].get_boolean():
            return [PipelinerCommand(command)]
        command += ["--confidence", "--confidenceAugmentations", options["augmentations"].get_string()]
        return [PipelinerCommand(command), PipelinerCommand(self._script_command())]

    def _relative(self, option: str) -> str:
        return os.path.relpath(self.joboptions[option].get_string(), self.working_dir)

    def _script_command(self) -> list:
        """The pipeliner's own ChimeraX script writer: the enhanced map (#1) coloured by its confidence (#2)."""
        return ["python3", get_job_script("chimerax_scripts/colour_map_by_mapvalues.py"), "-s", SCRIPT,
                "-l", self.joboptions["contour_level"].get_number(), "-m1", ENHANCED, "-m2", CONFIDENCE,
                "--palette", "0,red:0.5,yellow:1,blue", "--prefix_path", self.output_dir,
                "--out_json", _json_of(SCRIPT), "--write_json"]

    def create_results_display(self):
        maps = {os.path.join(self.output_dir, ENHANCED): "DeepEMhancer enhanced map"}
        if self.joboptions["confidence"].get_boolean():
            maps[os.path.join(self.output_dir, CONFIDENCE)] = "confidence (1: independent predictions agree)"
        return make_maps_slice_montage_and_3d_display(in_maps=maps, output_dir=self.output_dir)


def _json_of(script: str) -> str:
    return os.path.splitext(script)[0] + ".json"
