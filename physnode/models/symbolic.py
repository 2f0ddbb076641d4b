"""Named terms with learnable coefficients: the discovered law as physics.

:class:`SymbolicTerms` is the correction of a hybrid model whose network was replaced by the
sparse law read from it (:mod:`physnode.models.discovery`): ``a_i = Σ_k c_k term_k(q_i, v_i,
...)``; :class:`StateTerms` the same for systems without bodies, monomials of the state each
added to one component's derivative (``"prey: prey predator"``: ``c · prey · predator`` added
to ``dprey/dt``). Their coefficients ``c`` are a physical parameter of the system,
``"coefficients"`` (not constrained in sign), so a fit learns them with the masses or rates,
and the least-squares finish gives them uncertainties like any physical parameter.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from physnode.errors import InvalidInputError
from physnode.models.discovery import particle_library
from physnode.models.structured import CorrectionScales, StructuredCorrection
from physnode.systems.base import System

__all__ = ["COEFFICIENTS", "StateTerms", "SymbolicTerms", "state_term"]

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
        self.terms = list(terms)
        self._functions = [library[t] for t in terms]
        system.add_parameter(COEFFICIENTS, _initial(initial, len(terms)), positive=False)
        # the system is the hybrid model's own submodule; kept here unregistered
        object.__setattr__(self, "_system", system)

    def forward(self, y: Tensor, masses: Tensor | None = None) -> Tensor:
        """``(..., 2 N D)`` → ``(..., N D)``."""
        q, v = self.split(y)
        m = self._system.param("masses", y) if masses is None else masses
        c = self._system.param(COEFFICIENTS, y)
        acc = sum(c[k] * f(q, v, m) for k, f in enumerate(self._functions))
        return acc.flatten(-2)

    def jacobians(self, y: Tensor, masses: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """At one state ``y`` ``(2 N D,)``, from the terms' closed forms: the terms' sum
        ``(N D,)`` and its derivatives in ``y`` ``(N D, 2 N D)``, in the (natural) masses
        ``(N D, N)`` and in the coefficients ``(N D, K)`` (the terms themselves)."""
        q, v = self.split(y)
        c = self._system.param(COEFFICIENTS, y)
        nd = q.numel()
        d_y = y.new_zeros(nd, 2 * nd)
        d_m = y.new_zeros(nd, masses.numel())
        values = []
        for k, term in enumerate(self._functions):
            jac = term.jacobian(q, v, masses)
            values.append(jac.value)
            if jac.q is not None:
                d_y[:, :nd] += c[k] * jac.q.reshape(nd, nd)
            if jac.v is not None:
                d_y[:, nd:] += c[k] * jac.v.reshape(nd, nd)
            if jac.masses is not None:
                d_m += c[k] * jac.masses.reshape(nd, -1)
        g = sum(c[k] * value for k, value in enumerate(values))  # as forward sums them
        return g.flatten(-2), d_y, d_m, torch.stack([x.reshape(-1) for x in values], dim=1)


#: separates a state term's target from its monomial: ``"prey: prey predator"``
TARGET_SEPARATOR = ": "


def state_term(target: str, monomial: str) -> str:
    """The name of a state term: ``monomial`` (a name of
    :func:`~physnode.models.discovery.polynomial_library`, e.g. ``"prey predator"``, ``"x^2"``,
    ``"1"``) added to ``d<target>/dt``."""
    return f"{target}{TARGET_SEPARATOR}{monomial}"


class StateTerms(nn.Module):
    """``d<target_k>/dt += c_k · monomial_k(y)`` for systems without bodies.

    Args:
        system: the physics; it receives the parameter ``"coefficients"`` ``(K,)`` with the
            values ``initial`` (default zeros), frozen until
            ``system.set_learnable("coefficients")``.
        terms: ``K`` names ``"<target>: <monomial>"`` (:func:`state_term`): the target one of
            the corrected components (``system.state_names``; the second half for
            second-order systems), the monomial a product of component names with optional
            integer powers (``"x y^2"``) or ``"1"``.
        initial: starting coefficients ``(K,)``.
    """

    def __init__(
        self, system: System, terms: Sequence[str], initial: Sequence[float] | None = None
    ) -> None:
        super().__init__()
        names = list(system.state_names)
        targets = names[len(names) // 2 :] if system.second_order else names
        if not terms or len(set(terms)) != len(terms):
            raise InvalidInputError(f"terms {list(terms)}: give each term once, at least one")
        powers = torch.zeros(len(terms), len(names), dtype=torch.float64)
        into = torch.zeros(len(terms), len(targets), dtype=torch.float64)
        for k, term in enumerate(terms):
            target, monomial = _split(term, targets)
            into[k, targets.index(target)] = 1.0
            powers[k] = _powers(monomial, names, term)
        self.terms = list(terms)
        self.register_buffer("powers", powers)  # (K, D): the exponent of each component
        self.register_buffer("into", into)  # (K, C): the component each term adds to
        system.add_parameter(COEFFICIENTS, _initial(initial, len(terms)), positive=False)
        object.__setattr__(self, "_system", system)  # the hybrid model's own submodule

    def monomials(self, y: Tensor) -> Tensor:
        """``(..., D)`` → ``(..., K)``: each term's monomial at ``y`` (no coefficient)."""
        p = self.powers.to(y.dtype)
        return torch.prod(y.unsqueeze(-2) ** p, dim=-1)

    def forward(self, y: Tensor) -> Tensor:
        """``(..., D)`` → ``(..., C)``: the terms' additions to the corrected derivatives."""
        c = self._system.param(COEFFICIENTS, y)
        return (self.monomials(y) * c) @ self.into.to(y.dtype)

    def jacobians(self, y: Tensor, masses: Tensor | None = None) -> tuple[Tensor, ...]:
        """At one state ``y`` ``(D,)``: the terms' additions ``(C,)`` and their derivatives in
        ``y`` ``(C, D)``, in the masses (none: ``(C, 0)``) and in the coefficients ``(C, K)``;
        ``∂/∂y_d Π_e y_e^p_e = p_d y_d^(p_d - 1) Π_(e≠d) y_e^p_e``."""
        del masses
        c = self._system.param(COEFFICIENTS, y)
        into = self.into.to(y.dtype)  # (K, C)
        p = self.powers.to(y.dtype)  # (K, D)
        mono = self.monomials(y)  # (K,)
        eye = torch.eye(p.shape[1], dtype=y.dtype, device=y.device)
        lowered = torch.prod(y ** (p.unsqueeze(0) - eye.unsqueeze(1)).clamp_min(0), dim=-1)
        d_mono = torch.where(p.T > 0, p.T * lowered, torch.zeros_like(lowered))  # (D, K)
        d_y = (into.T * c) @ d_mono.T  # (C, D)
        return (mono * c) @ into, d_y, y.new_zeros(into.shape[1], 0), into.T * mono


