"""The kinds of neural correction a hybrid model can carry, declared once.

:data:`CORRECTIONS` is what :meth:`HybridModel.with_correction`, ``Fitter(correction=...)``
and ``physnode fit --correction`` read; adding a kind is one entry here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from physnode.errors import InvalidInputError
from physnode.models.correction import MLPCorrection
from physnode.models.discovery import FAMILIES
from physnode.models.structured import (
    CorrectionScales,
    FieldCorrection,
    FieldPotential,
    PairPotential,
    PairwiseCorrection,
)
from physnode.systems.base import System

__all__ = [
    "AUTO",
    "AUTO_PARTICLE_KINDS",
    "CORRECTIONS",
    "CORRECTION_KINDS",
    "CorrectionKind",
    "resolve_correction",
]

Builder = Callable[[System, CorrectionScales, int, int, torch.dtype], nn.Module]


@dataclass(frozen=True)
class CorrectionKind:
    """One kind of correction.

    Attributes:
        name: what ``correction=`` and ``--correction`` accept.
        particles: it needs particle data (bodies with positions, velocities and masses).
        conservative: it is minus the gradient of a learned potential.
        description: one line for the docs.
        build: ``build(system, scales, hidden, depth, dtype)`` → the correction module.
        families: the families of terms (:data:`physnode.models.discovery.FAMILIES`) it can
            represent: the library its discovered law is read from, for particle data.
    """

    name: str
    particles: bool
    conservative: bool
    description: str
    build: Builder
    families: tuple[str, ...] = FAMILIES


def _mass(system: System) -> float:
    """The mean of the system's current masses: the pair terms' typical mass."""
    return float(system.param("masses").detach().mean())


def _field(
    system: System, scales: CorrectionScales, hidden: int, depth: int, dtype: torch.dtype
) -> nn.Module:
    return FieldCorrection(system.n_bodies, system.dim, scales, hidden, depth, dtype=dtype)


def _pairwise(
    system: System, scales: CorrectionScales, hidden: int, depth: int, dtype: torch.dtype
) -> nn.Module:
    n, d = system.n_bodies, system.dim
    return PairwiseCorrection(n, d, scales, _mass(system), hidden, depth, dtype=dtype)


def _field_potential(
    system: System, scales: CorrectionScales, hidden: int, depth: int, dtype: torch.dtype
) -> nn.Module:
    return FieldPotential(system.n_bodies, system.dim, scales, hidden, depth, dtype=dtype)


def _pair_potential(
    system: System, scales: CorrectionScales, hidden: int, depth: int, dtype: torch.dtype
) -> nn.Module:
    n, d = system.n_bodies, system.dim
    return PairPotential(n, d, scales, _mass(system), hidden, depth, dtype=dtype)


def _mlp(
    system: System, scales: CorrectionScales, hidden: int, depth: int, dtype: torch.dtype
) -> nn.Module:
    d = system.dimension
    out = d // 2 if system.second_order else d
    return MLPCorrection(d, out, hidden, depth, scales.state, dtype=dtype)


_KINDS = (
    CorrectionKind(
        "field", particles=True, conservative=False, build=_field,
        description="one network g(q_i, v_i) shared by every body",
        families=("uniform", "position", "velocity"),
    ),
    CorrectionKind(
        "pairwise", particles=True, conservative=False, build=_pairwise,
        description="central pair term Σ_j m_j h(|r_ij|) r_ij / |r_ij|", families=("pair",),
    ),
    CorrectionKind(
        "field-conservative", particles=True, conservative=True, build=_field_potential,
        description="a_i = -∇U(q_i), U one network of position",
        families=("uniform", "position"),
    ),
    CorrectionKind(
        "pairwise-conservative", particles=True, conservative=True, build=_pair_potential,
        description="a_i = -(1/m_i) ∇_i Σ_{i<j} m_i m_j V(|r_ij|), V one network",
        families=("pair",),
    ),
    CorrectionKind(
        "mlp", particles=False, conservative=False, build=_mlp,
        description="one MLP of the whole state (any system)",
    ),
)  # fmt: skip
#: Every kind of correction by name, in the order ``--help`` lists them.
CORRECTIONS: dict[str, CorrectionKind] = {k.name: k for k in _KINDS}
#: The names of the kinds.
CORRECTION_KINDS: tuple[str, ...] = tuple(CORRECTIONS)
#: ``correction="auto"``: for particle data the fit tries each of :data:`AUTO_PARTICLE_KINDS`
#: and keeps the one that fits best (docs/FITTING.md "Corrections"); ``mlp`` otherwise.
AUTO = "auto"
#: the kinds ``correction="auto"`` chooses among on particle data: the per-body field (drag,
#: external fields) and the central pair term (modified gravity, fields about the centre of
#: mass); each cannot represent what the other is for, so the better fit tells which is
#: missing (benchmarks/RESULTS.md "Hybrid benchmark"). ``mlp`` is left out: it fits any
#: training window and extrapolates worse than either (ibid.).
AUTO_PARTICLE_KINDS: tuple[str, ...] = ("field", "pairwise")


def is_particle_system(system: System) -> bool:
    """Whether ``system`` is bodies with masses (what the particle kinds need)."""
    return bool(getattr(system, "particles", False)) and hasattr(system, "n_bodies")


def resolve_correction(kind: str, system: System) -> str:
    """The kind ``kind`` means for one model of ``system``: ``"auto"`` becomes ``"field"`` (the
    first of :data:`AUTO_PARTICLE_KINDS`; the fitter tries each) for particles and ``"mlp"``
    otherwise. Raises :class:`InvalidInputError` for an unknown kind or a particle
    kind on a system without bodies."""
    particles = is_particle_system(system)
    if kind == AUTO:
        return AUTO_PARTICLE_KINDS[0] if particles else "mlp"
    if kind not in CORRECTIONS:
        raise InvalidInputError(
            f"unknown correction {kind!r}; choose one of {[AUTO, *CORRECTION_KINDS]}"
        )
    if CORRECTIONS[kind].particles and not particles:
        name = type(system).__name__
        raise InvalidInputError(
            f"the {kind!r} correction needs particle data (bodies with masses); the {name} "
            "system has none: use correction='mlp' (CLI --correction mlp)"
        )
    return kind
