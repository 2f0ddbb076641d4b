"""Solver options: one validated dataclass built from the user's ``options`` dict."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import ClassVar, Literal

from physnode.constraints import Boolean, Constraint, Interval, Optional, Options, validate
from physnode.errors import InvalidInputError, UnknownOptionError


@dataclass(frozen=True)
class _Positive(Interval):
    """A finite number > 0, worded "a positive finite number" in the error message."""

    kind: type = float
    low: float | None = 0
    high: float | None = None
    closed: Literal["both", "left", "right", "neither"] = "neither"

    def describe(self) -> str:
        return "a positive finite number"


_POSITIVE = _Positive()


@dataclass(frozen=True)
class SolverOptions:
    """Settings of one solve. Build with :meth:`from_dict`; every key is optional.

    Attributes:
        step_size: fixed-step methods: the largest step (time units). Steps are also shortened
            so that one ends on every output time. Required by fixed-step methods; refused by
            adaptive ones (they choose their own steps: see ``first_step``, ``max_step``).
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
        replay: ACA only: how the backward pass replays the accepted steps. ``"sequential"``:
            one vector–Jacobian product per step, extra memory of one step's graph.
            ``"batched"``: all steps of a chunk at once through ``torch.func.vmap`` (per-step
            semantics: the model sees each step's own ``t`` and state, exactly as in the
            forward solve), extra memory bounded by ``replay_memory``. ``"auto"`` (default):
            batched where the cost model says it pays (see
            :func:`physnode.solver.gradients.aca.choose_replay`), else sequential.
        replay_memory: ACA only: the estimated memory (bytes) the batched replay may hold at
            once; chunks of steps are sized to fit it. Default 64 MiB.
        sensitivity_control: forward only: the error norm covers the sensitivities as well as
            the state (the largest of their RMS ratios, each sensitivity's absolute tolerance
            ``atol / |θ|``, as in CVODES), so the gradient's accuracy follows the tolerance
            through close encounters. ``False``: the state alone chooses the steps (the same
            steps as a solve without gradients). Default ``True``.
        steps: adaptive methods: ``"shared"`` (default): one step sequence for the whole state,
            its error norm over every entry, so a batch moves at the pace of its hardest member
            and one failing member fails the solve. ``"per-sample"``: a ``(B, D)`` batch whose
            rows are independent problems, each with its own steps, output times (``t`` may be
            ``(B, T)``) and status (``Solution.status``); ``func`` gets ``t`` of shape
            ``(b, 1)`` and the ``(b, D)`` members still running. Gradients: ``grad="aca"``
            (each member's accepted steps replayed) or ``"backprop"``; not with respect to
            ``t``. See :mod:`physnode.solver.per_sample`.
        sample_failure: ``steps="per-sample"`` only: ``"warn"`` (default): failed members get
            NaN from where they stopped and a status, the others complete, one
            ``SampleFailureWarning`` is issued; ``"raise"``: the first failure raises its
            ``SolverError``.
        compile: adaptive methods, shared steps, solves without gradients: run each trial step
            (every stage and the error ratio) as one kernel compiled by TorchInductor (see
            :mod:`physnode.solver.fused`), the same method and steps as the eager path, results
            equal to rounding. It pays for small states and long runs (one three-body state,
            DOP853: ~10x fewer µs per step) after a first-call compile of seconds
            (``SolverStats.compile_seconds``); kernels are cached per ``func``. Refused with
            gradients and per-sample steps; without a working compiler it warns once
            (``CompileFallbackWarning``) and steps eagerly. Default ``False``.
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
    replay: str = "auto"
    replay_memory: int = 64 * 2**20
    sensitivity_control: bool = True
    steps: str = "shared"
    sample_failure: str = "warn"
    compile: bool = False

    #: what each option may be, declared once: :meth:`from_dict` checks them (in this order),
    #: then the cross-field rule ``safety < 1`` and ``dfactor < 1 < ifactor``
    CONSTRAINTS: ClassVar[dict[str, Constraint]] = {
        "step_size": Optional(_POSITIVE),
        "first_step": Optional(_POSITIVE),
        "max_step": Optional(_POSITIVE, inf_ok=True),
        "min_step": Optional(_POSITIVE),
        "safety": _POSITIVE,
        "ifactor": _POSITIVE,
        "dfactor": _POSITIVE,
        "adjoint_rtol": Optional(_POSITIVE),
        "adjoint_atol": Optional(Interval(float, 0, None)),
        "max_steps": Interval(int, 1, None),
        "controller": Options(("i", "pi")),
        "seminorm": Boolean(),
        "replay": Options(("auto", "batched", "sequential")),
        "replay_memory": Interval(int, 1, None),
        "sensitivity_control": Boolean(),
        "steps": Options(("shared", "per-sample")),
        "sample_failure": Options(("warn", "raise")),
        "compile": Boolean(),
    }

    #: options that act only for some methods or gradient methods, declared once: given for
    #: another, they would be ignored, so :meth:`check_applies` refuses them
    ADAPTIVE_ONLY: ClassVar[tuple[str, ...]] = (
        "first_step", "max_step", "controller", "safety", "ifactor", "dfactor", "pcoeff",
        "icoeff", "sensitivity_control", "steps", "sample_failure", "compile",
    )  # fmt: skip
    FIXED_STEP_ONLY: ClassVar[tuple[str, ...]] = ("step_size",)
    #: options of the shared-step loop that per-sample steps do not act on (the per-sample ACA
    #: replays each loop iteration's accepted members in turn: there is no replay to choose)
    SHARED_STEPS_ONLY: ClassVar[tuple[str, ...]] = ("replay", "replay_memory")
    GRAD_ONLY: ClassVar[dict[str, str]] = {
        "adjoint_rtol": "adjoint",
        "adjoint_atol": "adjoint",
        "seminorm": "adjoint",
        "replay": "aca",
        "replay_memory": "aca",
        "sensitivity_control": "forward",
    }

    @staticmethod
    def check_applies(options: dict | None, method: str, adaptive: bool, grad: str) -> None:
        """Refuse options given for a method or gradient method they do not act on, and a
        fixed-step method without ``step_size``."""
        given = set(options or ())
        misplaced = given & set(
            SolverOptions.FIXED_STEP_ONLY if adaptive else SolverOptions.ADAPTIVE_ONLY
        )
        if misplaced:
            kind = "fixed-step" if adaptive else "adaptive"
            raise InvalidInputError(
                f"options {sorted(misplaced)} apply to {kind} methods only, not {method!r}"
            )
        for key in sorted(given):
            owner = SolverOptions.GRAD_ONLY.get(key)
            if owner is not None and owner != grad:
                raise InvalidInputError(
                    f"options[{key!r}] applies to grad={owner!r} only, not grad={grad!r}"
                )
        per_sample = (options or {}).get("steps") == "per-sample"
        shared_only = sorted(given & set(SolverOptions.SHARED_STEPS_ONLY)) if per_sample else []
        if shared_only:
            raise InvalidInputError(
                f"options {shared_only} apply to options['steps']='shared' only: per-sample "
                "ACA replays each iteration's accepted members in turn; drop them"
            )
        if "sample_failure" in given and not per_sample:
            raise InvalidInputError(
                "options['sample_failure'] applies to options['steps']='per-sample' only (a "
                "shared-step solve fails as a whole)"
            )
        if (options or {}).get("compile") and (options or {}).get("steps") == "per-sample":
            raise InvalidInputError(
                "options['compile'] applies to shared steps only; per-sample steps change the "
                "batch's shape as members finish. Drop one of the two options"
            )
        if not adaptive and (options or {}).get("step_size") is None:
            raise InvalidInputError(
                f"{method!r} takes fixed steps: give options={{'step_size': h}} (h in time "
                "units; steps also end on every output time), or use an adaptive method"
            )

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
        validate(vars(self), self.CONSTRAINTS, label=lambda k: f"options[{k!r}]")
        if not (self.safety < 1 and self.dfactor < 1 < self.ifactor):
            raise InvalidInputError(
                "options need safety < 1 and dfactor < 1 < ifactor, got "
                f"safety={self.safety}, dfactor={self.dfactor}, ifactor={self.ifactor}"
            )
