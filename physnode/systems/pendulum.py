"""The simple pendulum."""

from __future__ import annotations

import torch
from torch import Tensor

from physnode.systems.base import System
from physnode.systems.registry import register_system

__all__ = ["Pendulum"]


@register_system("pendulum", description="Simple pendulum θ'' = -(g / length) sin θ.")
class Pendulum(System):
    """Frictionless pendulum ``θ'' = -(g / length) sin θ``.

    State ``y``: shape ``(..., 2)`` = ``(θ, ω)``, angle from the downward vertical in radians and
    angular velocity in rad per time unit. ``g`` in length / time², ``length`` in length units.
    """

    autonomous = True  # dy/dt does not read t

    second_order = True
    positive_parameters = ("g", "length")

    def __init__(self, g: float = 9.81, length: float = 1.0) -> None:
        super().__init__()
        self.add_parameter("g", g)
        self.add_parameter("length", length)
        self.state_names = ["theta", "omega"]

    @property
    def separable(self) -> bool:
        return True

    def acceleration(self, t: Tensor, q: Tensor, v: Tensor) -> Tensor:
        """``-(g / length) sin θ``, shape ``q.shape`` = ``(..., 1)``."""
        del t, v
        return -(self.param("g", q) / self.param("length", q)) * torch.sin(q)

    def forward(self, t: Tensor, y: Tensor) -> Tensor:
        """``(ω, -(g / length) sin θ)``, shape ``y.shape``."""
        return self._second_order_forward(t, y)

    def energy(self, y: Tensor) -> Tensor:
        """Energy per unit mass ``length² ω² / 2 + g length (1 - cos θ)``, ``(...,)``."""
        g, length = self.param("g", y), self.param("length", y)
        theta, omega = y[..., 0], y[..., 1]
        return 0.5 * length**2 * omega**2 + g * length * (1 - torch.cos(theta))

    def invariants(self, y: Tensor) -> dict[str, Tensor]:
        """``{"energy": ...}``."""
        return {"energy": self.energy(y)}

    def default_y0(self, dtype: torch.dtype = torch.float64) -> Tensor:
        """``(θ, ω) = (1, 0)``: released from rest at 1 rad."""
        return torch.tensor([1.0, 0.0], dtype=dtype, device=self._reference().device)
