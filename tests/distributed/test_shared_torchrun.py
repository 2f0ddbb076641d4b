"""Shared fits (``physnode fit ... --shared``) launched for real under torchrun (gloo on CPU),
against the same command in one process; and the command's rules for reruns and refusals.

The data are the reference simulator's (``tests/distributed/datafiles.py``); see
``tests/distributed/test_torchrun.py`` for how the launches are made.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import physnode.cli.shared as cli_shared
from physnode.cli.app import app
from physnode.data.fitfile import read_fit
from physnode.fit.shared import fit_shared
from tests.distributed.datafiles import MASSES, write_data
from tests.distributed.launch import stop_after
from tests.distributed.test_torchrun import fit_files, torchrun

HYBRID = ["--model", "hybrid", "--correction", "field", "--shared", "correction"]
G_ONLY = ["--learn", "G", "--shared", "G", "--epochs", "5"]


def drag_files(directory: Path, *stems: str) -> list[str]:
    for s in stems:
        write_data(directory / f"{s}.h5", MASSES[s], drag=0.1)
    return [f"{s}.h5" for s in stems]


def one_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *args: str, stop=None):
    """The same command in this process (no torchrun), L-BFGS shortened as the launches are;
    ``stop`` in the place of Ctrl-C's ``should_stop``, when given."""
    monkeypatch.chdir(tmp_path)

    def fit(data, settings, *a, **k):
        return fit_shared(data, {**settings, "lbfgs_steps": 5}, *a,
                          **{**k, **({"should_stop": stop} if stop else {})})  # fmt: skip

    monkeypatch.setattr(cli_shared, "_fit_shared_seam", lambda: fit)
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    return CliRunner().invoke(app, ["fit", *args])


def assert_same_fits(left: Path, right: Path, stems) -> None:
    for stem in stems:
        a, b = read_fit(left / f"{stem}.fit.h5"), read_fit(right / f"{stem}.fit.h5")
        # float64; the ranks sum the files' gradients in another order than one process
        # (a + c, then + b): round-off only, measured 4e-15 (parameters, weights) and 8e-14
        # (the loss history) for this hybrid fit. A rank fitting with other settings moves
        # them by far more (a 2 % change of lr moves the epoch losses by tens of per cent)
        for name, value in a.params.items():
            np.testing.assert_allclose(b.params[name], value, rtol=1e-10, atol=0)
        for key, value in a.network.items():
            np.testing.assert_allclose(b.network[key], value, rtol=1e-10, atol=1e-14)
        np.testing.assert_allclose(b.history["loss"], a.history["loss"], rtol=1e-10)
        assert a.settings["shared"] == b.settings["shared"]
        assert a.settings["shared_group"] == b.settings["shared_group"]


@pytest.mark.slow  # ~15 s: a hybrid shared fit in a 2-rank launch and in one process
def test_a_shared_fit_on_two_ranks_equals_one_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three files with one hidden drag on two ranks (rank 0: a, c; rank 1: b): the same fit
    files as one process, every file's with the shared network and its own masses."""
    args = [*drag_files(tmp_path, "a", "b", "c"), *HYBRID, "--epochs", "10"]
    done = torchrun(tmp_path, *args, "-o", "ranks")
    assert done.returncode == 0, done.stdout + done.stderr
    out = " ".join(done.stdout.split())
    assert out.count("physnode fit: 3 files") == 1 and "3 fitted of 3 files" in out
    assert "shared: correction" in done.stderr
    alone = one_process(tmp_path, monkeypatch, *args, "-o", "one")
    assert alone.exit_code == 0, alone.output
    assert_same_fits(tmp_path / "one", tmp_path / "ranks", "abc")


def test_more_ranks_than_files_of_unequal_lengths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """~10 s. Two files (30 and 45 samples) on three ranks: rank 2 has none and still takes
    part in every step; the result equals one process's; a rerun skips both files."""
    write_data(tmp_path / "a.h5", MASSES["a"], 30, G=1.2, record_G=False)
    write_data(tmp_path / "b.h5", MASSES["b"], 45, G=1.2, record_G=False)
    args = ["a.h5", "b.h5", *G_ONLY]
    done = torchrun(tmp_path, *args, "-o", "ranks", nproc=3)
    assert done.returncode == 0, done.stdout + done.stderr
    alone = one_process(tmp_path, monkeypatch, *args, "-o", "one")
    assert alone.exit_code == 0, alone.output
    assert_same_fits(tmp_path / "one", tmp_path / "ranks", "ab")
    # and G came back from 1 (20 % off): 1e-4 after 5 L-BFGS steps per stage (measured 2e-5)
    assert abs(float(read_fit(tmp_path / "one" / "a.fit.h5").params["G"]) - 1.2) < 1.2e-4
    before = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "one").iterdir()}
    again = one_process(tmp_path, monkeypatch, *args, "-o", "one")
    assert again.exit_code == 0 and "2 skipped of 2 files" in " ".join(again.output.split())
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "one").iterdir()} == before


