"""Shared fits (:mod:`physnode.fit.shared`) in one process: one parameter set learned from many
files, each with its own other parameters. The data come from the independent reference
simulator (``tests/reference.py``); every fit starts away from the truth (G = 1 against 1.2,
unit masses, a zero correction)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from physnode.data import Trajectory, read_trajectory
from physnode.errors import DataError, InvalidInputError
from physnode.fit import Fitter
from physnode.fit import shared as shared_fit
from physnode.fit.penalty import correction_size
from physnode.fit.shared import check_shared, fit_shared, parse_shared
from tests.distributed.datafiles import MASSES, write_data

TRUE_G = 1.2
DRAG = 0.1


def g_files(tmp_path: Path, points=(30, 45, 30)) -> list[tuple[int, Trajectory]]:
    """Files a, b, c with their own masses, all with G = 1.2 (not recorded: the fit starts
    at G = 1), of unequal lengths."""
    out = []
    for i, (s, n) in enumerate(zip("abc", points, strict=True)):
        path = write_data(tmp_path / f"{s}.h5", MASSES[s], n, G=TRUE_G, record_G=False)
        out.append((i, read_trajectory(path)))
    return out


def drag_files(tmp_path: Path) -> list[tuple[int, Trajectory]]:
    """Files a, b, c with their own masses and one hidden drag, -0.1 v."""
    return [
        (i, read_trajectory(write_data(tmp_path / f"{s}.h5", MASSES[s], drag=DRAG)))
        for i, s in enumerate("abc")
    ]


def test_one_G_from_files_of_unequal_lengths(tmp_path: Path) -> None:
    """~3 s. One G for three files (30, 45 and 30 samples) from G = 1: within 1e-5 of 1.2
    (measured 1.5e-7: the solver's rtol = 1e-7 bounds it), the same value in every file."""
    settings = {"learn": ("G",), "epochs": 20, "lbfgs_steps": 20}
    run = fit_shared(g_files(tmp_path), settings, ("G",))
    assert sorted(run.fitters) == [0, 1, 2] and not run.failed and not run.interrupted
    values = [float(f.params_["G"]) for f in run.fitters.values()]
    assert values[0] == values[1] == values[2]
    # 1e-5: 70x the measured error, and 2e4 times below the 20 % the fit started off
    assert abs(values[0] - TRUE_G) < 1e-5 * TRUE_G
    for fitter in run.fitters.values():
        assert fitter.settings_["shared"] == "G"
        assert np.isnan(fitter.uncertainties_["G"])  # no finish: no σ, and it says so


def test_joint_loss_and_gradient(tmp_path: Path) -> None:
    """~2 s. The joint loss is the sample-weighted mean of the files' own losses (each from a
    single fit's objective), and its gradient in G matches a central finite difference of
    it, for files of 30 and 45 samples (so the weighting matters)."""
    data = g_files(tmp_path, points=(30, 45, 30))
    tight = {"learn": ("G",), "rtol": 1e-12, "atol": 1e-12}
    setup = shared_fit._set_up(data, tight, ("G",), shared_fit.distributed.World())
    n = 20  # a curriculum stage: 20 of 45 samples, so 13-14 of 30
    value = float(setup.loss.loss(n).detach())
    (g_param,) = setup.params
    grad = float(g_param.grad)
    own = []
    for info in setup.loss.infos:
        single = Fitter(**tight)
        single._set_up(data[info.index][1], None)
        m = setup.loss.horizon(info, n)
        own.append((float(single._objective.loss(m).detach()), m * info.width))
    expected = sum(v * w for v, w in own) / sum(w for _, w in own)
    # the same solves in another order: round-off only
    assert value == pytest.approx(expected, rel=1e-12)

    def at(g: float) -> float:
        with torch.no_grad():
            g_param.copy_(torch.as_tensor(g, dtype=torch.float64))
        return float(setup.loss.loss(n).detach())

    raw, h = float(g_param.detach()), 1e-4
    fd = (at(raw + h) - at(raw - h)) / (2 * h)
    # central difference: truncation ~h² = 1e-8 relative, solver noise 1e-12 / 1e-4 = 1e-8
    assert grad == pytest.approx(fd, rel=1e-6)


def test_the_joint_loss_weighs_each_file_s_correction_penalty(tmp_path: Path) -> None:
    """~2 s. With a correction penalty the joint loss is still the residual-weighted mean of
    the files' own losses, each misfit plus the weighted size of the one shared correction
    along that file's trajectory (physnode.fit.penalty)."""
    data = drag_files(tmp_path)
    settings = {"model": "hybrid", "correction": "field", "correction_penalty": 0.5}
    setup = shared_fit._set_up(data, settings, ("correction",), shared_fit.distributed.World())
    torch.manual_seed(1)
    with torch.no_grad():  # the zero-initialised shared network made to correct something
        for p in setup.fitters[0]._prob.model.correction.parameters():
            p.add_(0.1 * torch.randn_like(p))
    n = 20
    value = float(setup.loss.loss(n).detach())
    parts = []
    for info in setup.loss.infos:
        fitter = setup.fitters[info.index]
        m = setup.loss.horizon(info, m=n)
        ys = fitter._objective.solve(m).detach()
        misfit = float(fitter._objective.residual(ys, m).square().mean())
        size = float(correction_size(fitter._prob, ys).detach())
        assert size > 1e-6  # every file sees the shared, non-zero correction
        parts.append((misfit + 0.5 * size, m * info.width))
    expected = sum(v * w for v, w in parts) / sum(w for _, w in parts)
    # the same solves and sums in another order: round-off only
    assert value == pytest.approx(expected, rel=1e-12)


@pytest.mark.slow  # ~15 s: a hybrid fit of three files and three physics fits
def test_a_shared_correction_learns_the_drag_every_file_has(tmp_path: Path) -> None:
    """~15 s. Three files, each its own masses, one hidden drag -0.1 v: one shared field
    correction fits each file 5x better than physics alone (measured 8-13x), the network is
    one network (the same weights in every file's result) while the masses are each file's,
    and every file's readout finds the drag (measured -0.096 .. -0.107 v)."""
    data = drag_files(tmp_path)
    settings = {"model": "hybrid", "correction": "field", "epochs": 20, "lbfgs_steps": 10}
    run = fit_shared(data, settings, ("correction",))
    assert run.correction == "field"
    fitters = [run.fitters[i] for i in range(3)]
    for (_, traj), fitter in zip(data, fitters, strict=True):
        physics = Fitter(lbfgs_steps=10).fit(traj)
        assert fitter.train_rmse_ < physics.train_rmse_ / 5
        law = fitter.discovered_
        coefficient = dict(zip(law.terms, law.coefficients, strict=True)).get("v")
        # 25 %: the readout over half a period of a correction also bending the gravity
        # (the masses are 5-9 % off); the measured spread is 7 %
        assert coefficient == pytest.approx(-DRAG, rel=0.25), law.formula
    first = fitters[0].network_state_
    for other in fitters[1:]:
        for key, value in first.items():
            np.testing.assert_array_equal(other.network_state_[key], value)
    assert not np.allclose(fitters[0].params_["masses"], fitters[1].params_["masses"])


def test_files_that_cannot_take_part(tmp_path: Path) -> None:
    """A file that cannot be set up is failed with its reason and the others fit; files of
    other layouts (three bodies and two) are refused together."""
    data = g_files(tmp_path, points=(30, 30, 30))
    short = Trajectory(np.array([0.0, 0.1]), positions=np.zeros((2, 3, 2)),
                       velocities=np.zeros((2, 3, 2)), masses=np.ones(3))  # fmt: skip
    run = fit_shared([*data[:2], (7, short)], {"learn": ("G",), "epochs": 5, "lbfgs_steps": 2},
                     ("G",))  # fmt: skip
    assert sorted(run.fitters) == [0, 1] and "at least 3" in run.failed[7]
    q = np.stack([np.array([[1.0, 0.0], [-1.0, 0.0]])] * 5)
    two = Trajectory(np.linspace(0, 1, 5), positions=q, velocities=0 * q, masses=np.ones(2))
    with pytest.raises(DataError, match="one layout"):
        fit_shared([data[0], (5, two)], {"learn": ("G",)}, ("G",))


def test_a_stop_before_the_first_step_leaves_the_start_resumable(tmp_path: Path) -> None:
    run = fit_shared(g_files(tmp_path), {"learn": ("G",)}, ("G",), should_stop=lambda: True)
    assert run.interrupted and sorted(run.fitters) == [0, 1, 2]
    for fitter in run.fitters.values():
        assert fitter.interrupted_ and fitter.state_["kind/auto/phase_step"] == 0
        assert float(fitter.params_["G"]) == 1.0  # the start: no step was taken


@pytest.mark.parametrize(
    ("shared", "settings", "match"),
    [
        (("correction",), {"model": "physics"}, "is for --model hybrid"),
        (("G",), {"learn": ("masses",)}, "add it to --learn"),
        (("y0",), {"learn": ("masses", "y0")}, "its own initial state"),
        (("correction",), {"model": "hybrid", "ensemble": 2}, "ensembles"),
        (("correction",), {"model": "hybrid", "validation": 0.2}, "validation"),
        (("G",), {"learn": ("G",), "schedule": "shooting"}, "multiple shooting"),
        (("correction",), {"model": "hybrid", "refit_symbolic": True}, "symbolic refit"),
    ],
)
def test_settings_a_shared_fit_cannot_honour_are_refused(shared, settings, match) -> None:
    with pytest.raises(InvalidInputError, match=match):
        check_shared(shared, settings)


@pytest.mark.parametrize(("text", "match"), [("", "names nothing"), ("G,G", "twice")])
def test_bad_shared_names(text: str, match: str) -> None:
    with pytest.raises(InvalidInputError, match=match):
        parse_shared(text)
