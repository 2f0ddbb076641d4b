"""``physnode fit a.h5 b.h5 ...``: several data files, one fit file each, in-process.

One test runs the real Fitter (short fits of reference data, ``tests/distributed/datafiles.py``)
and checks the masses; the plumbing tests (failures, reruns, refusals) use :class:`FakeFitter`
through the CLI's ``_fitter_class`` seam, so they take no solver time.
"""

from __future__ import annotations

import functools
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar

import numpy as np
import pytest
from rich.console import Console
from typer.testing import CliRunner

import physnode.cli.fit as cli_fit
from physnode.cli.app import app
from physnode.data import Trajectory
from physnode.data.fitfile import read_fit
from physnode.errors import StepSizeTooSmallError
from physnode.fit import Fitter
from tests.cli.test_cli_fit import stop_after
from tests.distributed.datafiles import EPOCHS, LBFGS_STEPS, MASSES, write_data, write_named

runner = CliRunner()


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):  # a plain run, even under a launcher
        monkeypatch.delenv(name, raising=False)


def run(*args: str):
    return runner.invoke(app, ["fit", *args])


def words(output: str) -> str:
    """The output with every run of whitespace made one space (rich wraps table cells)."""
    return " ".join(output.split())


class FakeFitter:
    """Stands in for the Fitter: "fits" at once, reporting the data's true masses.

    It raises for data whose first mass is a key of :attr:`FAIL`, polls ``should_stop`` once
    (a stop makes the fit interrupted, like the real one) and records every call in
    :attr:`calls` as ``(first mass, resume state)``.
    """

    FAIL: ClassVar[dict[float, Exception]] = {
        0.7: StepSizeTooSmallError("step size 1e-15 fell below the floor at t = 0.3", t=0.3),
        1.1: RuntimeError("an unexpected bug"),
    }
    calls: ClassVar[list[tuple[float, Any]]] = []

    def __init__(self, epochs: int = 100, seed: int = 0) -> None:
        self.epochs, self.seed = epochs, seed

    @property
    def settings_(self) -> dict[str, Any]:
        return {"model": "physics", "learn": "masses", "epochs": self.epochs, "seed": self.seed}

    def fit(self, data: Trajectory, *, progress=None, should_stop=None, resume=None) -> Any:
        del progress
        first = float(data.masses[0])
        FakeFitter.calls.append((first, resume))
        if first in self.FAIL:
            raise self.FAIL[first]
        self.interrupted_ = bool(should_stop is not None and should_stop())
        masses = np.asarray(data.masses, dtype=float)
        self.params_ = {"masses": masses}
        self.uncertainties_ = {"masses": np.zeros_like(masses)}
        self.history_ = {"epoch": np.arange(1), "loss": np.array([1.0])}
        self.prediction_, self.network_state_ = data, {}
        self.state_ = {"epoch": 0 if self.interrupted_ else 1}
        self.train_rmse_, self.extrapolation_rmse_ = 0.0, None
        self.train_until_, self.wall_time_ = float(data.times[-1]), 0.0
        self.warnings_, self.undetermined_ = [], []
        return self


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> type[FakeFitter]:
    monkeypatch.setattr(cli_fit, "_fitter_class", lambda: FakeFitter)
    FakeFitter.calls = []
    return FakeFitter


def assert_one_line_failure(result, *, leftover: set[str]) -> None:
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.output
    assert {p.name for p in Path(".").iterdir()} == leftover  # nothing written, no directory


