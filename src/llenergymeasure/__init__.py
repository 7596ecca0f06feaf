"""LLenergyMeasure: what LLM inference really costs in energy, measured honestly."""

__version__ = "0.1.0"
