"""``physnode fit`` and ``physnode plot fit.h5`` in-process; needs the real Fitter.

Plumbing tests fit files that ``physnode simulate`` wrote; a test that asserts how well masses
are recovered fits data from ``tests/reference.py`` (an N-body simulator independent of
physnode's) or checks physnode's data against it first.
"""

from __future__ import annotations

import functools
from pathlib import Path

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

import physnode.cli.fit as cli_fit
import physnode.fit as fit_module
from physnode.cli.app import app
from physnode.data import read_trajectory, write_trajectory
from physnode.data.fitfile import read_fit
from physnode.fit.penalty import CHOICES as PENALTY_CHOICES
from tests import reference

#: one period of the equal-mass figure-eight (Chenciner & Montgomery; docs/three-body.md)
FIGURE_EIGHT_PERIOD = 6.325914012016
#: masses unlike the fit's default start (ones)
MASSES = (0.8, 1.3, 1.0)

runner = CliRunner()


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def fast(monkeypatch: pytest.MonkeyPatch) -> None:
    """No L-BFGS polish: the CLI plumbing is under test here, not the optimiser."""
    monkeypatch.setattr(
        cli_fit, "_fitter_class", lambda: functools.partial(fit_module.Fitter, lbfgs_steps=0)
    )


def run(*args: str):
    return runner.invoke(app, list(args))


def simulate() -> Path:
    result = run("simulate", "three-body", "--periods", "1", "--points", "100")
    assert result.exit_code == 0, result.output
    return Path("data.h5")


def reference_file(path: str = "data.h5", points: int = 100) -> Path:
    """The figure-eight start with masses ``MASSES`` over one period, from the reference
    simulator, written as an H5MD file."""
    t = np.linspace(0.0, FIGURE_EIGHT_PERIOD, points)
    q0, v0 = reference.FIGURE_EIGHT_POSITIONS, reference.FIGURE_EIGHT_VELOCITIES
    write_trajectory(path, reference.to_trajectory(reference.simulate(MASSES, q0, v0, t)))
    return Path(path)


def assert_one_line_failure(result, *, leftover: set[str]) -> None:
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.output
    assert {p.name for p in Path(".").iterdir()} == leftover  # no output, no temp file


def test_default_fit_writes_a_fit_file() -> None:
    """The default fit of independent data (masses 0.8, 1.3, 1.0; the fit starts from ones)
    writes a fit file holding the recovered masses, and the file plots."""
    reference_file()
    result = run("fit", "data.h5", "--epochs", "20")
    assert result.exit_code == 0, result.output
    for word in ("masses[0]", "train RMSE", "extrapolation RMSE", "wall time", "fit.h5"):
        assert word in result.output
    record = read_fit("fit.h5")
    traj = read_trajectory("fit.h5")
    assert traj.positions.shape == (100, 3, 2)
    # /particles/bodies/mass holds the fitted masses; the fitter derives prediction_.masses and
    # params_["masses"] by separate float paths, so allow 1 ulp (found: 1.1e-16 apart).
    np.testing.assert_allclose(traj.masses, record.params["masses"], rtol=4e-16, atol=0)
    # Clean data (exact to ~1e-12), so 20 epochs + L-BFGS + the Gauss–Newton finish recover
    # them: measured 1.1e-10 relative; 1e-6 is far from the start (23-25 % off) and loose
    # against what the fit reaches.
    np.testing.assert_allclose(record.params["masses"], MASSES, rtol=1e-6)
    assert record.history["loss"][0] > 1e-3  # it did start away from the answer
    assert record.interrupted is False
    result = run("plot", "fit.h5")
    assert result.exit_code == 0, result.output
    assert Path("fit.png").stat().st_size > 1000


def test_bad_inputs_fail_in_one_line(fast: None) -> None:
    simulate()
    Path("junk.h5").write_text("this is not HDF5")
    with h5py.File("nan.h5", "w") as f:
        pos = np.zeros((10, 3, 2))
        pos[4, 1, 0] = np.nan
        f["particles/bodies/position/value"] = pos
        f["particles/bodies/position/time"] = np.linspace(0, 1, 10)
    with h5py.File("backwards.h5", "w") as f:
        f["particles/bodies/position/value"] = np.ones((10, 3, 2))
        f["particles/bodies/position/time"] = np.linspace(1, 0, 10)
    result = run("simulate", "pendulum", "--points", "50")
    assert result.exit_code == 0, result.output
    files = {"data.h5", "junk.h5", "nan.h5", "backwards.h5", "pendulum.h5"}

    for args in (
        ["junk.h5"],
        ["nan.h5"],
        ["backwards.h5"],
        ["missing.h5"],
        ["data.h5", "--train-until", "100"],
        ["data.h5", "--train-until", "0"],
        ["data.h5", "--learn", "foo"],
        ["data.h5", "--model", "quantum"],
        ["data.h5", "--grad", "magic"],
        ["data.h5", "--method", "nosuch"],
        ["pendulum.h5", "--learn", "masses"],  # a state-only system has no masses
        ["data.h5", "--model", "hybrid", "--correction-penalty", "often"],
        ["data.h5", "--model", "hybrid", "--correction-penalty", "-1"],
        ["data.h5", "--correction-penalty", "auto"],  # a physics model has no correction
        ["data.h5", "--model", "hybrid", "--correction-penalty", "auto", "--validation", "0"],
    ):
        assert_one_line_failure(run("fit", *args, "--epochs", "2"), leftover=files)

    Path("fit.h5").write_bytes(b"precious")
    assert_one_line_failure(run("fit", "data.h5", "--epochs", "2"), leftover=files | {"fit.h5"})
    assert Path("fit.h5").read_bytes() == b"precious"