def test_two_files_give_one_fit_file_each(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each data file is fitted on its own (real Fitter, starting from unit masses) into
    DIR/<stem>.fit.h5; -o names a directory that need not exist yet."""
    monkeypatch.setattr(
        cli_fit, "_fitter_class", lambda: functools.partial(Fitter, lbfgs_steps=LBFGS_STEPS)
    )
    write_named("data", "a", "b")
    result = run("data/a.h5", "data/b.h5", "--epochs", str(EPOCHS), "-o", "fits")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in Path("fits").iterdir()) == ["a.fit.h5", "b.fit.h5"]
    for stem in ("a", "b"):
        record = read_fit(f"fits/{stem}.fit.h5")
        assert record.data_file == f"{stem}.h5" and record.interrupted is False
        # Clean data (exact to ~1e-12): measured 3e-13 to 1.1e-12 relative after 5 epochs, 5
        # L-BFGS steps and the least-squares finish; 1e-6 is loose against that and far below
        # the start's 10-30 % error.
        np.testing.assert_allclose(record.params["masses"], MASSES[stem], rtol=1e-6)
        assert record.history["loss"][0] > 1e-3  # it did start away from the answer
    text = words(result.output)
    assert "2 fitted of 2 files" in text
    assert "data/a.h5 fitted masses=[0.8, 1.3, 1]" in text


def test_a_failing_file_does_not_stop_the_others(fake: type[FakeFitter]) -> None:
    """Bad data, a solver error and an unexpected exception each fail their own file; the
    good files are written, the summary says why each failed, and the exit code is 1."""
    write_named(".", "a", "b", "c", "d")  # the fake fails c (solver error) and d (a bug)
    Path("junk.h5").write_text("this is not HDF5")
    result = run("a.h5", "junk.h5", "c.h5", "missing.h5", "d.h5", "b.h5", "-o", "out")
    assert result.exit_code == 1, result.output
    assert sorted(p.name for p in Path("out").iterdir()) == ["a.fit.h5", "b.fit.h5"]
    text = words(result.output)
    assert "2 fitted, 4 failed of 6 files" in text
    assert "failed: junk.h5: not an HDF5 file" in text
    assert "failed: c.h5: step size 1e-15 fell below the floor" in text
    assert "failed: missing.h5: no such file" in text
    assert "failed: d.h5: unexpected RuntimeError: an unexpected bug" in text
    assert "Traceback" in result.output  # an unexpected error shows where it came from
    assert [m for m, _ in fake.calls] == [0.8, 0.7, 1.1, 1.2]  # junk and missing: no fit


def test_a_rerun_skips_complete_fits(fake: type[FakeFitter]) -> None:
    """A rerun keeps complete fits of the same data untouched; --overwrite refits them; other
    settings than the file's are refused rather than silently skipped."""
    write_named(".", "a", "b")
    assert run("a.h5", "b.h5", "--epochs", "3").exit_code == 0
    fits = [Path("a.fit.h5"), Path("b.fit.h5")]
    stamps = [p.stat().st_mtime_ns for p in fits]
    result = run("a.h5", "b.h5", "--epochs", "3")
    assert result.exit_code == 0, result.output
    assert words(result.output).count("skipped (complete)") == 2
    assert [p.stat().st_mtime_ns for p in fits] == stamps
    assert len(fake.calls) == 2  # the first run only

    result = run("a.h5", "b.h5", "--epochs", "4")
    assert result.exit_code == 1, result.output
    assert "a.fit.h5 is a complete fit made with --epochs 3, not 4" in words(result.output)
    assert [p.stat().st_mtime_ns for p in fits] == stamps

    result = run("a.h5", "b.h5", "--epochs", "4", "--overwrite")
    assert result.exit_code == 0, result.output
    assert len(fake.calls) == 4
    assert read_fit("a.fit.h5").settings["epochs"] == 4


def test_an_interrupted_batch_resumes_on_rerun(
    fake: type[FakeFitter], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stop writes the fit under way as interrupted and starts no other file (exit 130); the
    rerun resumes that fit from its state and fits the rest."""
    write_named(".", "a", "b")
    with monkeypatch.context() as m:
        m.setattr(cli_fit, "_make_stop_flag", stop_after(1))  # stop during the first fit
        result = run("a.h5", "b.h5")
    assert result.exit_code == 130, result.output
    text = words(result.output)
    assert "1 interrupted, 1 not started of 2 files" in text
    assert "rerun the same command to resume" in text
    assert read_fit("a.fit.h5").interrupted is True
    assert not Path("b.fit.h5").exists()

    result = run("a.h5", "b.h5")
    assert result.exit_code == 0, result.output
    assert fake.calls[1:] == [(0.8, {"epoch": 0}), (1.2, None)]  # a resumed, b from scratch
    assert read_fit("a.fit.h5").interrupted is False


def test_what_is_not_a_fit_of_this_data_is_never_replaced(fake: type[FakeFitter]) -> None:
    """An output that is the fit of other data, or no fit file at all, fails its file and
    stays as it was; --overwrite replaces it."""
    write_named(".", "a", "b")
    write_data("other.h5", (2.0, 1.0, 1.0))
    assert run("other.h5", "b.h5", "-o", "out").exit_code == 0
    Path("out/other.fit.h5").rename("out/a.fit.h5")  # a's name, other data's fit
    Path("out/b.fit.h5").write_bytes(b"precious")
    before = Path("out/a.fit.h5").read_bytes()

    result = run("a.h5", "b.h5", "-o", "out")
    assert result.exit_code == 1, result.output
    text = words(result.output)
    assert "out/a.fit.h5: is the fit of other data (other.h5), not of a.h5" in text
    assert "out/b.fit.h5: exists and is not a readable fit file" in text
    assert Path("out/a.fit.h5").read_bytes() == before
    assert Path("out/b.fit.h5").read_bytes() == b"precious"

    result = run("a.h5", "b.h5", "-o", "out", "--overwrite")
    assert result.exit_code == 0, result.output
    assert read_fit("out/a.fit.h5").data_file == "a.h5"
    assert read_fit("out/b.fit.h5").data_file == "b.h5"


def test_fit_files_among_the_data_are_skipped(fake: type[FakeFitter]) -> None:
    """``physnode fit *.h5`` run again beside its own outputs does not fit the fit files."""
    write_named(".", "a", "b")
    assert run("a.h5", "b.h5").exit_code == 0
    result = run("a.fit.h5", "a.h5", "b.fit.h5", "b.h5")  # what *.h5 expands to
    assert result.exit_code == 0, result.output
    text = words(result.output)
    assert text.count("skipped (a fit file)") == 2 and text.count("skipped (complete)") == 2
    assert sorted(p.name for p in Path(".").iterdir()) == [
        "a.fit.h5", "a.h5", "b.fit.h5", "b.h5",
    ]  # fmt: skip


def test_impossible_batches_are_refused_up_front(fake: type[FakeFitter]) -> None:
    """Same stems, an output over an input, -o naming a file, --resume with several files:
    one error line, exit 1, nothing written (not even the output directory)."""
    write_named("x", "a")
    write_named("y", "a")
    write_data("a.fit.h5", MASSES["b"])  # data (not a fit) named like a.h5's fit
    Path("file").write_text("")
    leftover = {"x", "y", "a.fit.h5", "file"}
    cases = [
        (["x/a.h5", "y/a.h5", "-o", "out"], "x/a.h5 and y/a.h5 have the same stem"),
        (["x/a.h5", "x/a.h5", "-o", "out"], "have the same stem"),
        (["x/a.h5", "a.fit.h5"], "would replace the data file a.fit.h5"),
        (["x/a.h5", "a.fit.h5", "-o", "file"], "file: is a file"),
        (["x/a.h5", "a.fit.h5", "--resume", "a.fit.h5"], "--resume takes one data file"),
    ]
    for args, message in cases:
        result = run(*args)
        assert_one_line_failure(result, leftover=leftover)
        assert message in words(result.output)
    assert fake.calls == []


def test_one_file_under_torchrun_is_refused(
    fake: type[FakeFitter], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ranks share out several files; for one file the error is printed once, by rank 0."""
    write_named(".", "a")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    result = run("a.h5")
    assert_one_line_failure(result, leftover={"a.h5"})
    assert "run one file without torchrun" in words(result.output)
    monkeypatch.setenv("RANK", "1")
    result = run("a.h5")
    assert result.exit_code == 1 and result.output == ""


def test_result_table_shows_a_discovered_law() -> None:
    """When the fitter read a law out of its correction (``discovered_``), the one-file table
    shows the formula and how much of the correction it explains; without one, nothing."""
    data = Trajectory(np.linspace(0, 1, 3), state=np.zeros((3, 1)))
    fitter = SimpleNamespace(
        params_={"g": 9.81}, uncertainties_={}, train_rmse_=1e-3, extrapolation_rmse_=None,
        wall_time_=1.0, discovered_=SimpleNamespace(formula="-0.1 * v[i]", explained=0.987),
    )  # fmt: skip
    console = Console(width=100, record=True)
    console.print(cli_fit._result_table(fitter, data, Path("fit.h5"), "t"))
    text = words(console.export_text())
    assert "discovered law │ -0.1 * v[i]" in text and "explained │ 98.7%" in text
    fitter.discovered_ = None
    console = Console(width=100, record=True)
    console.print(cli_fit._result_table(fitter, data, Path("fit.h5"), "t"))
    assert "discovered law" not in console.export_text()
