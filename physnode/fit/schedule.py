"""The optimisation plan and its stages: Adam epochs and L-BFGS polishes, phase by phase.

A plan is a list of :class:`Phase`; ``schedule`` chooses its horizons (``curriculum``: growing
windows; ``shooting`` and ``full``: the whole training window) and its Adam kind (plain or
multiple shooting). :class:`Training` runs one phase at a time from a :class:`Cursor`, so a
stopped fit can resume where it stopped.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import nn

from physnode.errors import NonFiniteError, SolverError
from physnode.fit.objective import Objective
from physnode.fit.selection import Selection
from physnode.fit.shooting import Shooting

#: The ``schedule`` choices.
SCHEDULES = ("curriculum", "shooting", "full")

Record = Callable[[float], None]
Stop = Callable[[], bool]


class Stopped(Exception):
    """Raised inside an optimisation step when ``should_stop()`` asks to stop."""


class Phase(NamedTuple):
    """One stage of the plan: ``kind`` is ``"adam"``, ``"shooting"`` (``count`` epochs) or
    ``"lbfgs"`` (``count`` = most iterations), on the first ``horizon`` data samples."""

    kind: str
    horizon: int
    count: int


@dataclass
class Cursor:
    """Where a fit stands: ``step`` steps done in phase number ``phase``."""

    phase: int = 0
    step: int = 0


def plan(schedule: str, model: str, n_train: int, epochs: int, lbfgs_steps: int) -> list[Phase]:
    """The optimisation plan. Curriculum: per stage, Adam epochs then an L-BFGS polish on that
    stage's horizon, so each longer horizon starts inside the basin the shorter one found."""
    horizons = _horizons(schedule, n_train)
    kind = "shooting" if schedule == "shooting" else "adam"
    # physics models: Adam only warms up the shortest horizon; later stages are L-BFGS
    # polishes (Adam's fixed-size steps would leave the basin L-BFGS found). Models with a
    # network spread the Adam epochs over the stages, with a falling learning rate.
    adam_stages = 1 if model == "physics" else len(horizons)
    phases: list[Phase] = []
    for s, horizon in enumerate(horizons):
        count = 0
        if s < adam_stages:
            count = epochs // adam_stages + (1 if s < epochs % adam_stages else 0)
        if count:
            phases.append(Phase(kind, horizon, count))
        if lbfgs_steps:
            phases.append(Phase("lbfgs", horizon, lbfgs_steps))
    return phases


def _horizons(schedule: str, n: int) -> list[int]:
    """Sample counts of the stages: up to four doubling windows for ``curriculum``."""
    if schedule != "curriculum":
        return [n]
    stages = max(1, min(4, math.floor(math.log2(max(n / 10, 1))) + 1))
    return [max(3, math.ceil(n / 2 ** (stages - 1 - s))) for s in range(stages)]


def adam_optimizer(
    trainable: Sequence[nn.Parameter], start: nn.Module | Iterable[nn.Parameter], lr: float
):
    """Adam over ``trainable``; the initial state's parameters (``start``, a module or its
    parameters) in a group of their own."""
    # the initial state moves in state units, where a step of ``lr`` would be ~10 % of a
    # typical coordinate: it learns ten times slower than the (softplus-space) parameters
    starts = start.parameters() if isinstance(start, nn.Module) else start
    start_ids = {id(p) for p in starts}
    groups = [
        {"params": [p for p in trainable if id(p) not in start_ids], "scale": 1.0},
        {"params": [p for p in trainable if id(p) in start_ids], "scale": 0.1},
    ]
    return torch.optim.Adam([g for g in groups if g["params"]], lr=lr)


