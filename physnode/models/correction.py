"""The neural correction: a small MLP whose last layer starts at zero."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class MLPCorrection(nn.Module):
    """``g(y)``: an MLP from the state ``(..., in_dim)`` to ``(..., out_dim)``.

    The last layer's weights and bias start at zero, so a hybrid model starts as pure physics
    and the optimiser only moves away from it where the data ask for it.

    Args:
        in_dim: length of the state fed to the network.
        out_dim: length of the output (the accelerations, or the whole derivative).
        hidden: width of the hidden layers.
        depth: number of hidden layers.
        scale: inputs are divided by this (a typical state magnitude) before the first layer.
    """

    def __init__(
        self, in_dim: int, out_dim: int, hidden: int = 32, depth: int = 2, scale: float = 1.0
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = in_dim
        for _ in range(depth):
            layers += [nn.Linear(width, hidden, dtype=torch.float64), nn.Tanh()]
            width = hidden
        last = nn.Linear(width, out_dim, dtype=torch.float64)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        layers.append(last)
        self.net = nn.Sequential(*layers)
        self.scale = float(scale)

    def forward(self, y: Tensor) -> Tensor:
        return self.net(y / self.scale)
