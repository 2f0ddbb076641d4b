"""ACA: the adaptive checkpoint adjoint (Zhuang et al., ICML 2020).

Forward: integrate under ``no_grad`` and keep ``(t_n, h_n, y_n)`` of accepted steps only.
Backward: walk the accepted steps in reverse; rebuild each one-step map under autograd from the
stored state (a detached leaf) and take one vector–Jacobian product per step. The result is the
gradient of the accepted discrete trajectory — what backprop through those steps gives — at the
memory of one state per step.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from physnode.solver.gradients.aca_per_sample import aca_per_sample
from physnode.solver.gradients.base import GradientMethod, register_gradient
from physnode.solver.gradients.common import (
    Problem,
    check_backward,
    fill_none,
    is_vmap_limitation,
    remember,
    time_gradient,
    zeros_for,
)
from physnode.solver.integrate import ForwardRecord
from physnode.solver.stepper import RHS, dense_output, extra_stages, stages
from physnode.solver.tableaus import ButcherTableau


@register_gradient("aca")
class ACA(GradientMethod):
    """Adaptive checkpoint adjoint: the exact gradient of the accepted steps, replayed from one
    stored state per step. Fills ``n_checkpoints`` and ``nfe_backward``."""

    per_sample = True

    def apply(self, problem, t, y0, params):
        return ACAFunction.apply(problem, t, y0, *params)

    def apply_per_sample(self, problem, t, y0, params):
        """Each member's accepted steps replayed (:mod:`.aca_per_sample`)."""
        return aca_per_sample(problem, t, y0, params)


class ACAFunction(torch.autograd.Function):
    """``ys = ACAFunction.apply(problem, t, y0, *params)``."""

    @staticmethod
    def forward(ctx, problem: Problem, t: torch.Tensor, y0: torch.Tensor, *params: torch.Tensor):
        with torch.no_grad():
            record = problem.run(y0, record=True)
            ys = torch.stack(record.ys)
        problem.stats.n_checkpoints = len(record.checkpoints)
        remember(ctx, problem, t, y0, params)
        ctx.record = record
        ctx.save_for_backward(ys)
        return ys

    @staticmethod
    def backward(ctx, grad_ys: torch.Tensor):
        check_backward(ctx, "aca")
        problem: Problem = ctx.problem
        record: ForwardRecord = ctx.record
        (ys,) = ctx.saved_tensors
        lam, grad_params = _replay(problem, record, grad_ys, ctx.params)
        grad_t = None
        if ctx.needs_input_grad[1]:
            rhs = problem.backward_rhs(ys[0])
            grad_t = time_gradient(rhs, problem.t_out, ys, grad_ys, lam, *ctx.t_meta)
        grad_y0 = lam + grad_ys[0]
        return (None, grad_t, grad_y0, *fill_none(grad_params, ctx.params))


def _replay(problem: Problem, record: ForwardRecord, grad_ys: torch.Tensor, params):
    """The adjoint of ``y0`` through the flow and the parameter gradients: batched where the
    cost model (or ``options.replay``) chooses it, else step by step."""
    n_steps = len(record.checkpoints)
    chunk = choose_replay(problem.options, problem.tab, grad_ys[0], n_steps)
    if chunk:
        try:
            return _batched_replay(problem, record, grad_ys, params, chunk)
        except (RuntimeError, NotImplementedError) as exc:
            if not is_vmap_limitation(exc):
                raise
            _warn_fallback(problem.func, exc)
            problem.stats.n_replayed_batched = 0
    return _sequential_replay(problem, record, grad_ys, params)


def _sequential_replay(problem: Problem, record: ForwardRecord, grad_ys: torch.Tensor, params):
    """Walk the accepted steps in reverse, one VJP per step."""
    tab = problem.tab
    rhs = problem.backward_rhs(grad_ys[0])
    lam = torch.zeros_like(grad_ys[0])
    grad_params = zeros_for(params)
    for n in range(len(record.checkpoints) - 1, -1, -1):
        t_n, h, y_n = record.checkpoints[n]
        inside = []
        for k, theta in record.outputs[n]:
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