def test_a_rank_that_dies_fails_the_shared_fit_leaving_no_file(tmp_path: Path) -> None:
    """~6 s. Rank 1 is killed at its first step: rank 0's next all-reduce fails at once, it
    says so in one line, and no fit file (nor a temporary one) is written."""
    write_data(tmp_path / "a.h5", MASSES["a"], G=1.2, record_G=False)
    write_data(tmp_path / "b.h5", MASSES["b"], G=1.2, record_G=False)
    start = time.perf_counter()
    done = torchrun(
        tmp_path, "a.h5", "b.h5", *G_ONLY, "-o", "out",
        PHYSNODE_TEST_DIE_RANK="1", PHYSNODE_DIST_TIMEOUT="60",
    )  # fmt: skip
    assert done.returncode != 0, done.stdout + done.stderr
    assert time.perf_counter() - start < 45  # far below the 60 s timeout
    said = " ".join(done.stderr.split())
    assert "error: rank 0 of 2 lost the other ranks during a shared fit" in said, said
    assert fit_files(tmp_path / "out") == []


def test_what_a_shared_run_refuses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """~4 s. One line and exit 1: --shared with one file, with --resume; an output that holds
    another fit, without --overwrite; a plain run over a shared fit's outputs."""
    write_data(tmp_path / "a.h5", MASSES["a"], G=1.2, record_G=False)
    write_data(tmp_path / "b.h5", MASSES["b"], G=1.2, record_G=False)
    cases = [
        (["a.h5", *G_ONLY], "give two or more"),
        (["a.h5", "b.h5", *G_ONLY, "--resume", "x.h5"], "resumes when the same command"),
    ]
    for args, said in cases:
        result = one_process(tmp_path, monkeypatch, *args)
        assert result.exit_code == 1 and said in " ".join(result.output.split()), result.output
    assert one_process(tmp_path, monkeypatch, "a.h5", "b.h5", *G_ONLY, "-o", "out").exit_code == 0
    other = one_process(tmp_path, monkeypatch, "a.h5", "b.h5", "--learn", "G", "--shared", "G",
                        "--epochs", "6", "-o", "out")  # fmt: skip
    assert other.exit_code == 1 and "rerun with --overwrite" in " ".join(other.output.split())
    plain = one_process(tmp_path, monkeypatch, "a.h5", "b.h5", "--learn", "G", "-o", "out")
    assert plain.exit_code == 1
    assert "is a member of a shared fit" in " ".join(plain.output.split())


def test_a_stopped_shared_run_resumes_when_rerun(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """~5 s. Stopped after 3 steps: exit 130, each file's fit file written as stopped (its
    share of the state in it), and one line saying to rerun; the rerun goes on from there and
    writes the files an uninterrupted run writes."""
    write_data(tmp_path / "a.h5", MASSES["a"], G=1.2, record_G=False)
    write_data(tmp_path / "b.h5", MASSES["b"], 45, G=1.2, record_G=False)
    args = ["a.h5", "b.h5", "--learn", "G,velocities", "--shared", "G", "--epochs", "6"]
    stopped = one_process(tmp_path, monkeypatch, *args, "-o", "out", stop=stop_after(3))
    assert stopped.exit_code == 130, stopped.output
    said = " ".join(stopped.output.split())
    assert "2 interrupted of 2 files" in said and "rerun the same command to resume" in said
    for stem in "ab":
        record = read_fit(tmp_path / "out" / f"{stem}.fit.h5")
        assert record.interrupted and record.state["kind/auto/phase_step"] == 3
    assert fit_files(tmp_path / "out") == ["a.fit.h5", "b.fit.h5"]  # no temporary file left
    again = one_process(tmp_path, monkeypatch, *args, "-o", "out")
    assert again.exit_code == 0 and "2 fitted of 2 files" in " ".join(again.output.split())
    whole = one_process(tmp_path, monkeypatch, *args, "-o", "whole")
    assert whole.exit_code == 0, whole.output
    assert_same_fits(tmp_path / "whole", tmp_path / "out", "ab")
    assert not read_fit(tmp_path / "out" / "a.fit.h5").interrupted


@pytest.mark.slow  # ~15 s: a 2-rank launch stopped, resumed in one process, and the whole fit
def test_stopped_on_two_ranks_resumed_in_one_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stop on rank 0 stops both ranks after the same step; the state the two ranks wrote
    (each its files') resumes in one process to the fit one process makes uninterrupted."""
    args = [*drag_files(tmp_path, "a", "b", "c"), *HYBRID, "--epochs", "8"]
    done = torchrun(tmp_path, *args, "-o", "out", PHYSNODE_TEST_STOP_AFTER="5")
    # torchrun exits 1 when a worker fails; the worker's own 130 (stopped) is in its report
    assert done.returncode != 0 and re.search(r"exitcode\s*:\s*130", done.stderr), done.stderr
    assert "3 interrupted of 3 files" in " ".join(done.stdout.split())
    steps = {read_fit(tmp_path / "out" / f"{s}.fit.h5").state["kind/field/phase_step"]
             for s in "abc"}  # fmt: skip
    assert steps == {5}  # every rank stopped after the same step
    again = one_process(tmp_path, monkeypatch, *args, "-o", "out")
    assert again.exit_code == 0, again.output
    whole = one_process(tmp_path, monkeypatch, *args, "-o", "whole")
    assert whole.exit_code == 0, whole.output
    assert_same_fits(tmp_path / "whole", tmp_path / "out", "abc")
