"""``forward``: forward-mode sensitivities, integrated with the state.

The sensitivities ``S = ∂y/∂θ`` of the state to the parameters θ (the entries of ``y0`` and of
every parameter that requires grad) obey the variational equations

    dS/dt = (∂f/∂y) S + ∂f/∂θ,    S(t0) = [I | 0],

integrated by the same Runge–Kutta method as the state, in one augmented state
``z = [y, S]``. Each evaluation is one model evaluation under autograd and one batched
vector–Jacobian product for the ``n`` rows of ``[∂f/∂y | ∂f/∂θ]`` (``n`` = state entries;
or the model's own closed-form rows, see :class:`~physnode.solver.vector_field.VectorField`),
then ``S`` times their transpose: the cost per stage grows with ``n`` (the rows) and with
``P`` (the product), so the method suits small states with few parameters (physics,
initial states); ACA suits networks and large states.

With ``options["sensitivity_control"]`` (the default) the error norm covers the
sensitivities too (CVODES's sensitivity error control: the largest of the RMS ratios of the
state and of each column, column ``c`` with absolute tolerance ``atol / |θ_c|``), so the
gradient is accurate to the tolerance even through close encounters where a step sequence
chosen for the state alone is not. Without it the steps are those of a plain solve and the
gradient equals backprop's through them to rounding.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from physnode.errors import InvalidInputError
from physnode.solver.gradients.aca import ReplayFallbackWarning
from physnode.solver.gradients.base import GradientMethod, register_gradient
from physnode.solver.gradients.common import (
    Problem,
    check_backward,
    fill_none,
    is_vmap_limitation,
    remember,
    time_gradient,
)
from physnode.solver.integrate import integrate
from physnode.solver.stepper import RHS
from physnode.solver.vector_field import jacobians_of

__all__ = ["Forward", "ForwardFunction", "Sensitivity", "integrate_sensitivities"]


@dataclass
class Sensitivity:
    """States and sensitivities at the output times.

    Attributes:
        ys: the states, shape ``(T, *y0.shape)``.
        jac: ``jac[k, c] = ∂ys[k] / ∂θ_c``, shape ``(T, P, *y0.shape)``; columns are the
            entries of ``y0`` (flattened, when ``with_y0``) then those of each parameter
            (flattened, in the order given).
    """

    ys: torch.Tensor
    jac: torch.Tensor


def integrate_sensitivities(
    problem: Problem, y0: torch.Tensor, params: Sequence[torch.Tensor], with_y0: bool
) -> Sensitivity:
    """Solve the state and its sensitivities to ``y0`` (if ``with_y0``) and ``params``
    (under ``no_grad``; fills ``nfe_forward`` with one count per augmented evaluation)."""
    field = _Variational(problem.func, y0, params, with_y0)
    z0 = field.initial(y0)
    control = problem.options.sensitivity_control and problem.tab.adaptive
    n = y0.numel()
    atol = field.tolerances(problem.atol, y0) if control else problem.atol
    rhs = RHS(field, z0, problem.stats.count_forward_eval)
    with torch.no_grad():
        record = integrate(
            rhs, problem.tab, problem.t_out, z0, problem.rtol, atol, problem.options,
            problem.stats, n_norm=None if control else n, groups=field.cols + 1 if control else 1,
        )  # fmt: skip
        zs = torch.stack(record.ys)
    ys = zs[:, :n].reshape(len(problem.t_out), *y0.shape)
    jac = zs[:, n:].reshape(len(problem.t_out), field.cols, *y0.shape)
    return Sensitivity(ys, jac)


class _Variational:
    """The augmented vector field ``z = [y, S] ↦ [f(t, y), (∂f/∂y) S + ∂f/∂θ]`` (flat).

    Each evaluation takes the ``n`` rows of ``[∂f/∂y | ∂f/∂θ]`` from the model's closed-form
    ``jacobians`` hook where it has one (:func:`~physnode.solver.vector_field.jacobians_of`;
    ``NBody``'s halves the least-squares finish's time), else from one batched
    vector–Jacobian product (``n`` = state entries), then multiplies ``S`` by their transpose.
    Measured on three bodies in 2-D (n = 12, 3 masses): 0.9 s for a solve whose
    ``vmap(jvp(functional_call))`` version took 3.3 s (the per-call cost of forward-mode AD
    dominates such small models); it also serves plain callables with ``params=``.
    """

    def __init__(
        self, func: Callable, y0: torch.Tensor, params: Sequence[torch.Tensor], with_y0: bool
    ) -> None:
        self.func = func
        self.shape = y0.shape
        self.n = y0.numel()
        self.params = tuple(params)
        self.n_y0 = self.n if with_y0 else 0
        self.cols = self.n_y0 + sum(p.numel() for p in self.params)
        if self.cols == 0:
            raise InvalidInputError("grad='forward' found nothing to differentiate")
        eye = torch.eye(self.n, dtype=y0.dtype, device=y0.device)
        self.basis = eye.reshape(self.n, *self.shape)
        self.batched = True
        # the model's closed-form rows, while it gives them (None once it declines); the
        # hook is for one state (n,): a batch takes autograd's rows
        self.analytic = jacobians_of(func) if len(self.shape) == 1 else None

    def initial(self, y0: torch.Tensor) -> torch.Tensor:
        """``z0 = [y0, S0]`` with ``S0 = [I | 0]``."""
        s0 = torch.zeros(self.cols, self.n, dtype=y0.dtype, device=y0.device)
        if self.n_y0:
            s0[: self.n] = torch.eye(self.n, dtype=y0.dtype, device=y0.device)
        return torch.cat([y0.detach().reshape(-1), s0.reshape(-1)])

    def tolerances(self, atol: float, y0: torch.Tensor) -> torch.Tensor:
        """Absolute tolerances of ``z``: ``atol`` for the state, ``atol / |θ_c|`` for column
        ``c`` (``|θ_c| = 1`` where ``θ_c = 0``), as CVODES scales sensitivities."""
        values = [y0.detach().reshape(-1)[: self.n_y0]]
        values += [p.detach().reshape(-1).to(y0.dtype) for p in self.params]
        theta = torch.cat(values).abs()
        theta = torch.where(theta > 0, theta, torch.ones_like(theta))
        cols = (atol / theta).repeat_interleave(self.n)
        return torch.cat([torch.full((self.n,), atol, dtype=y0.dtype, device=y0.device), cols])

    def __call__(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        y = z[: self.n].view(self.shape)
        s = z[self.n :].view(self.cols, *self.shape)
        f, ds = self._by_rows(t, y, s)
        return torch.cat([f.reshape(-1), ds.reshape(-1)])

    def _by_rows(self, t: torch.Tensor, y: torch.Tensor, s: torch.Tensor):
        if self.analytic is not None:
            given = self.analytic(t, y, self.params)
            if given is not None:
                f, jac_y, jac_p = given
                return f.view(self.shape), self._product(s, jac_y, jac_p)
            self.analytic = None  # it declines for these inputs: autograd from now on
        with torch.enable_grad():
            y_leaf = y.detach().requires_grad_(True)
            f = self.func(t, y_leaf)
            rows = self._vjp_rows(f, [y_leaf, *self.params])
        jac_p = [_rows(g, p, self.n) for p, g in zip(self.params, rows[1:], strict=True)]
        return f.detach(), self._product(s, _rows(rows[0], y_leaf, self.n), jac_p)

    def _product(
        self, s: torch.Tensor, jac_y: torch.Tensor, jac_p: list[torch.Tensor]
    ) -> torch.Tensor:
        """``dS/dt = (∂f/∂y) S + ∂f/∂θ`` as ``(cols, n)``, from the rows ``(n, n)`` and
        ``(n, p.numel())`` per parameter."""
        ds = s.reshape(self.cols, self.n) @ jac_y.T
        offset = self.n_y0
        for p, rows in zip(self.params, jac_p, strict=True):
            m = p.numel()
            ds[offset : offset + m] += rows.T.to(ds.dtype)
            offset += m
        return ds

    def _vjp_rows(self, f: torch.Tensor, inputs: list[torch.Tensor]) -> list:
        """The ``n`` rows of ``∂f/∂inputs``: one batched VJP, or ``n`` single ones where
        vmap has no batching rule for the model (said once, by a warning)."""
        if self.batched:
            try:
                return list(
                    torch.autograd.grad(
                        f, inputs, self.basis, is_grads_batched=True, allow_unused=True
                    )
                )
            except RuntimeError as exc:
                if not is_vmap_limitation(exc):
                    raise
                self.batched = False
                warnings.warn(
                    f"grad='forward': the model {type(self.func).__name__} cannot be batched "
                    f"by vmap ({str(exc).splitlines()[0]}); taking its Jacobian rows one by "
                    "one instead (same result, slower)",
                    ReplayFallbackWarning,
                    stacklevel=2,
                )
        singles = [
            torch.autograd.grad(f, inputs, e, retain_graph=True, allow_unused=True)
            for e in self.basis
        ]
        return [None if col[0] is None else torch.stack(col) for col in zip(*singles, strict=True)]


def _rows(g: torch.Tensor | None, like: torch.Tensor, n: int) -> torch.Tensor:
    """A batched VJP's ``n`` rows, zeros where the output does not depend on ``like``."""
    if g is None:
        return torch.zeros(n, like.numel(), dtype=like.dtype, device=like.device)
    return g.reshape(n, like.numel())