#: largest state (numbers) for which ``replay="auto"`` batches. Measured (benchmarks/replay.py,
#: RESULTS.md "ACA replay paths"): batched is several times faster up to ~16-24 numbers, even
#: around 32, and 2.4-4x slower at 60-64 (D batched VJPs cost D × a sequential pass).
AUTO_BATCHED_MAX_DIM = 32
#: steps replayed together at most (bounds the Python loop of the adjoint recurrence too)
MAX_CHUNK_STEPS = 1024


def replay_bytes_per_step(tab: ButcherTableau, y: torch.Tensor) -> int:
    """Estimated memory of one step in the batched replay (bytes): the D batched VJPs carry
    ``D`` cotangents through every stage (``D × D`` numbers per stage, twice: the graph's
    saved tensors and the VJP's work space), plus the step's Jacobian. An estimate from the
    method's stages and the state's size; a model's own intermediate tensors add to it."""
    d = y.numel()
    return y.element_size() * d * d * (2 * (tab.n_stages + len(tab.extra_c)) + 1)


def choose_replay(options, tab: ButcherTableau, y: torch.Tensor, n_steps: int) -> int:
    """Steps per batched chunk, or 0 for the sequential replay.

    ``options.replay``: ``"sequential"`` → 0; ``"batched"`` → batch within the memory budget;
    ``"auto"`` → batch only states of at most :data:`AUTO_BATCHED_MAX_DIM` numbers and at
    least two steps per chunk within ``options.replay_memory``.
    """
    if options.replay == "sequential" or n_steps == 0:
        return 0
    fit = options.replay_memory // replay_bytes_per_step(tab, y)
    chunk = int(max(1, min(fit, MAX_CHUNK_STEPS, n_steps)))
    if options.replay == "batched":
        return chunk
    return chunk if y.numel() <= AUTO_BATCHED_MAX_DIM and fit >= 2 else 0


def _warn_fallback(func, exc: BaseException) -> None:
    name = type(func).__name__
    warnings.warn(
        f"ACA: the model {name} cannot be batched by torch.func.vmap ({str(exc).splitlines()[0]}"
        "); replaying its steps one by one instead (same gradient, slower). Pass "
        "options={'replay': 'sequential'} to skip the attempt.",
        ReplayFallbackWarning,
        stacklevel=4,
    )


class ReplayFallbackWarning(UserWarning):
    """The ACA batched replay could not batch the model and fell back to the step-by-step
    replay (the gradient is the same; only speed differs)."""


def _batched_replay(
    problem: Problem, record: ForwardRecord, grad_ys: torch.Tensor, params, chunk: int
):
    """The same gradient as :func:`_sequential_replay`, all steps of a chunk at once.

    Every step's map ``y_{n+1} = ψ(t_n, h_n, y_n)`` depends only on its own checkpoint, so a
    chunk of steps is replayed as one batch through ``torch.func.vmap`` over the model (each
    step sees its own ``t`` and state, so reductions over the state and time dependence keep
    their per-step meaning): one batched graph, ``D`` batched VJPs give every step's Jacobian
    ``∂ψ_n/∂y_n`` (D×D), the adjoint recurrence ``λ_n = J_nᵀ λ_{n+1} + (output terms)`` is a
    loop of small mat-vecs, and one more VJP gives the parameter gradient. Replaces ``N``
    small autograd passes (whose per-node overhead dominates tiny states) by ``D + 2``.
    """
    shape = grad_ys.shape[1:]
    n_steps = len(record.checkpoints)
    lam = torch.zeros(shape.numel(), dtype=grad_ys.dtype, device=grad_ys.device)
    grad_params = zeros_for(params)
    # chunks bound the memory: one chunk's batched graph and Jacobians at a time
    for start in reversed(range(0, n_steps, chunk)):
        stop = min(start + chunk, n_steps)
        lam, chunk_grads = _replay_chunk(problem, record, grad_ys, params, start, stop, lam)
        for acc, g in zip(grad_params, chunk_grads, strict=True):
            acc += g
    problem.stats.n_replayed_batched = n_steps
    return lam.reshape(shape), grad_params


