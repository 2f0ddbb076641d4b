"""Fixed-step symplectic integrators for separable second-order systems.

Both methods need ``d²q/dt² = a(t, q)`` independent of the velocities, i.e. a separable
Hamiltonian ``H = T(p) + V(q, t)`` with ``p = M v`` (N-body, Kepler, pendulum, spring chain). They
then conserve a modified energy, so the energy error stays bounded over long runs instead of
drifting as it does with Runge–Kutta methods. They are plain torch code: batched, on any device,
and differentiable by backpropagation through the steps.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Protocol

import torch
from torch import Tensor

from physnode.errors import DtypeMismatchError, InvalidInputError, InvalidTimeGridError

__all__ = ["SYMPLECTIC_METHODS", "integrate_symplectic"]

_CBRT2 = 2.0 ** (1.0 / 3.0)
_W1 = 1.0 / (2.0 - _CBRT2)
_W0 = -_CBRT2 / (2.0 - _CBRT2)

SYMPLECTIC_METHODS: dict[str, tuple[float, ...]] = {
    # Kick-drift-kick leapfrog (velocity Verlet): order 2.
    "leapfrog": (1.0,),
    # Yoshida (1990) triple jump: leapfrog steps of w1 h, w0 h, w1 h; order 4.
    "yoshida4": (_W1, _W0, _W1),
}


class SecondOrderSystem(Protocol):
    """What :func:`integrate_symplectic` needs from a system (see ``physnode.systems.System``)."""

    second_order: bool
    separable: bool

    def acceleration(self, t: Tensor, q: Tensor, v: Tensor) -> Tensor: ...


def integrate_symplectic(
    system: SecondOrderSystem,
    y0: Tensor,
    t: Tensor,
    step_size: float,
    method: str = "leapfrog",
    compile: bool = False,
) -> Tensor:
    """Integrate a separable second-order system with a fixed-step symplectic method.

    Args:
        system: a system with ``second_order`` and ``separable`` true and
            ``acceleration(t, q, v)`` (``t`` 0-dim, ``q`` and ``v`` of shape ``(..., D // 2)``).
        y0: initial state, shape ``(..., D)``: positions then velocities; float32 or float64.
        t: output times, shape ``(T,)``, strictly increasing or strictly decreasing, ``T >= 2``.
        step_size: positive step length in time units. Each interval between output times is
            covered by steps of ``step_size`` whose last one is shortened to land on the output
            time exactly. Step times are computed in float64.
        method: ``"leapfrog"`` (kick-drift-kick, order 2) or ``"yoshida4"`` (order 4, three
            leapfrog sub-steps per step).
        compile: run the steps as kernels compiled by TorchInductor (see
            :mod:`physnode.solver.symplectic_fused`): chunks of
            :data:`~physnode.solver.symplectic_fused.CHUNK` steps per call, the same steps and
            results to rounding. Pays for small states and many steps, after a first-call
            compile of seconds (cached per system). Without gradients only; falls back to
            these eager steps with one ``CompileFallbackWarning`` where it cannot compile.

    Returns:
        States at ``t``, shape ``(T, *y0.shape)``; the first row is ``y0``.

    Raises:
        InvalidInputError: unknown method, bad step size, bad state shape, or a system that is
            not second order with velocity-independent acceleration.
        InvalidInputError: also ``compile=True`` with ``y0`` or the system's parameters
            requiring grad under grad mode (the compiled steps carry no autograd graph).
        InvalidTimeGridError: ``t`` not 1-D, shorter than 2, non-finite or not strictly monotone.
        DtypeMismatchError: ``y0`` is not float32 or float64.
    """
    coefficients = _check_inputs(system, y0, t, step_size, method)
    h = float(step_size)
    grid = t.detach().to(device="cpu", dtype=torch.float64).tolist()
    t_device = t.detach().to(device=y0.device, dtype=torch.float64)

    def time_at(i: int, offset: float) -> Tensor:
        # t[i] + offset in float64, then cast: no host-device synchronisation.
        return (t_device[i] + offset).to(y0.dtype)

    q, v = y0.chunk(2, dim=-1)
    acc = system.acceleration(time_at(0, 0.0), q, v)
    cover = _cover_interval
    if compile:
        from physnode.solver.symplectic_fused import compiled_cover

        cover = compiled_cover(system, y0, q, v, acc, coefficients, method, grid) or cover
    out = [y0]
    for i in range(len(grid) - 1):
        q, v, acc = cover(
            system.acceleration, q, v, acc, i, grid[i + 1] - grid[i], h, coefficients, time_at
        )
        out.append(torch.cat([q, v], dim=-1))
    return torch.stack(out)


def steps_over(span: float, h: float) -> int:
    """How many fixed steps of at most ``h`` cover ``span`` (time units, signed), the last
    shortened to land on its end; a remainder under 1e-9 steps is rounding, not a step."""
    return max(1, math.ceil(abs(span) / h - 1e-9))


def _cover_interval(
    acceleration: Callable[[Tensor, Tensor, Tensor], Tensor],
    q: Tensor,
    v: Tensor,
    acc: Tensor,
    interval: int,
    span: float,
    h: float,
    coefficients: tuple[float, ...],
    time_at: Callable[[int, float], Tensor],
) -> tuple[Tensor, Tensor, Tensor]:
    """Steps of ``h`` from ``t[interval]`` over ``span`` (signed), the last one shortened to
    land on ``t[interval + 1]``; returns ``(q, v, acc)`` there."""
    n_steps, direction = step_plan(span, h)
    for k in range(n_steps):
        start = k * direction
        dt = span - start if k == n_steps - 1 else direction
        q, v, acc = _composed_step(
            acceleration, q, v, acc, interval, start, dt, coefficients, time_at
        )
    return q, v, acc


def step_plan(span: float, h: float) -> tuple[int, float]:
    """``(n_steps, direction)``: how many steps of at most ``h`` cover ``span`` (signed), and
    the signed full step."""
    return steps_over(span, h), math.copysign(h, span)


def _composed_step(
    acceleration: Callable[[Tensor, Tensor, Tensor], Tensor],
    q: Tensor,
    v: Tensor,
    acc: Tensor,
    interval: int,
    start: float,
    dt: float,
    coefficients: tuple[float, ...],
    time_at: Callable[[int, float], Tensor],
) -> tuple[Tensor, Tensor, Tensor]:
    """One step of length ``dt`` from time ``t[interval] + start``: a kick-drift-kick leapfrog
    sub-step of ``c * dt`` for each coefficient ``c``. ``acc`` is the acceleration at the
    current state; the one at the new state is returned for reuse (first same as last)."""
    offset = start
    for c in coefficients:
        sub = c * dt
        v = torch.add(v, acc, alpha=0.5 * sub)
        q = torch.add(q, v, alpha=sub)
        offset += sub
        acc = acceleration(time_at(interval, offset), q, v)
        v = torch.add(v, acc, alpha=0.5 * sub)
    return q, v, acc


def _check_inputs(
    system: SecondOrderSystem, y0: Tensor, t: Tensor, step_size: float, method: str
) -> tuple[float, ...]:
    """Validate the arguments of :func:`integrate_symplectic`; return the method's coefficients."""
    if method not in SYMPLECTIC_METHODS:
        raise InvalidInputError(
            f"unknown method {method!r}; valid methods are {list(SYMPLECTIC_METHODS)}."
        )
    name = type(system).__name__
    if not getattr(system, "second_order", False):
        raise InvalidInputError(
            f"{name} is not a second-order system (second_order=False); symplectic integration "
            "needs positions-then-velocities states and acceleration(t, q, v). Use odeint instead."
        )
    if not getattr(system, "separable", False):
        raise InvalidInputError(
            f"{name}'s acceleration depends on the velocities (separable=False), so a leapfrog "
            "is not symplectic for it; use odeint instead."
        )
    if not isinstance(y0, Tensor) or y0.dtype not in (torch.float32, torch.float64):
        dtype = getattr(y0, "dtype", type(y0).__name__)
        raise DtypeMismatchError(f"y0 must be a float32 or float64 tensor; got {dtype}.")
    expected = len(getattr(system, "state_names", ())) or None
    if y0.ndim == 0 or y0.shape[-1] % 2 or (expected and y0.shape[-1] != expected):
        raise InvalidInputError(
            f"y0 must have shape (..., D) with D = {expected or 'an even number'} (positions "
            f"then velocities); got {tuple(y0.shape)}."
        )
    try:
        h = float(step_size)
    except (TypeError, ValueError, RuntimeError):
        h = math.nan
    if not (math.isfinite(h) and h > 0):
        raise InvalidInputError(f"step_size must be a positive finite number; got {step_size!r}.")
    _check_time_grid(t)
    return SYMPLECTIC_METHODS[method]


def _check_time_grid(t: Tensor) -> None:
    if not isinstance(t, Tensor) or t.ndim != 1 or t.numel() < 2:
        shape = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
        raise InvalidTimeGridError(f"t must be a 1-D tensor of at least 2 times; got {shape}.")
    if not bool(torch.isfinite(t).all()):
        raise InvalidTimeGridError("t must contain only finite times.")
    dt = t.diff()
    if not (bool((dt > 0).all()) or bool((dt < 0).all())):
        raise InvalidTimeGridError("t must be strictly increasing or strictly decreasing.")
