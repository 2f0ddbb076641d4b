"""Hybrid models: known physics with learnable parameters plus an optional neural correction."""

from physnode.models.correction import MLPCorrection
from physnode.models.hybrid import HybridModel, InitialState, NeuralODE
from physnode.models.registry import (
    AUTO,
    AUTO_PARTICLE_KINDS,
    CORRECTION_KINDS,
    CORRECTIONS,
    resolve_correction,
)
from physnode.models.structured import (
    CorrectionScales,
    FieldCorrection,
    FieldPotential,
    PairPotential,
    PairwiseCorrection,
)

__all__ = [
    "AUTO",
    "AUTO_PARTICLE_KINDS",
    "CORRECTIONS",
    "CORRECTION_KINDS",
    "CorrectionScales",
    "FieldCorrection",
    "FieldPotential",
    "HybridModel",
    "InitialState",
    "MLPCorrection",
    "NeuralODE",
    "PairPotential",
    "PairwiseCorrection",
    "resolve_correction",
]
