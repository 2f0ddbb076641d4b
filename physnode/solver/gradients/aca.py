"""ACA: the adaptive checkpoint adjoint (Zhuang et al., ICML 2020).

Forward: integrate under ``no_grad`` and keep ``(t_n, h_n, y_n)`` of accepted steps only.
Backward: walk the accepted steps in reverse; rebuild each one-step map under autograd from the
stored state (a detached leaf) and take one vector–Jacobian product per step. The result is the
gradient of the accepted discrete trajectory — what backprop through those steps gives — at the
memory of one state per step.
"""

from __future__ import annotations

import torch

from physnode.solver.gradients.common import Problem, fill_none, time_gradient
from physnode.solver.stepper import RHS, dense_output, extra_stages, stages


class ACAFunction(torch.autograd.Function):
    """``ys = ACAFunction.apply(problem, t, y0, *params)``."""

    @staticmethod
    def forward(ctx, problem: Problem, t: torch.Tensor, y0: torch.Tensor, *params: torch.Tensor):
        with torch.no_grad():
            traj = problem.run(y0, record=True)
            ys = torch.stack(traj.ys)
        problem.stats.n_checkpoints = len(traj.checkpoints)
        ctx.problem = problem
        ctx.traj = traj
        ctx.t_meta = (t.dtype, t.device)
        ctx.save_for_backward(ys)
        ctx.params = params
        return ys

    @staticmethod
    def backward(ctx, grad_ys: torch.Tensor):
        problem: Problem = ctx.problem
        traj = ctx.traj
        (ys,) = ctx.saved_tensors
        params = ctx.params
        rhs = RHS(problem.func, ys[0], problem.stats, "nfe_backward")
        result = None
        if _batchable(problem.func, ys[0], len(traj.checkpoints)):
            try:
                result = _batched_replay(problem, traj, grad_ys, params)
            except (RuntimeError, NotImplementedError):
                # an operation of the model without a batching rule (vmap): replay step by step
                result = None
        if result is None:
            result = _sequential_replay(problem, traj, grad_ys, params)
        lam, grad_params = result
        grad_t = None
        if ctx.needs_input_grad[1]:
            grad_t = time_gradient(rhs, problem.t_out, ys, grad_ys, lam, *ctx.t_meta)
        grad_y0 = lam + grad_ys[0]
        return (None, grad_t, grad_y0, *fill_none(grad_params, params))


def _sequential_replay(problem: Problem, traj, grad_ys: torch.Tensor, params):
    """Walk the accepted steps in reverse, one VJP per step."""
    tab = problem.tab
    rhs = RHS(problem.func, grad_ys[0], problem.stats, "nfe_backward")
    lam = torch.zeros_like(grad_ys[0])
    grad_params = [torch.zeros_like(p) for p in params]
    for n in range(len(traj.checkpoints) - 1, -1, -1):
        t_n, h, y_n = traj.checkpoints[n]
        inside = []
        for k, theta in traj.outputs[n]:
            if theta == 1.0:
                lam = lam + grad_ys[k]  # the step ends on t_k: y_k is y_{n+1} itself
            else:
                inside.append((k, theta))
        # Replay this step under autograd; the checkpoint holds (t_n, h_n, y_n).
        y_leaf = y_n.detach().requires_grad_(True)
        with torch.enable_grad():
            f0 = rhs(t_n, y_leaf)
            need_last = bool(inside) or not tab.fsal
            y1, ks = stages(rhs, tab, t_n, h, y_leaf, f0, need_last=need_last)
            outs, gouts = [y1], [lam]
            if inside:
                ks_dense = extra_stages(rhs, tab, t_n, h, y_leaf, ks) if tab.extra_c else ks
                for k, theta in inside:
                    outs.append(dense_output(tab, y_leaf, h, ks_dense, theta))
                    gouts.append(grad_ys[k])
            grads = torch.autograd.grad(outs, [y_leaf, *params], gouts, allow_unused=True)
        lam = grads[0] if grads[0] is not None else torch.zeros_like(lam)
        for i, g in enumerate(grads[1:]):
            if g is not None:
                grad_params[i] += g
    return lam, grad_params


#: the batched replay holds one D×D Jacobian per accepted step
_MAX_BATCHED_DIM = 64
_MAX_JACOBIAN_ENTRIES = 20_000_000
#: steps replayed together: bounds the memory of the batched graph (~a few kB per step)
_CHUNK_STEPS = 1024


def _batchable(func, y: torch.Tensor, n_steps: int) -> bool:
    d = y.numel()
    return (
        bool(getattr(func, "autonomous", False))
        and d <= _MAX_BATCHED_DIM
        and min(n_steps, _CHUNK_STEPS) * d * d <= _MAX_JACOBIAN_ENTRIES
    )