def stop_after(polls: int):
    def make():
        count = {"n": 0}

        def should_stop() -> bool:
            count["n"] += 1
            return count["n"] > polls

        return should_stop

    return make


def test_interrupt_then_resume_matches_straight_run(
    fast: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    simulate()
    args = ["fit", "data.h5", "--epochs", "8", "--seed", "3"]
    result = run(*args, "-o", "straight.h5")
    assert result.exit_code == 0, result.output

    with monkeypatch.context() as m:
        m.setattr(cli_fit, "_make_stop_flag", stop_after(3))
        result = run(*args, "-o", "part.h5")
    assert result.exit_code == 130, result.output
    assert "interrupted at epoch 3; resume with: physnode fit data.h5 --resume part.h5" in (
        " ".join(result.output.split())
    )
    part = read_fit("part.h5")
    assert part.interrupted is True
    assert part.state["epoch"] == 3

    result = run("fit", "data.h5", "--resume", "part.h5")
    assert result.exit_code == 0, result.output
    resumed, straight = read_fit("part.h5"), read_fit("straight.h5")
    assert resumed.interrupted is False
    # Same seed, same deterministic CPU arithmetic in the same order: only round-off may differ.
    for name, value in straight.params.items():
        np.testing.assert_allclose(resumed.params[name], value, rtol=1e-10, atol=0)
    np.testing.assert_allclose(resumed.history["loss"], straight.history["loss"], rtol=1e-10)


def test_resume_refuses_other_data(fast: None, monkeypatch: pytest.MonkeyPatch) -> None:
    simulate()
    with monkeypatch.context() as m:
        m.setattr(cli_fit, "_make_stop_flag", stop_after(1))
        result = run("fit", "data.h5", "--epochs", "4", "-o", "part.h5")
    assert result.exit_code == 130, result.output
    result = run("simulate", "three-body", "--periods", "1", "--points", "90", "-o", "other.h5")
    assert result.exit_code == 0, result.output
    before = Path("part.h5").read_bytes()
    result = run("fit", "other.h5", "--resume", "part.h5")
    assert_one_line_failure(result, leftover={"data.h5", "other.h5", "part.h5"})
    assert "SHA-256" in result.output
    assert Path("part.h5").read_bytes() == before


@pytest.mark.parametrize("flag", [[], ["--overwrite"]])
def test_fit_never_writes_over_its_input(flag: list[str]) -> None:
    """An output is never its own input file, with --overwrite or without: the data survive."""
    data = simulate()
    before = data.read_bytes()
    result = run("fit", "data.h5", "-o", "./data.h5", *flag)
    assert_one_line_failure(result, leftover={"data.h5"})
    assert "input file" in result.output
    assert data.read_bytes() == before
    result = run("plot", "data.h5", "-o", "data.h5")
    assert_one_line_failure(result, leftover={"data.h5"})
    assert data.read_bytes() == before


def test_fit_refuses_when_the_data_determine_nothing(fast: None) -> None:
    """A lone free body: its straight-line motion does not depend on its mass, so there is no
    mass to report: one error line, exit 1, no fit file (never a number with an error bar)."""
    from physnode.data import Trajectory, write_trajectory

    t = np.linspace(0.0, 2.0, 40)
    q = np.stack([0.3 + 0.5 * t, -0.1 + 0.2 * t], axis=-1)[:, None, :]
    v = np.broadcast_to(np.array([0.5, 0.2]), (40, 1, 2)).copy()
    one = Trajectory(t, positions=q, velocities=v, masses=np.array([2.0]),
                     parameters={"system": "n-body", "G": 1.0})  # fmt: skip
    write_trajectory("one.h5", one)
    result = run("fit", "one.h5", "--epochs", "2")
    assert_one_line_failure(result, leftover={"one.h5"})
    assert "cannot determine masses[0]" in result.output


@pytest.mark.slow  # the README's main job, ~25 s
def test_readme_main_job_recovers_masses_from_a_wrong_guess() -> None:
    """Masses 0.8, 1.3, 1.0 simulated; the fit starts from ones. Clean data over 2 periods:
    1e-6 relative is a loose bound on what the tight-tolerance finish reaches (~1e-10).

    The README's commands are the point, so ``physnode simulate`` writes the data; that they
    are the true motion, not just the motion physnode's own N-body class fits best, is checked
    against the independent reference simulator first."""
    result = run("simulate", "three-body", "--masses", "0.8,1.3,1.0", "--periods", "2")
    assert result.exit_code == 0, result.output
    data = read_trajectory("data.h5")
    q0, v0 = reference.FIGURE_EIGHT_POSITIONS, reference.FIGURE_EIGHT_VELOCITIES
    np.testing.assert_array_equal(data.positions[0], q0)
    ref = reference.simulate(MASSES, q0, v0, data.times)
    # Measured between the two DOP853 runs (physnode at 1e-13, the reference at 1e-12) over 2
    # periods: 1.2e-8 in position, 2.9e-7 in velocity, the reference's own error (at 1e-13 it
    # moves by as much). 3e-6 is 10x above; a force 1e-6 too strong (G · (1 + 1e-6)) moves
    # this orbit by 1.3e-3 in position.
    np.testing.assert_allclose(data.positions, ref.positions, rtol=0, atol=3e-6)
    np.testing.assert_allclose(data.velocities, ref.velocities, rtol=0, atol=3e-6)
    result = run("fit", "data.h5")
    assert result.exit_code == 0, result.output
    masses = read_fit("fit.h5").params["masses"]
    np.testing.assert_allclose(masses, [0.8, 1.3, 1.0], rtol=1e-6)
    assert read_fit("fit.h5").history["loss"][0] > 1e-3  # it did start away from the answer


def test_resuming_a_hybrid_fit_from_before_corrections_keeps_its_mlp() -> None:
    """Fit files written before correction kinds existed have no ``correction`` setting; their
    hybrid was the full-state MLP, so a resume must rebuild that, not today's default."""
    from physnode.cli.fit import _settings

    old = {"model": "hybrid", "learn": "masses", "epochs": 5}
    assert _settings({}, old)["correction"] == "mlp"
    assert "correction" not in _settings({}, {"model": "physics", "learn": "masses"})


def test_resuming_a_fit_from_before_the_retrain_reports_the_chosen_member_as_it_did() -> None:
    """Fit files written before ``retrain`` existed have no such setting; their choice among
    members ended with the chosen member, so a resume must not add a retrain it never had,
    while a file that stored the setting keeps it."""
    from physnode.cli.fit import _settings

    old = {"model": "hybrid", "learn": "masses", "correction_penalty": "auto", "validation": 0.2}
    assert _settings({}, old)["retrain"] is False
    assert _settings({}, {**old, "retrain": True})["retrain"] is True


def test_validation_window_is_reported_and_stored(fast: None) -> None:
    """``--validation 0.25`` of the training window [0, P/2] of the reference figure-eight:
    a result row naming the window and the fit file's ``validation_rmse`` / ``fit_until``
    (the last sample at t <= 0.75 · P/2, counted here from the data's own times); a value the
    Fitter's constraint refuses is one ``error:`` line before anything is read."""
    reference_file()
    result = run("fit", "data.h5", "--epochs", "3", "--validation", "0.25")
    assert result.exit_code == 0, result.output
    assert "validation RMSE" in result.output
    record = read_fit("fit.h5")
    times = read_trajectory("data.h5").times
    assert record.fit_until == times[times <= 0.75 * FIGURE_EIGHT_PERIOD / 2][-1]
    assert record.validation_rmse is not None and record.validation_rmse > 0
    assert record.settings["validation"] == 0.25
    assert_one_line_failure(run("fit", "data.h5", "--validation", "1"),
                            leftover={"data.h5", "fit.h5"})  # fmt: skip


def test_the_candidates_row_names_each_weight_when_the_penalty_was_chosen() -> None:
    """``--correction-penalty auto`` (the fit itself: tests/fit/test_penalty.py): the result
    row labels each member by kind and weight and names the one kept."""
    from rich.console import Console
    from rich.table import Table

    from physnode.fit.ensemble import Candidates

    found = Candidates(
        ("field",) * 3, np.array([0, 0, 0]), 1, "validation", np.array([1e-3, 2e-3, 3e-3]),
        np.array([5e-3, 4e-3, 6e-3]), np.array([0.1, 0.2, 0.3]),
        penalties=np.array(PENALTY_CHOICES), retrained=True,
    )  # fmt: skip
    table = Table()
    for _ in range(4):
        table.add_column()
    cli_fit._add_candidates(table, found)
    console = Console(width=300, record=True)
    console.print(table)
    text = console.export_text()
    assert "field w=0.01 (lowest validation RMSE: field w=0 5.00e-03, field w=0.01 4.00e-03" in text
    assert "then fitted on the whole training window)" in text  # the reported fit is the retrain
