"""Test set-up for the Scipion plugin's tests (deepemhancer_plugin/tests); the engine tests (tests/)
are left alone.

Scipion reads its configuration from environment variables once, at the first ``import pyworkflow``,
and the plugin's test modules import it. So, just before the first of them is collected, every
variable Scipion needs is pointed at one temporary folder (projects, hosts.conf, models, matplotlib
cache), which is removed at the end. Where Scipion is not installed, the plugin's test modules are
reported as skipped, with the reason, and never imported.

This file is here, at the repository root, because a conftest inside the package would come too
late: pytest imports the package, and so Scipion, before a conftest inside it runs.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

PLUGIN_TESTS = Path(__file__).resolve().parent / "deepemhancer_plugin" / "tests"
MISSING = [name for name in ("pyworkflow", "pwem") if importlib.util.find_spec(name) is None]
SKIP_REASON = (f"plugin tests skipped: Scipion is not installed (no module {', '.join(MISSING)}); the plugin tests need "
               f"scipion-pyworkflow and scipion-em: pip install -e .")

_scipion_home: Path | None = None


def _is_plugin_test(path: Path) -> bool:
    return PLUGIN_TESTS in Path(path).resolve().parents


def scipion_environment(home: Path) -> dict[str, str]:
    """The variables a headless Scipion needs, all inside ``home``."""
    return {
        "SCIPION_DOMAIN": "pwem",  # without it project creation fails
        "SCIPION_HOME": str(home),
        "SCIPION_USER_DATA": str(home / "data"),
        "SCIPION_HOSTS": str(home / "hosts.conf"),
        "SCIPION_PYTHON": sys.executable,  # protocol runs are child processes of this interpreter
        "SCIPION_TESTS": str(home / "tests"),
        "SCIPION_TEST_NOSYNC": "1",  # no data set downloads
        "SCIPION_NOTIFY": "False",
        "MPLCONFIGDIR": str(home / "matplotlib"),
        "MPLBACKEND": "Agg",
        "DEEPEMHANCER_MODELS_DIR": str(home / "models"),  # the tests' own tiny models
        "DEEPEMHANCER_OFFICIAL_WEIGHTS": "",  # never the developer's real weights
    }


def use_scipion_home(home: Path) -> None:
    """Make ``home`` (an empty folder) a headless Scipion's home, with its models folder and
    hosts.conf, and point this process's environment at it (before pyworkflow is first imported).
    Also used by scripts/screenshots.py."""
    (home / "models").mkdir()
    (home / "hosts.conf").write_text("[localhost]\nPARALLEL_COMMAND = mpirun -np %_(JOB_NODES)d %_(COMMAND)s\n")
    os.environ.update(scipion_environment(home))


def _prepare_scipion() -> None:
    """Point Scipion at a fresh temporary folder, once, before pyworkflow is first imported."""
    global _scipion_home
    if _scipion_home is not None:
        return
    _scipion_home = Path(tempfile.mkdtemp(prefix="deepemhancer-scipion-"))
    use_scipion_home(_scipion_home)


class _WithoutScipion(pytest.File):
    """A plugin test module that cannot run here: reported as skipped, never imported."""

    def collect(self):
        pytest.skip(SKIP_REASON)


def pytest_pycollect_makemodule(module_path, parent):
    if not _is_plugin_test(module_path):
        return None
    if MISSING:
        return _WithoutScipion.from_parent(parent, path=module_path)
    _prepare_scipion()
    return None  # pytest collects the module as usual


def pytest_unconfigure(config):
    if _scipion_home is not None:
        shutil.rmtree(_scipion_home, ignore_errors=True)
