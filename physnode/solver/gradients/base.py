"""The contract every gradient method meets, and the registry that lists them.

A gradient method is one small class registered under its name::

    @register_gradient("aca")
    class ACA(GradientMethod):
        def apply(self, problem, t, y0, params):
            return ACAFunction.apply(problem, t, y0, *params)

:func:`~physnode.solver.solve` looks the name up with :func:`get_gradient`; every list of
choices (``physnode.solver.GRAD_METHODS``, hence the fitter's) is derived from the registry, in
registration order (the import order of :mod:`physnode.solver.gradients`).
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, ClassVar, TypeVar

import torch

from physnode.errors import InvalidInputError

if TYPE_CHECKING:
    from physnode.solver.gradients.aca_per_sample import PerSampleProblem
    from physnode.solver.gradients.common import Problem

__all__ = ["GradientMethod", "get_gradient", "gradient_names", "register_gradient"]


class GradientMethod(abc.ABC):
    """How a solve is differentiated: one strategy, called once per solve that needs gradients.

    :meth:`apply` is the whole contract. :func:`~physnode.solver.solve` validates every input,
    builds the :class:`~physnode.solver.gradients.common.Problem` and calls ``apply`` only when a
    gradient is needed (grad mode on and ``y0``, ``t`` or a parameter requires grad); otherwise
    it runs ``problem.run(y0)`` under ``no_grad`` itself.

    Subclasses are stateless; register them with :func:`register_gradient`, which sets
    :attr:`name`.
    """

    #: the name accepted by ``odeint(grad=...)``; set by :func:`register_gradient`
    name: ClassVar[str] = ""

    @abc.abstractmethod
    def apply(
        self,
        problem: Problem,
        t: torch.Tensor,
        y0: torch.Tensor,
        params: Sequence[torch.Tensor],
    ) -> torch.Tensor:
        """Solve the problem and return outputs that autograd can differentiate.

        Args:
            problem: the vector field ``func``, the tableau ``tab``, the output times ``t_out``
                (a list of float64, strictly monotone, at least 2), ``rtol``/``atol``, the
                validated ``options`` and the ``stats`` to fill. ``problem.run(y0, record=...,
                naive=...)`` is the forward solve (it fills ``nfe_forward``, ``n_accepted``,
                ``n_rejected``); ``problem.backward_rhs(y)`` wraps ``func`` counting into
                ``nfe_backward``.
            t: the output times as the caller gave them: a 1-D floating tensor of
                ``len(problem.t_out)`` entries, possibly requiring grad.
            y0: the initial state, shape ``(..., D)``, float32 or float64, finite, possibly
                requiring grad.
            params: the parameter tensors that require grad (the module's and ``params=``,
                deduplicated, on ``y0``'s device); the gradient flows to each of them.

        Returns:
            ``ys`` of shape ``(len(t), *y0.shape)`` and ``y0``'s dtype, ``ys[0]`` equal to
            ``y0``; differentiable with respect to ``t``, ``y0`` and every tensor of
            ``params`` (a zero gradient where there is no dependence).

        Stats: besides what ``problem.run`` counts, a method fills what its backward pass does:
        ``nfe_backward`` (every evaluation of the backward pass, time gradient included),
        ``n_checkpoints`` (the states it keeps for the backward pass) and
        ``n_steps_backward`` (step attempts of a backward solve, if it integrates backwards).
        """

    #: whether :meth:`apply_per_sample` is implemented (``options={"steps": "per-sample"}``)
    per_sample: ClassVar[bool] = False

    def apply_per_sample(
        self,
        problem: PerSampleProblem,
        t: torch.Tensor,
        y0: torch.Tensor,
        params: Sequence[torch.Tensor],
    ) -> torch.Tensor:
        """A per-sample solve that autograd can differentiate (only where :attr:`per_sample`).

        Args as :meth:`apply`, but ``y0`` is ``(B, D)`` and ``problem`` a
        :class:`~physnode.solver.gradients.aca_per_sample.PerSampleProblem`; ``t`` needs no
        gradient (refused by :func:`~physnode.solver.solve`).

        Returns:
            ``ys`` ``(T, B, D)``; sets ``problem.status`` (each member's status code).
        """
        raise NotImplementedError(f"grad={self.name!r} has no per-sample solve")

    def follows_closures(self, t: torch.Tensor) -> bool:
        """Whether tensors ``func`` reads from closures or globals (not in ``params``) get
        their gradients: true only where autograd records the solve itself. Where it is false,
        :func:`~physnode.solver.solve` refuses such a ``func`` with
        :class:`~physnode.errors.HiddenParameterError` instead of dropping their gradients.

        Args:
            t: the output times as given (whether ``t`` requires grad may decide it).
        """
        return False


_G = TypeVar("_G", bound=type[GradientMethod])
_REGISTRY: dict[str, type[GradientMethod]] = {}


def register_gradient(name: str) -> Callable[[_G], _G]:
    """Class decorator: make ``cls`` available as ``odeint(grad=name)``."""

    def decorate(cls: _G) -> _G:
        if not (isinstance(cls, type) and issubclass(cls, GradientMethod)):
            raise TypeError(f"@register_gradient({name!r}) needs a GradientMethod subclass")
        if name in _REGISTRY:
            raise InvalidInputError(f"a gradient method named {name!r} is registered already")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return decorate


def gradient_names() -> tuple[str, ...]:
    """The registered names, in registration order."""
    return tuple(_REGISTRY)


def get_gradient(name: str) -> GradientMethod:
    """The gradient method registered as ``name``; unknown names raise
    :class:`~physnode.errors.InvalidInputError` listing the choices."""
    try:
        cls = _REGISTRY[name]
    except (KeyError, TypeError):  # TypeError: an unhashable name
        raise InvalidInputError(
            f"unknown grad {name!r}; choose one of {list(gradient_names())}"
        ) from None
    return cls()
