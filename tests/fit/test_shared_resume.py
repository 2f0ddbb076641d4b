"""A stopped shared fit (:mod:`physnode.fit.shared`) resumed from its members' states takes the
steps the uninterrupted fit takes: the reference is the same fit run through without a stop.
The data are the reference simulator's (``tests/reference.py``); every fit starts away from the
truth (G = 1 against 1.2, unit masses, a zero correction)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from physnode.errors import InvalidInputError
from physnode.fit.shared import fit_shared
from tests.fit.test_shared import drag_files, g_files

#: G and each file's initial velocities learned (masses known: G m is what gravity sees): the
#: Adam buffers of the shared G and of every file's own start are both part of the state
G_AND_START = {"learn": ("G", "velocities"), "epochs": 8, "lbfgs_steps": 8}


def stop_after(polls: int):
    """A ``should_stop`` that asks to stop at its ``polls + 1``-th poll (one poll per loss
    evaluation: an Adam step, or one point of an L-BFGS line search)."""
    seen = [0]

    def stop() -> bool:
        seen[0] += 1
        return seen[0] > polls

    return stop


def resumed(data, settings, shared, polls: int):
    """The fit stopped after ``polls`` loss evaluations, then resumed to the end."""
    stopped = fit_shared(data, settings, shared, should_stop=stop_after(polls))
    assert stopped.interrupted and all(f.interrupted_ for f in stopped.fitters.values())
    states = {i: f.state_ for i, f in stopped.fitters.items()}
    return stopped, fit_shared(data, settings, shared, resume=states)


def assert_same(reference, run) -> None:
    # one process, the same parameters, Adam buffers and plan: the same arithmetic in the same
    # order, so the same numbers (measured: identical bits); 1e-13 only allows for rounding
    assert sorted(run.fitters) == sorted(reference.fitters) and not run.interrupted
    for index, ref in reference.fitters.items():
        fitter = run.fitters[index]
        for name, value in ref.params_.items():
            np.testing.assert_allclose(fitter.params_[name], value, rtol=1e-13, atol=0)
        for key, value in ref.network_state_.items():
            np.testing.assert_allclose(fitter.network_state_[key], value, rtol=1e-13, atol=1e-16)
        np.testing.assert_allclose(fitter.history_["loss"], ref.history_["loss"], rtol=1e-13)


@pytest.mark.parametrize("polls", [3, 12], ids=["in-adam", "in-lbfgs"])
def test_a_resumed_fit_takes_the_uninterrupted_steps(tmp_path: Path, polls: int) -> None:
    """~4 s. Stopped in an Adam phase (3 of 8 epochs) and in the L-BFGS phase (after 8 Adam
    steps and 4 line-search points: it reruns from the phase's start)."""
    data = g_files(tmp_path)
    reference = fit_shared(data, G_AND_START, ("G",))
    stopped, run = resumed(data, G_AND_START, ("G",), polls)
    epochs = len(next(iter(stopped.fitters.values())).history_["loss"])
    assert epochs == min(polls, 8)  # an L-BFGS stop goes back to the phase's start
    assert_same(reference, run)
    # and the fit is a fit, not a state that never moved: G went from 1 at least 80 % of the
    # way to 1.2 in these short phases (measured 93 %, the velocities learned alongside)
    assert float(run.fitters[0].params_["G"]) > 1.0 + 0.8 * 0.2


def test_a_state_without_every_file_is_refused(tmp_path: Path) -> None:
    data = g_files(tmp_path)
    stopped = fit_shared(data, G_AND_START, ("G",), should_stop=stop_after(2))
    states = {i: f.state_ for i, f in stopped.fitters.items() if i != 1}
    with pytest.raises(InvalidInputError, match="lacks some file's part"):
        fit_shared(data, G_AND_START, ("G",), resume=states)


@pytest.mark.slow  # ~16 s: a hybrid fit of each kind, stopped in the second and resumed
def test_auto_resumed_in_its_second_kind(tmp_path: Path) -> None:
    """correction='auto' fits field, then pairwise; stopped in pairwise, the resumed fit keeps
    the field fit's end state (no step is taken again) and finishes pairwise: the same choice
    and the same numbers as the uninterrupted fit."""
    data = drag_files(tmp_path)
    settings = {"model": "hybrid", "epochs": 8, "lbfgs_steps": 3}
    polls = [0]
    reference = fit_shared(data, settings, ("correction",), should_stop=lambda: polls.append(1))
    # each kind takes about half the loss evaluations: 5 before the end is in pairwise's last
    # phase (the kinds in the state say so)
    stopped, run = resumed(data, settings, ("correction",), len(polls) - 1 - 5)
    kinds = {key.split("/")[1] for key in next(iter(stopped.fitters.values())).state_}
    assert kinds == {"field", "pairwise"}
    assert run.correction == reference.correction and run.scores == pytest.approx(
        reference.scores, rel=1e-13
    )
    assert_same(reference, run)
