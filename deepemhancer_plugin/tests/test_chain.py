"""The whole chain, headless: import a volume with half maps -> average and FSC -> masks (from the map
and from an atomic model) -> B-factor sharpening -> enhancement (tiny networks) -> the comparison
viewer's PNGs and ChimeraX script; then 'continue' and 'restart' reruns."""
import os
import re

import numpy as np
from scipy import ndimage
from pyworkflow.protocol.constants import MODE_RESTART, MODE_RESUME

from deepemhancer.mapio import read_map
from deepemhancer.metrics import fsc, resolution_at
from deepemhancer_plugin.constants import (CHIMERAX_SCRIPT, ENHANCED_FILE, INPUT_VOLUME, MASK_FROM_MAP,
                                           MASK_FROM_MODEL, NORM_MASK, NORM_NOISE_STATS, SHARPENING_FILE,
                                           THRESHOLD_VOLUME)
from deepemhancer_plugin.protocols import (ProtDeepEMhancer, ProtDeepEMhancerHalfMapFSC, ProtDeepEMhancerMask,
                                           ProtDeepEMhancerSharpen)
from deepemhancer_plugin.viewers import DeepEMhancerComparisonViewer
from deepemhancer_plugin.viewers.viewer_comparison import PngView

from .helpers import (BOX, HALF_NOISE, SAMPLING, TINY_MASKED_MODEL, TINY_MODEL, PluginTest, atom_positions,
                      half_maps, markup, write_mrc, write_pdb, write_tiny_models)

ORIGIN = (-BOX / 2 * SAMPLING,) * 3  # Scipion's default origin of an imported volume (centred)
MOLECULE_VOLUME = 4000.0  # Å³ enclosed by the threshold mask


