"""The standing fault suite's plugin part (the engine's is tests/test_faults.py): each setting a
user can get wrong in the enhance protocol's form is refused by validation, before a run, with one
sentence naming it; nothing is written."""
from deepemhancer_plugin.constants import INPUT_TWO_HALVES, NORM_MASK, NORM_NOISE_STATS
from deepemhancer_plugin.protocols import ProtDeepEMhancer

from .helpers import TINY_MASKED_MODEL, TINY_MODEL, PluginTest, half_maps, write_mrc, write_tiny_models

# name: (form values, text the one validation error holds)
CASES = {
    "noise_std_zero": ({"normalization": NORM_NOISE_STATS, "noiseStd": 0.0}, "noise standard deviation"),
    "noise_std_negative": ({"normalization": NORM_NOISE_STATS, "noiseStd": -1.0}, "noise standard deviation"),
    "cleaning_above_one": ({"cleaning": True, "cleaningStrength": 1.5}, "blob-cleaning fraction"),
    "cleaning_zero": ({"cleaning": True, "cleaningStrength": 0.0}, "blob-cleaning fraction"),
    "batch_size_negative": ({"batchSize": -1}, "Batch size and stride"),
    "stride_negative": ({"stride": -4}, "Batch size and stride"),
    "model_unknown": ({"modelName": "no-such-model"}, "not installed"),
    "mask_missing": ({"normalization": NORM_MASK, "maskedModelName": TINY_MASKED_MODEL}, "needs a mask"),
    "model_for_other_input": ({"normalization": NORM_MASK, "maskedModelName": TINY_MODEL, "inputMask": "self"},
                              "expects noise normalisation"),
    "same_half_twice": ({"inputChoice": INPUT_TWO_HALVES, "twice": True}, "the same file"),
}


class TestDeepEMhancerFaults(PluginTest):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        write_tiny_models()
        half1, _ = half_maps(box=32)
        cls.volume = cls.importVolume(write_mrc(cls.dataDir / "fault_map.mrc", half1), label="map")
        cls.mask = cls.importMask(write_mrc(cls.dataDir / "fault_mask.mrc", (half1 > half1.mean()).astype("float32")))

    def test_each_bad_setting_is_one_validation_error(self):
        for name, (values, expected) in CASES.items():
            with self.subTest(name):
                values = dict(values)
                if values.pop("twice", False):
                    values.update(inputHalf1=self.volume, inputHalf2=self.volume)
                if values.get("inputMask") == "self":
                    values["inputMask"] = self.mask
                values.setdefault("modelName", TINY_MODEL)
                before = sorted(self.dataDir.iterdir())
                errors = self.newProtocol(ProtDeepEMhancer, inputVolume=self.volume, **values).validate()
                self.assertEqual(len(errors), 1, errors)
                self.assertIn(expected, errors[0])
                self.assertNotIn("\n", errors[0].strip())
                self.assertEqual(sorted(self.dataDir.iterdir()), before)
