"""Scipion's own plugin manager installs and removes the plugin, as a user does it: scipion-app from
PyPI in an environment of its own, `installp -p <clone> --devel` (and a regular pip install),
the plugin found by `inspect`, then `uninstallp`. Skipped, with the reason, where scipion-app
cannot be installed. About two minutes (most of it installing)."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from venvs import ROOT, TORCH_SPEC, Venv, run, said, venv_with

PLUGIN = "scipion-em-deepemhancer"  # Scipion's plugin manager takes the plugin's name from the folder's
MODULE = "deepemhancer_plugin"


def _repository_files() -> list[str]:
    """The files a clone of this working tree has (tracked, and new ones git does not ignore)."""
    listed = run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=ROOT)
    if listed.returncode != 0:
        pytest.skip("the repository's files cannot be listed (not a git checkout)")
    return [name for name in listed.stdout.split("\0") if name and os.path.lexists(ROOT / name)]


def _copy_clone(destination: Path) -> Path:
    for name in _repository_files():
        target = destination / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, target, follow_symlinks=False)  # engine/deepemhancer stays a link
    return destination


class Scipion(Venv):
    """scipion-app in its own environment and SCIPION_HOME."""

    def __init__(self, base: Path):
        super().__init__(base / "venv")
        self.env.update(SCIPION_HOME=str(base / "home"), SCIPION_NOTIFY="False",
                        MPLCONFIGDIR=str(base / "matplotlib"))
        self.cwd = base

    def scipion(self, *arguments):
        return self("-m", "scipion", *arguments, cwd=self.cwd)


@pytest.fixture(scope="module")
def scipion(tmp_path_factory) -> Scipion:
    base = tmp_path_factory.mktemp("scipion-app")
    venv_with(base / "venv", "-c", ROOT / "constraints.txt", TORCH_SPEC, "scipion-app>=3.8,<3.9", what="scipion-app")
    app = Scipion(base)
    (base / "home").mkdir()
    configured = app.scipion("config", "--unattended")
    assert configured.returncode == 0, said(configured)
    return app


@pytest.fixture(scope="module")
def clone(tmp_path_factory) -> Path:
    return _copy_clone(tmp_path_factory.mktemp("clone") / PLUGIN)


def _assert_found_then_uninstalled(scipion: Scipion) -> None:
    found = scipion.scipion("inspect", MODULE)
    for submodule in ("protocols", "viewers", "wizards"):
        assert f">>> {submodule}:  loaded" in found.stdout, said(found)
    removed = scipion.scipion("uninstallp", "-p", PLUGIN)
    assert removed.returncode == 0 and "couldn't find Plugin" not in said(removed), said(removed)
    assert f"Successfully uninstalled {PLUGIN}" in removed.stdout, said(removed)
    assert scipion.pip("show", PLUGIN).returncode != 0


def test_installp_devel_then_uninstallp(scipion, clone):
    installed = scipion.scipion("installp", "-p", clone, "--devel")
    assert installed.returncode == 0, said(installed)
    assert "Error at main" not in said(installed) and "Traceback" not in said(installed), said(installed)
    _assert_found_then_uninstalled(scipion)


def test_regular_install_then_uninstallp(scipion, clone):
    installed = scipion.pip("install", "--quiet", clone)
    assert installed.returncode == 0, said(installed)
    _assert_found_then_uninstalled(scipion)
