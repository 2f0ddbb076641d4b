"""Every choice and default the CLI offers, read from the library's registries and signatures.

Nothing here is a literal list or number: a system, preset, method or model added to the library
shows up in ``--help`` and is accepted on the command line with no CLI change. The enums are
``str`` enums, so typer lists their values in ``--help``; ``member.value`` is the library's name.
"""

from __future__ import annotations

import enum
import inspect
from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType
from typing import Any

from physnode.fit import Fitter
from physnode.simulate import ALL_METHODS, simulate
from physnode.solver.options import SolverOptions
from physnode.systems import SYSTEMS, VALID_PRESETS


def choice_enum(name: str, values: Iterable[str]) -> type[enum.Enum]:
    """A ``str`` enum whose members are ``values`` (member name = value = the library's name)."""
    return enum.Enum(name, {v: v for v in values}, type=str, module=__name__)  # type: ignore[return-value]


def signature_defaults(func: Callable[..., Any]) -> Mapping[str, Any]:
    """``{parameter: default}`` of ``func``'s parameters that have a default."""
    params = inspect.signature(func).parameters.values()
    return MappingProxyType({p.name: p.default for p in params if p.default is not p.empty})


System = choice_enum("System", SYSTEMS)
Preset = choice_enum("Preset", VALID_PRESETS)
IntegrationMethod = choice_enum("IntegrationMethod", ALL_METHODS)  # what `simulate` accepts
Steps = choice_enum("Steps", SolverOptions.CONSTRAINTS["steps"].choices)
# what the Fitter accepts, read from its declared constraints
SolverMethod = choice_enum("SolverMethod", Fitter.CONSTRAINTS["method"].choices)
GradMethod = choice_enum("GradMethod", Fitter.CONSTRAINTS["grad"].choices)
FitModel = choice_enum("FitModel", Fitter.CONSTRAINTS["model"].choices)
Schedule = choice_enum("Schedule", Fitter.CONSTRAINTS["schedule"].choices)
Correction = choice_enum("Correction", Fitter.CONSTRAINTS["correction"].choices)

#: Defaults of :func:`physnode.simulate.simulate` and of :class:`physnode.fit.Fitter`.
SIMULATE_DEFAULTS = signature_defaults(simulate)
FIT_DEFAULTS = signature_defaults(Fitter.__init__)


def plain(value: Any) -> Any:
    """A choice enum member -> its ``str`` value (what the library and files expect)."""
    return value.value if isinstance(value, enum.Enum) else value
