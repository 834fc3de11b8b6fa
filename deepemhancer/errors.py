"""User-facing errors: each carries one line that says what is wrong and what to do."""
from __future__ import annotations


class DeepEMhancerError(Exception):
    """Base class: the command line prints the message on one line and exits non-zero.

    ``setting`` names the engine setting at fault (an EnhanceOptions field, ``voxel_size``,
    ``overwrite``, ``url``, ``normalisation`` (noise statistics or a mask), and for batches ``halves``
    and ``output``), so that a front end can name its own control for it; the message itself stays
    free of any front end's wording.
    """

    def __init__(self, message: str, *, setting: str | None = None):
        super().__init__(message)
        self.setting = setting


class InputError(DeepEMhancerError):
    """A map, mask or option given by the user cannot be used."""


class ModelError(DeepEMhancerError):
    """A model file is unknown, corrupt or cannot be converted."""


class NormalizationError(DeepEMhancerError):
    """Input normalisation failed (for example the automatic noise estimate)."""


class ResourceError(DeepEMhancerError):
    """The machine lacks what a task needs: memory, disk space or write permission."""
