"""The Van der Pol oscillator."""

from __future__ import annotations

import torch
from torch import Tensor

from physnode.systems.base import System
from physnode.systems.registry import register_system

__all__ = ["VanDerPol"]


@register_system(
    "van-der-pol", description="Van der Pol limit-cycle oscillator (stiff for large mu)."
)
class VanDerPol(System):
    """``x'' = μ (1 - x²) x' - x``: a limit-cycle oscillator (stiff for large ``μ``, e.g. 1000).

    State ``y``: shape ``(..., 2)`` = ``(x, v)``, dimensionless. No conserved quantity.
    """

    autonomous = True  # dy/dt does not read t

    second_order = True
    positive_parameters = ("mu",)

    def __init__(self, mu: float = 1.0) -> None:
        super().__init__()
        self.add_parameter("mu", mu)
        self.state_names = ["x", "v"]

    def acceleration(self, t: Tensor, q: Tensor, v: Tensor) -> Tensor:
        """``μ (1 - x²) v - x``, shape ``q.shape`` = ``(..., 1)``."""
        del t
        return self.param("mu", q) * (1 - q * q) * v - q

    def forward(self, t: Tensor, y: Tensor) -> Tensor:
        """``(v, μ (1 - x²) v - x)``, shape ``y.shape``."""
        return self._second_order_forward(t, y)

    def default_y0(self, dtype: torch.dtype = torch.float64) -> Tensor:
        """``(2, 0)``: close to the ``μ = 1`` limit cycle."""
        return torch.tensor([2.0, 0.0], dtype=dtype, device=self._reference().device)
