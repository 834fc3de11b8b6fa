"""Scipion plugin for DeepEMhancer (filled by the plugin issue)."""
