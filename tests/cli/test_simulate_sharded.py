"""``physnode simulate three-body --batch N`` sharded over torchrun ranks.

The launches are real (``python -m torch.distributed.run``, gloo on CPU, one thread a rank).
A sharded ensemble is **not** bit-identical to a single-process one, and the tests say how
close it is: the starts, the times and the noise draws are exact, but each rank integrates a
smaller batch, and torch's vectorised kernels round a member differently by its place in the
batch (seen: 4e-15 with ``rk4`` and ``leapfrog``; with the default per-sample steps an ulp of a
member's step size now and then, 5e-14 over a period with dop853; with ``--steps shared`` each
integrated batch chooses its own step sequence, 4e-12).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from physnode.data import Trajectory, add_noise, read_trajectory, write_trajectory
from physnode.data.shards import join_shards, member_blocks, shard_path
from physnode.errors import DataError
from physnode.simulate import _add_member_noise, simulate

#: the whole launch; a hung run fails the test instead of the suite
LAUNCH_TIMEOUT_S = 120

#: a short run: one period of the perturbed figure-eight, 30 samples
RUN = {"periods": 1.0, "points": 30}
RUN_ARGS = ["--periods", "1", "--points", "30"]

#: sharded vs whole batch with dop853 at rtol = atol = 1e-13 over one period: per-sample steps
#: are the same per member up to rounding (seen 5e-14); 1e-9 is the bound of a share that
#: takes its own steps within the tolerance (``--steps shared``, seen 4e-12) with room for the
#: growth of a chaotic three-body error over the period
SHARE_TOL = 1e-9

FAILING_LAUNCH = """
import os
import physnode.cli.simulate as cli
from physnode.cli.app import main
from physnode.errors import InvalidInputError

real = cli.simulate

def failing(*args, **kwargs):
    if os.environ.get("RANK") == "1":
        raise InvalidInputError("boom on rank 1")
    return real(*args, **kwargs)

