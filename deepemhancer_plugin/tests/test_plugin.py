"""The plugin as Scipion sees it, without running protocols: registration, the GUI tree, citations,
variables, the weights installer, where models are found, GPU choice and the ChimeraX script."""
import importlib.util
import os
import shutil
import tempfile
import unittest
from pathlib import Path
from unittest import mock

import pwem
from pwem.objects import Volume
from pyworkflow.plugin import Domain

import deepemhancer_plugin
from deepemhancer_plugin import Plugin
from deepemhancer_plugin.constants import (DEVICE_VAR, INPUT_TWO_HALVES, INPUT_VOLUME, OFFICIAL_WEIGHTS_VAR,
                                           WEIGHTS_HOME_VAR)
from deepemhancer_plugin.models import find_choice, model_choices, official_weights_folder, resolve_model
from deepemhancer_plugin.protocols import (ProtDeepEMhancer, ProtDeepEMhancerHalfMapFSC, ProtDeepEMhancerMask,
                                           ProtDeepEMhancerSharpen)
from deepemhancer_plugin.viewers.comparison import ChainMap, chimerax_script

from .helpers import (TINY_HALVES_MODEL, TINY_MASKED_MODEL, TINY_MODEL, TINY_UNTRAINED_MODEL, markup,
                      write_tiny_models)

PROTOCOLS = (ProtDeepEMhancer, ProtDeepEMhancerHalfMapFSC, ProtDeepEMhancerMask, ProtDeepEMhancerSharpen)


class FakeInstallEnv:
    """Records what defineBinaries asks Scipion's installer to do."""

    def __init__(self, em_folder):
        self.em_folder = em_folder
        self.packages = []

    def getEmFolder(self):
        return self.em_folder

    def getPython(self):
        return "/scipion/python"

    def addPackage(self, name, **kwargs):
        self.packages.append((name, kwargs))


def fake_xmipp_bundle(xmipp_home: Path) -> Path:
    """Official weights where Scipion's xmipp bundle keeps them (names only: nothing is converted)."""
    bundle = xmipp_home / "models" / "deepEMhancer_v016"
    (bundle / "production_checkpoints").mkdir(parents=True)
    for name in ("tightTarget", "wideTarget", "highRes", "masked"):
        (bundle / "production_checkpoints" / f"deepEMhancer_{name}.hd5").write_bytes(b"")
    return bundle


class TestPluginRegistration(unittest.TestCase):

    def test_found_through_the_entry_point(self):
        self.assertIs(Domain.getPluginModule("deepemhancer_plugin"), deepemhancer_plugin)
        for protocol in PROTOCOLS:
            self.assertIs(Domain.findClass(protocol.__name__), protocol)
        self.assertIn("DeepEMhancerComparisonViewer", Domain.getViewers())
        self.assertIn("DeepEMhancerModelWizard", Domain.getWizards())

    def test_protocols_sit_in_3d_postprocess(self):
        from pyworkflow.gui.project.viewprotocols_extra import ProtocolTreeConfig

        tree = ProtocolTreeConfig.load(Domain, os.path.join(os.path.dirname(pwem.__file__), "protocols.conf"))
        section = next(child for child in tree["Protocols SPA"].childs if child.text == "3D")
        group = next(child for child in section.childs if child.text == "Postprocess")
        values = {child.value for child in group.childs}
        self.assertTrue({p.__name__ for p in PROTOCOLS} <= values, values)

    def test_citations_resolve(self):
        bibtex = Domain.getPluginModule("deepemhancer_plugin")._bibtex  # parsed from bibtex.py's docstring
        paper = bibtex["SanchezGarcia2021"]
        self.assertEqual((paper["journal"], paper["volume"], paper["pages"], paper["year"]),
                         ("Communications Biology", "4", "874", "2021"))
        self.assertIn("10.1038/s42003-021-02399-1", paper["doi"])
        keys = set(deepemhancer_plugin._references)
        for protocol in PROTOCOLS:
            keys |= set(protocol()._citations())
        self.assertTrue(keys <= set(bibtex), keys - set(bibtex))

    def test_fresh_install_has_no_missing_paths(self):
        self.assertEqual(Plugin._pathVars, [])
        self.assertFalse(Plugin.validateInstallation())


