"""The registry of systems: filled by :func:`register_system`, read by everything that lists them.

A system is registered once, where it is defined::

    @register_system("pendulum", description="Simple pendulum θ'' = -(g / length) sin θ.")
    class Pendulum(System):
        positive_parameters = ("g", "length")

        def __init__(self, g: float = 9.81, length: float = 1.0) -> None: ...

Its defaults are the ``__init__`` signature's, its positivity rules the class's
``positive_parameters``. :data:`SYSTEMS`, :func:`make_system`, ``physnode systems`` and the
CLI's choices are all derived from the registry. Registration order is listing order; the
package's ``__init__`` imports the system modules in that order.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, TypeVar

import torch
from torch import Tensor

from physnode.errors import InvalidInputError
from physnode.systems.base import System

if TYPE_CHECKING:
    from physnode.data.initial import InitialConditions

__all__ = [
    "SYSTEMS",
    "RunOptions",
    "RunSetup",
    "SetupHook",
    "SystemInfo",
    "make_system",
    "register_system",
    "system_info",
]

F = TypeVar("F", bound=Callable[..., System])


@dataclass(frozen=True)
class RunOptions:
    """The run options of :func:`physnode.simulate.simulate` that a system's setup may read.

    ``preset`` and ``batch``: three-body; ``bodies``: n-body; ``dim`` and ``masses`` (one per
    body, replacing the start's): particle systems; ``seed``: random starts. ``simulate``
    refuses an option changed for a system whose ``options`` do not list it.

    ``initial``: particle systems: a start read from a file (positions, velocities, maybe
    masses and a start time) in place of the preset's or the random one; ``simulate`` refuses
    it for other systems and refuses ``preset``, ``dim``, ``bodies`` and ``batch`` beside it.
    """

    preset: str = "figure-eight"
    dim: int = 2
    seed: int = 0
    bodies: int = 5
    batch: int | None = None
    masses: tuple[float, ...] | None = None
    initial: InitialConditions | None = None


@dataclass(frozen=True)
class RunSetup:
    """The start of a simulation: what :meth:`SystemInfo.setup` returns.

    Attributes:
        system: the vector field to integrate.
        y0: initial state, shape ``(D,)`` (a batch: ``(B, D)``), float64.
        period: the orbit's period in time units, or ``None`` when it is not periodic.
        parameters: what to record in the trajectory file's parameters (``system`` first).
        default_t_end: run length when neither ``periods`` nor ``t_end`` is given and there
            is no period.
        t0: the time of ``y0`` (0, or the last time of the run an initial condition continues);
            the output times are ``t0 .. t0 + run length``.
    """

    system: System
    y0: Tensor
    period: float | None = None
    parameters: Mapping[str, Any] = field(default_factory=dict)
    default_t_end: float = 10.0
    t0: float = 0.0


#: ``hook(info, options, params) -> RunSetup``; a hook checks ``params`` with
#: :meth:`SystemInfo.check_settable` before building anything.
SetupHook = Callable[["SystemInfo", RunOptions, dict[str, float]], RunSetup]


@dataclass(frozen=True)
class SystemInfo:
    """Registry entry: ``factory(**defaults)`` builds the system described by ``description``.

    Attributes:
        name: registry name (``"pendulum"``).
        factory: the class (or function) that builds it.
        defaults: the factory's keyword defaults, in signature order (read-only).
        description: one line for ``physnode systems``.
        positive: parameters that :func:`make_system` checks are > 0.
        zero_allowed: of those, the ones that may also be 0 (the class's ``zero_allowed``).
        settable: physical parameters a simulation may set (``simulate(params=)``,
            ``--param``); default: every name in ``defaults``.
        options: the :class:`RunOptions` fields its setup reads (``preset``, ``dim`` ...).
        particles: whether its trajectories are particles (positions, velocities, masses).
        setup_hook: builds a simulation's start; ``None``: :func:`default_setup`.
    """

    name: str
    factory: Callable[..., System]
    defaults: Mapping[str, Any]
    description: str
    positive: tuple[str, ...] = ()
    zero_allowed: tuple[str, ...] = ()
    settable: tuple[str, ...] = ()
    options: tuple[str, ...] = ()
    particles: bool = False
    setup_hook: SetupHook | None = None

    def setup(
        self, options: RunOptions | None = None, params: Mapping[str, float] | None = None
    ) -> RunSetup:
        """The start of a simulation with ``options`` and ``params`` overriding the defaults.

        Raises:
            InvalidInputError: a parameter not in :attr:`settable`, a bad value or option.
        """
        hook = self.setup_hook or default_setup
        return hook(self, options or RunOptions(), dict(params or {}))

    def check_settable(self, params: Mapping[str, Any]) -> None:
        """InvalidInputError listing :attr:`settable` if ``params`` has any other name."""
        unknown = sorted(set(params) - set(self.settable))
        if unknown:
            raise InvalidInputError(
                f"unknown parameter(s) {unknown} for system {self.name!r}; "
                f"valid parameters are {list(self.settable)}."
            )


#: name -> :class:`SystemInfo`, in registration order (filled by :func:`register_system`).
SYSTEMS: dict[str, SystemInfo] = {}


def register_system(
    name: str,
    *,
    description: str,
    hidden: tuple[str, ...] = (),
    settable: tuple[str, ...] | None = None,
    options: tuple[str, ...] = (),
    particles: bool | None = None,
    setup: SetupHook | None = None,
) -> Callable[[F], F]:
    """Class (or factory function) decorator: register it in :data:`SYSTEMS` as ``name``.

    Args:
        name: the registry name; registering a name twice raises InvalidInputError.
        description: one line for ``physnode systems``.
        hidden: keyword arguments of the factory left out of ``defaults`` (construction
            details such as ``NBody``'s ``default_state``).
        settable: what a simulation may set (default: every name in ``defaults``).
        options: the :class:`RunOptions` fields ``setup`` reads.
        particles: default: the class's ``particles`` attribute (``False`` for a function).
        setup: the simulation setup hook (default :func:`default_setup`).

    Defaults come from the factory's signature; every argument not ``hidden`` needs one.
    Positivity comes from the class's ``positive_parameters``.
    """

    def register(factory: F) -> F:
        if name in SYSTEMS:
            raise InvalidInputError(f"system {name!r} is registered already.")
        defaults = _signature_defaults(factory, name, hidden)
        SYSTEMS[name] = SystemInfo(
            name=name,
            factory=factory,
            defaults=MappingProxyType(defaults),
            description=description,
            positive=tuple(getattr(factory, "positive_parameters", None) or ()),
            zero_allowed=tuple(getattr(factory, "zero_allowed", None) or ()),
            settable=tuple(defaults) if settable is None else tuple(settable),
            options=tuple(options),
            particles=bool(
                getattr(factory, "particles", False) if particles is None else particles
            ),
            setup_hook=setup,
        )
        return factory

    return register


def _signature_defaults(
    factory: Callable[..., Any], name: str, hidden: tuple[str, ...]
) -> dict[str, Any]:
    """The keyword defaults of ``factory`` (a class: its ``__init__``), in signature order."""
    out: dict[str, Any] = {}
    for p in inspect.signature(factory).parameters.values():
        if p.name in hidden or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        if p.default is inspect.Parameter.empty:
            raise InvalidInputError(
                f"system {name!r}: argument {p.name!r} of {factory.__name__} needs a default "
                "(or list it in hidden=)."
            )
        out[p.name] = p.default
    return out


def make_system(name: str, **params: Any) -> System:
    """Build the registered system ``name`` with ``params`` overriding its defaults.

    Raises:
        InvalidInputError: unknown system name, unknown parameter, or a non-positive value for a
            parameter that must be positive; the message lists the valid choices.
    """
    info = system_info(name)
    unknown = sorted(set(params) - set(info.defaults))
    if unknown:
        raise InvalidInputError(
            f"unknown parameter(s) {unknown} for system {name!r}; "
            f"valid parameters are {list(info.defaults)}."
        )
    for key in info.positive:
        zero = key in info.zero_allowed
        if key in params and not _all_positive(params[key], zero=zero):
            also = " or 0" if zero else ""
            raise InvalidInputError(
                f"parameter {key!r} of system {name!r} must be positive{also}; got {params[key]!r}."
            )
    return info.factory(**{**info.defaults, **params})


def system_info(name: str) -> SystemInfo:
    """The registry entry of ``name``; InvalidInputError listing the valid names otherwise."""
    if name not in SYSTEMS:
        raise InvalidInputError(f"unknown system {name!r}; valid systems are {list(SYSTEMS)}.")
    return SYSTEMS[name]


def default_setup(info: SystemInfo, options: RunOptions, params: dict[str, float]) -> RunSetup:
    """Setup of a system without run options: ``make_system(name, **params)`` from its
    ``default_y0()``, no period, its :meth:`~System.run_parameters` recorded."""
    if options.batch is not None:
        batched = [n for n, i in SYSTEMS.items() if "batch" in i.options]
        raise InvalidInputError(f"batch applies to the {', '.join(batched)} system only.")
    info.check_settable(params)
    system = make_system(info.name, **params)
    return RunSetup(
        system, system.default_y0(), parameters={"system": info.name, **system.run_parameters()}
    )


def _all_positive(value: Any, *, zero: bool = False) -> bool:
    try:
        tensor = torch.as_tensor(value, dtype=torch.float64)
        return bool((tensor >= 0 if zero else tensor > 0).all())
    except (TypeError, ValueError, RuntimeError):
        return False
