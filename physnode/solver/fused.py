"""A compiled trial step for small solves without gradients: ``options={"compile": True}``.

For a small state (one three-body system: 12 numbers) an eager DOP853 trial step is ~250 tensor
operations of ~1–2 µs each, almost all of it dispatch overhead. Here the whole trial step — every
stage, the new state and the embedded error ratio — is traced once with ``make_fx`` and compiled
by TorchInductor into one C++ kernel, called once per trial step; the adaptive loop, the
controller (host floats) and dense output stay those of :mod:`physnode.solver.integrate`, so the
method and the accepted steps are the same as the eager path's (results equal to rounding: the
kernel may sum in another order).

Measured on the 2-core CPU (DOP853 at 1e-12, one figure-eight state, one thread, 100 periods,
``benchmarks/fused_step.py``): ~50 µs per accepted step against ~780 µs eager and ~205 µs for
scipy's DOP853, after a first-call compile of ~24 s (cold TorchInductor cache; ~11 s with its
on-disk cache warm). It pays for small states and long or repeated runs only: the compile is
the first call's cost (kernels are then cached per ``func``), and large batched states were not
measured (their eager kernels are not overhead-bound).

What it traces: an ``nn.Module`` ``func`` is called through ``torch.func.functional_call`` with
its parameters and buffers as inputs of the compiled step, so values changed between solves
are seen. A plain function's closure tensors are captured when the step is compiled. Python
control flow in ``func`` is traced for the example state: a ``func`` whose branches depend on
tensor values cannot be compiled faithfully and must not use this option.
"""

from __future__ import annotations

import math
import time
import warnings
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from physnode.errors import CompileFallbackWarning, InvalidInputError
from physnode.solver.stepper import RHS
from physnode.solver.tableaus import ButcherTableau

__all__ = ["CompiledStep", "compiled_step", "refuse_compile"]

#: compiled kernels per function (weakly held) and per (method, shape, dtype, device,
#: tolerances, parameter layout): a second solve with the same settings compiles nothing
_KERNELS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class _Kernels:
    """The compiled functions of one method for one state layout (each takes one list)."""

    #: ``[th, y, f0, *tensors] -> (y1, ks, ratio)`` with ``th = (t, h)``
    step: Callable
    #: ``[th, y, ks, *tensors] -> ks`` with the dense output's extra stages (``None``: none)
    extra: Callable | None
    #: ``[thq, y, ks] -> y(t + θh)`` with ``thq = (t, h, θ)``
    interp: Callable
    #: evaluations of ``func`` in one trial step and in the extra stages
    n_step_evals: int
    n_extra_evals: int