@unittest.skipIf(importlib.util.find_spec("xmipp3") is not None, "xmipp3 is installed: its own folders win")
class TestWeights(unittest.TestCase):
    """Every folder is a temporary one, also when run inside a real Scipion installation."""

    def setUp(self):
        self.tmp = Path(tempfile.mkdtemp())
        patches = [mock.patch.object(pwem.Config, "XMIPP_HOME", str(self.tmp / "xmipp")),
                   mock.patch.dict(Plugin._vars, {WEIGHTS_HOME_VAR: str(self.tmp / "weights"),
                                                  OFFICIAL_WEIGHTS_VAR: ""}),
                   mock.patch.dict(os.environ, {OFFICIAL_WEIGHTS_VAR: ""})]
        for patch in patches:
            patch.start()
            self.addCleanup(patch.stop)
        self.addCleanup(shutil.rmtree, self.tmp, True)

    def test_installb_downloads_the_official_weights(self):
        env = FakeInstallEnv("/em")
        Plugin.defineBinaries(env)
        [(name, package)] = env.packages
        [(command, targets)] = package["commands"]
        self.assertEqual((name, package["version"], package["default"]), ("deepemhancerWeights", "1.0", False))
        self.assertEqual(command, "DEEPEMHANCER_MODELS_DIR=/em/deepemhancerWeights-1.0/models "
                                  "/scipion/python -m deepemhancer models download weights")
        self.assertEqual(targets, ["models/tightTarget.json"])

    def test_xmipp_bundle_is_found_and_imported_by_installb(self):
        bundle = fake_xmipp_bundle(self.tmp / "xmipp")
        self.assertEqual(official_weights_folder(), bundle)
        env = FakeInstallEnv("/em")
        Plugin.defineBinaries(env)
        command = env.packages[0][1]["commands"][0][0]
        self.assertTrue(command.endswith(f"-m deepemhancer models import {bundle}"), command)
        masked = find_choice("masked")
        self.assertEqual((masked.normalization, masked.origin), ("masked", f"official weights in {bundle}"))
        self.assertEqual(find_choice("tightTarget").normalization, "noise")

    def test_recommended_model_is_tight_target_when_installed_else_the_bundled_one_for_the_input(self):
        from deepemhancer_plugin.models import default_model_name

        self.assertEqual(default_model_name(), "open-tight-small")
        bundled = self.tmp / "bundled"
        bundled.mkdir()
        write_tiny_models(bundled)
        one_map, halves = ProtDeepEMhancer(inputChoice=INPUT_VOLUME), ProtDeepEMhancer(inputChoice=INPUT_TWO_HALVES)
        with mock.patch("deepemhancer.models.registry.bundled_dir", return_value=bundled):
            self.assertEqual((one_map.getModelName(), halves.getModelName()), (TINY_MODEL, TINY_HALVES_MODEL))
            fake_xmipp_bundle(self.tmp / "xmipp")
            self.assertEqual((one_map.getModelName(), halves.getModelName()), ("tightTarget", "tightTarget"))

    def test_the_model_list_offers_trained_models_that_fit_the_input(self):
        from deepemhancer_plugin.models import offered_choices
        from deepemhancer_plugin.wizards import model_rows

        write_tiny_models()

        def names(masked, halves):
            return {choice.name for choice in offered_choices(masked, halves)}

        self.assertTrue({TINY_MODEL, "open-tight-small"} <= names(False, False))
        self.assertFalse({TINY_UNTRAINED_MODEL, "demo-untrained", TINY_HALVES_MODEL, TINY_MASKED_MODEL}
                         & names(False, False))
        self.assertTrue({TINY_MODEL, TINY_HALVES_MODEL} <= names(False, True))
        self.assertEqual(names(True, True) & {TINY_MODEL, TINY_MASKED_MODEL, TINY_HALVES_MODEL}, {TINY_MASKED_MODEL})
        rows = model_rows(ProtDeepEMhancer(inputChoice=INPUT_VOLUME))
        self.assertEqual((rows[0].name, rows[0].description.split(":")[0]), ("recommended", "now open-tight-small"))
        described = {row.name: row.description for row in rows}
        self.assertEqual(described[TINY_MODEL], "tiny random noise network for the plugin tests")
        self.assertTrue(all(row.description for row in rows))

    def test_models_converted_by_installb_are_used(self):
        folder = Plugin.getWeightsModelsDir()
        os.makedirs(folder)
        write_tiny_models(folder)
        os.rename(os.path.join(folder, f"{TINY_MODEL}.json"), os.path.join(folder, "shared.json"))
        os.rename(os.path.join(folder, f"{TINY_MODEL}.safetensors"), os.path.join(folder, "shared.safetensors"))
        self.assertEqual(find_choice("shared").origin, "Scipion weights package")
        self.assertEqual(resolve_model("shared"), Path(folder) / "shared.json")
        names = [choice.name for choice in model_choices()]
        self.assertLess(names.index("demo-untrained"), names.index("shared"))  # the engine's places first