@dataclass
class _ChunkOutputs:
    """The output gradients of a chunk's steps, split by where the output lies.

    Attributes:
        end_grad: ``(n_steps, *shape)``: ``dL/dy_k`` summed over the outputs on each step's end.
        step, k, theta: for each output strictly inside a step (``θ < 1``): its step within
            the chunk, its output index and its ``θ``.
        grad_inside: ``dL/dy_k`` of those outputs, ``(n_inside, *shape)`` (``None``: none).
    """

    end_grad: torch.Tensor
    step: list[int]
    k: list[int]
    theta: list[float]
    grad_inside: torch.Tensor | None

    @classmethod
    def collect(cls, outputs: Sequence[list[tuple[int, float]]], grad_ys: torch.Tensor):
        shape = grad_ys.shape[1:]
        end_grad = torch.zeros((len(outputs), *shape), dtype=grad_ys.dtype, device=grad_ys.device)
        step, ks, thetas = [], [], []
        for n, outs in enumerate(outputs):
            for k, theta in outs:
                if theta == 1.0:
                    end_grad[n] += grad_ys[k]
                else:
                    step.append(n)
                    ks.append(k)
                    thetas.append(theta)
        grad_inside = grad_ys[torch.tensor(ks, device=grad_ys.device)] if step else None
        return cls(end_grad, step, ks, thetas, grad_inside)


def _replay_chunk(
    problem: Problem, record: ForwardRecord, grad_ys: torch.Tensor, params, start, stop, lam_in
):
    """Steps ``start..stop-1`` of :func:`_batched_replay`; ``lam_in`` is the adjoint of
    ``y_stop``. Returns the adjoint of ``y_start`` and this chunk's parameter gradients."""
    checkpoints = record.checkpoints[start:stop]
    outputs = _ChunkOutputs.collect(record.outputs[start:stop], grad_ys)
    counter = _EvalCounter()
    rhs = RHS(_per_step(problem.func, len(checkpoints)), grad_ys[0], counter.tick)
    with torch.enable_grad():
        y_leaf, y1, y_int = _replay_batch(problem.tab, rhs, checkpoints, outputs, grad_ys)
        jac = _step_jacobians(y1, y_leaf)
        out_adj = torch.zeros(jac.shape[:2], dtype=jac.dtype, device=jac.device)
        if y_int is not None:
            v = torch.autograd.grad(y_int, y_leaf, outputs.grad_inside, retain_graph=True)[0]
            out_adj = v.reshape(out_adj.shape)
    lam, arriving = _adjoint_recurrence(lam_in, jac, outputs.end_grad, out_adj)
    grad_params = zeros_for(params)
    if params:
        with torch.enable_grad():
            outs, gouts = [y1], [arriving.reshape(y1.shape)]
            if y_int is not None:
                outs.append(y_int)
                gouts.append(outputs.grad_inside)
            grads = torch.autograd.grad(outs, list(params), gouts, allow_unused=True)
        grad_params = fill_none(grads, params)
    problem.stats.nfe_backward += counter.calls * len(checkpoints)
    return lam, grad_params


