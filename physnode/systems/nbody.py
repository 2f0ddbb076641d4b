"""Gravitational N-body problem and the Kepler problem.

Units: any consistent set in which the gravitational constant is ``G`` (default 1).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from physnode.errors import InvalidInputError
from physnode.systems.base import System

__all__ = ["Kepler", "NBody"]

_AXES = ("x", "y", "z")


class NBody(System):
    """Newtonian gravity between ``N`` point masses in 2-D or 3-D.

    State ``y``: shape ``(..., 2 * N * dim)``, positions then velocities, each body-major
    (``x1, y1, x2, y2, ..., vx1, vy1, ...``), in units where the gravitational constant is ``G``.
    Pairs interact through the Plummer-softened potential ``-G m_i m_j / sqrt(r² + softening²)``.

    Args:
        masses: ``N`` positive masses.
        G: gravitational constant (positive).
        softening: Plummer softening length (>= 0; 0 is exact Newtonian gravity).
        dim: 2 or 3.
        names: optional body names used in ``state_names`` (default ``"1"``, ``"2"``, ...).
        default_state: optional state of shape ``(2 * N * dim,)`` returned by
            :meth:`default_y0`; without it a regular-polygon rigid rotation is used.
    """

    second_order = True
    autonomous = True

    def __init__(
        self,
        masses: Sequence[float] | Tensor,
        G: float = 1.0,
        softening: float = 0.0,
        dim: int = 2,
        names: Sequence[str] | None = None,
        default_state: Tensor | None = None,
    ) -> None:
        super().__init__()
        masses = torch.as_tensor(masses, dtype=torch.float64)
        if masses.ndim != 1 or masses.numel() < 1:
            raise InvalidInputError(
                f"masses must be a 1-D sequence of at least one mass; got shape "
                f"{tuple(masses.shape)}."
            )
        if dim not in (2, 3):
            raise InvalidInputError(f"dim must be 2 or 3; got {dim!r}.")
        if not math.isfinite(softening) or softening < 0:
            raise InvalidInputError(f"softening must be >= 0; got {softening!r}.")
        self.n_bodies = int(masses.numel())
        self.dim = dim
        names = [str(i + 1) for i in range(self.n_bodies)] if names is None else list(names)
        if len(names) != self.n_bodies:
            raise InvalidInputError(
                f"names must have one entry per body ({self.n_bodies}); got {len(names)}."
            )
        self.body_names = names
        self.add_parameter("masses", masses, positive=True)
        self.add_parameter("G", G, positive=True)
        self.add_parameter("softening", softening, positive=False)
        self.state_names = [f"{a}_{n}" for n in names for a in _AXES[:dim]] + [
            f"v{a}_{n}" for n in names for a in _AXES[:dim]
        ]
        if default_state is not None:
            default_state = torch.as_tensor(default_state, dtype=torch.float64)
            if default_state.shape != (self.dimension,):
                raise InvalidInputError(
                    f"default_state must have shape ({self.dimension},); got "
                    f"{tuple(default_state.shape)}."
                )
        self.register_buffer("_default_state", default_state, persistent=False)

    # -- layout helpers ---------------------------------------------------------------------
    def unpack(self, y: Tensor) -> tuple[Tensor, Tensor]:
        """Split ``y`` ``(..., 2 N dim)`` into positions and velocities, each ``(..., N, dim)``."""
        q, v = y.chunk(2, dim=-1)
        shape = (*y.shape[:-1], self.n_bodies, self.dim)
        return q.reshape(shape), v.reshape(shape)

    def pack(self, q: Tensor, v: Tensor) -> Tensor:
        """Inverse of :meth:`unpack`: ``(..., N, dim)`` twice into ``(..., 2 N dim)``."""
        return torch.cat([q.flatten(-2), v.flatten(-2)], dim=-1)

    @property
    def masses(self) -> Tensor:
        """Masses, shape ``(N,)``."""
        return self.param("masses")

    @property
    def G(self) -> Tensor:
        """Gravitational constant, 0-dim."""
        return self.param("G")

    @property
    def softening(self) -> Tensor:
        """Plummer softening length, 0-dim."""
        return self.param("softening")

    @property
    def separable(self) -> bool:
        return True

    # -- dynamics ---------------------------------------------------------------------------
    def _eye(self, like: Tensor) -> Tensor:
        """``I_N`` in ``like``'s dtype and device, cached (the evaluation loop is hot)."""
        key = (like.dtype, like.device)
        cache = self.__dict__.setdefault("_eye_cache", {})
        if key not in cache:
            cache[key] = torch.eye(self.n_bodies, dtype=like.dtype, device=like.device)
        return cache[key]

    def _pairs(self, q: Tensor) -> tuple[Tensor, Tensor]:
        """Separations ``q_j - q_i`` ``(..., N, N, dim)`` and softened squared distances
        ``(..., N, N)`` with 1 on the diagonal (its separations are 0, so it adds nothing)."""
        diff = q.unsqueeze(-3) - q.unsqueeze(-2)
        r2 = (diff * diff).sum(-1) + self._eye(q) + self.param("softening", q) ** 2
        return diff, r2

    def acceleration(self, t: Tensor, q: Tensor, v: Tensor) -> Tensor:
        """Gravitational acceleration, shape ``(..., N * dim)`` like the flat positions ``q``."""
        del t, v  # autonomous, velocity-independent
        qb = q.reshape(*q.shape[:-1], self.n_bodies, self.dim)
        _, r2 = self._pairs(qb)
        # w_ij = G m_j / r_ij³ (zero on the diagonal, where diff is zero anyway)
        w = r2.pow(-1.5) * (self.param("G", q) * self.param("masses", q))
        # a_i = Σ_j w_ij (q_j - q_i) = (w q)_i - (Σ_j w_ij) q_i, without the (N, N, dim) product
        acc = w @ qb - w.sum(-1, keepdim=True) * qb
        return acc.reshape(q.shape)

    def forward(self, t: Tensor, y: Tensor) -> Tensor:
        """``dy/dt = (v, a(q))``, shape ``y.shape``."""
        return self._second_order_forward(t, y)

    # -- physical quantities ----------------------------------------------------------------
    def kinetic_energy(self, y: Tensor) -> Tensor:
        """``Σ m v² / 2``, shape ``y.shape[:-1]``."""
        _, v = self.unpack(y)
        return 0.5 * (self.param("masses", y) * (v * v).sum(-1)).sum(-1)

    def potential_energy(self, y: Tensor) -> Tensor:
        """``-G Σ_{i<j} m_i m_j / sqrt(r_ij² + softening²)``, shape ``y.shape[:-1]``."""
        q, _ = self.unpack(y)
        _, r2 = self._pairs(q)
        m = self.param("masses", y)
        off = 1.0 - torch.eye(self.n_bodies, dtype=y.dtype, device=y.device)
        pair = m.unsqueeze(-1) * m * off * r2.rsqrt()
        return -0.5 * self.param("G", y) * pair.sum((-1, -2))

    def energy(self, y: Tensor) -> Tensor:
        """Total energy, shape ``y.shape[:-1]``."""
        return self.kinetic_energy(y) + self.potential_energy(y)

    def linear_momentum(self, y: Tensor) -> Tensor:
        """``Σ m v``, shape ``(..., dim)``."""
        _, v = self.unpack(y)
        return (self.param("masses", y).unsqueeze(-1) * v).sum(-2)

    def angular_momentum(self, y: Tensor) -> Tensor:
        """``Σ m q × v`` about the origin: shape ``y.shape[:-1]`` in 2-D, ``(..., 3)`` in 3-D."""
        q, v = self.unpack(y)
        m = self.param("masses", y)
        if self.dim == 2:
            return (m * (q[..., 0] * v[..., 1] - q[..., 1] * v[..., 0])).sum(-1)
        return (m.unsqueeze(-1) * torch.linalg.cross(q, v, dim=-1)).sum(-2)

    def center_of_mass(self, y: Tensor) -> Tensor:
        """Centre-of-mass position, shape ``(..., dim)``."""
        q, _ = self.unpack(y)
        m = self.param("masses", y)
        return (m.unsqueeze(-1) * q).sum(-2) / m.sum()

    def invariants(self, y: Tensor) -> dict[str, Tensor]:
        """Energy, momentum components and angular momentum (components in 3-D)."""
        out = {"energy": self.energy(y)}
        momentum = self.linear_momentum(y)
        for i, axis in enumerate(_AXES[: self.dim]):
            out[f"momentum_{axis}"] = momentum[..., i]
        ang = self.angular_momentum(y)
        if self.dim == 2:
            out["angular_momentum"] = ang
        else:
            for i, axis in enumerate(_AXES):
                out[f"angular_momentum_{axis}"] = ang[..., i]
        return out

    def default_y0(self, dtype: torch.dtype = torch.float64) -> Tensor:
        """The ``default_state`` given at construction, else a regular ``N``-gon of radius 1
        rotating rigidly (an exact solution for equal masses), moved to the centre-of-mass frame.
        """
        ref = self._reference()
        if self._default_state is not None:
            return self._default_state.to(dtype=dtype, device=ref.device).clone()
        n = self.n_bodies
        angle = math.pi / 2 + 2 * math.pi * torch.arange(n, dtype=torch.float64) / n
        q = torch.zeros(n, self.dim, dtype=torch.float64)
        v = torch.zeros(n, self.dim, dtype=torch.float64)
        q[:, 0], q[:, 1] = torch.cos(angle), torch.sin(angle)
        m = self.masses.detach().cpu().to(torch.float64)
        if n > 1:
            # Equal masses m̄: ω² = G m̄ Σ_k 1 / (4 sin(π k / n)) for R = 1.
            s = sum(1.0 / (4.0 * math.sin(math.pi * k / n)) for k in range(1, n))
            omega = torch.sqrt(self.G.detach().cpu() * m.mean() * s)
            v[:, 0], v[:, 1] = -omega * torch.sin(angle), omega * torch.cos(angle)
        q = q - (m[:, None] * q).sum(0) / m.sum()
        v = v - (m[:, None] * v).sum(0) / m.sum()
        return self.pack(q, v).to(dtype=dtype, device=ref.device)


