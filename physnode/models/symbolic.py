"""Named terms with learnable coefficients: the discovered law as physics.

:class:`SymbolicTerms` is the correction of a hybrid model whose network was replaced by the
sparse law read from it (:mod:`physnode.models.discovery`): ``a_i = Σ_k c_k term_k(q_i, v_i,
...)``. Its coefficients ``c`` are a physical parameter of the system, ``"coefficients"``
(not constrained in sign), so a fit learns them with the masses, and the least-squares finish
gives them uncertainties like any physical parameter.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from physnode.errors import InvalidInputError
from physnode.models.discovery import particle_library
from physnode.models.structured import CorrectionScales, StructuredCorrection
from physnode.systems.base import System

__all__ = ["COEFFICIENTS", "SymbolicTerms"]

#: the name of the terms' coefficients among the system's physical parameters
COEFFICIENTS = "coefficients"


class SymbolicTerms(StructuredCorrection):
    """``a_i = Σ_k c_k term_k`` for particle systems, ``c`` the system's ``"coefficients"``.

    Args:
        system: the physics (bodies with masses); it receives the parameter
            ``"coefficients"`` ``(K,)`` with the values ``initial`` (default zeros), frozen
            until ``system.set_learnable("coefficients")``.
        terms: ``K`` names from :func:`~physnode.models.discovery.particle_library`.
        initial: starting coefficients ``(K,)``.
    """

    def __init__(
        self, system: System, terms: Sequence[str], initial: Sequence[float] | None = None
    ) -> None:
        super().__init__(system.n_bodies, system.dim, CorrectionScales())
        library = particle_library(system.dim)
        unknown = [t for t in terms if t not in library]
        if unknown or not terms:
            raise InvalidInputError(
                f"unknown term(s) {unknown or list(terms)}; terms are names from the library: "
                f"{list(library)}"
            )
        if len(set(terms)) != len(terms):
            raise InvalidInputError(f"terms {list(terms)} name a term twice")
        values = torch.zeros(len(terms), dtype=torch.float64)
        if initial is not None:
            values = torch.as_tensor(initial, dtype=torch.float64).reshape(-1)
            if values.numel() != len(terms):
                raise InvalidInputError(
                    f"{values.numel()} initial coefficients for {len(terms)} terms"
                )
        self.terms = list(terms)
        self._functions = [library[t] for t in terms]
        system.add_parameter(COEFFICIENTS, values, positive=False)
        # the system is the hybrid model's own submodule; kept here unregistered
        object.__setattr__(self, "_system", system)

    def forward(self, y: Tensor, masses: Tensor | None = None) -> Tensor:
        """``(..., 2 N D)`` → ``(..., N D)``."""
        q, v = self.split(y)
        m = self._system.param("masses", y) if masses is None else masses
        c = self._system.param(COEFFICIENTS, y)
        acc = sum(c[k] * f(q, v, m) for k, f in enumerate(self._functions))
        return acc.flatten(-2)
