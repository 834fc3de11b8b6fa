"""The validation table: scoring arms on simulated halves with a tiny model, pseudo-halves, summary."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from deepemhancer.errors import InputError
from deepemhancer.mapio import Geometry, Map
from deepemhancer.metrics import MapModelCC, ModelAgreement
from deepemhancer.models.store import save_model
from deepemhancer.nn import UNet
from deepemhancer.models.loaded import load_model
from deepemhancer.pipeline import EnhanceOptions
from deepemhancer.train import validate
from deepemhancer.train.simulate import SimulationSettings

from test_train import numpy_fsc, write_structure


def _tiny_model(tmp_path):
    torch.manual_seed(0)
    net = UNet(1.0, 2, [4, 8], 3)
    metadata = {"name": "tiny", "architecture": net.architecture(), "normalization": "noise", "cube_size": 32,
                "stride": 16, "voxel_size": 1.0, "trained": True}
    return load_model(save_model(tmp_path / "tiny.json", metadata, net.state_dict()))


def test_evaluate_case_scores_every_arm(tmp_path):
    path = write_structure(tmp_path / "AAAA_target.pdb", 5)
    halves = validate.simulated_halves(path, 7, SimulationSettings())
    options = EnhanceOptions(gpu_ids="-1", progress=False)
    result = validate.evaluate_case("AAAA", halves[:2], path, _tiny_model(tmp_path), options, True)
    assert set(result.scores) == set(validate.ARMS)
    assert 2.5 * 0.9 <= result.resolution <= 6.0 * 1.1
    # the raw average holds the model's density: it correlates with the model map
    assert result.scores["raw"].cc_mask > 0.3 and result.scores["bfactor"].cc_mask > 0.3
    assert all(np.isfinite(s.fsc05) and s.fsc05 >= 2.0 for s in result.scores.values())
    assert result.halves is not None and result.halves.raw_resolution >= 2.0
    assert 0.0 <= result.halves.raw_shared_beyond < 0.5  # the raw halves share little beyond their resolution
    table = validate.markdown_table([result])
    assert table.count("| AAAA |") == 4  # three arms and the halves check


def test_simulated_halves_are_two_independent_pairs_of_one_signal(tmp_path):
    path = write_structure(tmp_path / "AAAA_target.pdb", 5)
    halves = validate.simulated_halves(path, 7, SimulationSettings(), resolution=4.0)
    assert len(halves) == 4 and all(h.data.shape == halves[0].data.shape for h in halves)
    noises = [h.data - halves[0].data for h in halves[1:]]  # noise differences: the signal cancels
    # half 3 and 4 are new draws: their noise is uncorrelated with halves 1 and 2's
    first_pair_noise = halves[0].data - halves[1].data
    second_pair_noise = halves[2].data - halves[3].data
    assert abs(np.corrcoef(first_pair_noise.ravel(), second_pair_noise.ravel())[0, 1]) < 0.05
    assert all(n.std() > 0 for n in noises)
    for a, b in ((0, 1), (2, 3)):  # each pair's FSC reaches 0.143 near the asked resolution
        frequency, correlation = numpy_fsc(halves[a].data, halves[b].data)
        assert 3.0 < 1.0 / frequency[np.flatnonzero(correlation < 0.143)[0]] < 6.0


def test_a_half_map_model_is_checked_on_two_independent_pairs(tmp_path):
    from deepemhancer.models.store import HALVES_NORMALIZATION

    torch.manual_seed(0)
    net = UNet(1.0, 2, [4, 8], 3, in_channels=2, residual=True)
    metadata = {"name": "tiny-halves", "architecture": net.architecture(), "normalization": HALVES_NORMALIZATION,
                "cube_size": 32, "stride": 16, "voxel_size": 1.0, "trained": True}
    model = load_model(save_model(tmp_path / "tiny-halves.json", metadata, net.state_dict()))
    path = write_structure(tmp_path / "AAAA_target.pdb", 5)
    halves = validate.simulated_halves(path, 7, SimulationSettings(), resolution=4.0)
    options = EnhanceOptions(gpu_ids="-1", progress=False)
    result = validate.evaluate_case("AAAA", halves, path, model, options, True)
    # untrained, a residual half-map model returns the sharpened map: it scores as B-factor sharpening
    assert result.scores["model"].cc_mask == pytest.approx(result.scores["bfactor"].cc_mask, abs=2e-3)
    assert result.halves is not None and not result.halves.flagged.any()
    with pytest.raises(InputError, match="second, independent pair"):
        validate.evaluate_case("AAAA", halves[:2], path, model, options, True)


def test_pseudo_halves_put_fsc_at_the_resolution():
    rng = np.random.default_rng(1)
    from scipy import ndimage
    density = ndimage.gaussian_filter(rng.standard_normal((48, 48, 48)), 1.0).astype(np.float32)
    deposited = Map(density, Geometry.for_grid(density.shape, 1.0))
    half1, half2 = validate.pseudo_halves(deposited, 4.0, seed=3)
    frequency, correlation = numpy_fsc(half1.data, half2.data)
    k = int(np.argmin(np.abs(frequency - 0.25)))
    assert correlation[k - 2] > 0.143 > correlation[k + 2]


def test_summary_counts_wins():
    def scores(fsc05, cc_mask, lc):
        return ModelAgreement(fsc=None, fsc05=fsc05, correlations=MapModelCC(0.0, cc_mask, 0.0, 0.0, 10),
                              lc5=lc, lc7=lc)

    def case(model_cc, sharp_cc):
        return validate.CaseResult("x", 3.0, {"raw": scores(5.0, 0.5, 0.4), "bfactor": scores(4.0, sharp_cc, 0.5),
                                              "model": scores(3.0, model_cc, 0.6)})
    stats = validate.summary([case(0.8, 0.7), case(0.6, 0.7), case(0.9, 0.1)])
    assert stats["cc_mask_wins"] == 2 and stats["lc7_wins"] == 3 and stats["fsc05_wins"] == 3 and stats["cases"] == 3
    assert stats["median_fsc05_model"] == 3.0 and stats["median_cc_mask_bfactor"] == 0.7


def test_validate_command_writes_the_table(tmp_path):
    from deepemhancer.train_cli import main

    folder = tmp_path / "structures"
    folder.mkdir()
    for i, name in enumerate(("AAAA", "BBBB", "CCCC")):
        write_structure(folder / f"{name}_target.pdb", 20 + i)
    model = _tiny_model(tmp_path).path
    status = main(["validate", "--model", str(model), "--set", f"structures={folder}", "--set", "holdout_every=3",
                   "--set", "holdout_offset=2", "--count", "1", "--resolutions", "random", "--halves-check", "0",
                   "--emd3488", "none", "--groups", "1",
                   "--out", str(tmp_path / "report")])
    assert status == 0
    text = (tmp_path / "report.md").read_text()
    assert text.count("| CCCC |") == 3 and '"cases": 1.0' in text
    # the same structure with ligands and hemes added, scored against the model as simulated, summarised apart
    assert text.count("| CCCC+groups |") == 3 and "With ligands, hemes and glycans added" in text
    report = json.loads((tmp_path / "report.json").read_text())
    plain, grouped = report["cases"]
    assert not plain["with_groups"] and plain["scores"]["model"]["lc7_non_protein"] is None
    assert grouped["with_groups"] and -1.0 <= grouped["scores"]["model"]["lc7_non_protein"] <= 1.0
    assert report["summary"]["cases"] == 1.0 and report["summary_with_groups"]["cases_non_protein"] == 1.0
