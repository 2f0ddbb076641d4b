"""The neural correction: a small MLP whose last layer starts at zero."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from physnode.errors import DtypeMismatchError


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
        dtype: of the weights, ``torch.float64`` or ``torch.float32``; it must be the state's
            (``.to(dtype)`` converts a built network).
    """

    def __init__(
        self, in_dim: int, out_dim: int, hidden: int = 32, depth: int = 2, scale: float = 1.0,
        dtype: torch.dtype = torch.float64,
    ) -> None:  # fmt: skip
        super().__init__()
        if dtype not in (torch.float32, torch.float64):
            raise DtypeMismatchError(
                f"the correction's dtype must be float32 or float64, got {dtype}"
            )
        layers: list[nn.Module] = []
        width = in_dim
        for _ in range(depth):
            layers += [nn.Linear(width, hidden, dtype=dtype), nn.Tanh()]
            width = hidden
        last = nn.Linear(width, out_dim, dtype=dtype)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        layers.append(last)
        self.net = nn.Sequential(*layers)
        self.scale = float(scale)

    def forward(self, y: Tensor) -> Tensor:
        """``(..., in_dim)`` → ``(..., out_dim)``, in the state's dtype."""
        weight = self.net[0].weight
        if y.dtype != weight.dtype:
            raise DtypeMismatchError(
                f"the correction's weights are {weight.dtype} but the state is {y.dtype}; build "
                f"it with dtype={y.dtype} or convert the model with model.to({y.dtype})"
            )
        return self.net(y / self.scale)
