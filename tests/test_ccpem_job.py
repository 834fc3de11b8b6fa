"""The CCP-EM pipeliner (ccpem-pipeliner 1.6, in an environment of its own with the engine, as a
CCP-EM user installs it) finds the DeepEMhancer job by its entry point; the job passes the
pipeliner's own checks; and a pipeliner project runs it to completion on small half maps on the
CPU, confidence map and ChimeraX script included. Skipped, with the reason, where the pipeliner
cannot be installed. About two minutes (most of it installing)."""
from __future__ import annotations

import json

import mrcfile
import numpy as np
import pytest

from venvs import ROOT, TORCH_SPEC, said, venv_with

JOB = "deepemhancer.postprocess.enhance"

DEFINITION = f"""
import json
from pipeliner.job_factory import get_job_types, job_can_run, new_job_of_type
from pipeliner.scripts.check_setup import check_job

job = new_job_of_type("{JOB}")
found = {{type(j).__name__ for j in get_job_types("deepemhancer")}}
job.joboptions["input_map"].value = "half1.mrc"
job.joboptions["half_map_2"].value = "half2.mrc"
clean = [r.message for r in job.validate_joboptions() + job.validate_input_files()]
job.joboptions["half_map_2"].value = ""
job.joboptions["confidence"].value = True
job.joboptions["augmentations"].value = "1"
refused = [r.message for r in job.validate_joboptions()]
missing = check_job(job)
print()  # after check_job's unterminated line
print(json.dumps({{"class": type(job).__name__, "found": sorted(found), "can_run": job_can_run("{JOB}"),
                   "programs_missing": missing, "category": job.get_category_label(),
                   "models": job.joboptions["model"].choices, "clean": clean, "refused": refused}}))
"""

PROJECT = f"""
import json, os
from pipeliner.api.manage_project import PipelinerProject

project = PipelinerProject(make_new_project=True)
job = project.run_job({{"_rlnJobTypeLabel": "{JOB}", "input_map": "half1.mrc", "half_map_2": "half2.mrc",
                        "gpu_ids": "-1", "confidence": "Yes", "augmentations": "8"}}, run_in_foreground=True)
out = job.output_dir
log = "".join(open(os.path.join(out, f)).read()[-500:] for f in ("run.out", "run.err")
              if os.path.exists(os.path.join(out, f)))
print()  # after the pipeliner's own output
print(json.dumps({{"log": log, "files": sorted(os.listdir(out)), "nodes": [n.name for n in job.output_nodes],
                   "done": [f for f in os.listdir(out) if "_JOB_EXIT_" in f]}}))
"""


@pytest.fixture(scope="module")
def pipeliner(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ccpem-pipeliner")
    return venv_with(folder / "venv", TORCH_SPEC, "ccpem-pipeliner>=1.6,<1.7", ROOT / "engine", what="ccpem-pipeliner")


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """Two 48³ half maps at 1 Å per voxel (a cluster of blobs in solvent noise), in a fresh project folder."""
    folder = tmp_path_factory.mktemp("project")
    rng = np.random.default_rng(0)
    grid = np.indices((48,) * 3).astype(float)
    molecule = sum(rng.uniform(0.5, 1.0) * np.exp(-((grid - centre[:, None, None, None]) ** 2).sum(axis=0) / 12.5)
                   for centre in rng.uniform(18, 30, (8, 3)))
    for name in ("half1.mrc", "half2.mrc"):
        with mrcfile.new(folder / name) as mrc:
            mrc.set_data((molecule + rng.normal(0, 0.05, molecule.shape)).astype(np.float32))
            mrc.voxel_size = 1.0
    return folder


def test_the_job_is_found_and_passes_the_pipelines_checks(pipeliner, project):
    result = pipeliner("-c", DEFINITION, cwd=project)
    assert result.returncode == 0, said(result)
    found = json.loads(result.stdout.strip().splitlines()[-1])
    assert (found["class"], found["found"], found["can_run"]) == ("DeepEMhancerJob", ["DeepEMhancerJob"], True)
    assert (found["programs_missing"], found["category"]) == (False, "Map Postprocessing")
    assert found["models"][0] == "recommended" and "open-tight-small" in found["models"]
    assert not {"demo-untrained", "demo-untrained-masked"} & set(found["models"])
    assert found["clean"] == []
    assert found["refused"] == ["A confidence map needs at least two predictions: give half map 2, or 8 or 24 "
                                "predictions"]


def test_a_pipeliner_project_runs_the_job_on_the_cpu(pipeliner, project):
    result = pipeliner("-c", PROJECT, cwd=project)
    assert result.returncode == 0, said(result)
    ran = json.loads(result.stdout.strip().splitlines()[-1])
    assert ran["done"] == ["PIPELINER_JOB_EXIT_SUCCESS"], ran
    assert {"enhanced.mrc", "enhanced_confidence.mrc", "colour_by_confidence.cxc",
            "colour_by_confidence.json"} <= set(ran["files"]), ran
    assert {name.rsplit("/", 1)[-1] for name in ran["nodes"]} == {
        "enhanced.mrc", "enhanced_confidence.mrc", "colour_by_confidence.json"}
    out = project / "DeepEMhancer" / "job001"
    with mrcfile.open(out / "enhanced.mrc") as enhanced, mrcfile.open(project / "half1.mrc") as half:
        assert enhanced.data.shape == half.data.shape and float(enhanced.voxel_size.x) == 1.0
    script = (out / "colour_by_confidence.cxc").read_text()
    assert "color sample #1 map #2 palette 0,red:0.5,yellow:1,blue" in script