@dataclass
class CompiledStep:
    """The compiled trial step and dense output of ``tab`` for states of one shape, dtype
    and device (times ``t``, ``h``, ``θ`` are float64 host floats).

    ``step(t, h, y, f0)`` (``f0 = f(t, y)``) gives ``(y1, ks, ratio)``: the new state, the
    stages as one tensor of shape ``(n_stages, *y.shape)`` (FSAL: the last is ``f(t + h, y1)``)
    and the error ratio as a float (NaN when the estimate is not finite): one host
    synchronisation. :meth:`extra_stages` and :meth:`dense_output` mirror the functions of
    :mod:`physnode.solver.stepper` of the same names.
    """

    kernels: _Kernels
    #: the tensors passed after the state: the module's parameters and buffers
    tensors: list[torch.Tensor]
    #: seconds this solve spent compiling (0 when the kernels were cached)
    compile_seconds: float

    def __post_init__(self) -> None:
        # times reach the kernels through reused float64 buffers: writing floats into their
        # NumPy views costs ~0.1 µs, a fresh torch.tensor((t, h)) ~3 µs
        self._th = torch.zeros(2, dtype=torch.float64)
        self._thq = torch.zeros(3, dtype=torch.float64)
        self._th_host, self._thq_host = self._th.numpy(), self._thq.numpy()

    @property
    def n_evals(self) -> int:
        """Evaluations of ``func`` in one trial step."""
        return self.kernels.n_step_evals

    @property
    def n_extra_evals(self) -> int:
        """Evaluations of ``func`` in :meth:`extra_stages`."""
        return self.kernels.n_extra_evals

    def _times(self, y: torch.Tensor, t: float, h: float) -> torch.Tensor:
        host = self._th_host
        host[0], host[1] = t, h
        return self._th if y.is_cpu else self._th.to(y.device)

    def __call__(
        self, t: float, h: float, y: torch.Tensor, f0: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, float]:
        y1, ks, ratio = self.kernels.step([self._times(y, t, h), y, f0, *self.tensors])
        return y1, ks, float(ratio)

    def extra_stages(self, t: float, h: float, y: torch.Tensor, ks: torch.Tensor) -> torch.Tensor:
        """``ks`` with the dense output's extra stages appended (DOP853), shape
        ``(n_stages + n_extra, *y.shape)``."""
        if self.kernels.extra is None:
            return ks
        return self.kernels.extra([self._times(y, t, h), y, ks, *self.tensors])[0]

    def dense_output(
        self, t: float, h: float, theta: float, y: torch.Tensor, ks: torch.Tensor
    ) -> torch.Tensor:
        """``y(t + θh)`` from the stages ``ks`` (extra stages included), ``y``'s shape."""
        host = self._thq_host
        host[0], host[1], host[2] = t, h, theta
        thq = self._thq if y.is_cpu else self._thq.to(y.device)
        return self.kernels.interp([thq, y, ks])[0]


def refuse_compile(options) -> None:
    """:class:`InvalidInputError` if ``options.compile`` is set for a solve with gradients
    (the compiled step is traced without autograd)."""
    if options.compile:
        raise InvalidInputError(
            "options['compile'] applies to solves without gradients only (the compiled step "
            "carries no autograd graph); solve under torch.no_grad() or with inputs that need "
            "no gradient, or drop the option"
        )


def compiled_step(
    func: Callable,
    tab: ButcherTableau,
    y: torch.Tensor,
    f0: torch.Tensor,
    rtol: float,
    atol: float,
) -> CompiledStep | None:
    """The compiled trial step for ``func`` and ``tab`` at states like ``y`` (compiled on first
    use, then cached per function), or ``None`` with one :class:`CompileFallbackWarning` when
    it cannot be traced or compiled (the caller then steps eagerly)."""
    names, tensors = module_state(func)
    key = (tab.name, float(rtol), float(atol), layout_key(y, names, tensors))
    found = cached_kernels(
        func, key, lambda: _compile_all(func, names, tab, y, f0, tensors, rtol, atol), tab.name
    )
    if found is None:
        return None
    kernels, seconds = found
    return CompiledStep(kernels, tensors, seconds)


def layout_key(y: torch.Tensor, names: list[str], tensors: list[torch.Tensor]) -> tuple:
    """What a compiled kernel is specialised to: the state's and the tensors' layouts."""
    return (
        tuple(y.shape), y.dtype, y.device,
        tuple((n, tuple(x.shape), x.dtype, x.device) for n, x in zip(names, tensors, strict=True)),
    )  # fmt: skip


def cached_kernels(owner: Callable, key: tuple, build: Callable, what: str):
    """``(kernels, seconds)``: ``owner``'s kernels for ``key``, built by ``build()`` on first
    use (``seconds``: the time it took, 0 when cached), or ``None`` after one
    :class:`CompileFallbackWarning` when ``build`` fails (no compiler, untraceable code)."""
    per_owner = _kernels_of(owner)
    if per_owner is not None and key in per_owner:
        found = per_owner[key]  # None: this build failed before and was warned about
        return None if found is None else (found, 0.0)
    start = time.perf_counter()
    try:
        kernels = build()
    except Exception as exc:  # any tracing or compiler failure: fall back, said once
        first = str(exc).splitlines()[0] if str(exc) else ""
        warnings.warn(
            f"options['compile']: could not compile the {what} step ({type(exc).__name__}: "
            f"{first}); stepping eagerly instead (same results, slower)",
            CompileFallbackWarning,
            stacklevel=5,
        )
        if per_owner is not None:
            per_owner[key] = None
        return None
    if per_owner is not None:
        per_owner[key] = kernels
    return kernels, time.perf_counter() - start


