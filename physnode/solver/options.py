"""Solver options: one validated dataclass built from the user's ``options`` dict."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

from physnode.errors import InvalidInputError, UnknownOptionError


@dataclass(frozen=True)
class SolverOptions:
    """Settings of one solve. Build with :meth:`from_dict`; every key is optional.

    Attributes:
        step_size: fixed-step methods: the largest step (time units). Steps are also shortened
            so that one ends on every output time. ``None``: one step per output interval.
        first_step: adaptive methods: the first trial step; ``None`` selects it automatically
            (Hairer, Nørsett & Wanner, II.4).
        max_step: adaptive methods: upper bound on ``|h|``.
        min_step: the step-size floor; a step below it raises ``StepSizeTooSmallError``.
            ``None``: 16 machine epsilons (float64) relative to the current time.
        max_steps: the most step attempts (accepted + rejected) one solve may take.
        controller: ``"i"`` (integral, the classic ``h·(1/err)^(1/k)``) or ``"pi"``
            (proportional–integral, smoother step sequences).
        safety, ifactor, dfactor: safety factor and the largest / smallest step-size ratio.
        pcoeff, icoeff: PI coefficients (used when ``controller="pi"``).
        adjoint_rtol, adjoint_atol: tolerances of the adjoint's backward solve (default: the
            forward ones).
        seminorm: adjoint only: leave the parameter adjoint out of the backward error norm
            (Kidger, Chen & Lyons 2021).
    """

    step_size: float | None = None
    first_step: float | None = None
    max_step: float = math.inf
    min_step: float | None = None
    max_steps: int = 500_000
    controller: str = "i"
    safety: float = 0.9
    ifactor: float = 10.0
    dfactor: float = 0.2
    pcoeff: float = 0.4
    icoeff: float = 0.3
    adjoint_rtol: float | None = None
    adjoint_atol: float | None = None
    seminorm: bool = False

    @classmethod
    def from_dict(cls, options: dict | None) -> SolverOptions:
        """Validate ``options`` and build the settings; unknown keys raise."""
        if options is None:
            return cls()
        if not isinstance(options, dict):
            raise InvalidInputError(f"options must be a dict, got {type(options).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise UnknownOptionError(
                f"unknown option(s) {unknown}; valid options are {sorted(known)}"
            )
        opts = cls(**options)
        opts._check()
        return opts

    def _check(self) -> None:
        def positive(name: str, value: float | None, allow_inf: bool = False) -> None:
            if value is None:
                return
            ok = isinstance(value, (int, float)) and value > 0
            if ok and not allow_inf and not math.isfinite(value):
                ok = False
            if not ok:
                raise InvalidInputError(
                    f"options[{name!r}] must be a positive number, got {value!r}"
                )

        positive("step_size", self.step_size)
        positive("first_step", self.first_step)
        positive("max_step", self.max_step, allow_inf=True)
        positive("min_step", self.min_step)
        positive("safety", self.safety)
        positive("ifactor", self.ifactor)
        positive("dfactor", self.dfactor)
        positive("adjoint_rtol", self.adjoint_rtol)
        if self.adjoint_atol is not None and not (
            isinstance(self.adjoint_atol, (int, float)) and self.adjoint_atol >= 0
        ):
            raise InvalidInputError(
                f"options['adjoint_atol'] must be a number >= 0, got {self.adjoint_atol!r}"
            )
        if not isinstance(self.max_steps, int) or self.max_steps < 1:
            raise InvalidInputError(
                f"options['max_steps'] must be a positive integer, got {self.max_steps!r}"
            )
        if self.controller not in ("i", "pi"):
            raise InvalidInputError(
                f"options['controller'] must be 'i' or 'pi', got {self.controller!r}"
            )
        if not (self.safety < 1 and self.dfactor < 1 < self.ifactor):
            raise InvalidInputError(
                "options need safety < 1 and dfactor < 1 < ifactor, got "
                f"safety={self.safety}, dfactor={self.dfactor}, ifactor={self.ifactor}"
            )
        if not isinstance(self.seminorm, bool):
            raise InvalidInputError(
                f"options['seminorm'] must be True or False, got {self.seminorm!r}"
            )