def _split(term: str, targets: list[str]) -> tuple[str, str]:
    target, sep, monomial = term.partition(TARGET_SEPARATOR)
    if not sep or target not in targets or not monomial.strip():
        raise InvalidInputError(
            f"term {term!r}: write '<component>{TARGET_SEPARATOR}<monomial>' with the "
            f"component one of {targets} (e.g. {state_term(targets[0], 'x y')!r})"
        )
    return target, monomial.strip()


def _powers(monomial: str, names: list[str], term: str) -> Tensor:
    out = torch.zeros(len(names), dtype=torch.float64)
    if monomial == "1":
        return out
    for factor in monomial.split():
        name, _, power = factor.partition("^")
        if name not in names or (power and not power.isdigit()):
            raise InvalidInputError(
                f"term {term!r}: {factor!r} is not a component of the state {names} with an "
                "optional integer power (e.g. 'x^2')"
            )
        out[names.index(name)] += int(power) if power else 1
    return out


def _initial(initial: Sequence[float] | None, k: int) -> Tensor:
    if initial is None:
        return torch.zeros(k, dtype=torch.float64)
    values = torch.as_tensor(initial, dtype=torch.float64).reshape(-1)
    if values.numel() != k:
        raise InvalidInputError(f"{values.numel()} initial coefficients for {k} terms")
    return values