def _kernels_of(func: Callable) -> dict | None:
    """The cache entry of ``func`` (``None``: ``func`` cannot be weakly referenced)."""
    try:
        return _KERNELS.setdefault(func, {})
    except TypeError:
        return None


def module_state(func: Callable) -> tuple[list[str], list[torch.Tensor]]:
    """Names and detached values of an ``nn.Module``'s parameters and buffers (else none)."""
    if not isinstance(func, nn.Module):
        return [], []
    named = [*func.named_parameters(), *func.named_buffers()]
    return [n for n, _ in named], [x.detach() for _, x in named]


def _compile_all(
    func: Callable,
    names: list[str],
    tab: ButcherTableau,
    y: torch.Tensor,
    f0: torch.Tensor,
    tensors: list[torch.Tensor],
    rtol: float,
    atol: float,
) -> _Kernels:
    """Trace and compile the trial step, the extra stages and the dense output of ``tab``."""
    y, f0 = y.detach(), f0.detach()
    th = torch.tensor((0.0, 1e-3), dtype=torch.float64, device=y.device)
    thq = torch.tensor((0.0, 1e-3, 0.5), dtype=torch.float64, device=y.device)
    step_evals, extra_evals = [0], [0]
    step = compile_graph(_step_function(func, names, tab, y, rtol, atol, step_evals),
                    [th, y, f0, *tensors])  # fmt: skip
    ks = torch.stack([f0] * tab.n_stages)
    extra = None
    if tab.extra_c:
        extra = compile_graph(
            _extra_function(func, names, tab, y, extra_evals), [th, y, ks, *tensors]
        )
        ks = torch.cat([ks, torch.stack([f0] * len(tab.extra_c))])
    interp = compile_graph(_interp_function(tab), [thq, y, ks])
    return _Kernels(step, extra, interp, step_evals[0], extra_evals[0])


def compile_graph(fn: Callable, example: list[torch.Tensor]) -> Callable:
    """``fn`` traced at ``example`` and compiled by TorchInductor: a callable on one list."""
    import torch._inductor.config as inductor_config
    from torch._inductor.compile_fx import compile_fx_inner
    from torch._inductor.decomposition import select_decomp_table
    from torch.fx.experimental.proxy_tensor import make_fx

    with torch.no_grad():
        # functionalised: in-place operations in func (NBody's pow_) would otherwise stay
        # as separate kernels between the fused ones
        pure = torch.func.functionalize(fn, remove="mutations")
        graph = make_fx(pure, decomposition_table=select_decomp_table())(*example)
        # pointwise concatenation: ConcatKernel would allocate an aliasing buffer per stage,
        # which costs more than the whole fused kernel for a small state
        with inductor_config.patch(force_pointwise_cat=True):
            compiled = compile_fx_inner(graph, example)
    # the generated module's own call, without the per-call bookkeeping of its wrapper
    return getattr(compiled, "current_callable", None) or compiled


def _vector_field(func: Callable, names: list[str], y_like: torch.Tensor, counter: list[int]):
    """``bind(tensors) -> rhs(t, y)``: ``func`` as the traced steps call it, a module through
    ``functional_call`` with ``tensors`` as its parameters and buffers; each call counted."""

    def count() -> None:
        counter[0] += 1

    def bind(tensors: Sequence[torch.Tensor]) -> RHS:
        call = func
        if isinstance(func, nn.Module):
            state = dict(zip(names, tensors, strict=True))

            def call(ti, yi):
                return torch.func.functional_call(func, state, (ti, yi))

        return RHS(call, y_like, count)  # its shape/dtype/device checks run once, when traced

    return bind


