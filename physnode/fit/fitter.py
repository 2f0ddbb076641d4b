"""The :class:`Fitter`: settings in the constructor, ``fit(data)`` returns ``self``.

The pieces it assembles live in their own modules: :mod:`~physnode.fit.problem` (model and
observations from the data), :mod:`~physnode.fit.objective` (solve and score),
:mod:`~physnode.fit.schedule` (the phases), :mod:`~physnode.fit.shooting`,
:mod:`~physnode.fit.uncertainty` and :mod:`~physnode.fit.state` (resumable state).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import ClassVar

import numpy as np
import torch

from physnode.constraints import AnyOf, Constraint, Interval, Optional, Options
from physnode.data import Trajectory
from physnode.errors import InvalidInputError, SolverError
from physnode.fit.ensemble import Variant, fit_members
from physnode.fit.least_squares import least_squares_finish
from physnode.fit.objective import Objective
from physnode.fit.penalty import CHOICES as PENALTY_CHOICES
from physnode.fit.problem import MODELS, OBSERVE, FitProblem, build_problem
from physnode.fit.readout import discovered_law
from physnode.fit.schedule import SCHEDULES, Cursor, Stopped, Training, adam_optimizer, plan
from physnode.fit.selection import VALIDATION, VALIDATION_KEY, Selection
from physnode.fit.shooting import Shooting
from physnode.fit.state import fit_state, load_fit_state, load_module_state
from physnode.fit.symbolic import refit_symbolic
from physnode.models import AUTO, AUTO_PARTICLE_KINDS, CORRECTION_KINDS
from physnode.solver import ADAPTIVE_METHODS, GRAD_METHODS

__all__ = ["MODELS", "SCHEDULES", "Fitter"]

#: a symbolic refit whose training RMSE exceeds the network's by this factor is flagged (on
#: noisy data both sit at the noise level, within a few per cent; clean: the refit is better)
WORSE = 2.0

Progress = Callable[[int, int, float, dict], None]


class Fitter:
    """Fit a hybrid model to a trajectory.

    Args:
        model: ``"physics"`` (known equations, learnable parameters), ``"hybrid"`` (physics plus
            a zero-initialised neural correction, of kind ``correction``) or ``"neural"`` (a
            pure neural ODE).
        learn: what to learn: physical parameters of the system (``"masses"``, ``"G"``, ``"g"``,
            ...) and optionally the initial state (``"y0"``, or only ``"velocities"``).
        grad: gradient method of the solver: ``aca`` (default), ``adjoint``, ``backprop``,
            ``naive``.
        method, rtol, atol: solver method and tolerances during the fit.
        epochs: Adam epochs (one full-batch step each).
        lr: Adam learning rate (on the unconstrained parameters: softplus space for masses).
        train_until: end of the training window (time units); default: the middle of the data.
            Later samples are kept for extrapolation scoring.
        schedule: ``"curriculum"`` (default: the horizon grows 1/8 → 1/4 → 1/2 → 1 of the
            training window over the Adam epochs; right for chaotic, long horizons),
            ``"shooting"`` (multiple shooting: segments with their own learnable starts and a
            continuity penalty, then the full window) or ``"full"`` (the whole window at once).
        lbfgs_steps: L-BFGS iterations on the full window after Adam (0 to skip).
        seed: seeds the network initialisation; the fit is deterministic on CPU.
        device: ``"cpu"`` or ``"cuda"``.
        hidden: width of the neural correction.
        init_masses: starting masses when they are learned (scalar or one per body; default 1).
        init_params: starting values of other learned physical parameters, ``{name: value}``
            (or ``"name=value;..."``, as ``settings_`` stores it); default: the system's
            defaults. The symbolic refit starts a system's rates where the hybrid left them.
        observe: ``"auto"`` (positions and velocities when present) or ``"positions"``.
        correction: the hybrid model's kind of correction, one of
            :data:`physnode.models.CORRECTIONS` (``field``, ``pairwise``, their
            ``-conservative`` variants: particle data only; ``mlp``: any data) or ``"auto"``
            (default): on particle data, one fit for each kind of
            :data:`physnode.models.AUTO_PARTICLE_KINDS` (``field``, ``pairwise``; twice the
            time) and the one with the lowest validation RMSE (training RMSE without a
            validation window) is reported (``candidates_``); ``mlp`` otherwise (see
            docs/FITTING.md "Corrections"). Other models refuse any but ``"auto"``.
        terms: for ``model="physics"``: named terms, each times a learned coefficient (the
            physical parameter ``"coefficients"``, reported with its σ); the symbolic refit of
            a discovered law. Particle data: names of
            :func:`physnode.models.discovery.particle_library`, added to the accelerations;
            other systems: ``"<component>: <monomial>"`` (``"prey: prey predator"``,
            :class:`~physnode.models.symbolic.StateTerms`), added to that component's
            derivative.
        init_coefficients: the terms' starting coefficients (default zeros).
        refit_symbolic: for ``model="hybrid"``: after the fit, refit the
            physics plus the discovered law's terms (:mod:`physnode.fit.symbolic`), result in
            ``refit_``.
        validation: the fraction of the training window's time span, at its end, held out
            of the gradient steps (Adam, L-BFGS, shooting) and used to choose the model:
            after every step on the whole fitting window the model is scored there, and the
            best one is kept (:mod:`physnode.fit.selection`). The least-squares finish of the
            physical parameters still uses the whole training window. ``None`` (default):
            :data:`VALIDATION` (0.2) for an ensemble (``ensemble > 1``: the window chooses
            its member), 0 for a single fit (a physics model's few parameters, and a
            network's correction and the law read from it, are best determined by all the
            data); 0: none.
        correction_penalty: for ``model="hybrid"``: the weight of the correction's size,
            ``mean |correction|² / mean |physics|²`` along the fitted trajectory
            (:mod:`physnode.fit.penalty`), added to the loss so the network explains only
            what the physics cannot; 0 (default): none. In units of the misfit (the mean
            squared scaled residual): see docs/FITTING.md for what a weight means.
            ``"auto"``: one member per weight of :data:`physnode.fit.penalty.CHOICES` (for
            each kind and seed), the lowest validation RMSE kept (``candidates_``,
            ``correction_penalty_``); needs a validation window (default 0.2 then).
        ensemble: for models with a network: ``K`` fits from seeds ``seed .. seed + K - 1``
            (:mod:`physnode.fit.ensemble`; for each kind ``"auto"`` tries); the member with
            the lowest validation RMSE is reported, the spread of the members of its kind is
            the extrapolation uncertainty (``ensemble_``).
        retrain: when a kind or a penalty weight was chosen on a validation window (one
            seed each), fit the chosen kind and weight once more on the whole training window
            and report that fit (``candidates_.retrained``; the candidates' RMSEs stay those
            that chose). False: report the chosen member as fitted.

    After :meth:`fit`: ``params_``, ``uncertainties_`` (1σ from the covariance of the
    least-squares finish, see :mod:`physnode.fit.least_squares`; ``inf`` where the data cannot
    determine a parameter), ``undetermined_`` (those parameters), ``noise_`` (the noise level
    per kind of observation the finish estimated from the residuals), ``converged_`` (the
    finish converged; ``False`` after a stop or when the optimiser left it far from the
    optimum), ``warnings_`` (what
    makes the result doubtful, in words), ``history_``,
    ``train_rmse_`` (over the fitting window: the training window less the validation window),
    ``validation_rmse_`` (over the validation window; ``None`` without one), ``fit_until_``
    (the time of the last sample fitted by the gradient steps; ``train_until_`` without a
    validation window), ``validation_`` (the fraction used, ``None`` resolved),
    ``extrapolation_rmse_``, ``prediction_`` (a Trajectory at every data time),
    ``network_state_``, ``state_`` (resumable), ``interrupted_``, ``wall_time_``,
    ``train_until_``, ``settings_``, ``model_``, ``correction_`` (the kind the hybrid model
    used, ``"auto"`` resolved; ``None`` for the other models), ``correction_penalty_`` (the
    weight used, ``"auto"`` resolved), ``candidates_`` (the kinds and weights ``"auto"``
    tried and their RMSEs, a :class:`~physnode.fit.ensemble.Candidates`; else ``None``),
    ``ensemble_``, ``discovered_`` (the law the
    hybrid's correction learned, a :class:`~physnode.models.discovery.Discovery` read along
    the fitted training window; ``None`` for the other models or an interrupted fit),
    ``refit_`` (with ``refit_symbolic``: a :class:`~physnode.fit.symbolic.SymbolicRefit`,
    else ``None``).
    """

    #: What each setting may be, declared once: :meth:`fit` checks the settings against it and
    #: the CLI reads its choices. Settings not listed (``learn``, ``device``, ``init_masses``)
    #: depend on the data or the machine and are checked when the problem is built.
    CONSTRAINTS: ClassVar[dict[str, Constraint]] = {
        "model": Options(MODELS),
        "grad": Options(GRAD_METHODS),
        # the fit has no step-size setting: fixed-step methods would step once per sample
        "method": Options(ADAPTIVE_METHODS),
        "schedule": Options(SCHEDULES),
        "observe": Options(OBSERVE),
        "correction": Options((AUTO, *CORRECTION_KINDS)),
        "epochs": Interval(int, 0, None),
        "lbfgs_steps": Interval(int, 0, None),
        "hidden": Interval(int, 0, None),
        "lr": Interval(float, 0, None, closed="neither"),
        "rtol": Interval(float, 0, None),
        "atol": Interval(float, 0, None),
        "train_until": Optional(Interval(float, None, None)),
        "validation": Optional(Interval(float, 0, 1, closed="left")),
        "ensemble": Interval(int, 1, None),
        "correction_penalty": AnyOf(Options((AUTO,)), Interval(float, 0, None)),
        "seed": Interval(int, None, None),
    }

    def __init__(
        self,
        model: str = "physics",
        learn: Sequence[str] = ("masses",),
        grad: str = "aca",
        method: str = "dopri5",
        rtol: float = 1e-7,
        atol: float = 1e-9,
        epochs: int = 100,
        lr: float = 0.05,
        train_until: float | None = None,
        schedule: str = "curriculum",
        lbfgs_steps: int = 50,
        seed: int = 0,
        device: str = "cpu",
        hidden: int = 32,
        init_masses: float | Sequence[float] | None = None,
        observe: str = "auto",
        correction: str = AUTO,
        terms: Sequence[str] = (),
        init_coefficients: Sequence[float] | None = None,
        refit_symbolic: bool = False,
        validation: float | None = None,
        ensemble: int = 1,
        correction_penalty: float | str = 0.0,
        retrain: bool = True,
        init_params: Mapping[str, float] | str | None = None,
    ) -> None:
        self.model = model
        self.learn = tuple(learn)
        self.grad = grad
        self.method = method
        self.rtol = rtol
        self.atol = atol
        self.epochs = epochs
        self.lr = lr
        self.train_until = train_until
        self.schedule = schedule
        self.lbfgs_steps = lbfgs_steps
        self.seed = seed
        self.device = device
        self.hidden = hidden
        self.init_masses = init_masses
        self.observe = observe
        self.correction = correction
        self.terms = tuple(terms)
        self.init_coefficients = init_coefficients
        self.refit_symbolic = bool(refit_symbolic)
        self.validation = validation
        self.ensemble = ensemble
        self.correction_penalty = correction_penalty
        self.retrain = bool(retrain)
        self.init_params = init_params

    # -- settings ------------------------------------------------------------------------
    def _check_settings(self) -> None:
        for name, constraint in self.CONSTRAINTS.items():
            value = getattr(self, name)
            if isinstance(constraint, Options) and not constraint.accepts(value):
                # the wording the solver uses for an unknown choice
                raise InvalidInputError(
                    f"unknown {name} {value!r}; choose one of {list(constraint.choices)}"
                )
            constraint.check(name, value)
        if not self.learn and self.model == "physics":
            raise InvalidInputError("nothing to learn: give learn=('masses',) or similar")
        if self.refit_symbolic and self.model != "hybrid":
            raise InvalidInputError(
                f"refit_symbolic is for model='hybrid' (it refits the law its network learned); "
                f"the {self.model!r} model has none"
            )
        if self.ensemble > 1 and self.model == "physics":
            raise InvalidInputError(
                "ensemble is for models with a network (seeds change only its starting "
                "weights); a physics fit from the same start is the same fit every time"
            )
        if self.correction_penalty and self.model != "hybrid":
            raise InvalidInputError(
                f"correction_penalty is for model='hybrid' (it weighs the correction's size); "
                f"the {self.model!r} model has no correction (leave it at 0)"
            )
        if self.correction_penalty == AUTO and self.validation == 0:
            raise InvalidInputError(
                "correction_penalty='auto' chooses the weight by the validation RMSE; give a "
                "validation window (validation > 0, or leave it unset for 0.2)"
            )
        if self.correction != AUTO and self.model != "hybrid":
            raise InvalidInputError(
                f"correction={self.correction!r} is for model='hybrid'; the {self.model!r} "
                "model has no correction (leave correction at 'auto')"
            )

    @property
    def settings_(self) -> dict:
        """Every constructor setting, as JSON-simple values; after a hybrid fit, ``correction``
        is the kind used (``"auto"`` resolved), so a resumed fit builds the same network."""
        return {
            "model": self.model,
            "learn": ",".join(self.learn),
            "grad": self.grad,
            "method": self.method,
            "rtol": float(self.rtol),
            "atol": float(self.atol),
            "epochs": int(self.epochs),
            "lr": float(self.lr),
            "train_until": None if self.train_until is None else float(self.train_until),
            "schedule": self.schedule,
            "lbfgs_steps": int(self.lbfgs_steps),
            "seed": int(self.seed),
            "device": self.device,
            "hidden": int(self.hidden),
            "init_masses": None
            if self.init_masses is None
            else ",".join(str(float(m)) for m in np.atleast_1d(self.init_masses)),
            "observe": self.observe,
            "correction": self._correction_setting(),
            "terms": ";".join(self.terms),
            "init_coefficients": None
            if self.init_coefficients is None
            else ",".join(repr(float(c)) for c in self.init_coefficients),
            "refit_symbolic": self.refit_symbolic,
            "validation": None if self.validation is None else float(self.validation),
            "ensemble": int(self.ensemble),
            "correction_penalty": self.correction_penalty
            if self.correction_penalty == AUTO
            else float(self.correction_penalty),
            "retrain": bool(self.retrain),
            "init_params": ";".join(f"{k}={v!r}" for k, v in self._init_params().items()) or None,
            # a member of a shared fit (physnode.fit.shared): what its files share
            **(getattr(self, "shared_", None) or {}),
        }

    def _init_params(self) -> dict[str, float]:
        """``init_params`` as ``{name: value}`` (a ``"name=value;..."`` string parsed)."""
        given = self.init_params
        if not given:
            return {}
        if isinstance(given, str):
            pairs = [p.partition("=") for p in given.split(";") if p]
            if any(not sep for _, sep, _ in pairs):
                raise InvalidInputError(f"init_params {given!r}: write 'name=value;...'")
            given = {k.strip(): v for k, _, v in pairs}
        try:
            return {str(k): float(v) for k, v in given.items()}
        except (TypeError, ValueError):
            raise InvalidInputError(
                f"init_params {given!r}: every value must be a number"
            ) from None

    def _correction_setting(self) -> str:
        """The kind used (``"auto"`` resolved), or ``"auto"`` where the fit chose among kinds
        (a resumed fit then tries them again from their states)."""
        if getattr(self, "candidates_", None) is not None or (
            self.correction == AUTO and "member/0/epoch" in (getattr(self, "state_", None) or {})
        ):
            return AUTO
        return getattr(self, "correction_", None) or self.correction

    @property
    def validation_(self) -> float:
        """The fraction of the training window held out: ``validation``, or its default when
        ``None``: :data:`VALIDATION` for an ensemble or a chosen penalty, 0 for a single fit."""
        if self.validation is not None:
            return float(self.validation)
        choosing = self.ensemble > 1 or self.correction_penalty == AUTO
        return VALIDATION if choosing else 0.0

    # -- the fit -------------------------------------------------------------------------
    def fit(
        self,
        data: Trajectory,
        *,
        y0: torch.Tensor | None = None,
        progress: Progress | None = None,
        should_stop: Callable[[], bool] | None = None,
        resume: dict | None = None,
    ) -> Fitter:
        """Fit the model to ``data`` and return ``self``.

        Args:
            data: the observed trajectory (positions, optionally velocities; or a state).
            y0: explicit initial state ``(D,)`` (default: the first sample; unobserved
                velocities are estimated by finite differences and learned).
            progress: called after every epoch with ``(epoch, total, loss, params)``.
            should_stop: polled every epoch; when it returns True the fit stops cleanly with
                ``interrupted_ = True`` and a resumable ``state_``.
            resume: a ``state_`` from an interrupted fit with the same settings and data.
        """
        self._check_settings()
        start_time = time.perf_counter()
        self.ensemble_ = self.candidates_ = None
        variants = self._variants(data)
        if len(variants) > 1 or (resume is not None and "member/0/epoch" in resume):
            return self._fit_members(data, variants, y0, progress, should_stop, resume,
                                     start_time)  # fmt: skip
        torch.manual_seed(self.seed)
        self.correction_penalty_ = float(self.correction_penalty)
        prob = self._set_up(data, y0)
        self._start_from_data = y0 is None
        trainable = [p for p in self._modules_params() if p.requires_grad]
        if not trainable:
            raise InvalidInputError("nothing to learn: the model has no trainable parameters")
        history: dict[str, list] = {"epoch": [], "loss": []}
        phases = plan(self.schedule, self.model, prob.n_fit, self.epochs, self.lbfgs_steps)
        adam = adam_optimizer(trainable, prob.start, self.lr)
        first = Cursor()
        if resume is not None:
            first = Cursor(*load_fit_state(resume, prob, adam, history))
        self.interrupted_ = False
        training = Training(
            self._objective, phases, trainable, adam, self.lr,
            record=self._recorder(history, sum(p.count for p in phases), progress),
            stop=should_stop or (lambda: False),
            shooting=Shooting(self._objective, self.lr) if self.schedule == "shooting" else None,
            selection=Selection(self._objective, history) if prob.n_fit < prob.n_train else None,
        )  # fmt: skip
        if resume is not None and training.shooting is not None:
            training.shooting.load_state(resume)
        if resume is not None and training.selection is not None:
            training.selection.load_state(resume)
        self._train(training, history, first)
        self.history_ = {k: np.asarray(v) for k, v in history.items()}
        if training.selection is not None and not self.interrupted_:
            training.selection.restore()  # the best model on the validation window
        self._finish(prob)
        self.wall_time_ = time.perf_counter() - start_time
        self.refit_ = None
        if self.refit_symbolic and self.discovered_ is not None:
            self._refit(data)
        return self

    def _variants(self, data: Trajectory) -> list[Variant]:
        """The members to fit: ``ensemble`` seeds for each kind of correction and each
        penalty weight to try (the kinds of :data:`~physnode.models.AUTO_PARTICLE_KINDS` for
        a hybrid with ``correction="auto"`` on particle data, else the one given; the weights
        of :data:`~physnode.fit.penalty.CHOICES` for ``correction_penalty="auto"``)."""
        choose = (
            self.model == "hybrid"
            and self.correction == AUTO
            and getattr(data, "positions", None) is not None
        )
        kinds = AUTO_PARTICLE_KINDS if choose else (self.correction,)
        weights = (
            PENALTY_CHOICES
            if self.correction_penalty == AUTO
            else (float(self.correction_penalty),)
        )
        return [
            Variant(self.seed + k, kind, weight)
            for kind in kinds
            for weight in weights
            for k in range(self.ensemble)
        ]

    def _fit_members(
        self, data, variants: list[Variant], y0, progress, should_stop, resume, start_time
    ) -> Fitter:
        """:func:`~physnode.fit.ensemble.fit_members`, then the chosen member's refit."""
        if resume is not None and (len(variants) == 1) != ("member/0/epoch" not in resume):
            several = "several members'" if len(variants) == 1 else "one fit's"
            raise InvalidInputError(
                f"the state to resume is {several}; resume with the settings it was fitted "
                "with (ensemble and correction included)"
            )
        fit_members(self, data, variants, y0=y0, progress=progress, should_stop=should_stop,
                    resume=resume)  # fmt: skip
        self.wall_time_ = time.perf_counter() - start_time
        self.refit_ = None
        if self.refit_symbolic and self.discovered_ is not None:
            self._refit(data)
        return self

    def _refit(self, data: Trajectory) -> None:
        """``refit_`` from the discovered law; what makes it doubtful goes to ``warnings_``."""
        try:
            self.refit_ = refit_symbolic(self, data, self.discovered_)
        except SolverError as exc:  # the readout's law cannot be integrated over the data
            self.warnings_.append(f"the symbolic refit of {self.discovered_.formula!r} failed, "
                                  f"so there is none: {exc}")  # fmt: skip
            return
        if self.refit_ is not None and self.refit_.extrapolation_rmse == math.inf:
            self.warnings_.append(
                f"the symbolic refit's law ({self.refit_.formula}) cannot be integrated past "
                "the training window: its extrapolation RMSE is inf"
            )
        if self.refit_ is not None and self.refit_.rivals:
            self.warnings_.append(_rivals_warning(self.refit_))
        if self.refit_ is not None and self.refit_.train_rmse > WORSE * self.train_rmse_:
            self.warnings_.append(
                f"the symbolic refit ({self.refit_.formula}) fits the training window "
                f"{self.refit_.train_rmse / self.train_rmse_:.0f}x worse than the network: the "
                "library lacks what the network learned, so the refit is no law of these data"
            )

    # -- pieces ----------------------------------------------------------------------------
    def _set_up(self, data: Trajectory, y0: torch.Tensor | None) -> FitProblem:
        """Build the problem and its objective; set ``model_`` and ``train_until_``."""
        prob = build_problem(
            data, model=self.model, learn=self.learn, train_until=self.train_until,
            hidden=self.hidden, init_masses=self.init_masses, observe=self.observe, y0=y0,
            seed=self.seed, device=self.device, correction=self.correction, terms=self.terms,
            coefficients=self.init_coefficients, validation=self.validation_,
            init_params=self._init_params(),
        )  # fmt: skip
        self._prob = prob
        self.correction_ = prob.correction
        self._objective = Objective(
            prob, method=self.method, rtol=self.rtol, atol=self.atol, grad=self.grad,
            device=self.device, penalty=float(self.correction_penalty),
        )  # fmt: skip
        self.model_ = prob.model
        self.train_until_ = float(prob.times[prob.n_train - 1])
        self.fit_until_ = float(prob.times[prob.n_fit - 1])
        return prob

    def _modules_params(self):
        yield from self._prob.model.parameters()
        yield from self._prob.start.parameters()

    def _loss(self, m: int) -> torch.Tensor:
        """The loss on the first ``m`` samples (``benchmarks/fit.py`` times it)."""
        return self._objective.loss(m)

    def _recorder(
        self, history: dict[str, list], total: int, progress: Progress | None
    ) -> Callable[[float], None]:
        """``record(loss)``: append the loss and the physical parameters to ``history``, then
        report ``(epoch, total, loss, params)`` to ``progress``."""

        def record(loss: float) -> None:
            epoch = len(history["loss"])
            history["epoch"].append(epoch)
            history["loss"].append(loss)
            if self._prob.n_fit < self._prob.n_train:  # scored by the selection, if at all
                history.setdefault(VALIDATION_KEY, []).append(math.nan)
            for name, value in self._prob.physical().items():
                history.setdefault(f"param/{name}", []).append(value)
            if progress is not None:
                progress(epoch + 1, total, loss, self._prob.physical())

        return record

    def _train(self, training: Training, history: dict[str, list], first: Cursor) -> None:
        """Run the phases from ``first``; set ``state_`` and ``interrupted_``."""
        phases = training.phases
        cursor, snapshot = first, None
        try:
            for phase in range(first.phase, len(phases)):
                cursor = Cursor(phase, first.step if phase == first.phase else 0)
                # the state this phase starts from: an interrupted L-BFGS phase reruns from it
                snapshot = self._state(training, history, Cursor(phase, 0))
                training.run(cursor)
            self.state_ = self._state(training, history, Cursor(len(phases), 0))
        except Stopped:
            self.interrupted_ = True
            if phases[cursor.phase].kind == "lbfgs":
                self.state_ = self._rewind(snapshot, history, training)
            else:
                self.state_ = self._state(training, history, cursor)

    def _state(self, training: Training, history: dict[str, list], cursor: Cursor) -> dict:
        """The resumable state at ``cursor``, the best model on the validation window included."""
        state = fit_state(
            self._prob, training.adam, history, cursor.phase, cursor.step, training.shooting
        )
        if training.selection is not None:
            state.update(training.selection.state())
        return state

    def _rewind(self, snapshot: dict, history: dict[str, list], training: Training) -> dict:
        """Back to ``snapshot`` (model, start, best model and history, in place); return it."""
        load_module_state("model", self._prob.model, snapshot)
        load_module_state("start", self._prob.start, snapshot)
        if training.selection is not None:
            training.selection.load_state(snapshot)
        n_keep = len(snapshot["history/loss"])
        for values in history.values():
            del values[n_keep:]
        return snapshot

    # -- results ---------------------------------------------------------------------------
    def _finish(self, prob: FitProblem) -> None:
        self.warnings_: list[str] = []
        if self.interrupted_:
            # a stop must stay quick: no tight-tolerance polish or uncertainties mid-fit
            self.uncertainties_ = {k: np.full_like(v, np.nan) for k, v in prob.physical().items()}
            self.noise_ = {}
            self.converged_ = False
        else:
            finish = least_squares_finish(self._objective)
            self.uncertainties_ = finish.sigma
            self.noise_ = finish.noise
            self.converged_ = finish.converged
            if not finish.converged:
                self.warnings_.append(
                    "the least-squares finish did not converge: the optimiser stopped far from "
                    "the optimum, so the parameters and their uncertainties are not final; "
                    "give more epochs or lbfgs_steps"
                )
            if not finish.clean and self._start_from_data and prob.start.learn != "all":
                self.warnings_.append(
                    "the residuals are well above the solver's error (noise in the data, or "
                    "physics the model lacks) while the start is the first sample, held fixed: "
                    "if the data are noisy, the uncertainties leave out its noise and are too "
                    "small; learn y0 as well (learn=('masses', 'y0'), CLI --learn masses,y0)"
                )
        self._results(prob)

    @property
    def _errors(self) -> np.ndarray:
        """The misfits the RMSEs are of, ``(T, M)``: the positions' for particle data (the
        first ``N·D`` observed components), else every observed component's."""
        if self._prob.particles is None:
            return self._misfits
        n, d = self._prob.particles
        return self._misfits[:, : n * d]

    def _results(self, prob: FitProblem) -> None:
        """Everything read from the fitted model once ``uncertainties_`` are set: parameters,
        RMSEs, the prediction, the discovered law, the network's weights."""
        self.undetermined_ = _undetermined(self.uncertainties_)
        self.params_ = prob.physical()
        with torch.no_grad():
            ys = self._objective.solve(len(prob.times), grad="aca")
        pred = ys.cpu().numpy()
        obs = prob.observed.cpu().numpy()
        idx = prob.index.cpu().numpy()
        # every observed component (T, C), on which the symbolic refit compares laws
        self._misfits = pred[:, idx] - obs
        err = self._errors
        self.train_rmse_ = _rmse(err[: prob.n_fit])
        self.validation_rmse_ = _rmse(err[prob.n_fit : prob.n_train])
        self.extrapolation_rmse_ = _rmse(err[prob.n_train :])
        self.prediction_ = self._prediction(prob, pred)
        self.discovered_ = None if self.interrupted_ else discovered_law(prob, pred[: prob.n_train])
        self.network_state_ = {
            k: v.detach().cpu().numpy().copy()
            for k, v in prob.model.state_dict().items()
            if not k.startswith("system.")
        }

    def _prediction(self, prob: FitProblem, pred: np.ndarray) -> Trajectory:
        params = {"system": "n-body" if prob.particles else "fit", "model": self.model}
        if prob.system is not None:
            for name, value in prob.system.physical_parameters().items():
                if value.numel() == 1:
                    params[name] = float(value.detach())
        if prob.particles is not None:
            n, d = prob.particles
            t_len = pred.shape[0]
            masses = (
                prob.system.physical_parameters()["masses"].detach().cpu().numpy()
                if prob.system is not None
                else None
            )
            return Trajectory(
                prob.times,
                positions=pred[:, : n * d].reshape(t_len, n, d),
                velocities=pred[:, n * d :].reshape(t_len, n, d),
                masses=masses,
                parameters=params,
            )
        return Trajectory(prob.times, state=pred, state_names=prob.state_names, parameters=params)