class TestDeepEMhancerChain(PluginTest):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        write_tiny_models()
        cls.halves = half_maps()
        paths = [write_mrc(cls.dataDir / f"half{i}.mrc", half) for i, half in enumerate(cls.halves, 1)]
        average = write_mrc(cls.dataDir / "refined.mrc", 0.5 * (cls.halves[0] + cls.halves[1]))
        cls.volume = cls.importVolume(average, halves=paths)

        cls.fscRun = cls.launchProtocol(cls.newProtocol(
            ProtDeepEMhancerHalfMapFSC, inputChoice=INPUT_VOLUME, inputVolume=cls.volume))
        cls.maskRun = cls.launchProtocol(cls.newProtocol(
            ProtDeepEMhancerMask, source=MASK_FROM_MAP, inputVolume=cls.fscRun.outputVolume,
            thresholdMode=THRESHOLD_VOLUME, enclosedVolume=MOLECULE_VOLUME))
        cls.softMaskRun = cls.launchProtocol(cls.newProtocol(
            ProtDeepEMhancerMask, source=MASK_FROM_MAP, inputVolume=cls.fscRun.outputVolume,
            thresholdMode=THRESHOLD_VOLUME, enclosedVolume=MOLECULE_VOLUME, dilation=2.0, softEdge=4.0))
        cls.autoMaskRun = cls.launchProtocol(cls.newProtocol(
            ProtDeepEMhancerMask, source=MASK_FROM_MAP, inputVolume=cls.fscRun.outputVolume, dilation=2.0,
            softEdge=4.0))
        cls.sharpenRun = cls.launchProtocol(cls.newProtocol(
            ProtDeepEMhancerSharpen, inputVolume=cls.fscRun.outputVolume, inputMask=cls.softMaskRun.outputMask))
        cls.enhanceRun = cls.launchProtocol(cls.newProtocol(
            ProtDeepEMhancer, inputVolume=cls.fscRun.outputVolume, useHalfMaps=True, modelName=TINY_MODEL,
            normalization=NORM_NOISE_STATS, noiseMean=0.0, noiseStd=HALF_NOISE / np.sqrt(2), useGpu=False,
            numberOfThreads=2))
        cls.trustRun = cls.launchProtocol(cls.newProtocol(
            ProtDeepEMhancer, inputVolume=cls.volume, useHalfMaps=True, modelName=TINY_MODEL,
            normalization=NORM_NOISE_STATS, noiseMean=0.0, noiseStd=HALF_NOISE / np.sqrt(2), confidence=True,
            augmentations=0, useGpu=False, numberOfThreads=2))
        cls.maskedEnhanceRun = cls.launchProtocol(cls.newProtocol(
            ProtDeepEMhancer, inputVolume=cls.volume, maskedModelName=TINY_MASKED_MODEL,
            normalization=NORM_MASK, inputMask=cls.maskRun.outputMask, useGpu=False, numberOfThreads=2))

        from pwem.protocols import ProtImportPdb

        pdb = write_pdb(cls.dataDir / "model.pdb", atom_positions(), ORIGIN)
        cls.structure = cls.launchProtocol(cls.newProtocol(
            ProtImportPdb, inputPdbData=ProtImportPdb.IMPORT_FROM_FILES, pdbFile=pdb)).outputPdb
        cls.modelMaskedEnhanceRun = cls.launchProtocol(cls.newProtocol(
            ProtDeepEMhancer, inputVolume=cls.volume, maskedModelName=TINY_MASKED_MODEL,
            normalization=NORM_MASK, inputStructure=cls.structure, useGpu=False, numberOfThreads=2))

    # --------------------------- average and FSC ----------------------------------------
    def test_average_keeps_geometry_and_halves(self):
        average = self.fscRun.outputVolume
        data = read_map(average.getFileName()).data
        np.testing.assert_allclose(data, 0.5 * (self.halves[0] + self.halves[1]), atol=1e-6)
        self.assertAlmostEqual(average.getSamplingRate(), SAMPLING)
        np.testing.assert_allclose(average.getOrigin().getShifts(), ORIGIN)
        self.assertEqual(average.getHalfMaps(asList=True), self.volume.getHalfMaps(asList=True))

    def test_fsc_output_and_summary(self):
        x, y = self.fscRun.outputFSC.getData()
        reference = fsc(self.halves[0], self.halves[1], SAMPLING)  # the engine's, on the raw arrays
        np.testing.assert_allclose([float(v) for v in y], reference.correlation, atol=1e-6)
        np.testing.assert_allclose([float(v) for v in x], reference.frequency, atol=1e-9)
        expected = resolution_at(reference, 0.143)
        self.assertTrue(2 * SAMPLING < expected < 10.0, expected)  # the synthetic data have a real cut-off
        summary = " ".join(self.fscRun.summary())
        self.assertIn(f"FSC = 0.143 resolution: {expected:.2f} Å", summary)

    # --------------------------- masks --------------------------------------------------
    def test_threshold_mask_encloses_the_volume(self):
        mask = self.maskRun.outputMask
        self.assertEqual(type(mask).__name__, "VolumeMask")
        data = read_map(mask.getFileName()).data
        self.assertEqual(set(np.unique(data)), {0.0, 1.0})
        self.assertEqual(int(data.sum()), round(MOLECULE_VOLUME / SAMPLING ** 3))
        soft = read_map(self.softMaskRun.outputMask.getFileName()).data
        self.assertTrue(np.all(soft[data == 1] == 1) and 0 < soft[(soft > 0) & (soft < 1)].size)

    def test_automatic_mask_is_the_connected_molecule_and_its_threshold_is_shown(self):
        from deepemhancer.molecule_masks import coverage

        from deepemhancer_plugin.wizards import automatic_threshold_of

        result = self.autoMaskRun.getResult()
        mask = read_map(self.autoMaskRun.outputMask.getFileName()).data
        self.assertEqual((result["automatic"], result["kept"]), (True, 1))
        self.assertEqual(ndimage.label(mask > 0)[1], 1)
        self.assertEqual(mask[BOX // 2, BOX // 2, BOX // 2], 1.0)
        self.assertAlmostEqual(result["coverage"], coverage(mask))
        self.assertLess(result["coverage"], 0.9)
        summary = " ".join(self.autoMaskRun.summary())
        self.assertIn(f"Threshold {result['threshold']:.4g} (automatic); kept 1 of {result['pieces']} pieces", summary)
        wizard = automatic_threshold_of(self.newProtocol(ProtDeepEMhancerMask, inputVolume=self.fscRun.outputVolume))
        self.assertAlmostEqual(wizard, result["threshold"], places=6)

    def test_model_mask_covers_the_atoms(self):
        run = self.launchProtocol(self.newProtocol(
            ProtDeepEMhancerMask, source=MASK_FROM_MODEL, inputStructure=self.structure,
            referenceVolume=self.fscRun.outputVolume, modelResolution=4.0))
        mask = read_map(run.outputMask.getFileName()).data
        atoms = np.round(atom_positions()).astype(int)
        inside = mask[tuple(atoms.T)]
        self.assertGreater(inside.mean(), 0.8)  # the atoms sit inside (Scipion's origin was honoured)
        self.assertLessEqual(mask.mean(), 0.05 + 1e-6)  # the 95th percentile keeps at most 5% of the box
        np.testing.assert_allclose(run.outputMask.getOrigin().getShifts(), ORIGIN)

    # --------------------------- sharpening ---------------------------------------------
    def test_sharpening_output_and_summary(self):
        result = self.sharpenRun.getResult()
        volume = self.sharpenRun.outputVolume
        self.assertEqual(read_map(volume.getFileName()).data.shape, (BOX,) * 3)
        self.assertAlmostEqual(volume.getSamplingRate(), SAMPLING)
        self.assertTrue(result["fitted"] and result["masked"])
        summary = " ".join(self.sharpenRun.summary())
        self.assertIn(f"B-factor removed: {result['b_factor']:.1f} Å²", summary)
        self.assertIn(f"resolution: {result['resolution']:.2f} Å", summary)
        self.assertTrue(2 * SAMPLING <= result["resolution"] < 10.0)

    # --------------------------- enhancement --------------------------------------------
    def test_an_atomic_model_makes_the_binary_mask(self):
        from deepemhancer.molecule_masks import model_mask
        from deepemhancer.pipeline import EnhanceOptions, enhance

        from deepemhancer_plugin.convert import placed_as_in_scipion, read_volume_file
        from deepemhancer_plugin.models import resolve_model

        run = self.modelMaskedEnhanceRun
        source = read_volume_file(self.volume.getFileName(), SAMPLING)
        mask = model_mask(self.structure.getFileName(), placed_as_in_scipion(source, ORIGIN), 4.0)
        expected = enhance(source, resolve_model(TINY_MASKED_MODEL), EnhanceOptions(gpu_ids="-1", progress=False),
                           mask=source.with_data(mask))
        np.testing.assert_allclose(read_map(run.outputVolume.getFileName()).data, expected.data, atol=1e-5)
        self.assertIn("binary mask (the mask made from the atomic model simulated at 4 Å", " ".join(run.summary()))
        self.assertIn("Wojdyr2022", run._citations())

    def test_enhanced_volumes_keep_the_input_placement(self):
        outputs = []
        for run in (self.enhanceRun, self.maskedEnhanceRun):
            volume = run.outputVolume
            enhanced = read_map(volume.getFileName())
            self.assertEqual(enhanced.data.shape, (BOX,) * 3)
            self.assertTrue(np.isfinite(enhanced.data).all() and enhanced.data.std() > 0)
            self.assertAlmostEqual(enhanced.isotropic_voxel_size, SAMPLING, places=5)
            self.assertAlmostEqual(volume.getSamplingRate(), SAMPLING)
            np.testing.assert_allclose(volume.getOrigin().getShifts(), ORIGIN)
            outputs.append(enhanced.data)
        self.assertFalse(np.allclose(*outputs))  # two models, two normalisations
        self.assertIn(f"Model: {TINY_MODEL}, normalisation: noise statistics", " ".join(self.enhanceRun.summary()))
        self.assertIn(f"Model: {TINY_MASKED_MODEL}, normalisation: binary mask",
                      " ".join(self.maskedEnhanceRun.summary()))

    def test_confidence_map_and_enhanced_halves(self):
        run = self.trustRun
        confidence = read_map(run.outputConfidence.getFileName()).data
        self.assertEqual(confidence.shape, (BOX,) * 3)
        self.assertTrue(confidence.min() >= 0 and confidence.max() <= 1 and confidence.std() > 0)
        np.testing.assert_allclose(run.outputConfidence.getOrigin().getShifts(), ORIGIN)
        halves = run.outputVolume.getHalfMaps(asList=True)
        self.assertEqual(len(halves), 2)
        enhanced_halves = [read_map(str(h)).data for h in halves]
        self.assertFalse(np.allclose(*enhanced_halves))  # each half enhanced on its own
        check = run.getHalvesCheck()
        self.assertAlmostEqual(check["raw_resolution_0143"],
                               resolution_at(fsc(self.halves[0], self.halves[1], SAMPLING), 0.143), places=6)
        self.assertIn(f"Independent halves: {check['verdict']}", " ".join(run.summary()))

    # --------------------------- viewers ------------------------------------------------
    def _viewer(self, protocol):
        viewer = DeepEMhancerComparisonViewer(project=self.proj)
        viewer.setProtocol(protocol)
        return viewer

    def test_comparison_slices_and_fsc_png(self):
        import matplotlib.image as mpimg

        viewer = self._viewer(self.enhanceRun)
        chain = viewer._chain()
        kinds = [m.kind for m in chain.maps]
        self.assertEqual(kinds, ["raw", "sharpened", "enhanced", "enhanced", "enhanced", "enhanced"])
        [view] = viewer._showSlices()
        self.assertIsInstance(view, PngView)
        image = mpimg.imread(view.path)
        self.assertEqual(image.shape[0], 300 * len(chain.maps))  # one 3-inch row per map at 100 dpi
        self.assertGreater(image[..., :3].std(), 0.05)  # not a blank figure
        [fscView] = viewer._showFsc()
        plot = mpimg.imread(fscView.path)
        self.assertTrue(plot.shape[1] > plot.shape[0] > 0 and plot[..., :3].std() > 0.05)
        fscView, checkView = self._viewer(self.trustRun)._showFsc()  # plus the independent-halves plot
        self.assertTrue(os.path.getsize(checkView.path) > 0 and checkView.path != fscView.path)

    def test_chimerax_script_encloses_the_same_volume(self):
        viewer = self._viewer(self.sharpenRun)  # any run of the data set shows the whole comparison
        [view] = viewer._showChimerax()
        script = self.sharpenRun._getExtraPath(CHIMERAX_SCRIPT)
        self.assertIn(os.path.abspath(script), view.getMessage())  # ChimeraX is not installed here
        text = open(script).read()
        opened = re.findall(r'^open "(.+)" format mrc$', text, re.M)
        settings = re.findall(r"^volume #(\d+) voxelSize (\S+) origin (\S+),(\S+),(\S+) level (\S+) style surface$",
                              text, re.M)
        # the trust run's enhanced map is coloured by its confidence map, opened last and hidden
        confidence = os.path.abspath(self.trustRun.outputConfidence.getFileName())
        self.assertEqual(opened.pop(), confidence)
        coloured = opened.index(os.path.abspath(self.trustRun.outputVolume.getFileName())) + 1
        self.assertIn(f"color sample #{coloured} map #7 palette 0,red:0.5,yellow:1,blue", text)
        self.assertEqual(len(opened), 6)
        self.assertEqual([int(s[0]) for s in settings], [1, 2, 3, 4, 5, 6])
        self.assertIn("tile #1-6", text)
        mask = read_map(self.maskRun.outputMask.getFileName()).data  # the chain's first mask sets the volume
        expected = int(mask.sum())
        for path, (_, voxel, x, y, z, level) in zip(opened, settings):
            self.assertAlmostEqual(float(voxel), SAMPLING, places=5)
            np.testing.assert_allclose([float(x), float(y), float(z)], ORIGIN, atol=1e-3)
            self.assertEqual(int(np.count_nonzero(read_map(path).data >= float(level))), expected)

    # --------------------------- reruns -------------------------------------------------
    def test_summaries_methods_and_run_names_have_no_markup(self):
        runs = [self.fscRun, self.maskRun, self.autoMaskRun, self.sharpenRun, self.enhanceRun, self.trustRun,
                self.maskedEnhanceRun]
        for run in runs:
            texts = run._summary() + run._methods() + [run.getRunName()]  # ours, without Scipion's own headings
            self.assertTrue(run._summary() and run._methods(), run.getRunName())
            self.assertEqual([piece for text in texts for piece in markup(text)], [], run.getRunName())
        self.assertTrue(self.enhanceRun.getRunName().startswith("DeepEMhancer - enhance"))

    def test_zz_continue_does_not_recompute_and_restart_does(self):  # last: it reruns runs
        run = self.enhanceRun
        output = run._getExtraPath(ENHANCED_FILE)
        before = os.stat(output).st_mtime_ns
        run.runMode.set(MODE_RESUME)
        self.launchProtocol(run)
        self.assertEqual(os.stat(output).st_mtime_ns, before)

        leaf = self.sharpenRun  # nothing uses its outputs: Scipion allows restarting it
        result = leaf._getExtraPath(SHARPENING_FILE)
        first = open(result).read()
        before = os.stat(result).st_mtime_ns
        leaf.runMode.set(MODE_RESTART)
        self.launchProtocol(leaf)
        self.assertNotEqual(os.stat(result).st_mtime_ns, before)
        self.assertEqual(open(result).read(), first)  # recomputed, to the same result
