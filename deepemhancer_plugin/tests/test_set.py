"""Enhancement of a set of volumes (as a 3D classification gives them): one run, one model load, every
volume enhanced on its own into a set with the inputs' ids, sampling rates and origins; a volume that
fails (here an empty one) is left out and named in the summary while the others go on. Also the
confidence map of a half-map model, which enhances no half alone."""
import os
from pathlib import Path

import numpy as np

from deepemhancer.mapio import read_map
from deepemhancer.models.loaded import load_model
from deepemhancer.pipeline import EnhanceOptions, enhance
from deepemhancer_plugin.constants import (ENHANCED_HALF_FILES, INPUT_SET, INPUT_VOLUME, NORM_NOISE_STATS,
                                           OUTPUT_CONFIDENCE, OUTPUT_VOLUME, OUTPUT_VOLUMES)
from deepemhancer_plugin.protocols import ProtDeepEMhancer
from deepemhancer_plugin.viewers import DeepEMhancerComparisonViewer

from .helpers import (BOX, HALF_NOISE, SAMPLING, TINY_HALVES_MODEL, TINY_MODEL, PluginTest, half_maps, markup,
                      molecule, write_mrc, write_tiny_models)

NOISE_STD = HALF_NOISE  # the noise of each class map below
EMPTY = 2  # the id of the empty class (ids follow the sorted file names)


