"""A chain of equal masses joined by equal springs, both ends fixed to walls."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from physnode.errors import InvalidInputError
from physnode.systems.base import System
from physnode.systems.registry import register_system

__all__ = ["SpringChain"]


@register_system(
    "spring-chain", description="Chain of n equal masses and springs between two fixed walls."
)
class SpringChain(System):
    """``n`` masses ``m`` in a line joined by ``n + 1`` springs ``k``, walls at both ends.

    State ``y``: shape ``(..., 2 n)`` = displacements ``u_1..u_n`` from equilibrium, then
    velocities. ``m u_i'' = k (u_{i+1} - 2 u_i + u_{i-1})`` with ``u_0 = u_{n+1} = 0``.
    Normal mode ``j`` has angular frequency ``2 sqrt(k / m) sin(j π / (2 (n + 1)))``.
    """

    autonomous = True  # dy/dt does not read t

    second_order = True
    positive_parameters = ("m", "k")

    def __init__(self, n_masses: int = 5, m: float = 1.0, k: float = 1.0) -> None:
        super().__init__()
        if not isinstance(n_masses, int) or n_masses < 1:
            raise InvalidInputError(f"n_masses must be an integer >= 1; got {n_masses!r}.")
        self.n_masses = n_masses
        self.add_parameter("m", m)
        self.add_parameter("k", k)
        idx = range(1, n_masses + 1)
        self.state_names = [f"u_{i}" for i in idx] + [f"v_{i}" for i in idx]

    @property
    def separable(self) -> bool:
        return True

    def _padded(self, q: Tensor) -> Tensor:
        """Displacements with the walls: shape ``(..., n + 2)``."""
        return torch.nn.functional.pad(q, (1, 1))

    def acceleration(self, t: Tensor, q: Tensor, v: Tensor) -> Tensor:
        """``(k / m) (u_{i+1} - 2 u_i + u_{i-1})``, shape ``q.shape`` = ``(..., n)``."""
        del t, v
        u = self._padded(q)
        return self.param("k", q) / self.param("m", q) * (u[..., 2:] - 2 * q + u[..., :-2])

    def forward(self, t: Tensor, y: Tensor) -> Tensor:
        """``(v, a(u))``, shape ``y.shape``."""
        return self._second_order_forward(t, y)

    def energy(self, y: Tensor) -> Tensor:
        """``m Σ v² / 2 + k Σ (u_{i+1} - u_i)² / 2`` over all ``n + 1`` springs."""
        q, v = y.chunk(2, dim=-1)
        stretch = self._padded(q).diff(dim=-1)
        m, k = self.param("m", y), self.param("k", y)
        return 0.5 * m * (v * v).sum(-1) + 0.5 * k * (stretch * stretch).sum(-1)

    def invariants(self, y: Tensor) -> dict[str, Tensor]:
        """``{"energy": ...}``."""
        return {"energy": self.energy(y)}

    def default_y0(self, dtype: torch.dtype = torch.float64) -> Tensor:
        """The fundamental mode at rest, amplitude 0.1: ``u_i = 0.1 sin(i π / (n + 1))``."""
        n = self.n_masses
        i = torch.arange(1, n + 1, dtype=torch.float64)
        u = 0.1 * torch.sin(i * math.pi / (n + 1))
        y0 = torch.cat([u, torch.zeros(n, dtype=torch.float64)])
        return y0.to(dtype=dtype, device=self._reference().device)
