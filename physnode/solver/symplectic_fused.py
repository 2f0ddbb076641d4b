"""Compiled symplectic steps: ``integrate_symplectic(..., compile=True)``.

For a small state an eager Yoshida-4 step is ~40 tensor operations of ~1–2 µs each. Here
:data:`CHUNK` whole steps (every kick, drift and acceleration) are traced once with ``make_fx``
and compiled by TorchInductor into one kernel call, with one more kernel for a single step (the
remainder of an interval and its shortened last step). The step sequence, the times the
acceleration sees and the arithmetic are those of the eager
:func:`~physnode.solver.symplectic._composed_step`, so the results equal the eager ones to
rounding. An ``nn.Module`` system's parameters and
buffers are inputs of the kernels, so values changed between runs are seen.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from physnode.errors import InvalidInputError
from physnode.solver.fused import cached_kernels, compile_graph, layout_key, module_state
from physnode.solver.symplectic import step_plan

__all__ = ["CHUNK", "compiled_cover"]

#: steps per call of the chunk kernel: long enough that the ~20 µs per call is spread thin,
#: short enough that the trace and compile stay a few seconds
CHUNK = 16


def compiled_cover(
    system, y0: Tensor, q: Tensor, v: Tensor, acc: Tensor, coefficients: tuple[float, ...],
    method: str, grid: list[float],
) -> Callable | None:  # fmt: skip
    """A drop-in for :func:`~physnode.solver.symplectic._cover_interval` that runs compiled
    kernels (``grid``: the output times in float64), or ``None`` after one
    ``CompileFallbackWarning`` where they cannot be built."""
    names, tensors = module_state(system)
    needs_grad = y0.requires_grad or any(x.requires_grad for x in _parameters(system))
    if torch.is_grad_enabled() and needs_grad:
        raise InvalidInputError(
            "integrate_symplectic(compile=True) runs without gradients only (the compiled "
            "steps carry no autograd graph); call it under torch.no_grad() or with compile=False"
        )
    key = (method, layout_key(y0, names, tensors))
    found = cached_kernels(
        system, key, lambda: _build(system, names, tensors, q, v, acc, coefficients), method
    )
    if found is None:
        return None
    (chunk, single), _ = found
    th = torch.zeros(3, dtype=torch.float64)  # (t_i, start or first step index, dt)
    host = th.numpy()

    def cover(acceleration, q, v, acc, interval, span, h, coefficients, time_at):
        del acceleration, coefficients, time_at  # compiled in; times from the grid
        n_steps, direction = step_plan(span, h)
        host[0] = grid[interval]
        k = 0
        while k + CHUNK <= n_steps - 1:  # full steps, CHUNK at a time; the last one apart
            host[1], host[2] = float(k), direction
            q, v, acc = chunk([th.to(y0.device), q, v, acc, *tensors])
            k += CHUNK
        for j in range(k, n_steps):
            start = j * direction
            host[1], host[2] = start, (span - start if j == n_steps - 1 else direction)
            q, v, acc = single([th.to(y0.device), q, v, acc, *tensors])
        return q, v, acc

    return cover


def _parameters(system) -> list[Tensor]:
    return list(system.parameters()) if isinstance(system, nn.Module) else []


def _build(system, names, tensors, q, v, acc, coefficients) -> tuple[Callable, Callable]:
    """The chunk kernel and the single-step kernel, each ``[th, q, v, acc, *tensors] ->
    (q, v, acc)``."""
    example = [torch.zeros(3, dtype=torch.float64, device=q.device), q, v, acc, *tensors]
    chunk = compile_graph(_steps(system, names, coefficients, CHUNK), example)
    single = compile_graph(_steps(system, names, coefficients, None), example)
    return chunk, single


def _steps(system, names: list[str], coefficients: tuple[float, ...], n: int | None):
    """``n`` full steps from step index ``th[1]`` of ``th[2]`` each (``None``: one step from
    offset ``th[1]`` of length ``th[2]``), from time ``th[0]``: the arithmetic of
    :func:`~physnode.solver.symplectic._composed_step`."""

    def fn(th, q, v, acc, *tensors):
        state = dict(zip(names, tensors, strict=True))
        t_i, dt = th[0], th[2]
        for j in range(n or 1):
            offset = (th[1] + j) * dt if n is not None else th[1]
            for c in coefficients:
                sub = c * dt
                v = v + (0.5 * sub) * acc
                q = q + sub * v
                offset = offset + sub
                acc = _acceleration(system, state, (t_i + offset).to(q.dtype), q, v)
                v = v + (0.5 * sub) * acc
        return q, v, acc

    return fn


def _acceleration(system, state: dict, t: Tensor, q: Tensor, v: Tensor) -> Tensor:
    """``system.acceleration`` with ``state`` as the module's parameters and buffers."""
    if not state:
        return system.acceleration(t, q, v)
    from torch.nn.utils.stateless import _reparametrize_module

    with _reparametrize_module(system, state):
        return system.acceleration(t, q, v)
