"""The plugin's dependencies. The engine is this repository's engine/ folder, named by location, so
that one `pip install` (or `scipion3 installp -p <clone> --devel`) of a clone brings both; the
other metadata lives in pyproject.toml."""
from pathlib import Path

from setuptools import setup

ENGINE = Path(__file__).resolve().parent / "engine"

setup(install_requires=[f"deepemhancer @ {ENGINE.as_uri()}",
                        # Scipion itself pins numpy 1.26 and scipy <= 1.10 (see constraints.txt).
                        "scipion-pyworkflow>=3.0", "scipion-em>=3.0"])
