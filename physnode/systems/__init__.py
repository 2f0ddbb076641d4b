"""Dynamical systems as ``torch.nn.Module`` vector fields, and a registry to build them by name.

>>> from physnode.systems import make_system
>>> pendulum = make_system("pendulum", g=9.81, length=2.0)
>>> dydt = pendulum(t, pendulum.default_y0())
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import torch

from physnode.errors import InvalidInputError
from physnode.systems.base import PhysicalParameter, System
from physnode.systems.double_pendulum import DoublePendulum
from physnode.systems.duffing import Duffing
from physnode.systems.lorenz import Lorenz
from physnode.systems.lotka_volterra import LotkaVolterra
from physnode.systems.nbody import Kepler, NBody
from physnode.systems.pendulum import Pendulum
from physnode.systems.presets import (
    PRESETS,
    VALID_PRESETS,
    ThreeBodyPreset,
    get_preset,
    random_nbody,
    random_three_body_batch,
    three_body,
)
from physnode.systems.spring_chain import SpringChain
from physnode.systems.van_der_pol import VanDerPol

__all__ = [
    "PRESETS",
    "SYSTEMS",
    "VALID_PRESETS",
    "DoublePendulum",
    "Duffing",
    "Kepler",
    "Lorenz",
    "LotkaVolterra",
    "NBody",
    "Pendulum",
    "PhysicalParameter",
    "SpringChain",
    "System",
    "SystemInfo",
    "ThreeBodyPreset",
    "VanDerPol",
    "get_preset",
    "make_system",
    "random_nbody",
    "random_three_body_batch",
    "three_body",
]


@dataclass(frozen=True)
class SystemInfo:
    """Registry entry: ``factory(**defaults)`` builds the system described by ``description``."""

    name: str
    factory: Callable[..., System]
    defaults: Mapping[str, Any]
    description: str
    positive: tuple[str, ...] = field(default=())


def _three_body_system(preset: str = "figure-eight", dim: int = 2, seed: int = 0) -> NBody:
    """The :class:`NBody` of a three-body preset; its ``default_y0()`` is the preset's start."""
    return three_body(preset, dim=dim, seed=seed)[0]


def _info(
    name: str, factory: Callable[..., System], description: str, positive: tuple[str, ...], **d: Any
) -> SystemInfo:
    return SystemInfo(name, factory, MappingProxyType(d), description, positive)


SYSTEMS: dict[str, SystemInfo] = {
    i.name: i
    for i in (
        _info(
            "n-body",
            NBody,
            "Newtonian gravity between N point masses (2-D or 3-D, optional softening).",
            ("masses", "G"),
            masses=(1.0, 1.0, 1.0),
            G=1.0,
            softening=0.0,
            dim=2,
            names=None,
        ),
        _info(
            "three-body",
            _three_body_system,
            "Three bodies from a named preset (figure-eight, pythagorean, lagrange, ...).",
            (),
            preset="figure-eight",
            dim=2,
            seed=0,
        ),
        _info(
            "kepler",
            Kepler,
            "Kepler problem: one body in a central 1/r potential (default e = 0.6, H = -1/2).",
            ("mu",),
            mu=1.0,
            eccentricity=0.6,
        ),
        _info(
            "pendulum",
            Pendulum,
            "Simple pendulum θ'' = -(g / length) sin θ.",
            ("g", "length"),
            g=9.81,
            length=1.0,
        ),
        _info(
            "double-pendulum",
            DoublePendulum,
            "Planar double pendulum, chaotic from (3π/7, 3π/4, 0, 0).",
            ("m1", "m2", "l1", "l2", "g"),
            m1=1.0,
            m2=1.0,
            l1=1.0,
            l2=1.0,
            g=9.81,
        ),
        _info(
            "lotka-volterra",
            LotkaVolterra,
            "Predator–prey model with a conserved quantity V.",
            ("alpha", "beta", "gamma", "delta"),
            alpha=1.5,
            beta=1.0,
            gamma=3.0,
            delta=1.0,
        ),
        _info(
            "lorenz",
            Lorenz,
            "Lorenz 1963 chaotic attractor.",
            ("sigma", "rho", "beta"),
            sigma=10.0,
            rho=28.0,
            beta=8.0 / 3.0,
        ),
        _info(
            "van-der-pol",
            VanDerPol,
            "Van der Pol limit-cycle oscillator (stiff for large mu).",
            ("mu",),
            mu=1.0,
        ),
        _info(
            "duffing",
            Duffing,
            "Forced, damped Duffing oscillator (chaotic double well at the defaults).",
            (),
            alpha=-1.0,
            beta=1.0,
            delta=0.3,
            gamma=0.5,
            omega=1.2,
        ),
        _info(
            "spring-chain",
            SpringChain,
            "Chain of n equal masses and springs between two fixed walls.",
            ("m", "k"),
            n_masses=5,
            m=1.0,
            k=1.0,
        ),
    )
}


def make_system(name: str, **params: Any) -> System:
    """Build the registered system ``name`` with ``params`` overriding its defaults.

    Raises:
        InvalidInputError: unknown system name, unknown parameter, or a non-positive value for a
            parameter that must be positive; the message lists the valid choices.
    """
    if name not in SYSTEMS:
        raise InvalidInputError(f"unknown system {name!r}; valid systems are {list(SYSTEMS)}.")
    info = SYSTEMS[name]
    unknown = sorted(set(params) - set(info.defaults))
    if unknown:
        raise InvalidInputError(
            f"unknown parameter(s) {unknown} for system {name!r}; "
            f"valid parameters are {list(info.defaults)}."
        )
    for key in info.positive:
        if key in params and not _all_positive(params[key]):
            raise InvalidInputError(
                f"parameter {key!r} of system {name!r} must be positive; got {params[key]!r}."
            )
    return info.factory(**{**info.defaults, **params})


def _all_positive(value: Any) -> bool:
    try:
        return bool((torch.as_tensor(value, dtype=torch.float64) > 0).all())
    except (TypeError, ValueError, RuntimeError):
        return False