@register_gradient("forward")
class Forward(GradientMethod):
    """Forward-mode sensitivities (the variational equations), ``1 + P`` model evaluations
    per stage for ``P`` = the number of entries of ``y0`` (when it needs a gradient) and of
    the parameters. Exact derivatives of the solve it takes; with ``sensitivity_control`` its
    steps also keep the sensitivities to the tolerance."""

    def apply(self, problem, t, y0, params):
        return ForwardFunction.apply(problem, t, y0, *params)


class ForwardFunction(torch.autograd.Function):
    """``ys = ForwardFunction.apply(problem, t, y0, *params)``."""

    @staticmethod
    def forward(ctx, problem: Problem, t: torch.Tensor, y0: torch.Tensor, *params):
        with_y0 = bool(ctx.needs_input_grad[1] or ctx.needs_input_grad[2])
        sens = integrate_sensitivities(problem, y0, params, with_y0)
        remember(ctx, problem, t, y0, params)
        ctx.jac, ctx.n_y0 = sens.jac, (y0.numel() if with_y0 else 0)
        ctx.save_for_backward(sens.ys)
        return sens.ys

    @staticmethod
    def backward(ctx, grad_ys: torch.Tensor):
        check_backward(ctx, "forward")
        problem: Problem = ctx.problem
        (ys,) = ctx.saved_tensors
        jac, n_y0 = ctx.jac, ctx.n_y0
        # ys[0] = y0 does not depend on the parameters; its y0 share is added below
        flat = grad_ys[1:].reshape(grad_ys.shape[0] - 1, 1, -1)
        cols = (jac[1:].reshape(*flat.shape[:1], jac.shape[1], -1) * flat).sum(dim=(0, 2))
        flow = cols[:n_y0].reshape(ys.shape[1:]) if n_y0 else torch.zeros_like(ys[0])
        grads, offset = [], n_y0
        for p in ctx.params:
            grads.append(cols[offset : offset + p.numel()].reshape(p.shape).to(p.dtype))
            offset += p.numel()
        grad_t = None
        if ctx.needs_input_grad[1]:
            rhs = problem.backward_rhs(ys[0])
            grad_t = time_gradient(rhs, problem.t_out, ys, grad_ys, flow, *ctx.t_meta)
        return (None, grad_t, flow + grad_ys[0], *fill_none(grads, ctx.params))