class TestDeepEMhancerSet(PluginTest):

    @classmethod
    def setUpClass(cls):
        from pwem.protocols import ProtImportVolumes

        super().setUpClass()
        write_tiny_models()
        classes = cls.dataDir / "classes"
        classes.mkdir()
        rng = np.random.default_rng(4)
        for number in (1, 2, 3):
            data = (np.zeros((BOX,) * 3, np.float32) if number == EMPTY
                    else molecule(seed=number) + rng.normal(0, NOISE_STD, (BOX,) * 3).astype(np.float32))
            write_mrc(classes / f"run_class{number:03d}.mrc", data)
        cls.volumes = cls.launchProtocol(cls.newProtocol(
            ProtImportVolumes, filesPath=str(classes), filesPattern="run_class*.mrc", samplingRate=SAMPLING,
            objLabel="classes")).outputVolumes
        cls.setRun = cls.launchProtocol(cls.newProtocol(
            ProtDeepEMhancer, inputChoice=INPUT_SET, inputVolumes=cls.volumes, modelName=TINY_MODEL,
            normalization=NORM_NOISE_STATS, noiseMean=0.0, noiseStd=NOISE_STD, useGpu=False, numberOfThreads=1))

        halves = [write_mrc(cls.dataDir / f"half{i}.mrc", half) for i, half in enumerate(half_maps(), 1)]
        cls.withHalves = cls.importVolume(write_mrc(cls.dataDir / "average.mrc", molecule()), halves=halves)
        cls.pairRun = cls.launchProtocol(cls.newProtocol(
            ProtDeepEMhancer, inputChoice=INPUT_VOLUME, inputVolume=cls.withHalves, useHalfMaps=True,
            modelName=TINY_HALVES_MODEL, confidence=True, augmentations=1, useGpu=False, numberOfThreads=1))

    def test_good_volumes_are_enhanced_and_keep_their_ids_and_geometry(self):
        output = getattr(self.setRun, OUTPUT_VOLUMES)
        inputs = {volume.getObjId(): volume.clone() for volume in self.volumes.iterItems()}
        self.assertEqual(sorted(inputs), [1, 2, 3])
        enhanced = {volume.getObjId(): volume.clone() for volume in output.iterItems()}
        self.assertEqual(sorted(enhanced), [1, 3])
        self.assertAlmostEqual(output.getSamplingRate(), SAMPLING)
        model = load_model(Path(os.environ["DEEPEMHANCER_MODELS_DIR"]) / f"{TINY_MODEL}.json")
        options = EnhanceOptions(noise_stats=(0.0, NOISE_STD), gpu_ids="-1")
        for number, volume in enhanced.items():
            source = inputs[number]
            self.assertAlmostEqual(volume.getSamplingRate(), source.getSamplingRate())
            np.testing.assert_allclose(volume.getOrigin(force=True).getShifts(),
                                       source.getOrigin(force=True).getShifts())
            # What the engine alone makes of that volume.
            alone = enhance(read_map(source.getFileName()), model, options)
            result = read_map(volume.getFileName())
            np.testing.assert_allclose(result.data, alone.data, rtol=1e-5, atol=1e-6)
            self.assertEqual(result.geometry, alone.geometry)

    def test_the_failed_volume_is_named_with_its_reason(self):
        outcomes = self.setRun.getSetOutcomes()
        self.assertEqual(sorted(outcomes), ["1", "2", "3"])
        self.assertEqual(outcomes[str(EMPTY)], {"error": "input map is all zeros; give the unmasked, unsharpened map "
                                                         "(or half maps) from the refinement"})
        summary = self.setRun._summary()  # ours, without Scipion's own headings
        self.assertIn(f"Output: {OUTPUT_VOLUMES}, 2 of 3 volumes enhanced (in the network's normalised units)",
                      summary)
        self.assertIn(f"Volume {EMPTY} failed: input map is all zeros; give the unmasked, unsharpened map (or half "
                      f"maps) from the refinement", summary)
        self.assertIn("Input: a set of 3 volumes, each volume's map", summary)
        methods = self.setRun._methods()
        self.assertTrue(methods[0].startswith("The 2 maps were each post-processed with DeepEMhancer"))
        texts = summary + methods + [self.setRun.getRunName()]
        self.assertEqual([piece for text in texts for piece in markup(text)], [])

    def test_the_model_is_loaded_once_and_every_volume_logged(self):
        log = Path(self.setRun.getLogPaths()[0]).read_text()
        self.assertEqual(log.count(f"model {TINY_MODEL} ("), 1, log)
        self.assertEqual(log.count(": enhanced into "), 2, log)
        self.assertEqual(log.count("FAILED: input map is all zeros"), 1, log)

    def test_the_viewer_shows_each_volume_beside_its_enhanced_map(self):
        import matplotlib.image as mpimg

        viewer = DeepEMhancerComparisonViewer(project=self.proj)
        viewer.setProtocol(self.setRun)
        chain = viewer._chain()
        self.assertEqual([m.title for m in chain.maps],
                         ["volume 1", "volume 1, enhanced", "volume 3", "volume 3, enhanced"])
        [view] = viewer._showSlices()
        image = mpimg.imread(view.path)
        self.assertEqual(image.shape[0], 300 * 4)  # one 3-inch row per map at 100 dpi
        self.assertGreater(image[..., :3].std(), 0.05)

    def test_a_set_is_refused_with_a_confidence_map_or_halves_it_lacks(self):
        confidence = self.newProtocol(ProtDeepEMhancer, inputChoice=INPUT_SET, inputVolumes=self.volumes,
                                      modelName=TINY_MODEL, confidence=True, augmentations=1)
        self.assertIn("The confidence map is made for one volume at a time", " ".join(confidence.validate()))
        halves = self.newProtocol(ProtDeepEMhancer, inputChoice=INPUT_SET, inputVolumes=self.volumes,
                                  useHalfMaps=True, modelName=TINY_MODEL)
        self.assertIn("Volumes 1, 2, 3 of the set have no half maps attached", " ".join(halves.validate()))
        self.assertEqual(self.newProtocol(ProtDeepEMhancer, inputChoice=INPUT_SET, inputVolumes=self.volumes,
                                          modelName=TINY_MODEL).validate(), [])

    def test_a_half_map_model_makes_a_confidence_map_without_enhanced_halves(self):
        """It needs both halves for every prediction: no half is enhanced alone, none is attached and
        no halves check is made (which would look for them)."""
        self.assertTrue(self.pairRun.hasAttribute(OUTPUT_CONFIDENCE))
        volume = getattr(self.pairRun, OUTPUT_VOLUME)
        self.assertFalse(volume.hasHalfMaps())
        self.assertIsNone(self.pairRun.getHalvesCheck())
        self.assertFalse(any(os.path.exists(self.pairRun._getExtraPath(name)) for name in ENHANCED_HALF_FILES))
        confidence = read_map(getattr(self.pairRun, OUTPUT_CONFIDENCE).getFileName()).data
        self.assertTrue(0 <= confidence.min() < confidence.max() <= 1)