def _batched_replay(problem: Problem, traj, grad_ys: torch.Tensor, params):
    """The same gradient as :func:`_sequential_replay`, for small autonomous systems.

    Every step's map ``y_{n+1} = ψ(y_n; h_n)`` depends only on its own checkpoint, so all steps
    are replayed as one batch: one batched graph, ``D`` batched VJPs give every step's Jacobian
    ``∂ψ_n/∂y_n`` (D×D), the adjoint recurrence ``λ_n = J_nᵀ λ_{n+1} + (output terms)`` is a
    loop of small mat-vecs, and one more batched VJP gives the parameter gradient. Replaces
    ``N`` small autograd passes (whose per-node overhead dominates tiny states) by ``D + 2``.
    """
    shape = grad_ys.shape[1:]
    n_steps = len(traj.checkpoints)
    lam = torch.zeros(shape.numel(), dtype=grad_ys.dtype, device=grad_ys.device)
    grad_params = [torch.zeros_like(p) for p in params]
    # chunks bound the memory: one chunk's batched graph and Jacobians at a time
    for start in reversed(range(0, n_steps, _CHUNK_STEPS)):
        stop = min(start + _CHUNK_STEPS, n_steps)
        lam, chunk_grads = _replay_chunk(problem, traj, grad_ys, params, start, stop, lam)
        for acc, g in zip(grad_params, chunk_grads, strict=True):
            acc += g
    return lam.reshape(shape), grad_params


def _replay_chunk(
    problem: Problem, traj, grad_ys: torch.Tensor, params, start: int, stop: int, lam_in
):
    """Steps ``start..stop-1`` of :func:`_batched_replay`; ``lam_in`` is the adjoint of
    ``y_stop``. Returns the adjoint of ``y_start`` and this chunk's parameter gradients."""
    tab = problem.tab
    shape = grad_ys.shape[1:]
    d = shape.numel()
    checkpoints = traj.checkpoints[start:stop]
    n_steps = len(checkpoints)
    dtype, device = grad_ys.dtype, grad_ys.device
    counter = _Counter()
    rhs = RHS(problem.func, grad_ys[0], counter, "calls")
    y_leaf = torch.stack([c[2] for c in checkpoints]).detach().requires_grad_(True)
    h_col = torch.tensor([c[1] for c in checkpoints], dtype=torch.float64, device=device)
    h_b = h_col.reshape(n_steps, *([1] * len(shape)))
    # outputs strictly inside a step (θ < 1) and those on a step's end (θ = 1)
    inside_step, inside_k, inside_theta = [], [], []
    end_grad = torch.zeros((n_steps, *shape), dtype=dtype, device=device)
    for n, outs in enumerate(traj.outputs[start:stop]):
        for k, theta in outs:
            if theta == 1.0:
                end_grad[n] += grad_ys[k]
            else:
                inside_step.append(n)
                inside_k.append(k)
                inside_theta.append(theta)
    with torch.enable_grad():
        t0 = torch.zeros((), dtype=torch.float64, device=device)  # autonomous: t is ignored
        f0 = rhs(t0, y_leaf)
        y1, ks = stages(rhs, tab, t0, h_b, y_leaf, f0, need_last=bool(inside_step) or not tab.fsal)
        y_int = None
        if inside_step:
            if tab.extra_c:
                ks = extra_stages(rhs, tab, t0, h_b, y_leaf, ks)
            idx = torch.tensor(inside_step, device=device)
            weights = torch.stack(
                [torch.as_tensor(tab.dense_weights(th), dtype=torch.float64) for th in inside_theta]
            ).to(device)  # (n_inside, stages)
            h_in = h_b[idx]
            y_int = y_leaf[idx]
            for i, k_i in enumerate(ks):
                w = weights[:, i].reshape(h_in.shape)
                y_int = y_int + (w * h_in).to(dtype) * k_i[idx]
        # Jacobians J[n, j, :] = ∂ y1[n, j] / ∂ y_n, from D batched VJPs
        eye = torch.eye(d, dtype=dtype, device=device)
        basis = eye.reshape(d, 1, *shape).expand(d, n_steps, *shape)
        jac = torch.autograd.grad(y1, y_leaf, basis, retain_graph=True, is_grads_batched=True)[0]
        jac = jac.reshape(d, n_steps, d).transpose(0, 1)  # (n_steps, j, i)
        out_adj = torch.zeros((n_steps, d), dtype=dtype, device=device)
        if y_int is not None:
            g_in = grad_ys[torch.tensor(inside_k, device=device)]
            v = torch.autograd.grad(y_int, y_leaf, g_in, retain_graph=True)[0]
            out_adj = v.reshape(n_steps, d)
    # adjoint recurrence over the steps, newest first
    lam = lam_in
    arriving = torch.empty((n_steps, d), dtype=dtype, device=device)
    end_flat = end_grad.reshape(n_steps, d)
    for n in range(n_steps - 1, -1, -1):
        lam_next = lam + end_flat[n]  # the adjoint of y_{n+1}
        arriving[n] = lam_next
        lam = jac[n].T @ lam_next + out_adj[n]
    grad_params = [torch.zeros_like(p) for p in params]
    if params:
        with torch.enable_grad():
            outs, gouts = [y1], [arriving.reshape(n_steps, *shape)]
            if y_int is not None:
                outs.append(y_int)
                gouts.append(g_in)
            grads = torch.autograd.grad(outs, list(params), gouts, allow_unused=True)
        grad_params = [
            g if g is not None else torch.zeros_like(p) for g, p in zip(grads, params, strict=True)
        ]
    problem.stats.nfe_backward += counter.calls * n_steps
    return lam, grad_params


class _Counter:
    """Counts batched evaluations (each stands for one evaluation per step)."""

    def __init__(self) -> None:
        self.calls = 0