class Training:
    """Runs the phases of a plan.

    Args:
        objective: the problem and the solver settings.
        phases: the plan (:func:`plan`).
        trainable: the parameters L-BFGS moves (Adam's are those of ``adam``).
        adam: the optimiser of the Adam phases (:func:`adam_optimizer`).
        lr: the base Adam learning rate.
        record: called with every loss evaluated by a step.
        stop: polled before every step; ``True`` raises :class:`Stopped`.
        shooting: the multiple-shooting loss, for ``"shooting"`` phases.
        selection: scores the model on the validation window after every step on the whole
            fitting window and keeps the best (``None``: no validation window).
    """

    def __init__(
        self, objective: Objective, phases: list[Phase], trainable: Sequence[nn.Parameter],
        adam: torch.optim.Adam, lr: float, record: Record, stop: Stop,
        shooting: Shooting | None = None, selection: Selection | None = None,
    ) -> None:  # fmt: skip
        self.objective = objective
        self.phases = phases
        self.trainable = list(trainable)
        self.adam = adam
        self.lr = lr
        self.record = record
        self.stop = stop
        self.shooting = shooting
        self.selection = selection

    def run(self, cursor: Cursor) -> None:
        """Run phase ``cursor.phase`` from step ``cursor.step``, counting steps in ``cursor``."""
        phase = self.phases[cursor.phase]
        if phase.kind == "lbfgs":
            self._lbfgs(phase)
            self._score(phase)
            return
        # Adam's steps are ~lr in size whatever the gradient: after L-BFGS has polished a
        # shorter horizon, a full-size step would throw the fit out of its basin
        stage = sum(1 for p in self.phases[: cursor.phase] if p.kind != "lbfgs")
        for group in self.adam.param_groups:
            group["lr"] = self.lr * group["scale"] * 0.1**stage
        for _ in range(cursor.step, phase.count):
            self._adam_step(phase)
            self._score(phase)
            cursor.step += 1

    def _score(self, phase: Phase) -> None:
        """Let the selection score the model a step on ``phase`` left."""
        if self.selection is not None and self.selection.scores(phase.horizon):
            self.selection.consider()

    def _adam_step(self, phase: Phase) -> None:
        if self.stop():
            raise Stopped
        self.adam.zero_grad()
        shooting = phase.kind == "shooting"
        loss = self.shooting.loss() if shooting else self.objective.loss(phase.horizon)
        loss.backward()
        self.adam.step()
        if shooting:
            self.shooting.after_step()
        self.record(float(loss.detach()))

    def _lbfgs(self, phase: Phase) -> None:
        """Up to ``phase.count`` L-BFGS iterations. A trial point the solver cannot integrate
        (its line search can step far) ends the phase at the best point evaluated, with one
        :class:`LbfgsTrialWarning`: the fit goes on instead of failing."""
        optimizer = torch.optim.LBFGS(
            self.trainable, lr=1.0, max_iter=phase.count, line_search_fn="strong_wolfe",
            tolerance_grad=1e-10, tolerance_change=1e-12, history_size=20,
        )  # fmt: skip
        best = _Best(self.trainable)

        def closure():
            if self.stop():
                raise Stopped
            optimizer.zero_grad()
            loss = self.objective.loss(phase.horizon)
            value = float(loss.detach())
            if not math.isfinite(value):
                raise NonFiniteError(f"the loss is {value} there")
            loss.backward()
            self.record(value)
            best.offer(value)
            return loss

        try:
            optimizer.step(closure)
        except SolverError as exc:
            if not math.isfinite(best.loss):  # not even the starting point could be integrated
                raise
            best.restore()
            warnings.warn(
                "L-BFGS tried parameters the solver could not integrate "
                f"({str(exc).splitlines()[0]}); this L-BFGS phase ends at the best point it "
                f"had evaluated (loss {best.loss:.6g}) and the fit goes on",
                LbfgsTrialWarning,
                stacklevel=2,
            )


class LbfgsTrialWarning(UserWarning):
    """An L-BFGS phase ended early: a trial point of its line search could not be integrated
    (the fit continued from the best point evaluated before it)."""


class _Best:
    """The lowest loss seen and a copy of the parameters that gave it."""

    def __init__(self, params: Sequence[nn.Parameter]) -> None:
        self.params = list(params)
        self.loss = math.inf
        self.values = [p.detach().clone() for p in self.params]

    def offer(self, loss: float) -> None:
        if loss < self.loss:
            self.loss = loss
            self.values = [p.detach().clone() for p in self.params]

    def restore(self) -> None:
        with torch.no_grad():
            for p, v in zip(self.params, self.values, strict=True):
                p.copy_(v)
