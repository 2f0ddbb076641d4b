"""Dynamical systems as ``torch.nn.Module`` vector fields, and a registry to build them by name.

>>> from physnode.systems import make_system
>>> pendulum = make_system("pendulum", g=9.81, length=2.0)
>>> dydt = pendulum(t, pendulum.default_y0())

Each system module registers its class with :func:`register_system`; importing it here is
all it takes to list it in :data:`SYSTEMS` (the import order below is the listing order).
"""

from __future__ import annotations

from physnode.systems.base import PhysicalParameter, System
from physnode.systems.registry import (
    SYSTEMS,
    RunOptions,
    RunSetup,
    SystemInfo,
    make_system,
    register_system,
    system_info,
)

# isort: off
# Registration order = the order of `physnode systems`, `--help` and "valid systems are [...]".
from physnode.systems.nbody import NBody
from physnode.systems.presets import (
    PRESETS,
    VALID_PRESETS,
    ThreeBodyPreset,
    get_preset,
    random_nbody,
    random_three_body_batch,
    three_body,
)
from physnode.systems.kepler import Kepler
from physnode.systems.pendulum import Pendulum
from physnode.systems.double_pendulum import DoublePendulum
from physnode.systems.lotka_volterra import LotkaVolterra
from physnode.systems.lorenz import Lorenz
from physnode.systems.van_der_pol import VanDerPol
from physnode.systems.duffing import Duffing
from physnode.systems.spring_chain import SpringChain
# isort: on

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
    "RunOptions",
    "RunSetup",
    "SpringChain",
    "System",
    "SystemInfo",
    "ThreeBodyPreset",
    "VanDerPol",
    "get_preset",
    "make_system",
    "random_nbody",
    "random_three_body_batch",
    "register_system",
    "system_info",
    "three_body",
]
