"""Multiple shooting: the training window cut into segments solved as one batch."""

from __future__ import annotations

import numpy as np
import torch

from physnode.errors import InvalidInputError
from physnode.fit.objective import Objective
from physnode.fit.state import load_optimizer_state, optimizer_state
from physnode.solver.vector_field import is_autonomous


class Shooting:
    """Multiple shooting for autonomous models on a uniform time grid: ``S`` segments of the
    fitting window (the training window less any validation window) solved
    as one batch from learnable starts, with a continuity penalty between segments.

    The first segment starts from the problem's own start; the others from
    ``segment_starts`` (shape ``(S - 1, D)``), initialised on the current model's solution and
    moved by their own Adam (learning rate ``lr / 10``) in :meth:`after_step`.

    Args:
        objective: the problem and the solver settings.
        lr: the fit's Adam learning rate.
    """

    def __init__(self, objective: Objective, lr: float) -> None:
        self.objective = objective
        prob = objective.problem
        if not is_autonomous(prob.model):
            # every segment is solved from t = 0: only right for a model that ignores t
            raise InvalidInputError(
                "schedule='shooting' restarts every segment at t = 0, which is wrong for a "
                f"model that depends on t ({type(prob.model).__name__} is not autonomous); "
                "use schedule='curriculum'"
            )
        n = prob.n_fit  # the fitting window: the validation samples are held out
        self.n_seg = max(1, min(8, (n - 1) // 10))
        self.length = (n - 1) // self.n_seg + 1  # points per segment, sharing end points
        dt = np.diff(prob.times[:n])
        if not np.allclose(dt, dt[0], rtol=1e-9, atol=0):
            raise InvalidInputError(
                "schedule='shooting' needs equally spaced samples; use 'curriculum'"
            )
        self.starts = [i * (self.length - 1) for i in range(self.n_seg)]
        with torch.no_grad():
            ys = objective.solve(self.starts[-1] + 1, grad="aca")
        self.segment_starts = torch.nn.Parameter(ys[self.starts[1:]].clone())
        self.extra = torch.optim.Adam([self.segment_starts], lr=lr * 0.1)
        self.t = torch.as_tensor(
            prob.times[: self.length] - prob.times[0], dtype=torch.float64, device=objective.device
        )

    def loss(self) -> torch.Tensor:
        """Mean segment misfit plus the continuity penalty (scalar); zeroes the segment starts'
        gradients first."""
        prob = self.objective.problem
        self.extra.zero_grad()
        y0 = torch.cat([prob.start()[None], self.segment_starts], dim=0)
        ys = self.objective.integrate(y0, self.t)  # (L, S, D)
        misfit = []
        for s, i0 in enumerate(self.starts):
            m = ys[:, s][:, prob.index]
            obs = prob.observed[i0 : i0 + self.length]
            misfit.append(((m - obs) / prob.scale).square().mean())
        gap = ys[-1, :-1] - self.segment_starts
        state_scale = torch.cat([prob.scale, prob.scale])[: gap.shape[-1]]
        if state_scale.shape[-1] != gap.shape[-1]:
            state_scale = torch.ones(gap.shape[-1], dtype=gap.dtype, device=gap.device)
        continuity = (gap / state_scale).square().mean()
        return torch.stack(misfit).mean() + continuity + self.objective.correction_term(ys)

    def after_step(self) -> None:
        """Move the segment starts (after the main optimiser's step)."""
        self.extra.step()

    def state(self) -> dict[str, np.ndarray]:
        """The segment starts and their optimiser's buffers, for a resumable fit state."""
        out = {"shooting/segment_starts": self.segment_starts.detach().cpu().numpy().copy()}
        out.update(optimizer_state(self.extra, prefix="shooting/optim"))
        return out

    def load_state(self, state: dict) -> None:
        """Continue from :meth:`state` (absent keys: a fit stopped before shooting began)."""
        if "shooting/segment_starts" not in state:
            return
        with torch.no_grad():
            saved = np.asarray(state["shooting/segment_starts"])
            self.segment_starts.copy_(torch.as_tensor(saved, dtype=self.segment_starts.dtype))
        load_optimizer_state(self.extra, state, prefix="shooting/optim")
