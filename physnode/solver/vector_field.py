"""What the solver needs from a model: the :class:`VectorField` protocol, declared once.

Every part of the solver that asks something of the user's ``func`` reads it here:
:func:`is_autonomous` is the one place the optional ``autonomous`` flag is read.
"""

from __future__ import annotations

import contextvars
import functools
from collections.abc import Callable
from typing import Protocol, TypeVar

import torch

__all__ = [
    "VectorField",
    "closed_form_applies",
    "is_autonomous",
    "jacobians_of",
    "one_solve",
    "solve_scope",
]


class VectorField(Protocol):
    """A model ``dy/dt = func(t, y)`` as :func:`~physnode.solver.odeint` calls it.

    ``__call__(t, y)``: ``t`` a 0-dim tensor of the state's dtype and device, ``y`` the state of
    shape ``(..., D)`` (leading dimensions a batch); returns ``dy/dt`` of ``y``'s shape, dtype
    and device. Any callable with this signature qualifies (a function, an ``nn.Module``, a
    bound method).

    Optional attribute ``autonomous: bool`` (default ``False``): ``True`` declares that the
    result does not depend on ``t``. The solver itself needs no such promise (ACA's batched
    replay passes every step its own ``t`` through ``torch.func.vmap``); it is for callers that
    restart a model at another time, such as multiple shooting. A model without the attribute
    is treated as non-autonomous; read it with :func:`is_autonomous`.

    Optional method ``jacobians(t, y, params)`` (SciML's ``jac`` and ``paramjac`` in one):
    ``(f, ∂f/∂y, [∂f/∂p for p in params])`` for one state ``y`` of shape ``(n,)`` (a batch
    never reaches it), shapes ``(n,)``, ``(n, n)`` and ``(n, p.numel())``, for
    ``grad="forward"``'s variational equations, which otherwise take these rows by autograd;
    or ``None`` where the model cannot give them (the solver then uses autograd; a model
    whose call is not the one the closed form was written for must decline, see
    :func:`closed_form_applies`). Read it with :func:`jacobians_of`.

    During one solve the parameters do not change: a model may cache what it derives from
    them for that solve alone, keyed by :func:`solve_scope` (never across solves: a value
    changed through ``.data`` between two solves leaves no trace in its version counter).
    """

    def __call__(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor: ...


def is_autonomous(func: object) -> bool:
    """Whether ``func`` declares ``autonomous = True`` (absent: ``False``)."""
    return bool(getattr(func, "autonomous", False))


def jacobians_of(func: object):
    """``func``'s closed-form ``jacobians`` hook (see :class:`VectorField`), or ``None``."""
    hook = getattr(func, "jacobians", None)
    return hook if callable(hook) else None


def closed_form_applies(module: object, cls: type, methods: tuple[str, ...]) -> bool:
    """Whether ``module``'s call is the one ``cls``'s closed-form ``jacobians`` was written
    for: none of ``methods`` (those its ``forward`` runs through) overridden by a subclass,
    and no forward hook (its own or torch's global ones) that could change the result."""
    if any(getattr(type(module), name) is not getattr(cls, name) for name in methods):
        return False
    if isinstance(module, torch.nn.Module):
        from torch.nn.modules import module as torch_module

        own = module._forward_hooks or module._forward_pre_hooks
        shared = torch_module._global_forward_hooks or torch_module._global_forward_pre_hooks
        return not (own or shared)
    return True


_SCOPE: contextvars.ContextVar[object | None] = contextvars.ContextVar("solve", default=None)
_F = TypeVar("_F", bound=Callable)


def solve_scope() -> object | None:
    """A token of the solve running now (a new object per solve), ``None`` outside one."""
    return _SCOPE.get()


def one_solve(loop: _F) -> _F:
    """Run ``loop`` (a solver loop) as one solve: :func:`solve_scope` gives it a new token."""

    @functools.wraps(loop)
    def scoped(*args, **kwargs):
        token = _SCOPE.set(object())
        try:
            return loop(*args, **kwargs)
        finally:
            _SCOPE.reset(token)

    return scoped  # type: ignore[return-value]