class TestDevice(unittest.TestCase):

    def setUp(self):
        self.saved = Plugin.getVar(DEVICE_VAR)

    def tearDown(self):
        Plugin._vars[DEVICE_VAR] = self.saved

    def test_default_device_variable_sets_the_form_defaults(self):
        Plugin._vars[DEVICE_VAR] = "cpu"
        self.assertFalse(ProtDeepEMhancer().useGpu.get())
        Plugin._vars[DEVICE_VAR] = "1,2"
        prot = ProtDeepEMhancer()
        self.assertTrue(prot.useGpu.get())
        self.assertEqual(prot.gpuList.get(), "1,2")

    def test_engine_device_string(self):
        prot = ProtDeepEMhancer(gpuList="0 2")
        self.assertEqual(prot._gpuIds(), "0,2")
        prot.useGpu.set(False)
        self.assertEqual(prot._gpuIds(), "-1")


class TestTexts(unittest.TestCase):
    """What the GUI shows: short distinct labels, and no accidental markup in any text."""

    def test_tree_and_run_labels_are_short_and_distinct(self):
        from pyworkflow.gui.project.viewprotocols_extra import ProtocolTreeConfig

        tree = ProtocolTreeConfig.load(Domain, os.path.join(os.path.dirname(pwem.__file__), "protocols.conf"))
        section = next(child for child in tree["Protocols SPA"].childs if child.text == "3D")
        group = next(child for child in section.childs if child.text == "Postprocess")
        ours = {child.value: child.text for child in group.childs if child.value in {p.__name__ for p in PROTOCOLS}}
        self.assertEqual(len(set(ours.values())), len(PROTOCOLS))
        self.assertTrue(all(len(text) <= 16 and "_" not in text for text in ours.values()), ours)
        labels = [protocol.getClassLabel() for protocol in PROTOCOLS]
        self.assertIn("DeepEMhancer - enhance", labels)
        self.assertTrue(all("deepemhancer_plugin" not in label for label in labels), labels)
        # A run box shows 40 characters, after "* " when the plugin is installed for development.
        self.assertTrue(all(len("* " + label) <= 40 for label in labels), labels)

    def test_no_markup_in_help_labels_and_choices(self):
        from deepemhancer_plugin.viewers import DeepEMhancerComparisonViewer
        from pwem.protocols import ProtAnalysis3D
        from pyworkflow.protocol import Form

        scipions = Form(ProtAnalysis3D())  # texts of Scipion's own sections, which we do not write
        scipions.addParallelSection(threads=1, mpi=1)
        theirs = {str(param.help) for _, param in scipions.iterAllParams()}
        viewerForm = Form(None)
        DeepEMhancerComparisonViewer._defineParams(None, viewerForm)  # needs no viewer (which needs a project)
        owners = [(p, p.getClassLabel(), p()._definition) for p in PROTOCOLS]
        owners.append((DeepEMhancerComparisonViewer, DeepEMhancerComparisonViewer._label, viewerForm))
        for owner, label, form in owners:
            texts = [owner.__doc__, label]
            for _, param in form.iterAllParams():
                if str(param.help) not in theirs:
                    texts += [str(param.label), str(param.help or "")] + list(getattr(param, "choices", []))
            self.assertEqual([piece for text in texts for piece in markup(text)], [], owner.__name__)


