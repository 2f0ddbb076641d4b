"""``physnode fit`` and ``physnode plot fit.h5`` in-process; needs the real Fitter."""

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
from physnode.data import read_trajectory
from physnode.data.fitfile import read_fit

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


def assert_one_line_failure(result, *, leftover: set[str]) -> None:
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.output
    assert {p.name for p in Path(".").iterdir()} == leftover  # no output, no temp file


def test_default_fit_writes_a_fit_file() -> None:
    simulate()
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
    # The figure-eight has unit masses; clean data, so 20 epochs + L-BFGS find them closely.
    np.testing.assert_allclose(record.params["masses"], 1.0, rtol=1e-3)
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
    1e-6 relative is a loose bound on what the tight-tolerance finish reaches (~1e-10)."""
    result = run("simulate", "three-body", "--masses", "0.8,1.3,1.0", "--periods", "2")
    assert result.exit_code == 0, result.output
    result = run("fit", "data.h5")
    assert result.exit_code == 0, result.output
    masses = read_fit("fit.h5").params["masses"]
    np.testing.assert_allclose(masses, [0.8, 1.3, 1.0], rtol=1e-6)
    assert read_fit("fit.h5").history["loss"][0] > 1e-3  # it did start away from the answer
