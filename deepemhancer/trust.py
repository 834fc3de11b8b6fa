"""Former home of the confidence map and the independent-halves check, now
``deepemhancer.confidence`` and ``deepemhancer.metrics.independent_halves``.

Kept only because ``cli.py`` still imports ``enhance_with_confidence`` from here (a file being
rewritten by another change); delete this module once it imports ``deepemhancer.confidence``.
"""
from .confidence import enhance_with_confidence

__all__ = ["enhance_with_confidence"]