def _replay_batch(
    tab: ButcherTableau,
    rhs: RHS,
    checkpoints: Sequence[tuple[float, float, torch.Tensor]],
    outputs: _ChunkOutputs,
    grad_ys: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Rebuild every step of the chunk as one batch (under autograd, set by the caller).

    Returns ``(y_leaf, y1, y_int)``: the stacked checkpoint states (a leaf), the stacked step
    ends and the dense outputs inside steps (``None``: none).
    """
    shape = grad_ys.shape[1:]
    dtype, device = grad_ys.dtype, grad_ys.device
    n_steps = len(checkpoints)
    y_leaf = torch.stack([c[2] for c in checkpoints]).detach().requires_grad_(True)
    h_col = torch.tensor([c[1] for c in checkpoints], dtype=torch.float64, device=device)
    h_b = h_col.reshape(n_steps, *([1] * len(shape)))
    t_col = torch.tensor([c[0] for c in checkpoints], dtype=torch.float64, device=device)
    t0 = t_col.reshape(h_b.shape)  # each step's own start time (float64)
    f0 = rhs(t0, y_leaf)
    y1, ks = stages(rhs, tab, t0, h_b, y_leaf, f0, need_last=bool(outputs.step) or not tab.fsal)
    if not outputs.step:
        return y_leaf, y1, None
    if tab.extra_c:
        ks = extra_stages(rhs, tab, t0, h_b, y_leaf, ks)
    idx = torch.tensor(outputs.step, device=device)
    weights = torch.stack(
        [torch.as_tensor(tab.dense_weights(th), dtype=torch.float64) for th in outputs.theta]
    ).to(device)  # (n_inside, stages)
    h_in = h_b[idx]
    y_int = y_leaf[idx]
    for i, k_i in enumerate(ks):
        w = weights[:, i].reshape(h_in.shape)
        y_int = y_int + (w * h_in).to(dtype) * k_i[idx]
    return y_leaf, y1, y_int


def _step_jacobians(y1: torch.Tensor, y_leaf: torch.Tensor) -> torch.Tensor:
    """``J[n, j, i] = ∂ y1[n, j] / ∂ y_leaf[n, i]``, shape ``(n_steps, D, D)``, from D batched
    VJPs (the graph is kept for the VJPs that follow)."""
    n_steps, shape = y_leaf.shape[0], y_leaf.shape[1:]
    d = shape.numel()
    eye = torch.eye(d, dtype=y1.dtype, device=y1.device)
    basis = eye.reshape(d, 1, *shape).expand(d, n_steps, *shape)
    jac = torch.autograd.grad(y1, y_leaf, basis, retain_graph=True, is_grads_batched=True)[0]
    return jac.reshape(d, n_steps, d).transpose(0, 1)  # (n_steps, j, i)


def _adjoint_recurrence(
    lam_in: torch.Tensor, jac: torch.Tensor, end_grad: torch.Tensor, out_adj: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``λ_n = J_nᵀ (λ_{n+1} + end terms) + inside terms``, newest step first.

    Returns the adjoint of the chunk's first state and, per step, the adjoint arriving at its
    end (``(n_steps, D)``, what the parameter VJP weights ``y1`` with)."""
    n_steps, d = out_adj.shape
    lam = lam_in
    arriving = torch.empty((n_steps, d), dtype=out_adj.dtype, device=out_adj.device)
    end_flat = end_grad.reshape(n_steps, d)
    for n in range(n_steps - 1, -1, -1):
        lam_next = lam + end_flat[n]  # the adjoint of y_{n+1}
        arriving[n] = lam_next
        lam = jac[n].T @ lam_next + out_adj[n]
    return lam, arriving


def _per_step(func, n_steps: int):
    """``func`` mapped over the leading (step) dimension with ``torch.func.vmap``: called as
    ``(t, y)`` with ``t`` of ``n_steps`` stage times and ``y`` of shape ``(n_steps, *state)``,
    it evaluates ``func(t[n], y[n])`` for every step, with per-step semantics."""
    mapped = torch.func.vmap(func)

    def call(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return mapped(t.reshape(n_steps), y)

    return call


class _EvalCounter:
    """Counts batched evaluations (each stands for one evaluation per step)."""

    def __init__(self) -> None:
        self.calls = 0

    def tick(self) -> None:
        self.calls += 1
