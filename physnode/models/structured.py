"""Corrections with the structure of the physics, for particle systems.

Each maps a state ``y`` of shape ``(..., 2 N D)`` (positions then velocities, body-major, as
:class:`~physnode.systems.NBody` lays them out) and the current masses ``(N,)`` to extra
accelerations ``(..., N D)``; leading batch dimensions are independent rows.

- :class:`FieldCorrection` — one network ``g(q_i, v_i)`` shared by every body: an external
  field or a drag acting on each body alone. Permuting the bodies permutes its output.
- :class:`PairwiseCorrection` — ``a_i = Σ_j m_j h(|r_ij|, |v_ij|²) r_ij / |r_ij|``: an extra
  central interaction. ``h`` is symmetric in ``i, j`` and ``r_ij = q_j - q_i`` antisymmetric,
  so ``Σ_i m_i a_i = Σ_ij m_i m_j h_ij r̂_ij = 0``: momentum is conserved.
- :class:`FieldPotential` — ``a_i = -∇U(q_i)`` with ``U`` a network of position: conserves
  ``E = kinetic + physics potential + Σ_i m_i U(q_i)``.
- :class:`PairPotential` — ``a_i = -(1/m_i) ∇_{q_i} Σ_{i<j} m_i m_j V(|r_ij|)``: conserves
  momentum, and energy with ``Σ_{i<j} m_i m_j V(r_ij)`` added.

The gradients of the learned potentials are written out by hand (:meth:`TanhMLP.with_gradient`)
rather than taken with ``torch.autograd.grad`` inside ``forward``: plain tensor operations, so
the model runs under ``torch.no_grad`` (the ACA forward pass), ``torch.func.vmap`` (its batched
replay) and batched VJPs (``grad="forward"``, the least-squares finish) like any other, and
outer autograd differentiates them to any order.

Inputs are divided by typical magnitudes of the data (:class:`CorrectionScales`) and outputs
multiplied by a typical acceleration, so the same defaults work in any units. Every last layer
starts at zero: a new hybrid model is exactly its physics.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from physnode.errors import DtypeMismatchError

__all__ = [
    "CorrectionScales",
    "FieldCorrection",
    "FieldPotential",
    "PairPotential",
    "PairwiseCorrection",
    "StructuredCorrection",
    "TanhMLP",
]


@dataclass(frozen=True)
class CorrectionScales:
    """Typical magnitudes of the data, in the data's units.

    Attributes:
        length: RMS of the positions about their mean (length units).
        speed: RMS of the velocity components (length / time).
        acceleration: typical acceleration component (length / time²): the outputs of a
            correction are in units of it.
        center: mean position, ``D`` numbers (positions enter as ``(q - center) / length``);
            empty: the origin.
        state: RMS of a state vector (what the full-state ``mlp`` correction divides by).
    """

    length: float = 1.0
    speed: float = 1.0
    acceleration: float = 1.0
    center: tuple[float, ...] = ()
    state: float = 1.0

    @classmethod
    def from_particles(
        cls, positions: np.ndarray, velocities: np.ndarray, accelerations: np.ndarray,
        state: float = 1.0,
    ) -> CorrectionScales:  # fmt: skip
        """Scales of particle data: ``positions``, ``velocities``, ``accelerations`` each
        ``(T, N, D)``. The acceleration scale is the root of the *median* squared component
        (not the mean): one close encounter must not set the scale of the whole orbit."""
        q = np.asarray(positions, dtype=np.float64)
        center = q.mean(axis=(0, 1))
        length = _positive(np.sqrt(np.mean((q - center) ** 2)))
        speed = _positive(np.sqrt(np.mean(np.asarray(velocities, dtype=np.float64) ** 2)))
        a2 = np.sum(np.asarray(accelerations, dtype=np.float64) ** 2, axis=-1)
        acceleration = _positive(np.sqrt(np.median(a2) / q.shape[-1]))
        return cls(length, speed, acceleration, tuple(float(c) for c in center), float(state))


def _positive(x: float) -> float:
    """``x`` if it is a usable scale (finite, > 0), else 1 (no data to scale by)."""
    x = float(x)
    return x if np.isfinite(x) and x > 0 else 1.0


def _check_dtype(dtype: torch.dtype) -> None:
    if dtype not in (torch.float32, torch.float64):
        raise DtypeMismatchError(f"the correction's dtype must be float32 or float64, got {dtype}")


class TanhMLP(nn.Module):
    """A tanh MLP ``(..., in_dim)`` → ``(..., out_dim)`` whose last layer starts at zero.

    Args:
        in_dim, out_dim: input and output widths.
        hidden: width of the hidden layers; depth: their number.
        dtype: of the weights, ``torch.float64`` or ``torch.float32``.
    """

    def __init__(
        self, in_dim: int, out_dim: int, hidden: int = 32, depth: int = 2,
        dtype: torch.dtype = torch.float64,
    ) -> None:  # fmt: skip
        super().__init__()
        _check_dtype(dtype)
        widths = [in_dim] + [hidden] * depth
        self.layers = nn.ModuleList(
            nn.Linear(a, b, dtype=dtype) for a, b in itertools.pairwise(widths)
        )
        self.last = nn.Linear(widths[-1], out_dim, dtype=dtype)
        nn.init.zeros_(self.last.weight)
        nn.init.zeros_(self.last.bias)

    def check_input(self, x: Tensor) -> None:
        """Refuse an input whose dtype is not the weights' (a silent cast would hide it)."""
        weight = self.last.weight
        if x.dtype != weight.dtype:
            raise DtypeMismatchError(
                f"the correction's weights are {weight.dtype} but the state is {x.dtype}; build "
                f"it with dtype={x.dtype} or convert the model with model.to({x.dtype})"
            )

    def forward(self, x: Tensor) -> Tensor:
        """``(..., in_dim)`` → ``(..., out_dim)``."""
        for layer in self.layers:
            x = torch.tanh(layer(x))
        return self.last(x)

    def with_gradient(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """For ``out_dim = 1``: the value ``(...)`` and its gradient with respect to the input
        ``(..., in_dim)``, by the chain rule written out (``d tanh(z) = 1 - tanh(z)²``)."""
        hs = []
        for layer in self.layers:
            x = torch.tanh(layer(x))
            hs.append(x)
        value = self.last(x)[..., 0]
        grad = self.last.weight[0].expand(x.shape)
        for layer, h in zip(reversed(self.layers), reversed(hs), strict=True):
            grad = (grad * (1.0 - h * h)) @ layer.weight
        return value, grad


class StructuredCorrection(nn.Module):
    """Base of the particle corrections: the layout of the state and the input scales.

    ``forward(y, masses)``: ``y`` of shape ``(..., 2 N D)`` and the current masses ``(N,)``
    give the extra accelerations ``(..., N D)``. :class:`~physnode.models.HybridModel` passes
    its system's masses, so learnable masses are always the current ones.

    Args:
        n_bodies, dim: ``N`` and ``D``.
        scales: typical magnitudes of the data.
        mass: typical mass (the mean of the system's masses when built); pair terms are
            ``m_j / mass`` times an acceleration, so their scale does not depend on the units
            of mass.
    """

    #: whether the correction is minus the gradient of :meth:`potential_energy`
    conservative = False

    def __init__(
        self, n_bodies: int, dim: int, scales: CorrectionScales, mass: float = 1.0
    ) -> None:
        super().__init__()
        self.n_bodies, self.dim = int(n_bodies), int(dim)
        self.length = float(scales.length)
        self.speed = float(scales.speed)
        self.acceleration = float(scales.acceleration)
        self.mass = float(mass)
        center = torch.tensor(scales.center or (0.0,) * self.dim, dtype=torch.float64)
        self.register_buffer("center", center)

    def split(self, y: Tensor) -> tuple[Tensor, Tensor]:
        """Positions and velocities of ``y`` ``(..., 2 N D)``, each ``(..., N, D)``."""
        q, v = y.chunk(2, dim=-1)
        shape = (*y.shape[:-1], self.n_bodies, self.dim)
        return q.reshape(shape), v.reshape(shape)

    def scaled_positions(self, q: Tensor) -> Tensor:
        """``(q - center) / length``, same shape as ``q`` ``(..., N, D)``."""
        return (q - self.center.to(q.dtype)) / self.length

    def pairs(self, q: Tensor) -> tuple[Tensor, Tensor]:
        """``r_ij = q_j - q_i`` ``(..., N, N, D)`` and ``|r_ij|`` ``(..., N, N)``, with 1 on the
        diagonal (its ``r_ii`` is 0, so nothing there reaches the output, not even a NaN
        gradient of the square root at 0)."""
        diff = q.unsqueeze(-3) - q.unsqueeze(-2)
        eye = torch.eye(self.n_bodies, dtype=q.dtype, device=q.device)
        return diff, ((diff * diff).sum(-1) + eye).sqrt()

    def central(self, h: Tensor, diff: Tensor, r: Tensor, masses: Tensor) -> Tensor:
        """``a_i = (acceleration / mass) Σ_j m_j h_ij r_ij / |r_ij|``: ``h`` ``(..., N, N)``
        symmetric → ``(..., N D)``."""
        w = h * masses.to(h.dtype) / r  # w_ij = m_j h_ij / r_ij
        acc = (w.unsqueeze(-1) * diff).sum(-2)
        return (acc * (self.acceleration / self.mass)).flatten(-2)

    def potential_energy(self, y: Tensor, masses: Tensor) -> Tensor:  # pragma: no cover
        """The learned potential energy, shape ``y.shape[:-1]`` (conservative kinds only)."""
        raise NotImplementedError(f"{type(self).__name__} has no potential")


class FieldCorrection(StructuredCorrection):
    """``a_i = A · g((q_i - c) / L, v_i / V)``: one network shared by every body (``A``, ``L``,
    ``V``: the typical acceleration, length and speed; ``c``: the centre of the data).

    Args:
        n_bodies, dim, scales: see :class:`StructuredCorrection`.
        hidden, depth: of the network (inputs ``2 D``, outputs ``D``).
        dtype: of the weights (the state's).
    """

    def __init__(
        self, n_bodies: int, dim: int, scales: CorrectionScales, hidden: int = 32,
        depth: int = 2, dtype: torch.dtype = torch.float64,
    ) -> None:  # fmt: skip
        super().__init__(n_bodies, dim, scales)
        self.net = TanhMLP(2 * dim, dim, hidden, depth, dtype)

    def forward(self, y: Tensor, masses: Tensor | None = None) -> Tensor:
        """``(..., 2 N D)`` → ``(..., N D)``; ``masses`` are not read."""
        del masses  # acts on each body alone, per unit mass
        self.net.check_input(y)
        q, v = self.split(y)
        x = torch.cat([self.scaled_positions(q), v / self.speed], dim=-1)
        return (self.net(x) * self.acceleration).flatten(-2)


class PairwiseCorrection(StructuredCorrection):
    """``a_i = (A / M) Σ_j m_j h(|r_ij| / L [, |v_ij|² / V²]) r_ij / |r_ij|``: an extra central
    pair interaction, attractive where ``h > 0``; conserves momentum.

    Args:
        n_bodies, dim, scales, mass: see :class:`StructuredCorrection`.
        hidden, depth: of the network ``h``.
        velocity: also feed ``h`` the squared relative speed (squared: smooth where two
            velocities coincide).
        dtype: of the weights (the state's).
    """

    def __init__(
        self, n_bodies: int, dim: int, scales: CorrectionScales, mass: float = 1.0,
        hidden: int = 32, depth: int = 2, velocity: bool = False,
        dtype: torch.dtype = torch.float64,
    ) -> None:  # fmt: skip
        super().__init__(n_bodies, dim, scales, mass)
        self.velocity = bool(velocity)
        self.net = TanhMLP(2 if velocity else 1, 1, hidden, depth, dtype)

    def forward(self, y: Tensor, masses: Tensor) -> Tensor:
        """``(..., 2 N D)`` and masses ``(N,)`` → ``(..., N D)``."""
        self.net.check_input(y)
        q, v = self.split(y)
        diff, r = self.pairs(q)
        features = [r / self.length]
        if self.velocity:
            dv = v.unsqueeze(-3) - v.unsqueeze(-2)
            features.append((dv * dv).sum(-1) / self.speed**2)
        h = self.net(torch.stack(features, dim=-1))[..., 0]
        return self.central(h, diff, r, masses)


class FieldPotential(StructuredCorrection):
    """``a_i = -∇U(q_i)`` with ``U(q) = A L u((q - c) / L)``, ``u`` one network shared by every
    body; the potential energy is ``Σ_i m_i U(q_i)``.

    Args: as :class:`FieldCorrection` (the network sees positions only: inputs ``D``).
    """

    conservative = True

    def __init__(
        self, n_bodies: int, dim: int, scales: CorrectionScales, hidden: int = 32,
        depth: int = 2, dtype: torch.dtype = torch.float64,
    ) -> None:  # fmt: skip
        super().__init__(n_bodies, dim, scales)
        self.net = TanhMLP(dim, 1, hidden, depth, dtype)

    def forward(self, y: Tensor, masses: Tensor | None = None) -> Tensor:
        """``(..., 2 N D)`` → ``(..., N D)``; ``masses`` are not read."""
        del masses  # a potential per unit mass
        self.net.check_input(y)
        q, _ = self.split(y)
        _, grad = self.net.with_gradient(self.scaled_positions(q))
        return (-self.acceleration * grad).flatten(-2)  # ∇_q U = A ∇_x u

    def potential_energy(self, y: Tensor, masses: Tensor) -> Tensor:
        """``Σ_i m_i U(q_i)``, shape ``y.shape[:-1]``."""
        q, _ = self.split(y)
        u = self.net(self.scaled_positions(q))[..., 0]
        return self.acceleration * self.length * (masses.to(u.dtype) * u).sum(-1)


class PairPotential(StructuredCorrection):
    """``a_i = Σ_j m_j V'(|r_ij|) r_ij / |r_ij|`` from the pair energy
    ``Σ_{i<j} m_i m_j V(|r_ij|)``, ``V(r) = (A L / M) u(r / L)``, ``u`` a network; conserves
    momentum and energy.

    Args: as :class:`PairwiseCorrection` (no velocity input: a potential of distance only).
    """

    conservative = True

    def __init__(
        self, n_bodies: int, dim: int, scales: CorrectionScales, mass: float = 1.0,
        hidden: int = 32, depth: int = 2, dtype: torch.dtype = torch.float64,
    ) -> None:  # fmt: skip
        super().__init__(n_bodies, dim, scales, mass)
        self.net = TanhMLP(1, 1, hidden, depth, dtype)

    def forward(self, y: Tensor, masses: Tensor) -> Tensor:
        """``(..., 2 N D)`` and masses ``(N,)`` → ``(..., N D)``."""
        self.net.check_input(y)
        q, _ = self.split(y)
        diff, r = self.pairs(q)
        _, du = self.net.with_gradient((r / self.length).unsqueeze(-1))
        # V'(r) = (A / M) u'(r / L); central() applies the A / M
        return self.central(du[..., 0], diff, r, masses)

    def potential_energy(self, y: Tensor, masses: Tensor) -> Tensor:
        """``Σ_{i<j} m_i m_j V(|r_ij|)``, shape ``y.shape[:-1]``."""
        q, _ = self.split(y)
        _, r = self.pairs(q)
        u = self.net((r / self.length).unsqueeze(-1))[..., 0]
        m = masses.to(u.dtype)
        off = 1.0 - torch.eye(self.n_bodies, dtype=u.dtype, device=u.device)
        pair = (m.unsqueeze(-1) * m * off * u).sum((-1, -2))
        return 0.5 * self.acceleration * self.length / self.mass * pair
