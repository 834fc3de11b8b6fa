"""Inputs that cannot work are refused with a message saying what to do: before a run (validation)
and, for what only the files show, by the engine during the run."""
from deepemhancer_plugin.constants import INPUT_TWO_HALVES, INPUT_VOLUME, NORM_MASK, NORM_NOISE_STATS
from deepemhancer_plugin.protocols import ProtDeepEMhancer, ProtDeepEMhancerHalfMapFSC, ProtDeepEMhancerSharpen

from .helpers import SAMPLING, TINY_HALVES_MODEL, TINY_MODEL, PluginTest, half_maps, write_mrc, write_tiny_models


class TestDeepEMhancerValidation(PluginTest):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        write_tiny_models()
        half1, half2 = half_maps(box=32)
        cls.half1 = cls.importVolume(write_mrc(cls.dataDir / "half1.mrc", half1), label="half 1")
        cls.half2 = cls.importVolume(write_mrc(cls.dataDir / "half2.mrc", half2), label="half 2")
        cls.small = cls.importVolume(write_mrc(cls.dataDir / "small.mrc", half2[:30, :30, :30]), label="30 px")
        cls.coarse = cls.importVolume(write_mrc(cls.dataDir / "coarse.mrc", half2, voxel_size=1.5),
                                      sampling=1.5, label="1.5 Å/px")
        cls.noHalves = cls.importVolume(write_mrc(cls.dataDir / "map.mrc", half1), label="no halves")

    def _errors(self, protocolClass, **kwargs):
        return " ".join(self.newProtocol(protocolClass, **kwargs).validate())

    def test_halves_of_different_boxes(self):
        errors = self._errors(ProtDeepEMhancerHalfMapFSC, inputChoice=INPUT_TWO_HALVES,
                              inputHalf1=self.half1, inputHalf2=self.small)
        self.assertIn("different boxes (32 x 32 x 32 and 30 x 30 x 30 voxels)", errors)

    def test_halves_of_different_sampling(self):
        errors = self._errors(ProtDeepEMhancerSharpen, inputChoice=INPUT_TWO_HALVES,
                              inputHalf1=self.half1, inputHalf2=self.coarse)
        self.assertIn(f"different sampling rates ({SAMPLING:g} and 1.5 Å/px)", errors)

    def test_the_same_half_twice(self):
        errors = self._errors(ProtDeepEMhancer, inputChoice=INPUT_TWO_HALVES, inputHalf1=self.half1,
                              inputHalf2=self.half1, modelName=TINY_MODEL)
        self.assertIn("the same file", errors)

    def test_volume_without_halves(self):
        errors = self._errors(ProtDeepEMhancerHalfMapFSC, inputChoice=INPUT_VOLUME, inputVolume=self.noHalves)
        self.assertIn("no half maps attached", errors)
        enhance = self._errors(ProtDeepEMhancer, inputVolume=self.noHalves, useHalfMaps=True, modelName=TINY_MODEL)
        self.assertIn("answer No to 'Use its half maps instead?'", enhance)
        self.assertEqual(self._errors(ProtDeepEMhancer, inputVolume=self.noHalves, modelName=TINY_MODEL), "")

    def test_models_that_do_not_fit(self):
        unknown = self._errors(ProtDeepEMhancer, inputVolume=self.noHalves, modelName="nope")
        self.assertIn("model 'nope' is not installed (available: ", unknown)
        self.assertIn(TINY_MODEL, unknown)
        masked = self._errors(ProtDeepEMhancer, inputVolume=self.noHalves, normalization=NORM_MASK,
                              maskedModelName=TINY_MODEL)
        self.assertIn("Binary mask normalisation needs a mask", masked)
        self.assertIn(f"Model '{TINY_MODEL}' expects noise normalisation", masked)
        stats = self._errors(ProtDeepEMhancer, inputVolume=self.noHalves, modelName=TINY_MODEL,
                             normalization=NORM_NOISE_STATS, noiseStd=0.0)
        self.assertIn("noise standard deviation must be positive", stats)
        halves_model = self._errors(ProtDeepEMhancer, inputVolume=self.noHalves, modelName=TINY_HALVES_MODEL)
        self.assertIn(f"Model '{TINY_HALVES_MODEL}' takes two half maps", halves_model)
        self.assertEqual(self._errors(ProtDeepEMhancer, inputChoice=INPUT_TWO_HALVES, inputHalf1=self.half1,
                                      inputHalf2=self.half2, modelName=TINY_HALVES_MODEL), "")
        warnings = self.newProtocol(ProtDeepEMhancer, inputVolume=self.noHalves, modelName="demo-untrained").warnings()
        self.assertIn("UNTRAINED", " ".join(warnings))

    def test_a_mask_covering_the_whole_box_is_flagged_before_sharpening(self):
        import numpy as np

        mask = self.importMask(write_mrc(self.dataDir / "full.mrc", np.ones((32, 32, 32), np.float32)))
        for protocolClass in (ProtDeepEMhancerSharpen, ProtDeepEMhancerHalfMapFSC):
            prot = self.newProtocol(protocolClass, inputChoice=INPUT_TWO_HALVES, inputHalf1=self.half1,
                                    inputHalf2=self.half2, inputMask=mask)
            self.assertEqual(prot.validate(), [])
            self.assertEqual(prot.warnings(), ["The mask covers 100.0% of the box, so it hardly masks anything: make "
                                               "it tighter (a higher threshold, less dilation or a narrower soft edge)."])

    def test_a_mask_on_another_grid_is_refused_before_a_run(self):
        import numpy as np

        mask = self.importMask(write_mrc(self.dataDir / "mask30.mrc", np.ones((30, 30, 30), np.float32)))
        fsc = self._errors(ProtDeepEMhancerHalfMapFSC, inputChoice=INPUT_TWO_HALVES, inputHalf1=self.half1,
                           inputHalf2=self.half2, inputMask=mask)
        self.assertIn("The mask's box differs from the half maps': make the mask on the half maps' grid.", fsc)
        enhance = self._errors(ProtDeepEMhancer, inputVolume=self.noHalves, normalization=NORM_MASK, inputMask=mask)
        self.assertIn("The mask's box differs from the map's: make the mask on the map's grid.", enhance)

    def test_a_refused_run_fails_with_the_message(self):
        prot = self.newProtocol(ProtDeepEMhancerHalfMapFSC, inputChoice=INPUT_TWO_HALVES,
                                inputHalf1=self.half1, inputHalf2=self.small)
        with self.assertRaises(Exception):
            self.launchProtocol(prot)
        self.assertIn("different boxes", prot.getErrorMessage())

    def test_header_placement_mismatch_is_caught_by_the_engine(self):
        # Scipion records both halves with the same (default) origin, but the files disagree: the
        # engine's grid check stops the run with its one-line message.
        import mrcfile

        path = write_mrc(self.dataDir / "shifted.mrc", half_maps(box=32)[1])
        with mrcfile.open(path, mode="r+") as mrc:
            mrc.header.origin = (10.0, 0.0, 0.0)
        shifted = self.importVolume(path, label="shifted header")
        prot = self.newProtocol(ProtDeepEMhancerHalfMapFSC, inputChoice=INPUT_TWO_HALVES,
                                inputHalf1=self.half1, inputHalf2=shifted)
        self.assertEqual(prot.validate(), [])
        with self.assertRaises(Exception):
            self.launchProtocol(prot)
        self.assertIn("disagree in origin", prot.getErrorMessage())
