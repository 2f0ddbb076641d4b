"""Lotka–Volterra predator–prey equations."""

from __future__ import annotations

import torch
from torch import Tensor

from physnode.systems.base import System
from physnode.systems.registry import register_system

__all__ = ["LotkaVolterra"]


@register_system("lotka-volterra", description="Predator–prey model with a conserved quantity V.")
class LotkaVolterra(System):
    """``x' = α x - β x y``, ``y' = δ x y - γ y``: prey ``x`` and predators ``y`` (both > 0).

    State ``u``: shape ``(..., 2)`` = ``(x, y)`` population densities. Conserved quantity
    ``V = δ x - γ ln x + β y - α ln y``.
    Defaults ``(α, β, γ, δ) = (1.5, 1, 3, 1)``, ``u0 = (1, 1)``. The interaction rates
    ``β`` and ``δ`` may be 0 (no interaction): the known physics of a hybrid that learns the
    interaction, as in the universal differential equations paper (Rackauckas et al. 2020).
    """

    autonomous = True  # dy/dt does not read t

    positive_parameters = ("alpha", "beta", "gamma", "delta")
    zero_allowed = ("beta", "delta")

    def __init__(
        self, alpha: float = 1.5, beta: float = 1.0, gamma: float = 3.0, delta: float = 1.0
    ) -> None:
        super().__init__()
        for name, value in (("alpha", alpha), ("beta", beta), ("gamma", gamma), ("delta", delta)):
            self.add_parameter(name, value)
        self.state_names = ["prey", "predator"]

    def forward(self, t: Tensor, y: Tensor) -> Tensor:
        """``(α x - β x y, δ x y - γ y)``, shape ``y.shape``."""
        del t  # autonomous
        alpha, beta, gamma, delta = (self.param(n, y) for n in ("alpha", "beta", "gamma", "delta"))
        x, p = y[..., 0], y[..., 1]
        return torch.stack([x * (alpha - beta * p), p * (delta * x - gamma)], dim=-1)

    def invariants(self, y: Tensor) -> dict[str, Tensor]:
        """``{"V": δ x - γ ln x + β y - α ln y}`` (positive states only)."""
        alpha, beta, gamma, delta = (self.param(n, y) for n in ("alpha", "beta", "gamma", "delta"))
        x, p = y[..., 0], y[..., 1]
        return {"V": delta * x - gamma * torch.log(x) + beta * p - alpha * torch.log(p)}

    def default_y0(self, dtype: torch.dtype = torch.float64) -> Tensor:
        """``(1, 1)``."""
        return torch.ones(2, dtype=dtype, device=self._reference().device)