class Kepler(System):
    """The Kepler problem: one body of unit mass in the central field ``-mu / |q|``.

    State ``y``: shape ``(..., 4)`` = ``(qx, qy, px, py)`` (``p = v``). The default start has
    eccentricity ``e`` and semi-major axis 1: ``q0 = (1 - e, 0)``,
    ``p0 = (0, sqrt(mu (1 + e) / (1 - e)))``, energy ``-mu / 2`` and period ``2π / sqrt(mu)``.

    Args:
        mu: gravitational parameter ``G M`` (positive).
        eccentricity: eccentricity of the default orbit, in ``[0, 1)`` (initial state only).
    """

    second_order = True
    autonomous = True

    def __init__(self, mu: float = 1.0, eccentricity: float = 0.6) -> None:
        super().__init__()
        if not 0.0 <= eccentricity < 1.0:
            raise InvalidInputError(
                f"eccentricity must be in [0, 1) for a bound orbit; got {eccentricity!r}."
            )
        self.eccentricity = float(eccentricity)
        self.add_parameter("mu", mu, positive=True)
        self.state_names = ["qx", "qy", "px", "py"]

    @property
    def separable(self) -> bool:
        return True

    @property
    def period(self) -> Tensor:
        """Period ``2π sqrt(a³ / mu)`` of the default orbit (``a = 1``), 0-dim."""
        return 2 * math.pi / torch.sqrt(self.param("mu"))

    def acceleration(self, t: Tensor, q: Tensor, v: Tensor) -> Tensor:
        """``-mu q / |q|³``, shape ``q.shape`` = ``(..., 2)``."""
        del t, v
        r2 = (q * q).sum(-1, keepdim=True)
        return -self.param("mu", q) * q * r2.pow(-1.5)

    def forward(self, t: Tensor, y: Tensor) -> Tensor:
        """``dy/dt = (p, -mu q / |q|³)``, shape ``y.shape``."""
        return self._second_order_forward(t, y)

    def energy(self, y: Tensor) -> Tensor:
        """``|p|² / 2 - mu / |q|``, shape ``y.shape[:-1]``."""
        q, p = y.chunk(2, dim=-1)
        return 0.5 * (p * p).sum(-1) - self.param("mu", y) / q.norm(dim=-1)

    def angular_momentum(self, y: Tensor) -> Tensor:
        """``qx py - qy px``, shape ``y.shape[:-1]``."""
        return y[..., 0] * y[..., 3] - y[..., 1] * y[..., 2]

    def runge_lenz(self, y: Tensor) -> Tensor:
        """Laplace–Runge–Lenz vector ``p × L - mu q / |q|``, shape ``(..., 2)``."""
        q, p = y.chunk(2, dim=-1)
        ang = self.angular_momentum(y).unsqueeze(-1)
        p_cross_l = torch.stack([p[..., 1], -p[..., 0]], dim=-1) * ang
        return p_cross_l - self.param("mu", y) * q / q.norm(dim=-1, keepdim=True)

    def invariants(self, y: Tensor) -> dict[str, Tensor]:
        """Energy, angular momentum and the two Runge–Lenz components."""
        lrl = self.runge_lenz(y)
        return {
            "energy": self.energy(y),
            "angular_momentum": self.angular_momentum(y),
            "runge_lenz_x": lrl[..., 0],
            "runge_lenz_y": lrl[..., 1],
        }

    def default_y0(self, dtype: torch.dtype = torch.float64) -> Tensor:
        """``(1 - e, 0, 0, sqrt(mu (1 + e) / (1 - e)))``, shape ``(4,)``."""
        e = self.eccentricity
        mu = self.param("mu").detach().to(torch.float64)
        zero = torch.zeros((), dtype=torch.float64, device=mu.device)
        speed = torch.sqrt(mu * (1 + e) / (1 - e))
        return torch.stack([zero + (1 - e), zero, zero, speed]).to(dtype)
