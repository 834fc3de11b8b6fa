from .viewer_comparison import DeepEMhancerComparisonViewer

__all__ = ["DeepEMhancerComparisonViewer"]