cli.simulate = failing
main()
"""


def torchrun(cwd: Path, *args: str, nproc: int = 2, script: Path | None = None):
    """``torchrun --nproc_per_node=nproc --standalone -m physnode.cli.app simulate ARGS``."""
    target = [str(script)] if script is not None else ["-m", "physnode.cli.app"]
    cmd = [
        sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}",
        "--standalone", "--monitor-interval=0.2", *target, "simulate", *args,
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path.cwd())}
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)  # torchrun sets its own
    return subprocess.run(
        cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=LAUNCH_TIMEOUT_S
    )


def members(traj: Trajectory, lo: int, hi: int) -> Trajectory:
    """Members ``lo .. hi - 1`` of an ensemble trajectory."""
    return Trajectory(
        traj.times.copy(),
        positions=traj.positions[:, lo:hi].copy(),
        velocities=traj.velocities[:, lo:hi].copy(),
        masses=traj.masses,
        energy=traj.energy[:, lo:hi].copy(),
        parameters=dict(traj.parameters),
    )


def assert_same_ensemble(sharded: Trajectory, whole: Trajectory, tol: float) -> None:
    """Exact times, masses and parameters; positions and velocities to ``tol``."""
    assert np.array_equal(sharded.times, whole.times)
    assert np.array_equal(sharded.masses, whole.masses)
    assert sharded.parameters.keys() == whole.parameters.keys()
    assert sharded.n_members == whole.n_members
    np.testing.assert_allclose(sharded.positions, whole.positions, rtol=0, atol=tol)
    np.testing.assert_allclose(sharded.velocities, whole.velocities, rtol=0, atol=tol)


# ---------------------------------------------------------------------------- in one process
def test_member_blocks_are_contiguous_and_cover_the_batch() -> None:
    assert member_blocks(5, 2) == [(0, 3), (3, 5)]
    assert member_blocks(3, 4) == [(0, 1), (1, 2), (2, 3), (3, 3)]
    assert member_blocks(4, 1) == [(0, 4)]


def test_shard_path_is_beside_the_output(tmp_path: Path) -> None:
    assert shard_path(tmp_path / "run.h5", 1, 4) == tmp_path / "run.h5.part-1-of-4.h5"


def test_a_share_starts_exactly_where_the_whole_batch_does() -> None:
    whole, _ = simulate("three-body", batch=5, **RUN)
    share, _ = simulate("three-body", batch=5, members=(3, 5), **RUN)
    assert np.array_equal(share.positions[0], whole.positions[0, 3:5])
    assert np.array_equal(share.velocities[0], whole.velocities[0, 3:5])
    assert share.parameters == whole.parameters


@pytest.mark.parametrize("chunk", [1 << 20, 7])  # one draw per kind, and many small draws
def test_a_share_gets_exactly_the_whole_batchs_noise(
    chunk: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("physnode.simulate._NOISE_CHUNK", chunk)
    clean, _ = simulate("three-body", batch=5, **RUN)
    noisy = add_noise(clean, 0.01, 7)
    share = _add_member_noise(members(clean, 1, 4), 0.01, 7, (1, 4), 5)
    assert np.array_equal(share.positions, noisy.positions[:, 1:4])
    assert np.array_equal(share.velocities, noisy.velocities[:, 1:4])
    assert share.parameters == members(noisy, 1, 4).parameters


def test_members_need_a_batch_and_must_lie_in_it() -> None:
    from physnode.errors import InvalidInputError

    with pytest.raises(InvalidInputError, match="members applies to a batch"):
        simulate("three-body", members=(0, 1), **RUN)
    with pytest.raises(InvalidInputError, match="0 <= lo < hi <= batch"):
        simulate("three-body", batch=2, members=(1, 3), **RUN)


def test_joined_shards_equal_the_whole_file_exactly(tmp_path: Path) -> None:
    whole, _ = simulate("three-body", batch=5, noise=0.01, **RUN)
    parts = [tmp_path / "a.h5", tmp_path / "b.h5"]
    write_trajectory(parts[0], members(whole, 0, 3))
    write_trajectory(parts[1], members(whole, 3, 5))
    joined = read_trajectory(join_shards(parts, tmp_path / "all.h5"))
    assert not any(p.exists() for p in parts)  # removed after the join
    assert np.array_equal(joined.positions, whole.positions)
    assert np.array_equal(joined.velocities, whole.velocities)
    assert np.array_equal(joined.energy, whole.energy)
    assert np.array_equal(joined.masses, whole.masses)
    assert joined.parameters == whole.parameters


def test_shards_of_other_runs_are_not_joined(tmp_path: Path) -> None:
    a, _ = simulate("three-body", batch=2, seed=1, **RUN)
    b, _ = simulate("three-body", batch=2, seed=2, **RUN)
    parts = [tmp_path / "a.h5", tmp_path / "b.h5"]
    write_trajectory(parts[0], a)
    write_trajectory(parts[1], b)
    with pytest.raises(DataError, match="parameters differ"):
        join_shards(parts, tmp_path / "all.h5")
    assert not (tmp_path / "all.h5").exists()
    assert all(p.exists() for p in parts)  # kept when the join fails


# ---------------------------------------------------------------------------- under torchrun
def test_two_ranks_give_the_single_process_ensemble(tmp_path: Path) -> None:
    """5 members on 2 ranks (3 + 2), with noise: one file, no shards left, the summary once."""
    args = ["three-body", "--batch", "5", "--noise", "0.01", "--seed", "3", *RUN_ARGS]
    done = torchrun(tmp_path, *args, "-o", "two.h5")
    assert done.returncode == 0, done.stdout + done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["two.h5"]
    assert done.stdout.count("physnode simulate three-body") == 1  # rank 0 reports
    assert "members per rank: 3, 2" in done.stdout
    whole, _ = simulate("three-body", batch=5, noise=0.01, seed=3, **RUN)
    sharded = read_trajectory(tmp_path / "two.h5")
    assert_same_ensemble(sharded, whole, SHARE_TOL)
    assert sharded.parameters == whole.parameters


def test_more_ranks_than_members(tmp_path: Path) -> None:
    """3 members on 4 ranks: rank 3 has none and writes no shard; the file is whole."""
    done = torchrun(tmp_path, "three-body", "--batch", "3", *RUN_ARGS, "-o", "e.h5", nproc=4)
    assert done.returncode == 0, done.stdout + done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e.h5"]
    whole, _ = simulate("three-body", batch=3, **RUN)
    sharded = read_trajectory(tmp_path / "e.h5")
    assert_same_ensemble(sharded, whole, SHARE_TOL)
    # without noise the starts are the same numbers: the first frame is exact
    assert np.array_equal(sharded.positions[0], whole.positions[0])


def test_a_failing_rank_fails_the_run_with_one_line(tmp_path: Path) -> None:
    """Rank 1 fails: every rank exits 1, rank 0 prints one line naming it, and neither the
    output nor any shard is left."""
    script = tmp_path / "failing.py"
    script.write_text(FAILING_LAUNCH)
    done = torchrun(tmp_path, "three-body", "--batch", "5", *RUN_ARGS, "-o", "x.h5",
                    script=script)  # fmt: skip
    assert done.returncode != 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["failing.py"]
    err = " ".join(done.stderr.split())
    line = "error: rank 1 of 2 (members 3..4): boom on rank 1; no output was written"
    assert err.count(line) == 1, done.stderr
