"""Hybrid and neural ODE models, and a learnable initial state."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from physnode.errors import InvalidInputError
from physnode.models.correction import MLPCorrection
from physnode.models.registry import AUTO, CORRECTIONS, resolve_correction
from physnode.models.structured import CorrectionScales, StructuredCorrection
from physnode.models.symbolic import COEFFICIENTS, StateTerms, SymbolicTerms
from physnode.solver.vector_field import closed_form_applies, jacobians_of
from physnode.systems.base import System


class HybridModel(nn.Module):
    """``dy/dt = f_physics(t, y; θ) + correction(y)``.

    For second-order systems (state = positions then velocities) the correction is added to
    the accelerations only, so ``dq/dt = v`` stays exact; otherwise to the whole derivative.

    Args:
        system: the known physics (its chosen parameters made learnable beforehand with
            ``system.set_learnable``).
        correction: ``None`` (pure physics), a module mapping the state to the correction
            (``MLPCorrection`` of width ``D`` → ``D/2`` or ``D``), or a
            :class:`~physnode.models.structured.StructuredCorrection`, which is also handed
            the system's current masses. :meth:`with_correction` builds any kind of
            :data:`~physnode.models.registry.CORRECTIONS`.
    """

    def __init__(self, system: System, correction: nn.Module | None = None) -> None:
        super().__init__()
        self.system = system
        self.correction = correction

    @classmethod
    def with_mlp(
        cls, system: System, hidden: int = 32, depth: int = 2, scale: float = 1.0,
        dtype: torch.dtype = torch.float64,
    ) -> HybridModel:  # fmt: skip
        """A hybrid model whose correction is a zero-initialised MLP of the right shape, with
        weights of ``dtype`` (the state's)."""
        d = system.dimension
        out = d // 2 if system.second_order else d
        return cls(system, MLPCorrection(d, out, hidden, depth, scale, dtype=dtype))

    @classmethod
    def with_correction(
        cls, system: System, kind: str = AUTO, scales: CorrectionScales | None = None,
        hidden: int = 32, depth: int = 2, dtype: torch.dtype = torch.float64,
    ) -> HybridModel:  # fmt: skip
        """A hybrid model whose correction is a zero-initialised network of ``kind`` (one of
        :data:`~physnode.models.registry.CORRECTIONS`, or ``"auto"``: ``field`` for particle
        systems, ``mlp`` otherwise).

        Args:
            system: the known physics.
            kind: the kind of correction.
            scales: typical magnitudes of the data the inputs and outputs are scaled by
                (default: all 1, the data's own units).
            hidden, depth: width and number of hidden layers of the network.
            dtype: of the weights (the state's).
        """
        kind = resolve_correction(kind, system)
        scales = CorrectionScales() if scales is None else scales
        return cls(system, CORRECTIONS[kind].build(system, scales, hidden, depth, dtype))

    @property
    def conservative(self) -> bool:
        """Whether the correction (if any) is minus the gradient of a learned potential."""
        return self.correction is None or bool(getattr(self.correction, "conservative", False))

    @property
    def autonomous(self) -> bool:
        """Autonomous when the physics is (the correction depends on the state only)."""
        return bool(getattr(self.system, "autonomous", False))

    def forward(self, t: Tensor, y: Tensor) -> Tensor:
        f = self.system(t, y)
        if self.correction is None:
            return f
        if isinstance(self.correction, StructuredCorrection):
            g = self.correction(y, self.system.param("masses", y))
        else:
            g = self.correction(y)
        if self.system.second_order:
            half = y.shape[-1] // 2
            return torch.cat([f[..., :half], f[..., half:] + g], dim=-1)
        return f + g

    def jacobians(self, t: Tensor, y: Tensor, params) -> tuple | None:
        """Closed-form Jacobian rows (the solver's optional ``jacobians`` hook): the
        physics' own (e.g. :meth:`physnode.systems.NBody.jacobians`) when there is no
        correction, those plus the named terms' (:meth:`SymbolicTerms.jacobians`,
        :meth:`StateTerms.jacobians`) for a symbolic law; ``None`` otherwise (a network's rows
        need autograd)."""
        physics = jacobians_of(self.system)
        if physics is None or not closed_form_applies(self, HybridModel, ("forward",)):
            return None
        if self.correction is None:
            return physics(t, y, params)
        terms = self.correction
        if type(terms) not in (SymbolicTerms, StateTerms) or y.ndim != 1:
            return None  # a network, or terms whose call is not the closed form's
        if not closed_form_applies(terms, type(terms), ()):
            return None
        names = self.system.names_of(params)
        if names is None:
            return None
        own = [p for p, name in zip(params, names, strict=True) if name != COEFFICIENTS]
        given = physics(t, y, own)
        if given is None:
            return None
        with torch.no_grad():
            return _with_terms(self.system, self.correction, y, names, given)

    def physical_parameters(self) -> dict[str, Tensor]:
        """Current values of the system's physical parameters."""
        return self.system.physical_parameters()

    def energy(self, y: Tensor) -> Tensor:
        """The physics' energy plus the learned potential energy of a conservative correction,
        shape ``y.shape[:-1]``: conserved along solutions where the physics' energy is."""
        if not self.conservative:
            raise InvalidInputError(
                "this hybrid model's correction is not conservative: it has no energy; use a "
                "conservative kind ('field-conservative', 'pairwise-conservative')"
            )
        energy = self.system.energy(y)
        if self.correction is None:
            return energy
        return energy + self.correction.potential_energy(y, self.system.param("masses", y))


def _with_terms(
    system: System, terms: SymbolicTerms | StateTerms, y: Tensor, names: list[str], physics: tuple
) -> tuple[Tensor, Tensor, list[Tensor]]:
    """The physics' ``(f, ∂f/∂y, rows)`` (rows for ``names`` less the coefficients) plus the
    terms' share, which adds to the corrected derivatives (the second half of a second-order
    system's, else all), as ``forward`` adds it."""
    f, jac, own = physics
    masses = system.param("masses", y) if isinstance(terms, SymbolicTerms) else None
    g, d_y, d_m, d_c = terms.jacobians(y, masses)
    half = y.shape[-1] // 2 if system.second_order else 0
    f = torch.cat([f[:half], f[half:] + g])
    jac = jac.clone()
    jac[half:] += d_y
    extra = {COEFFICIENTS: d_c} | ({} if masses is None else {"masses": d_m})
    rows, own = [], iter(own)
    for name in names:
        if name == COEFFICIENTS:
            row = y.new_zeros(y.shape[-1], d_c.shape[1])
        else:
            row = next(own).clone()
        if name in extra:
            row[half:] += extra[name] * system.params[name].slope(y)
        rows.append(row)
    return f, jac, rows


class NeuralODE(nn.Module):
    """The pure neural-ODE baseline: ``dy/dt = MLP(y)`` (for second-order data,
    ``(v, MLP(y))`` so positions and velocities stay consistent)."""

    autonomous = True

    def __init__(
        self, dim: int, second_order: bool = True, hidden: int = 64, depth: int = 2,
        scale: float = 1.0, dtype: torch.dtype = torch.float64,
    ) -> None:  # fmt: skip
        super().__init__()
        self.second_order = second_order
        out = dim // 2 if second_order else dim
        self.net = MLPCorrection(dim, out, hidden, depth, scale, dtype=dtype)
        # a zero last layer would leave a pure network with no gradient signal to its inner
        # layers at start: give it a small random start instead
        last = self.net.net[-1]
        nn.init.normal_(last.weight, std=1e-2)

    def forward(self, t: Tensor, y: Tensor) -> Tensor:
        g = self.net(y)
        if self.second_order:
            half = y.shape[-1] // 2
            return torch.cat([y[..., half:], g], dim=-1)
        return g

    def physical_parameters(self) -> dict[str, Tensor]:
        return {}


class InitialState(nn.Module):
    """The initial state ``y0``, entirely fixed, entirely learnable, or with only the velocity
    half learnable (``learn`` in ``"none"``, ``"all"``, ``"velocities"``)."""

    def __init__(self, y0: Tensor, learn: str = "none") -> None:
        super().__init__()
        if learn not in ("none", "all", "velocities"):
            raise InvalidInputError(
                f"initial-state learning must be 'none', 'all' or 'velocities'; got {learn!r}"
            )
        y0 = y0.detach().to(torch.float64).clone()
        self.learn = learn
        half = y0.shape[-1] // 2
        if learn == "all":
            self.fixed = None
            self.free = nn.Parameter(y0)
        elif learn == "velocities":
            self.register_buffer("fixed", y0[..., :half].clone())
            self.free = nn.Parameter(y0[..., half:].clone())
        else:
            self.register_buffer("fixed", y0)
            self.free = None

    def forward(self) -> Tensor:
        if self.free is None:
            return self.fixed
        if self.fixed is None:
            return self.free
        return torch.cat([self.fixed, self.free], dim=-1)
