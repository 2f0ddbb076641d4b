"""Lotka–Volterra predator–prey equations."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from physnode.solver.vector_field import closed_form_applies
from physnode.systems.base import System
from physnode.systems.registry import register_system

__all__ = ["LotkaVolterra"]

#: the rates, in the order ``forward`` reads them
_RATES = ("alpha", "beta", "gamma", "delta")


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

    positive_parameters = _RATES
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
        alpha, beta, gamma, delta = (self.param(n, y) for n in _RATES)
        x, p = y[..., 0], y[..., 1]
        return torch.stack([x * (alpha - beta * p), p * (delta * x - gamma)], dim=-1)

    def jacobians(
        self, t: Tensor, y: Tensor, params: Sequence[Tensor]
    ) -> tuple[Tensor, Tensor, list[Tensor]] | None:
        """``f``, ``∂f/∂y = [[α - β y, -β x], [δ y, δ x - γ]]`` and the rate columns
        ``∂f/∂α = (x, 0)``, ``∂f/∂β = (-x y, 0)``, ``∂f/∂γ = (0, -y)``, ``∂f/∂δ = (0, x y)``
        (times softplus' slope) for one state ``(2,)`` and ``params`` among the learnable
        rates' raw tensors (the solver's optional ``jacobians`` hook); ``None`` otherwise."""
        names = self.names_of(params)
        if y.ndim != 1 or names is None or not set(names) <= set(_RATES):
            return None
        if not closed_form_applies(self, LotkaVolterra, ("forward",)):
            return None
        with torch.no_grad():
            alpha, beta, gamma, delta = (self.param(n, y) for n in _RATES)
            x, p = y[0], y[1]
            by_x, by_p = alpha - beta * p, delta * x - gamma  # ∂f_0/∂x, ∂f_1/∂y
            f = torch.stack([x * by_x, p * by_p])  # forward's arithmetic, to the bit
            jac = torch.stack([by_x, -beta * x, delta * p, by_p]).view(2, 2)
            xp, zero = x * p, torch.zeros_like(x)
            # the rate columns ∂f/∂(α, β, γ, δ), one row each
            columns = torch.stack([x, zero, -xp, zero, zero, -p, zero, xp]).view(4, 2)
            rows = [columns[_RATES.index(n)].unsqueeze(-1) * self.params[n].slope(y) for n in names]
            return f, jac, rows

    def invariants(self, y: Tensor) -> dict[str, Tensor]:
        """``{"V": δ x - γ ln x + β y - α ln y}`` (positive states only)."""
        alpha, beta, gamma, delta = (self.param(n, y) for n in _RATES)
        x, p = y[..., 0], y[..., 1]
        return {"V": delta * x - gamma * torch.log(x) + beta * p - alpha * torch.log(p)}

    def default_y0(self, dtype: torch.dtype = torch.float64) -> Tensor:
        """``(1, 1)``."""
        return torch.ones(2, dtype=dtype, device=self._reference().device)
