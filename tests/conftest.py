"""Shared test fixtures.

Real maps live beside the project in ../shared/data; tests find them through one environment
variable, DEEPEMHANCER_SHARED_DATA, and are skipped with a reason when it is absent.
"""
import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("DEEPEMHANCER_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared data folder, or a skip when it is not there."""
    if not (SHARED_DATA / "maps").is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA} (set DEEPEMHANCER_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture(autouse=True)
def _isolated_model_dir(tmp_path_factory, monkeypatch):
    """Never touch the user's real model directory from a test."""
    monkeypatch.setenv("DEEPEMHANCER_MODELS_DIR", str(tmp_path_factory.mktemp("models")))
