"""The Fitter's declared constraints and the optimisation plan (no fitting: fast)."""

from __future__ import annotations

import inspect
import math

import pytest

from physnode.constraints import Options
from physnode.errors import InvalidInputError
from physnode.fit import MODELS, SCHEDULES, Fitter
from physnode.fit.schedule import plan
from physnode.solver import ADAPTIVE_METHODS, GRAD_METHODS


def test_every_constraint_names_a_setting_and_accepts_its_default():
    params = inspect.signature(Fitter).parameters
    for name, constraint in Fitter.CONSTRAINTS.items():
        assert name in params, name
        assert constraint.accepts(params[name].default), name


def test_choices_come_from_the_registries():
    choices = {n: c.choices for n, c in Fitter.CONSTRAINTS.items() if isinstance(c, Options)}
    assert choices["model"] == MODELS
    assert choices["schedule"] == SCHEDULES
    assert choices["grad"] == tuple(GRAD_METHODS)
    assert choices["method"] == tuple(ADAPTIVE_METHODS)
    assert choices["observe"] == ("auto", "positions")


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"method": "euler-ish"}, r"unknown method 'euler-ish'; choose one of"),
        ({"observe": "velocities"}, r"unknown observe"),
        ({"hidden": 2.5}, r"hidden must be an integer >= 0"),
        ({"lbfgs_steps": True}, r"lbfgs_steps must be an integer >= 0"),
        ({"lr": 0.0}, r"lr must be a finite number > 0"),
        ({"lr": math.nan}, r"lr must be"),
        ({"rtol": -1e-7}, r"rtol must be a finite number >= 0"),
        ({"train_until": "late"}, r"train_until must be None or"),
        ({"seed": 1.5}, r"seed must be an integer"),
        ({"learn": ()}, r"nothing to learn"),
    ],
)
def test_bad_settings_are_refused_before_the_data_are_read(kwargs, fragment):
    with pytest.raises(InvalidInputError, match=fragment):
        Fitter(**kwargs).fit(None)  # the settings are checked first: no data needed


@pytest.mark.parametrize("model", ["physics", "hybrid"])
@pytest.mark.parametrize("n_train", [5, 40, 75, 400])
def test_curriculum_plan(model, n_train):
    """Horizons grow to the whole window, every Adam epoch is planned exactly once, and each
    stage ends with its L-BFGS polish."""
    phases = plan("curriculum", model, n_train, epochs=13, lbfgs_steps=7)
    horizons = [p.horizon for p in phases if p.kind == "lbfgs"]
    assert horizons == sorted(set(horizons)) and horizons[-1] == n_train
    assert sum(p.count for p in phases if p.kind == "adam") == 13
    assert all(p.count == 7 for p in phases if p.kind == "lbfgs")
    assert phases[-1].kind == "lbfgs"
    if model == "physics":  # Adam warms up the shortest horizon only
        assert [p.horizon for p in phases if p.kind == "adam"] == [horizons[0]]


@pytest.mark.parametrize("schedule", ["full", "shooting"])
def test_single_window_plans(schedule):
    kind = "shooting" if schedule == "shooting" else "adam"
    assert [tuple(p) for p in plan(schedule, "physics", 50, 9, 4)] == [
        (kind, 50, 9),
        ("lbfgs", 50, 4),
    ]
    assert [tuple(p) for p in plan(schedule, "physics", 50, 9, 0)] == [(kind, 50, 9)]
