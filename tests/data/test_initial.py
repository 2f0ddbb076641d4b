"""Initial conditions from JSON, CSV and the last frame of an H5MD file; a corpus of bad files."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from physnode.data import InitialConditions, Trajectory, read_initial, write_trajectory
from physnode.errors import DataError, InvalidInputError

POSITIONS = [[0.97000436, -0.24308753], [-0.97000436, 0.24308753], [0.0, 0.0]]
VELOCITIES = [[0.466203685, 0.43236573], [0.466203685, 0.43236573], [-0.93240737, -0.86473146]]


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# ------------------------------------------------------------------------------ good files
def test_json_is_read_exactly_with_its_hash(tmp_path: Path) -> None:
    path = tmp_path / "start.json"
    write(path, json.dumps({"positions": POSITIONS, "velocities": VELOCITIES, "masses": [1, 2, 3]}))
    start = read_initial(path)
    # JSON writes float64 values in their shortest round-tripping form: the values come back
    # bit for bit, so the comparison is exact.
    np.testing.assert_array_equal(start.positions, POSITIONS)
    np.testing.assert_array_equal(start.velocities, VELOCITIES)
    np.testing.assert_array_equal(start.masses, [1.0, 2.0, 3.0])
    assert start.positions.dtype == np.float64 and not start.positions.flags.writeable
    assert (start.n_bodies, start.dim, start.t0, start.source) == (3, 2, 0.0, str(path))
    assert start.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert start.state().shape == (12,)


def test_json_without_masses_has_none(tmp_path: Path) -> None:
    path = write(
        tmp_path / "s.json", json.dumps({"positions": POSITIONS, "velocities": VELOCITIES})
    )
    assert read_initial(path).masses is None


def test_csv_columns_are_found_by_name(tmp_path: Path) -> None:
    """A 3-D CSV with its columns shuffled reads as the same bodies as its JSON twin."""
    q = np.array([[1.0, 0.0, 0.5], [-1.0, 0.25, 0.0]])
    v = np.array([[0.0, 0.5, 0.0], [0.0, -0.5, 0.125]])
    m = np.array([2.0, 0.5])
    lines = ["vz, x ,M,y,vx,z,vy"] + [
        f"{v[i, 2]},{q[i, 0]},{m[i]},{q[i, 1]},{v[i, 0]},{q[i, 2]},{v[i, 1]}" for i in range(2)
    ]
    start = read_initial(write(tmp_path / "s.CSV", "\n".join(lines) + "\n\n"))
    twin = read_initial(
        write(
            tmp_path / "s.json",
            json.dumps({"positions": q.tolist(), "velocities": v.tolist(), "masses": m.tolist()}),
        )
    )
    for name in ("positions", "velocities", "masses"):
        # both are parsed from the same decimal text: equal bit for bit
        np.testing.assert_array_equal(getattr(start, name), getattr(twin, name))
    assert start.dim == 3


def test_h5md_gives_its_last_frame_and_time(tmp_path: Path, particle: Trajectory) -> None:
    path = write_trajectory(tmp_path / "run.h5", particle)
    start = read_initial(path)
    # the file stores float64 exactly: the last frame comes back bit for bit
    np.testing.assert_array_equal(start.positions, particle.positions[-1])
    np.testing.assert_array_equal(start.velocities, particle.velocities[-1])
    np.testing.assert_array_equal(start.masses, particle.masses)
    assert start.t0 == particle.times[-1]


def test_h5md_ensemble_needs_a_member(tmp_path: Path, make_ensemble) -> None:
    ensemble = make_ensemble(per_member_masses=True)
    path = write_trajectory(tmp_path / "ens.h5", ensemble)
    with pytest.raises(InvalidInputError, match=r"ensemble of 4 members; choose one with member"):
        read_initial(path)
    with pytest.raises(InvalidInputError, match="got 4"):
        read_initial(path, member=4)
    start = read_initial(path, member=2)
    np.testing.assert_array_equal(start.positions, ensemble.positions[-1, 2])  # stored exactly
    np.testing.assert_array_equal(start.masses, ensemble.masses[2])
    assert start.member == 2 and start.provenance()["initial_member"] == 2


def test_member_is_refused_outside_ensembles(tmp_path: Path, particle: Trajectory) -> None:
    path = write_trajectory(tmp_path / "run.h5", particle)
    with pytest.raises(InvalidInputError, match="single trajectory"):
        read_initial(path, member=0)
    js = write(tmp_path / "s.json", json.dumps({"positions": POSITIONS, "velocities": VELOCITIES}))
    with pytest.raises(InvalidInputError, match="member applies to H5MD"):
        read_initial(js, member=0)


def test_in_memory_conditions_are_checked_too() -> None:
    with pytest.raises(InvalidInputError, match=r"masses\[1\] = 0\.0"):
        InitialConditions([[0.0, 0.0], [1.0, 0.0]], np.zeros((2, 2)), [1.0, 0.0])


# ------------------------------------------------------------------------------- bad files
GOOD = {"positions": POSITIONS, "velocities": VELOCITIES}

BAD_FILES = [
    (
        "missing-key.json",
        json.dumps({"positions": POSITIONS}),
        r"missing key\(s\) \['velocities'\]",
    ),
    ("unknown-key.json", json.dumps({**GOOD, "mass": [1, 1, 1]}), r"unknown key\(s\) \['mass'\]"),
    ("not-object.json", json.dumps([POSITIONS]), "must be an object"),
    ("syntax.json", '{"positions": [[0, 1],', "not valid JSON"),
    ("empty.json", "", "the file is empty"),
    ("blank.csv", "\n  \n", "the file is empty"),
    (
        "lengths.json",
        json.dumps({"positions": POSITIONS, "velocities": VELOCITIES[:2]}),
        r"velocities has shape \(2, 2\) but positions has \(3, 2\)",
    ),
    (
        "ragged.json",
        json.dumps({"positions": [[0, 1], [1, 2, 3]], "velocities": [[0, 0], [0, 0]]}),
        "positions must hold numbers only, in rows of equal length",
    ),
    (
        "text.json",
        json.dumps({"positions": [["a", 1]], "velocities": [[0, 0]]}),
        "positions must hold numbers only",
    ),
    (
        "nan.json",
        '{"positions": [[0, 1], [NaN, 2]], "velocities": [[0, 0], [0, 0]]}',
        r"positions holds NaN or inf at index \[1, 0\]",
    ),
    (
        "nan.csv",
        "x,y,vx,vy\n0,0,0,0\n1,1,inf,0\n",
        r"velocities holds NaN or inf at index \[1, 0\]",
    ),
    ("negative-mass.json", json.dumps({**GOOD, "masses": [1, -2, 1]}), r"masses\[1\] = -2.0"),
    ("mass-count.json", json.dumps({**GOOD, "masses": [1, 1]}), "masses has shape \\(2,\\)"),
    (
        "dim4.json",
        json.dumps({"positions": [[0, 0, 0, 0], [1, 0, 0, 0]], "velocities": [[0] * 4] * 2}),
        "4 coordinates per body; physnode simulates dim 2",
    ),
    (
        "dim1.json",
        json.dumps({"positions": [[0], [1]], "velocities": [[0], [0]]}),
        "1 coordinates per body",
    ),
    ("no-bodies.json", json.dumps({"positions": [], "velocities": []}), "at least one body"),
    (
        "coincident.json",
        json.dumps({"positions": [[0, 0], [1, 1], [0, 0]], "velocities": [[0, 0]] * 3}),
        r"bodies 0 and 2 are both at \[0.0, 0.0\]",
    ),
    ("bad-header.csv", "x,y,vx,vy,w\n0,0,0,0,0\n", "header 'x,y,vx,vy,w' is not a known layout"),
    ("mixed-dims.csv", "x,y,z,vx,vy\n0,0,0,0,0\n", "is not a known layout"),
    ("twice.csv", "x,y,x,vx,vy,vy\n0,0,0,0,0,0\n", "is not a known layout"),
    ("no-header.csv", "0,0,0,0\n1,1,0,0\n", "the first row must name the columns"),
    ("header-only.csv", "m,x,y,vx,vy\n", "no bodies; add one row per body"),
    ("short-row.csv", "x,y,vx,vy\n0,0,0,0\n1,1,0\n", "line 3 has 3 values"),
    ("junk.csv", "x,y,vx,vy\n0,0,zero,0\n", "line 2: could not convert"),
    ("start.txt", "x,y,vx,vy\n0,0,0,0\n", "unknown initial-condition format '.txt'"),
]


@pytest.mark.parametrize(("name", "text", "match"), BAD_FILES, ids=[b[0] for b in BAD_FILES])
def test_bad_files_are_refused_with_the_file_and_field(
    tmp_path: Path, name: str, text: str, match: str
) -> None:
    path = write(tmp_path / name, text)
    with pytest.raises(InvalidInputError, match=match) as err:
        read_initial(path)
    assert str(err.value).startswith(str(path))


def test_h5md_without_velocities_is_refused(tmp_path: Path, particle: Trajectory) -> None:
    positions_only = Trajectory(particle.times, positions=particle.positions)
    path = write_trajectory(tmp_path / "pos.h5", positions_only)
    with pytest.raises(InvalidInputError, match="velocity is missing; a run cannot continue"):
        read_initial(path)


def test_h5md_non_particle_and_noisy_files_are_refused(
    tmp_path: Path, particle: Trajectory, state_traj: Trajectory
) -> None:
    path = write_trajectory(tmp_path / "pendulum.h5", state_traj)
    with pytest.raises(InvalidInputError, match="non-particle system"):
        read_initial(path)
    noisy = Trajectory(
        particle.times,
        positions=particle.positions,
        velocities=particle.velocities,
        parameters={"noise_std": 0.01},
    )
    path = write_trajectory(tmp_path / "noisy.h5", noisy)
    with pytest.raises(InvalidInputError, match="noisy observations"):
        read_initial(path)


def test_unreadable_files_are_data_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file"):
        read_initial(tmp_path / "absent.json")
    with pytest.raises(DataError, match="not an HDF5 file"):
        read_initial(write(tmp_path / "fake.h5", "positions"))
    (tmp_path / "latin1.csv").write_bytes(b"x,y,vx,vy\n\xe9,0,0,0\n")
    with pytest.raises(DataError, match="UTF-8"):
        read_initial(tmp_path / "latin1.csv")