class TestChimeraXScript(unittest.TestCase):

    def test_script_places_contours_and_tiles(self):
        maps = [ChainMap("raw", "raw", "/data/raw.mrc", 1.06, (-53.0, -53.0, -53.0)),
                ChainMap("enhanced", "enhanced", "/data/enh.mrc", 1.06, (-53.0, -53.0, -53.0))]
        text = chimerax_script(maps, [0.5, 0.125], (12345.0, "the volume of mask"))
        lines = [line for line in text.splitlines() if not line.startswith("#")]
        self.assertEqual(lines, [
            'open "/data/raw.mrc" format mrc',
            "volume #1 voxelSize 1.06 origin -53.0000,-53.0000,-53.0000 level 0.5 style surface",
            'open "/data/enh.mrc" format mrc',
            "volume #2 voxelSize 1.06 origin -53.0000,-53.0000,-53.0000 level 0.125 style surface",
            "tile #1-2",
            "view"])
        self.assertIn("Every contour encloses 12345 Å³ (the volume of mask).", text)

    def test_a_confidence_map_colours_its_enhanced_map(self):
        maps = [ChainMap("raw", "raw", "/data/raw.mrc", 1.0, (0.0, 0.0, 0.0)),
                ChainMap("enhanced", "enhanced", "/data/enh.mrc", 1.0, (0.0, 0.0, 0.0), "/data/conf.mrc")]
        lines = chimerax_script(maps, [0.5, 0.125], (1.0, "chosen")).splitlines()
        self.assertEqual([line for line in lines if not line.startswith("#")][4:], [
            'open "/data/conf.mrc" format mrc',
            "volume #3 voxelSize 1 origin 0.0000,0.0000,0.0000 hide",
            "color sample #2 map #3 palette 0,red:0.5,yellow:1,blue",
            "tile #1-2",
            "view"])

    def test_missing_chimerax_says_what_is_missing(self):
        from deepemhancer_plugin.viewers.viewer_comparison import chimerax_missing
        from pwem.viewers.viewer_chimera import Chimera

        with mock.patch("importlib.util.find_spec", return_value=None):
            self.assertIn("the scipion-em-chimera plugin, which is not installed", chimerax_missing())
        with mock.patch("importlib.util.find_spec", return_value=object()), \
                mock.patch.object(Chimera, "getProgram", return_value="/em/chimerax-1.6/bin/ChimeraX"):
            message = chimerax_missing()
        self.assertTrue(message.startswith("ChimeraX is not installed where the chimera plugin looks "
                                           "(/em/chimerax-1.6/bin/ChimeraX): install it with 'scipion3 installb "
                                           "chimerax'"), message)

    def test_output_volume_copies_sampling_and_origin(self):
        from deepemhancer_plugin.convert import output_volume
        from pwem.objects import Transform

        source = Volume()
        source.setSamplingRate(1.3)
        origin = Transform()
        origin.setShifts(-10.0, 5.0, 2.5)
        source.setOrigin(origin)
        out = output_volume("out.mrc", source)
        self.assertEqual((out.getFileName(), out.getSamplingRate()), ("out.mrc", 1.3))
        self.assertEqual(tuple(out.getOrigin().getShifts()), (-10.0, 5.0, 2.5))
        self.assertIsNot(out.getOrigin(), source.getOrigin())
