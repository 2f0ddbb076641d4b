"""Hybrid models: known physics with learnable parameters plus an optional neural correction."""

from physnode.models.correction import MLPCorrection
from physnode.models.hybrid import HybridModel, InitialState, NeuralODE

__all__ = ["HybridModel", "InitialState", "MLPCorrection", "NeuralODE"]
