"""Fresh Python environments for the tests that install this project as its users' tools do
(scipion-app, ccpem-pipeliner): created once per test module, skipped with the reason when the
packages cannot be installed."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TORCH_SPEC = os.environ.get("TORCH_SPEC", "torch==2.13.0")  # as the Makefile: the CPU build here


def run(command: list, env: dict | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(part) for part in command], env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=900)


def said(result: subprocess.CompletedProcess) -> str:
    return result.stdout + result.stderr


class Venv:
    """A virtual environment, run with its bin/ first on PATH and none of the plugin tests' variables."""

    def __init__(self, folder: Path):
        self.python = folder / "bin" / "python"
        self.env = {key: value for key, value in os.environ.items()
                    if not key.startswith(("SCIPION_", "DEEPEMHANCER_"))}
        self.env["PATH"] = f"{folder / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"

    def __call__(self, *arguments, cwd: Path | None = None) -> subprocess.CompletedProcess:
        return run([self.python, *arguments], self.env, cwd)

    def pip(self, *arguments) -> subprocess.CompletedProcess:
        return self("-m", "pip", *arguments)


def venv_with(folder: Path, *requirements, what: str) -> Venv:
    """A new environment holding ``requirements`` (pip arguments); the test is skipped if pip fails."""
    run([sys.executable, "-m", "venv", folder]).check_returncode()
    env = Venv(folder)
    installed = env.pip("install", "--quiet", *requirements)
    if installed.returncode != 0:
        last = (installed.stderr.strip().splitlines() or ["no output"])[-1]
        pytest.skip(f"{what} could not be installed from PyPI ({last})")
    return env