def _step_function(
    func: Callable,
    names: list[str],
    tab: ButcherTableau,
    y_like: torch.Tensor,
    rtol: float,
    atol: float,
    counter: list[int],
) -> Callable:
    """``step(th, y, f0, *tensors) -> (y1, ks, ratio)`` in plain tensor operations, the same
    arithmetic as :func:`~physnode.solver.stepper.stages` and
    :func:`~physnode.solver.stepper.error_ratio` (``counter[0]``: evaluations traced)."""
    bind = _vector_field(func, names, y_like, counter)

    def step(th, y, f0, *tensors):
        rhs, t, h = bind(tensors), th[0], th[1]
        ks = [f0]
        y1 = None
        for i in range(1, tab.n_stages):
            yi = _lincomb(y, h, tab.a[i], ks)
            if tab.fsal and i == tab.n_stages - 1:
                y1 = yi
            ks.append(rhs(t + tab.c[i] * h, yi))
        if y1 is None:
            y1 = _lincomb(y, h, tab.b, ks)
        return y1, torch.stack(ks), _ratio(tab, h, ks, y, y1, rtol, atol)

    return step


def _extra_function(
    func: Callable, names: list[str], tab: ButcherTableau, y_like: torch.Tensor, counter
) -> Callable:
    """``extra(th, y, ks, *tensors) -> (ks,)`` extended by the dense output's extra stages,
    as :func:`~physnode.solver.stepper.extra_stages`."""
    bind = _vector_field(func, names, y_like, counter)

    def extra(th, y, ks, *tensors):
        rhs, t, h = bind(tensors), th[0], th[1]
        out = list(ks.unbind(0))
        for c, a in zip(tab.extra_c, tab.extra_a, strict=True):
            out.append(rhs(t + c * h, _lincomb(y, h, a, out)))
        return (torch.stack(out),)

    return extra


def _interp_function(tab: ButcherTableau) -> Callable:
    """``interp(thq, y, ks) -> (y(t + θh),)`` as :func:`~physnode.solver.stepper.dense_output`:
    the weights by the same Horner scheme, the terms added one by one (a zero weight adds
    an exact zero, where the eager code skips it)."""

    def interp(thq, y, ks):
        h, theta = thq[1], thq[2]
        weights = tab.dense_weights(theta)
        return (_lincomb_tensor(y, h, weights, ks.unbind(0)),)

    return interp


def _lincomb_tensor(y, h, weights: torch.Tensor, ks) -> torch.Tensor:
    """``y + Σ (w_i h) k_i`` term by term for tensor weights."""
    out = y
    for i, k in enumerate(ks):
        out = out + (weights[i] * h).to(k.dtype) * k
    return out


def _lincomb(y: torch.Tensor, h: torch.Tensor, coeffs: Sequence[float], ks) -> torch.Tensor:
    """``y + Σ (c_i h) k_i`` term by term, as the eager :func:`~physnode.solver.stepper.lincomb`."""
    out = y
    for c, k in zip(coeffs, ks, strict=False):
        if c != 0.0:
            out = out + (c * h) * k
    return out


def _ratio(tab: ButcherTableau, h, ks, y0, y1, rtol: float, atol: float) -> torch.Tensor:
    """The error ratio of :func:`~physnode.solver.stepper.error_ratio` as a 0-dim float64
    tensor, NaN when an estimate is not finite."""
    scale = torch.maximum(y0.abs(), y1.abs()) * rtol + atol
    sums = []
    for row in tab.error_rows:
        est = sum(c * k for c, k in zip(row, ks, strict=False) if c != 0.0)
        sums.append((est / scale).square().sum().to(torch.float64) * (h * h))
    n = y0.numel()
    finite = torch.stack([torch.isfinite(s) for s in sums]).all()
    if len(sums) == 1:
        ratio = (sums[0] / n).sqrt()
    else:
        s5, s3 = sums
        denom = (s5 + 0.01 * s3) * n
        ratio = torch.where(denom > 0, s5 / denom.clamp_min(1e-300).sqrt(), torch.zeros_like(s5))
    return torch.where(finite, ratio, math.nan).to(torch.float64)
