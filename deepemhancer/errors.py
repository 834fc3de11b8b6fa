"""User-facing errors: each carries one line that says what is wrong and what to do."""


class DeepEMhancerError(Exception):
    """Base class: the command line prints the message on one line and exits non-zero."""


class InputError(DeepEMhancerError):
    """A map, mask or option given by the user cannot be used."""


class ModelError(DeepEMhancerError):
    """A model file is unknown, corrupt or cannot be converted."""


class NormalizationError(DeepEMhancerError):
    """Input normalisation failed (for example the automatic noise estimate)."""
