"""Common interface of the dynamical systems and their constrained physical parameters.

A :class:`System` is a ``torch.nn.Module`` whose ``forward(t, y)`` returns ``dy/dt``. Its physical
parameters (masses, ``G``, ``g`` ...) are :class:`PhysicalParameter` submodules: frozen by default
(the exact value is kept in a buffer) and made learnable on request with
:meth:`System.set_learnable`. A positive parameter is then stored as an unconstrained raw value
and read through ``softplus``, so it stays positive whatever the optimiser does.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.functional import softplus

from physnode.errors import InvalidInputError

if TYPE_CHECKING:
    from physnode.data import Trajectory

__all__ = ["PhysicalParameter", "System", "inverse_softplus"]


def inverse_softplus(x: Tensor) -> Tensor:
    """Inverse of ``softplus``: the raw value ``r`` with ``softplus(r) == x``, for ``x > 0``."""
    return x + torch.log(-torch.expm1(-x))


class PhysicalParameter(nn.Module):
    """One physical parameter (scalar or tensor), frozen or learnable, positive or real.

    Frozen: the exact value lives in the buffer ``value``. Learnable: the buffer is dropped and
    the ``nn.Parameter`` ``raw`` holds ``inverse_softplus(value)`` (positive) or ``value`` (real).
    Calling the module returns the current constrained value.
    """

    def __init__(
        self, name: str, value: float | Tensor, *, positive: bool = True, zero: bool = False
    ) -> None:
        super().__init__()
        tensor = torch.as_tensor(value, dtype=torch.float64).detach().clone()
        if not bool(torch.isfinite(tensor).all()):
            raise InvalidInputError(f"{name} must be finite; got {tensor.tolist()}.")
        if positive and not bool((tensor >= 0 if zero else tensor > 0).all()):
            bound = ">= 0 (0 switches its term off)" if zero else "> 0"
            raise InvalidInputError(
                f"{name} must be positive; got {tensor.tolist()}. Pass values {bound}."
            )
        self.name = name
        self.positive = positive
        self.register_buffer("value", tensor)
        self.raw: nn.Parameter | None = None

    @property
    def learnable(self) -> bool:
        """Whether the parameter is an ``nn.Parameter`` seen by optimisers."""
        return self.raw is not None

    def set_learnable(self, learnable: bool = True) -> None:
        """Switch between a frozen buffer and a learnable raw ``nn.Parameter``."""
        if learnable and self.raw is None:
            value = self.value
            if self.positive and not bool((value > 0).all()):
                # softplus⁻¹(0) = -inf: a learned parameter would never leave it
                raise InvalidInputError(
                    f"{self.name} is {value.tolist()}: a learned positive parameter needs a "
                    "start > 0; give one"
                )
            raw = inverse_softplus(value) if self.positive else value.clone()
            self.raw = nn.Parameter(raw)
            self.value = None
        elif not learnable and self.raw is not None:
            self.value = self().detach().clone()
            self.raw = None

    def forward(self) -> Tensor:
        """The constrained value (positive parameters pass through ``softplus``)."""
        if self.raw is None:
            return self.value
        return softplus(self.raw) if self.positive else self.raw

    def slope(self, like: Tensor) -> Tensor:
        """``d value / d raw`` of a learnable parameter, flat, in ``like``'s dtype and device:
        softplus' slope as torch differentiates it (the sigmoid; exactly 1 past softplus'
        linear threshold of 20) for a positive one, 1 for a real one."""
        raw = self.raw.detach().to(like).reshape(-1)
        if not self.positive:
            return torch.ones_like(raw)
        return torch.sigmoid(raw).masked_fill_(raw > 20, 1.0)

    def cast(self, like: Tensor) -> Tensor:
        """The value in ``like``'s dtype and device. A frozen value is converted once and
        cached (keyed by the buffer's identity and version, so a changed value is converted
        anew); a learnable one is converted on every call, inside the autograd graph."""
        value = self.forward()
        if value.dtype == like.dtype and value.device == like.device:
            return value
        if self.raw is not None:
            return value.to(dtype=like.dtype, device=like.device)
        key = (like.dtype, like.device, value.data_ptr(), value._version)
        cached = self.__dict__.get("_cast_cache")
        if cached is None or cached[0] != key:
            cached = (key, value.to(dtype=like.dtype, device=like.device))
            self.__dict__["_cast_cache"] = cached
        return cached[1]


class System(nn.Module):
    """Base class: an ODE ``dy/dt = f(t, y)`` with named, optionally learnable parameters.

    Subclasses set ``state_names`` and ``second_order`` (``True`` when the state is positions
    then velocities and :meth:`acceleration` is provided), declare ``positive_parameters``,
    register their parameters with :meth:`add_parameter` and implement :meth:`forward` and
    :meth:`default_y0`. ``separable``
    is ``True`` when :meth:`acceleration` does not depend on the velocities (a separable
    Hamiltonian ``T(p) + V(q, t)``), which is what the symplectic integrators need.

    Every method takes a state ``y`` of shape ``(..., D)`` with any leading batch dimensions,
    float32 or float64, on any device; parameters are cast to ``y``'s dtype and device.
    """

    state_names: list[str]
    second_order: bool = False
    #: the physical parameters that must be > 0, declared once: :meth:`add_parameter`
    #: validates them and learns them through ``softplus``, and ``make_system`` checks them
    #: before building. ``None`` (undeclared): every parameter is positive unless
    #: ``add_parameter(..., positive=False)``.
    positive_parameters: ClassVar[tuple[str, ...] | None] = None
    #: of the positive parameters, those that may also be exactly 0 when given (frozen): a
    #: rate of 0 switches its term off (known physics without it, as in a universal
    #: differential equation); learned, they start from a value > 0
    zero_allowed: ClassVar[tuple[str, ...]] = ()
    #: the state is particles (positions then velocities of bodies with masses); see
    #: :meth:`to_trajectory`
    particles: ClassVar[bool] = False
    #: ``forward`` ignores ``t`` and accepts any leading batch dimensions; the ACA backward
    #: pass may then replay all steps as one batch (see physnode.solver.gradients.aca)
    autonomous: bool = False

    def __init__(self) -> None:
        super().__init__()
        self.params = nn.ModuleDict()

    # -- parameters -------------------------------------------------------------------------
    def add_parameter(
        self, name: str, value: float | Tensor, *, positive: bool | None = None
    ) -> None:
        """Register a physical parameter (frozen); ``positive`` ones are validated > 0.

        ``positive=None`` reads the class's ``positive_parameters``.
        """
        if positive is None:
            declared = type(self).positive_parameters
            positive = True if declared is None else name in declared
        zero = name in type(self).zero_allowed
        self.params[name] = PhysicalParameter(name, value, positive=positive, zero=zero)

    @property
    def parameter_names(self) -> tuple[str, ...]:
        """Names of the physical parameters, in registration order."""
        return tuple(self.params.keys())

    def param(self, name: str, like: Tensor | None = None) -> Tensor:
        """Current value of parameter ``name``, cast to ``like``'s dtype and device if given."""
        parameter = self.params[name]
        if like is None:
            return parameter.forward()  # .forward(): no hooks to run, less overhead
        return parameter.cast(like)

    def names_of(self, tensors: Iterable[Tensor]) -> list[str] | None:
        """The parameter name of each tensor, each one a learnable parameter's raw
        ``nn.Parameter`` (matched by identity); ``None`` if any is not."""
        owners = {id(p.raw): name for name, p in self.params.items() if p.raw is not None}
        names = [owners.get(id(t)) for t in tensors]
        return None if None in names else names

    def physical_parameters(self) -> dict[str, Tensor]:
        """Current (constrained) values of all physical parameters, keyed by name."""
        return {name: module() for name, module in self.params.items()}

    def set_learnable(self, names: str | Iterable[str], learnable: bool = True) -> System:
        """Make the named parameters learnable (or frozen again with ``learnable=False``).

        Positive parameters are then optimised through ``softplus`` and stay positive. Returns
        ``self``. Raises :class:`InvalidInputError` for names that are not parameters.
        """
        names = [names] if isinstance(names, str) else list(names)
        unknown = [n for n in names if n not in self.params]
        if unknown:
            raise InvalidInputError(
                f"unknown parameter(s) {unknown} for {type(self).__name__}; "
                f"valid parameters are {list(self.parameter_names)}."
            )
        for name in names:
            self.params[name].set_learnable(learnable)
        return self

    def _reference(self) -> Tensor:
        """A tensor on the system's device (its first parameter), for creating states."""
        return next(iter(self.params.values()))()

    # -- dynamics ---------------------------------------------------------------------------
    @property
    def separable(self) -> bool:
        """Whether :meth:`acceleration` ignores the velocities (symplectic integrators apply)."""
        return False

    @property
    def dimension(self) -> int:
        """Length ``D`` of the state vector."""
        return len(self.state_names)

    def forward(self, t: Tensor, y: Tensor) -> Tensor:  # pragma: no cover - abstract
        """``dy/dt`` of shape ``y.shape``; ``t`` a 0-dim tensor (ignored if autonomous)."""
        raise NotImplementedError

    def acceleration(self, t: Tensor, q: Tensor, v: Tensor) -> Tensor:
        """Second-order systems: ``d²q/dt²`` of shape ``q.shape`` for positions ``q`` and
        velocities ``v`` of shape ``(..., D // 2)``."""
        raise NotImplementedError(f"{type(self).__name__} is not a second-order system.")

    def _second_order_forward(self, t: Tensor, y: Tensor) -> Tensor:
        """``forward`` of a second-order system: ``(v, acceleration(t, q, v))``."""
        q, v = y.chunk(2, dim=-1)
        return torch.cat([v, self.acceleration(t, q, v)], dim=-1)

    def default_y0(self, dtype: torch.dtype = torch.float64) -> Tensor:  # pragma: no cover
        """A standard initial state of shape ``(D,)`` on the system's device."""
        raise NotImplementedError

    def invariants(self, y: Tensor) -> dict[str, Tensor]:
        """Conserved quantities, each of shape ``y.shape[:-1]``; empty if there are none."""
        return {}

    # -- data -------------------------------------------------------------------------------
    def run_parameters(self) -> dict[str, Any]:
        """What a trajectory file records about this system: each physical parameter, a
        ``float`` when scalar, else a NumPy array."""
        out: dict[str, Any] = {}
        for key, value in self.physical_parameters().items():
            arr = value.detach().cpu().numpy()
            out[key] = float(arr) if arr.ndim == 0 else arr
        return out

    def to_trajectory(
        self,
        times: np.ndarray,
        ys: np.ndarray,
        *,
        energy: np.ndarray | None = None,
        parameters: Mapping[str, Any] | None = None,
    ) -> Trajectory:
        """A solved series as a :class:`~physnode.data.Trajectory`: here the flat state with
        ``state_names`` (particle systems split it into positions and velocities).

        Args:
            times: shape ``(T,)``. ys: shape ``(T, D)`` or ``(T, B, D)`` (a batch), NumPy.
            energy: shape ``(T,)`` or ``(T, B)``, or None. parameters: stored with the data.
        """
        from physnode.data import Trajectory  # physnode.systems does not need h5py

        return Trajectory(
            times,
            state=ys,
            state_names=tuple(self.state_names),
            energy=energy,
            parameters={} if parameters is None else dict(parameters),
        )

    def extra_repr(self) -> str:
        values = {k: v.detach().cpu().tolist() for k, v in self.physical_parameters().items()}
        return ", ".join(f"{k}={v}" for k, v in values.items())