def _rivals_warning(refit) -> str:
    """The warning that ``refit``'s law was chosen among rivals the data barely tell apart."""
    others = "; ".join(
        f"{f} (information criterion {d:+.2f}, held-out RMSE {h:.3g})"
        for f, d, h in zip(refit.rivals, refit.rival_delta, refit.rival_held_out_rmse,
                           strict=True)
    )  # fmt: skip
    return (
        f"the information criterion barely tells the symbolic refit's law ({refit.formula}) "
        f"from {others}; of those that predict a held-out window as well as the best of them "
        f"(its RMSE {refit.held_out_rmse:.3g}) it has the fewest terms of lowest order: the "
        "data do not tell them apart, so more data, or less noise, would"
    )


def _rmse(err: np.ndarray) -> float | None:
    """Root mean square of the errors ``(K, M)``; ``None`` for no sample (``K = 0``)."""
    return float(np.sqrt(np.mean(err**2))) if len(err) else None


def element_labels(name: str, value: np.ndarray | float) -> list[str]:
    """One label per element of a parameter: ``name`` for a scalar, else ``name[i]`` over the
    flattened array (the names ``undetermined_`` and the CLI's result table use)."""
    if np.ndim(value) == 0:
        return [name]
    return [f"{name}[{i}]" for i in range(np.size(value))]


def _undetermined(sigma: dict[str, np.ndarray]) -> list[str]:
    """The parameters (``name`` or ``name[i]``) the data cannot determine: σ = inf."""
    out = []
    for name, value in sigma.items():
        lost = np.isinf(np.atleast_1d(value).ravel())
        out.extend(label for label, x in zip(element_labels(name, value), lost, strict=True) if x)
    return out
