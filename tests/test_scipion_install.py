"""Scipion's own plugin manager installs and removes the plugin, as a user does it: scipion-app from
PyPI in an environment of its own, `installp -p <clone> --devel` (and a regular pip install),
the plugin found by `inspect`, then `uninstallp`. Skipped, with the reason, where scipion-app
cannot be installed. About two minutes (most of it installing)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PLUGIN = "scipion-em-deepemhancer"  # Scipion's plugin manager takes the plugin's name from the folder's
MODULE = "deepemhancer_plugin"
TORCH_SPEC = os.environ.get("TORCH_SPEC", "torch==2.13.0")  # as the Makefile: the CPU build here


def _run(command: list, env: dict | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(part) for part in command], env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=900)


def _repository_files() -> list[str]:
    """The files a clone of this working tree has (tracked, and new ones git does not ignore)."""
    listed = _run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=ROOT)
    if listed.returncode != 0:
        pytest.skip("the repository's files cannot be listed (not a git checkout)")
    return [name for name in listed.stdout.split("\0") if name and os.path.lexists(ROOT / name)]


def _copy_clone(destination: Path) -> Path:
    for name in _repository_files():
        target = destination / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, target, follow_symlinks=False)  # engine/deepemhancer stays a link
    return destination


class Scipion:
    """scipion-app in its own environment and SCIPION_HOME."""

    def __init__(self, base: Path):
        self.python = base / "venv" / "bin" / "python"
        self.env = {key: value for key, value in os.environ.items()
                    if not key.startswith(("SCIPION_", "DEEPEMHANCER_"))}  # not the plugin tests' Scipion
        self.env.update(SCIPION_HOME=str(base / "home"), SCIPION_NOTIFY="False",
                        MPLCONFIGDIR=str(base / "matplotlib"))
        self.cwd = base

    def __call__(self, *arguments) -> subprocess.CompletedProcess:
        return _run([self.python, "-m", "scipion", *arguments], self.env, self.cwd)

    def pip(self, *arguments) -> subprocess.CompletedProcess:
        return _run([self.python, "-m", "pip", *arguments], self.env, self.cwd)


@pytest.fixture(scope="module")
def scipion(tmp_path_factory) -> Scipion:
    base = tmp_path_factory.mktemp("scipion-app")
    _run([sys.executable, "-m", "venv", base / "venv"]).check_returncode()
    app = Scipion(base)
    installed = app.pip("install", "--quiet", "-c", ROOT / "constraints.txt", TORCH_SPEC, "scipion-app>=3.8,<3.9")
    if installed.returncode != 0:
        last = (installed.stderr.strip().splitlines() or ["no output"])[-1]
        pytest.skip(f"scipion-app could not be installed from PyPI ({last})")
    (base / "home").mkdir()
    configured = app("config", "--unattended")
    assert configured.returncode == 0, configured.stdout + configured.stderr
    return app


@pytest.fixture(scope="module")
def clone(tmp_path_factory) -> Path:
    return _copy_clone(tmp_path_factory.mktemp("clone") / PLUGIN)


def _says(result: subprocess.CompletedProcess) -> str:
    return result.stdout + result.stderr


def _assert_found_then_uninstalled(scipion: Scipion) -> None:
    found = scipion("inspect", MODULE)
    for submodule in ("protocols", "viewers", "wizards"):
        assert f">>> {submodule}:  loaded" in found.stdout, _says(found)
    removed = scipion("uninstallp", "-p", PLUGIN)
    assert removed.returncode == 0 and "couldn't find Plugin" not in _says(removed), _says(removed)
    assert f"Successfully uninstalled {PLUGIN}" in removed.stdout, _says(removed)
    assert scipion.pip("show", PLUGIN).returncode != 0


def test_installp_devel_then_uninstallp(scipion, clone):
    installed = scipion("installp", "-p", clone, "--devel")
    assert installed.returncode == 0, _says(installed)
    assert "Error at main" not in _says(installed) and "Traceback" not in _says(installed), _says(installed)
    _assert_found_then_uninstalled(scipion)


def test_regular_install_then_uninstallp(scipion, clone):
    installed = scipion.pip("install", "--quiet", clone)
    assert installed.returncode == 0, _says(installed)
    _assert_found_then_uninstalled(scipion)
