"""The size of a hybrid model's correction relative to the physics, and the penalty on it.

The correction is meant to explain only what the known physics cannot. Its size along the
fitted trajectory, ``mean |correction|² / mean |physics|²`` (the accelerations of a
second-order system, else the whole derivative; a ratio, so it is the same in any units), is
what :mod:`physnode.fit.readout` reports (its square root: ``relative_size``) and what the
fit's ``correction_penalty`` weighs: the loss becomes ``misfit + weight * size`` with the
misfit the mean squared scaled residual (a noise level of 1 % of the data's spread gives a
misfit of ~1e-4 at the optimum, so a weight of 1e-2 lets a correction a tenth of the physics
cost as much as that noise).
"""

from __future__ import annotations

import torch

from physnode.fit.problem import FitProblem

#: ``correction_penalty="auto"``: fit one member per weight and keep the lowest validation
#: RMSE. The range measured useful on drag data (docs/FITTING.md "Loss": 0.01 and 1 beat 0 on
#: the masses, 10 and 100 suppress the real correction); 0 stays a candidate, so the choice is
#: never worse on the validation window than no penalty.
CHOICES = (0.0, 0.01, 1.0)


def correction_parts(prob: FitProblem, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The correction's part of the derivative at states ``y`` ``(..., D)`` and the physics'
    part, each ``(..., D/2)`` (the accelerations) for second-order systems, else ``(..., D)``.
    The correction is the model minus the physics, both at the first data time, so it needs
    nothing of the correction but that it depends on the state alone. Differentiable in the
    model's parameters."""
    t = torch.tensor(float(prob.times[0]), dtype=y.dtype, device=y.device)
    physics = prob.system(t, y)
    extra = prob.model(t, y) - physics
    if prob.system.second_order:
        half = y.shape[-1] // 2
        return extra[..., half:], physics[..., half:]
    return extra, physics


def correction_size(prob: FitProblem, y: torch.Tensor) -> torch.Tensor:
    """``mean |correction|² / mean |physics|²`` at states ``y`` ``(..., D)``: a 0-d tensor,
    differentiable in the correction's parameters (the physics' part is a fixed scale)."""
    extra, physics = correction_parts(prob, y)
    scale = physics.detach().square().mean().clamp_min(torch.finfo(y.dtype).tiny)
    return extra.square().mean() / scale
