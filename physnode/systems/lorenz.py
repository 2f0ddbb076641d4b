"""The Lorenz 1963 system."""

from __future__ import annotations

import torch
from torch import Tensor

from physnode.systems.base import System
from physnode.systems.registry import register_system

__all__ = ["Lorenz"]


@register_system("lorenz", description="Lorenz 1963 chaotic attractor.")
class Lorenz(System):
    """``x' = σ (y - x)``, ``y' = x (ρ - z) - y``, ``z' = x y - β z`` (chaotic at the defaults).

    State ``y``: shape ``(..., 3)`` = ``(x, y, z)``, dimensionless. No conserved quantity.
    Defaults ``σ = 10``, ``ρ = 28``, ``β = 8/3``.
    """

    autonomous = True  # dy/dt does not read t

    positive_parameters = ("sigma", "rho", "beta")

    def __init__(self, sigma: float = 10.0, rho: float = 28.0, beta: float = 8.0 / 3.0) -> None:
        super().__init__()
        for name, value in (("sigma", sigma), ("rho", rho), ("beta", beta)):
            self.add_parameter(name, value)
        self.state_names = ["x", "y", "z"]

    def forward(self, t: Tensor, y: Tensor) -> Tensor:
        """Lorenz vector field, shape ``y.shape``."""
        del t  # autonomous
        sigma, rho, beta = (self.param(n, y) for n in ("sigma", "rho", "beta"))
        a, b, c = y.unbind(-1)
        return torch.stack([sigma * (b - a), a * (rho - c) - b, a * b - beta * c], dim=-1)

    def default_y0(self, dtype: torch.dtype = torch.float64) -> Tensor:
        """``(1, 1, 1)``."""
        return torch.ones(3, dtype=dtype, device=self._reference().device)
