"""Model selection on the validation window: keep the model that predicts it best.

The gradient steps fit the first ``n_fit`` samples of the training window; the rest of it
(``n_fit:n_train``) is the validation window. After every step whose horizon is the whole
fitting window (the last curriculum stage; every step of the ``full`` and ``shooting``
schedules), :class:`Selection` solves the model through the training window without a
gradient and scores the validation samples with the training loss's own measure (mean
squared scaled misfit). The model with the lowest score so far (network weights, physical
parameters, start) is kept, and restored when the fit completes: early stopping in the sense
of returning the best epoch's model, without shortening the plan (so a resumed fit follows the
same steps).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from physnode.errors import SolverError
from physnode.fit.objective import Objective
from physnode.fit.state import load_module_state, module_state

__all__ = ["VALIDATION", "VALIDATION_KEY", "Selection"]

#: the history series of validation losses (NaN where a step was not scored)
VALIDATION_KEY = "validation"

#: the fraction of the training window held out when there are fits to choose between: an
#: ensemble of seeds (``Fitter(validation=None, ensemble > 1)``: enough samples to tell which
#: member bends away after the fitting window, most of the window left to fit), or rival laws
#: of a symbolic refit. A single fit holds out nothing by default
#: (:meth:`~physnode.fit.fitter.Fitter.validation_`): it has no fits to choose between, and
#: choosing a step of its one path does not pay for the data it withholds (docs/FITTING.md:
#: extrapolation 2x worse on two seeds of three; the drag law read out as four terms instead
#: of ``-0.1 v``)
VALIDATION = 0.2


class Selection:
    """The best model on the validation window so far.

    Args:
        objective: the problem (with ``n_fit < n_train``) and the solver settings.
        history: the fit's history; :meth:`consider` writes the score of the model after the
            step just recorded into ``history[VALIDATION_KEY][-1]``.
    """

    def __init__(self, objective: Objective, history: dict[str, list]) -> None:
        self.objective = objective
        self.history = history
        self.best_loss = math.inf
        self._best: dict[str, np.ndarray] | None = None

    def scores(self, horizon: int) -> bool:
        """Whether a step on the first ``horizon`` samples is a candidate (it fitted the whole
        fitting window: shorter curriculum horizons were never asked to reach it)."""
        return horizon >= self.objective.problem.n_fit

    def loss(self) -> float:
        """Mean squared scaled misfit of the current model over the validation window
        (``inf`` when the solver cannot integrate it there)."""
        prob = self.objective.problem
        try:
            with torch.no_grad():
                ys = self.objective.solve(prob.n_train, grad="aca")
        except SolverError:
            return math.inf
        r = prob.residual(ys, prob.n_train)[prob.n_fit :]
        value = float(r.square().mean())
        return value if math.isfinite(value) else math.inf

    def consider(self) -> None:
        """Score the current model; keep it when it beats the best so far."""
        value = self.loss()
        self.history[VALIDATION_KEY][-1] = value
        if value < self.best_loss:
            prob = self.objective.problem
            self.best_loss = value
            self._best = {**module_state("model", prob.model), **module_state("start", prob.start)}

    def restore(self) -> None:
        """Load the best model kept (nothing when no step was scored)."""
        if self._best is None:
            return
        prob = self.objective.problem
        load_module_state("model", prob.model, self._best)
        load_module_state("start", prob.start, self._best)

    def state(self) -> dict[str, np.ndarray | float]:
        """The best model and its score, for a resumable fit state (``best/...`` keys)."""
        if self._best is None:
            return {}
        out: dict[str, np.ndarray | float] = {"best/loss": float(self.best_loss)}
        out.update({f"best/{k}": v.copy() for k, v in self._best.items()})
        return out

    def load_state(self, state: dict) -> None:
        """Continue from :meth:`state` (no ``best/`` keys: nothing scored yet)."""
        if "best/loss" not in state:
            self.best_loss, self._best = math.inf, None
            return
        self.best_loss = float(state["best/loss"])
        self._best = {
            k[len("best/") :]: np.asarray(v).copy()
            for k, v in state.items()
            if k.startswith("best/") and k != "best/loss"
        }
