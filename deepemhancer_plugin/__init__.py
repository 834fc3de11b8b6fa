"""Scipion plugin for DeepEMhancer on PyTorch: half-map FSC, tight masks, B-factor sharpening and
deep-learning enhancement as workflow nodes (3D -> Postprocess), with a comparison viewer.

Every protocol step calls one function of the ``deepemhancer`` engine; the science lives there.
Nothing here imports torch: Scipion imports this module at start-up.
"""
import os
import shlex

import pwem
import pyworkflow.utils as pwutils

from .constants import (DEFAULT_DEVICE, DEVICE_VAR, MODELS_DIR_VAR, OFFICIAL_WEIGHTS_VAR, WEIGHTS_HOME_VAR,
                        WEIGHTS_MODELS_SUBDIR, WEIGHTS_PACKAGE, WEIGHTS_VERSION)

__version__ = "0.1.0"
_references = ["SanchezGarcia2021"]


class Plugin(pwem.Plugin):
    _url = "https://doi.org/10.1038/s42003-021-02399-1"
    # Deliberately empty: every folder this plugin uses may be absent on a fresh install (the
    # models are optional, the bundled demo model always works), and Scipion fails every run whose
    # _pathVars folder is missing.
    _pathVars = []

    def getName(self):
        # Scipion writes this before every protocol label (run boxes, form header, Methods tab): the
        # module name would read "deepemhancer_plugin - ..." there, its underscore taken as markup.
        return "DeepEMhancer"

    @classmethod
    def _defineVariables(cls):
        cls._defineVar(MODELS_DIR_VAR, "",
                       description="Folder of DeepEMhancer models (the engine's DEEPEMHANCER_MODELS_DIR); "
                                   "empty: ~/.local/share/deepemhancer/models")
        cls._defineVar(DEVICE_VAR, DEFAULT_DEVICE,
                       description="Default device of new DeepEMhancer runs: GPU ids such as 0 or 0,1, or cpu")
        cls._defineVar(OFFICIAL_WEIGHTS_VAR, "",
                       description="A folder with the official deepEMhancer_*.hd5 weights; empty: use the "
                                   "ones of Scipion's xmipp bundle when installed")
        cls._defineEmVar(WEIGHTS_HOME_VAR, f"{WEIGHTS_PACKAGE}-{WEIGHTS_VERSION}",
                         description="Where 'scipion3 installb deepemhancerWeights' keeps the official weights")

    @classmethod
    def getEnviron(cls):
        """The environment of programs started for this plugin: the model folder, when configured."""
        environ = pwutils.Environ(os.environ)
        if cls.getVar(MODELS_DIR_VAR):
            environ[MODELS_DIR_VAR] = cls.getVar(MODELS_DIR_VAR)
        return environ

    @classmethod
    def getWeightsModelsDir(cls) -> str:
        """The folder of official models converted by 'scipion3 installb deepemhancerWeights'."""
        return os.path.join(cls.getVar(WEIGHTS_HOME_VAR), WEIGHTS_MODELS_SUBDIR)

    @classmethod
    def getDefaultDevice(cls) -> str:
        return (cls.getVar(DEVICE_VAR) or DEFAULT_DEVICE).strip()

    @classmethod
    def defineBinaries(cls, env):
        """``scipion3 installb deepemhancerWeights``: the official weights (Zenodo 7432763), or those of
        the xmipp bundle when present, converted once into the package folder for every user."""
        from .models import official_weights_folder

        package_dir = os.path.join(env.getEmFolder(), f"{WEIGHTS_PACKAGE}-{WEIGHTS_VERSION}")
        models_dir = shlex.quote(os.path.join(package_dir, WEIGHTS_MODELS_SUBDIR))
        source = official_weights_folder()
        action = (f"models import {shlex.quote(str(source))}" if source is not None
                  else "models download weights")  # into the package folder, resumable
        # The variable is set in the command itself: addPackage's ``vars`` would replace the whole
        # environment (PATH included) of the command.
        command = f"{MODELS_DIR_VAR}={models_dir} {shlex.quote(env.getPython())} -m deepemhancer {action}"
        env.addPackage(WEIGHTS_PACKAGE, version=WEIGHTS_VERSION, tar="void.tgz",
                       commands=[(command, [os.path.join(WEIGHTS_MODELS_SUBDIR, "tightTarget.json")])],
                       default=False)
