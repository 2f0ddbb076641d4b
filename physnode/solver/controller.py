"""Step-size control: the accept/reject decision and the next step size."""

from __future__ import annotations

import torch

from physnode.solver.options import SolverOptions


class StepSizeController:
    """I or PI controller on the error ratio ``r = ||err / scale||`` (accept when ``r <= 1``).

    ``h_new = h · clamp(safety · r_n^(-β1/k) · r_{n-1}^(β2/k), dfactor, ifactor)`` with
    ``k = error_order + 1``; the I controller has ``β1 = 1, β2 = 0``. After a rejection the
    step is never increased. Works on Python floats, or on tensors for the ``naive`` gradient
    (which differentiates through the controller).
    """

    def __init__(self, error_order: int, options: SolverOptions) -> None:
        self.k = error_order + 1
        self.safety = options.safety
        self.ifactor = options.ifactor
        self.dfactor = options.dfactor
        if options.controller == "pi":
            self.beta1 = options.pcoeff + options.icoeff
            self.beta2 = options.pcoeff
        else:
            self.beta1, self.beta2 = 1.0, 0.0
        self.prev_ratio = 1.0

    def factor(
        self, ratio: float, ratio_t: torch.Tensor | None, accepted: bool, after_reject: bool
    ):
        """Step-size multiplier. ``ratio`` is the float error ratio; ``ratio_t`` the same as a
        tensor when the controller must stay differentiable (else ``None``)."""
        hi = 1.0 if (not accepted or after_reject) else self.ifactor
        if ratio_t is not None:
            r = ratio_t.to(torch.float64).clamp_min(1e-10)
            fac = self.safety * r ** (-self.beta1 / self.k)
            if self.beta2 and accepted:
                fac = fac * self.prev_ratio ** (self.beta2 / self.k)
            fac = fac.clamp(self.dfactor, hi)
        else:
            if ratio == 0.0:
                fac = hi
            else:
                fac = self.safety * ratio ** (-self.beta1 / self.k)
                if self.beta2 and accepted:
                    fac *= self.prev_ratio ** (self.beta2 / self.k)
                fac = min(hi, max(self.dfactor, fac))
        if accepted:
            self.prev_ratio = max(ratio, 1e-10)
        return fac
