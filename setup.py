# Thin shim, as Scipion plugins have: all metadata lives in pyproject.toml.
from setuptools import setup

setup()
