"""Tensors a vector field reads that the gradient methods were not told about.

``aca`` and ``adjoint`` (and autograd through the solve when ``t`` needs a gradient) wrap the
solve in an ``autograd.Function`` whose inputs are ``t``, ``y0`` and the declared parameters: a
tensor ``func`` reads from a closure or a global would get no gradient from them, silently. One
evaluation of ``func`` under autograd shows every leaf tensor the derivative depends on; a leaf
that is reached other than through a declared tensor is *hidden*.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from physnode.errors import HiddenParameterError
from physnode.solver.stepper import RHS


def hidden_leaves(
    rhs: RHS, t0: float | torch.Tensor, y0: torch.Tensor, declared: Sequence[torch.Tensor]
) -> list[torch.Tensor]:
    """Leaf tensors that require grad, that ``rhs(t0, y0)`` depends on other than through
    ``declared`` (the parameters that require grad), in the order first met.

    ``y0`` is detached for the evaluation, so a dependence on ``y0`` through ``func``'s own
    closure is reported too (it would be missed just the same). Costs one evaluation.
    """
    with torch.enable_grad():
        out = rhs(t0, y0.detach())
    if out.grad_fn is None:
        return []
    declared_ids = {id(p) for p in declared}
    stops = {p.grad_fn for p in declared if p.grad_fn is not None}
    hidden: list[torch.Tensor] = []
    seen: set = set()
    stack = [out.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen or node in stops:
            continue
        seen.add(node)
        leaf = getattr(node, "variable", None)  # AccumulateGrad: the leaf it feeds
        if leaf is not None:
            if id(leaf) not in declared_ids:
                hidden.append(leaf)
            continue
        stack.extend(fn for fn, _ in node.next_functions)
    return hidden


def refuse_hidden(hidden: Sequence[torch.Tensor], grad: str) -> None:
    """:class:`HiddenParameterError` naming the hidden leaves and what to do about them."""
    shapes = ", ".join(str(tuple(x.shape)) for x in hidden[:5])
    more = f" and {len(hidden) - 5} more" if len(hidden) > 5 else ""
    raise HiddenParameterError(
        f"func reads {len(hidden)} tensor(s) that require grad (shapes {shapes}{more}) but are "
        f"neither parameters of the module nor in params=; grad={grad!r} would return no "
        "gradient for them. Pass the tensors func reads with params=[...] (a computed tensor "
        "such as k2 = 2 * k may be passed as it is), make them nn.Parameters of the module, "
        "or use grad='backprop'"
    )
