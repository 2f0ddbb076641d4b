"""The forced, damped Duffing oscillator."""

from __future__ import annotations

import torch
from torch import Tensor

from physnode.errors import InvalidInputError
from physnode.systems.base import System
from physnode.systems.registry import register_system

__all__ = ["Duffing"]


@register_system(
    "duffing",
    description="Forced, damped Duffing oscillator (chaotic double well at the defaults).",
)
class Duffing(System):
    """``x'' = -δ x' - α x - β x³ + γ cos(ω t)``.

    State ``y``: shape ``(..., 2)`` = ``(x, v)``, dimensionless; ``t`` enters through the forcing.
    Defaults ``(α, β, δ, γ, ω) = (-1, 1, 0.3, 0.5, 1.2)``: the chaotic double-well oscillator
    (Guckenheimer & Holmes 1983). ``alpha``, ``beta``, ``gamma`` and ``omega`` may have any sign;
    ``delta`` (damping) must be >= 0. The energy ``v²/2 + α x²/2 + β x⁴/4`` is an invariant only
    when ``δ = γ = 0``; :meth:`invariants` returns it only then.
    """

    second_order = True
    positive_parameters = ()

    def __init__(
        self,
        alpha: float = -1.0,
        beta: float = 1.0,
        delta: float = 0.3,
        gamma: float = 0.5,
        omega: float = 1.2,
    ) -> None:
        super().__init__()
        if not delta >= 0:
            raise InvalidInputError(f"delta (damping) must be >= 0; got {delta!r}.")
        values = {"alpha": alpha, "beta": beta, "delta": delta, "gamma": gamma, "omega": omega}
        for name, value in values.items():
            self.add_parameter(name, value)
        self.state_names = ["x", "v"]

    @property
    def separable(self) -> bool:
        """True without damping (forcing only depends on ``t``); checks the current ``delta``."""
        return bool(torch.all(self.param("delta") == 0))

    def acceleration(self, t: Tensor, q: Tensor, v: Tensor) -> Tensor:
        """``-δ v - α x - β x³ + γ cos(ω t)``, shape ``q.shape`` = ``(..., 1)``."""
        alpha, beta, delta, gamma, omega = (
            self.param(n, q) for n in ("alpha", "beta", "delta", "gamma", "omega")
        )
        forcing = gamma * torch.cos(omega * torch.as_tensor(t).to(q))
        return -delta * v - alpha * q - beta * q**3 + forcing

    def forward(self, t: Tensor, y: Tensor) -> Tensor:
        """``(v, x'')``, shape ``y.shape``."""
        return self._second_order_forward(t, y)

    def energy(self, y: Tensor) -> Tensor:
        """``v²/2 + α x²/2 + β x⁴/4``, shape ``y.shape[:-1]``."""
        x, v = y[..., 0], y[..., 1]
        alpha, beta = self.param("alpha", y), self.param("beta", y)
        return 0.5 * v**2 + 0.5 * alpha * x**2 + 0.25 * beta * x**4

    def invariants(self, y: Tensor) -> dict[str, Tensor]:
        """``{"energy": ...}`` when unforced and undamped (``δ = γ = 0``), else ``{}``."""
        free = self.param("delta") == 0
        if bool(torch.all(free & (self.param("gamma") == 0))):
            return {"energy": self.energy(y)}
        return {}

    def default_y0(self, dtype: torch.dtype = torch.float64) -> Tensor:
        """``(1, 0)``."""
        return torch.tensor([1.0, 0.0], dtype=dtype, device=self._reference().device)
