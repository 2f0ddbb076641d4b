"""Constraints on settings, declared once and read everywhere.

A setting's constraint gives its check and its error message in the library (``Fitter``,
``SolverOptions``, ``simulate``) and its choices in the CLI (``--help`` lists them). In the spirit
of scikit-learn's ``StrOptions``/``Interval``.

>>> Interval(float, 0, None, closed="neither").check("lr", 0.05)
0.05
>>> Options(("i", "pi")).check("controller", "pid")
Traceback (most recent call last):
    ...
physnode.errors.InvalidInputError: controller must be one of ['i', 'pi']; got 'pid'
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from physnode.errors import InvalidInputError

__all__ = ["AnyOf", "Boolean", "Constraint", "Interval", "Optional", "Options", "validate"]


class Constraint:
    """What a setting may be. ``check(name, value)`` returns the value or raises
    :class:`~physnode.errors.InvalidInputError` saying what is allowed."""

    def describe(self) -> str:
        raise NotImplementedError

    def accepts(self, value: Any) -> bool:
        raise NotImplementedError

    def check(self, name: str, value: Any) -> Any:
        if not self.accepts(value):
            raise InvalidInputError(f"{name} must be {self.describe()}; got {value!r}")
        return value


@dataclass(frozen=True)
class Options(Constraint):
    """One of a fixed set of strings, e.g. a registry's names."""

    choices: tuple[str, ...]

    def __init__(self, choices: Iterable[str]) -> None:
        object.__setattr__(self, "choices", tuple(choices))

    def describe(self) -> str:
        return f"one of {list(self.choices)}"

    def accepts(self, value: Any) -> bool:
        return isinstance(value, str) and value in self.choices


@dataclass(frozen=True)
class Interval(Constraint):
    """A real (``float``) or whole (``int``) number in ``[low, high]``, each end open or closed
    (``None``: unbounded). Booleans are never numbers here; ``float`` accepts ints too."""

    kind: type
    low: float | None
    high: float | None
    closed: Literal["both", "left", "right", "neither"] = "both"

    def describe(self) -> str:
        what = "an integer" if self.kind is int else "a finite number"
        if self.low is not None and self.high is None:
            op = ">=" if self.closed in ("both", "left") else ">"
            return f"{what} {op} {self.low:g}"
        if self.high is not None and self.low is None:
            op = "<=" if self.closed in ("both", "right") else "<"
            return f"{what} {op} {self.high:g}"
        if self.low is None:
            return what
        left = "[" if self.closed in ("both", "left") else "("
        right = "]" if self.closed in ("both", "right") else ")"
        return f"{what} in {left}{self.low:g}, {self.high:g}{right}"

    def accepts(self, value: Any) -> bool:
        if isinstance(value, bool):
            return False
        if self.kind is int and not isinstance(value, int):
            return False
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            return False
        if self.low is not None:
            if value < self.low or (value == self.low and self.closed in ("right", "neither")):
                return False
        if self.high is not None:
            if value > self.high or (value == self.high and self.closed in ("left", "neither")):
                return False
        return True


@dataclass(frozen=True)
class Boolean(Constraint):
    """``True`` or ``False``."""

    def describe(self) -> str:
        return "True or False"

    def accepts(self, value: Any) -> bool:
        return isinstance(value, bool)


@dataclass(frozen=True)
class Optional(Constraint):
    """``None`` or what ``inner`` accepts (``inf_ok``: also ``math.inf``, for upper bounds)."""

    inner: Constraint
    inf_ok: bool = False

    def describe(self) -> str:
        extra = ", inf" if self.inf_ok else ""
        return f"None{extra} or {self.inner.describe()}"

    def accepts(self, value: Any) -> bool:
        if value is None or (self.inf_ok and value == math.inf and not isinstance(value, bool)):
            return True
        return self.inner.accepts(value)


@dataclass(frozen=True)
class AnyOf(Constraint):
    """What any of ``parts`` accepts, e.g. ``"auto"`` or a number."""

    parts: tuple[Constraint, ...]

    def __init__(self, *parts: Constraint) -> None:
        object.__setattr__(self, "parts", parts)

    def describe(self) -> str:
        return " or ".join(part.describe() for part in self.parts)

    def accepts(self, value: Any) -> bool:
        return any(part.accepts(value) for part in self.parts)


def validate(
    values: Mapping[str, Any],
    constraints: Mapping[str, Constraint],
    label: Callable[[str], str] = str,
) -> None:
    """Check every ``values[name]`` that has a constraint; ``label`` names it in the message
    (e.g. ``lambda k: f"options[{k!r}]"``)."""
    for name, constraint in constraints.items():
        if name in values:
            constraint.check(label(name), values[name])
