"""H5MD trajectory files: exact round trips, the raw layout, foreign files, and bad files."""

from __future__ import annotations

import json
import os

import h5py
import numpy as np
import pytest

from physnode import __version__
from physnode.data import (
    FORMAT_VERSION,
    Trajectory,
    add_noise,
    describe,
    read_trajectory,
    write_trajectory,
)
from physnode.errors import DataError, FileExistsOutputError, InvalidInputError

ARRAYS = ("times", "positions", "velocities", "masses", "energy", "state")


def assert_same(a: Trajectory, b: Trajectory) -> None:
    """Bit-exact equality of every array (values and dtype), names and parameters."""
    for name in ARRAYS:
        x, y = getattr(a, name), getattr(b, name)
        if x is None or y is None:
            assert x is None and y is None, name
            continue
        assert x.dtype == y.dtype == np.float64, name
        assert x.shape == y.shape, name
        assert np.array_equal(x, y), name
    assert a.state_names == b.state_names
    assert a.body_names == b.body_names
    assert a.parameters.keys() == b.parameters.keys()
    for key, value in a.parameters.items():
        other = b.parameters[key]
        if isinstance(value, (list, tuple, np.ndarray)):
            assert np.array_equal(np.asarray(value), np.asarray(other)), key
        else:
            assert value == other and type(value) is type(other), key


def no_temp_files(directory) -> bool:
    return not [p for p in os.listdir(directory) if p.endswith(".tmp")]


# ---------------------------------------------------------------- round trips
def test_round_trip_particle(tmp_path, particle):
    out = write_trajectory(tmp_path / "p.h5", particle, author="Ada")
    assert out == tmp_path / "p.h5"
    assert_same(particle, read_trajectory(out))
    assert no_temp_files(tmp_path)


def test_round_trip_state(tmp_path, state_traj):
    write_trajectory(tmp_path / "s.h5", state_traj)
    assert_same(state_traj, read_trajectory(tmp_path / "s.h5"))


@pytest.mark.parametrize("per_member_masses", [False, True])
def test_round_trip_ensemble(tmp_path, make_ensemble, per_member_masses):
    ens = make_ensemble(per_member_masses=per_member_masses)
    write_trajectory(tmp_path / "e.h5", ens)
    back = read_trajectory(tmp_path / "e.h5")
    assert back.n_members == 4
    assert back.masses.shape == ((4, 3) if per_member_masses else (3,))
    assert_same(ens, back)


def test_round_trip_ensemble_of_one(tmp_path, make_ensemble):
    ens = make_ensemble(n_members=1)
    write_trajectory(tmp_path / "e1.h5", ens)
    back = read_trajectory(tmp_path / "e1.h5")
    assert back.n_members == 1  # the member axis survives, even of length 1
    assert_same(ens, back)


def test_round_trip_state_ensemble(tmp_path, state_traj):
    ens = Trajectory(
        state_traj.times,
        state=np.stack([state_traj.state, 2 * state_traj.state], axis=1),
        state_names=state_traj.state_names,
        energy=np.stack([state_traj.energy, 4 * state_traj.energy], axis=1),
    )
    write_trajectory(tmp_path / "se.h5", ens)
    assert_same(ens, read_trajectory(tmp_path / "se.h5"))


def test_round_trip_minimal_and_noisy(tmp_path, particle):
    minimal = Trajectory(particle.times, positions=particle.positions)
    write_trajectory(tmp_path / "m.h5", minimal)
    assert_same(minimal, read_trajectory(tmp_path / "m.h5"))
    noisy = add_noise(particle, 0.01, seed=1)
    write_trajectory(tmp_path / "n.h5", noisy)
    assert_same(noisy, read_trajectory(tmp_path / "n.h5"))


def test_parameter_types_round_trip(tmp_path, particle):
    params = {
        "s": "dopri5",
        "unicode": "Šuvakov",
        "i": 3,
        "f": 1e-9,
        "b": False,
        "none": None,
        "ints": [1, 2, 3],
        "floats": np.array([0.5, 1.5]),
        "names": ["x", "y"],
        "nested": {"lr": 0.1, "schedule": {"kind": "cosine"}},
    }
    traj = Trajectory(particle.times, positions=particle.positions, parameters=params)
    write_trajectory(tmp_path / "p.h5", traj)
    back = read_trajectory(tmp_path / "p.h5").parameters
    assert list(back) == list(params)  # insertion order kept (track_order)
    assert back["s"] == "dopri5" and back["unicode"] == "Šuvakov"
    assert back["i"] == 3 and type(back["i"]) is int
    assert back["f"] == 1e-9 and type(back["f"]) is float
    assert back["b"] is False and back["none"] is None
    assert np.array_equal(back["ints"], [1, 2, 3]) and back["ints"].dtype == np.int64
    assert np.array_equal(back["floats"], [0.5, 1.5])
    assert back["names"] == ["x", "y"]
    assert back["nested"] == {"lr": 0.1, "schedule": {"kind": "cosine"}}


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"obj": object()}, "parameters.obj"),
        ({"c": 1j}, "parameters.c"),
        ({"a/b": 1}, "cannot be stored"),
        ({"huge": 2**70}, "int64"),
        ({"mixed": [1, "a"]}, "parameters.mixed"),
    ],
)
def test_unstorable_parameter_refused_before_writing(tmp_path, particle, params, match):
    traj = Trajectory(particle.times, positions=particle.positions, parameters=params)
    with pytest.raises(InvalidInputError, match=match):
        write_trajectory(tmp_path / "p.h5", traj)
    assert os.listdir(tmp_path) == []


# ---------------------------------------------------------------- raw layout
def test_raw_layout_is_h5md(tmp_path, particle):
    write_trajectory(tmp_path / "p.h5", particle, author="Ada")
    with h5py.File(tmp_path / "p.h5", "r") as f:
        version = f["h5md"].attrs["version"]
        assert version.dtype.kind == "i" and version.tolist() == [1, 1]
        assert f["h5md/author"].attrs["name"] == "Ada"
        creator = f["h5md/creator"].attrs
        assert creator["name"] == "physnode" and creator["version"] == __version__
        assert creator["physnode_format_version"] == FORMAT_VERSION

        bodies = f["particles/bodies"]
        box = bodies["box"].attrs
        assert box["dimension"] == 2
        assert box["boundary"].tolist() == [b"none", b"none"]
        pos, vel = bodies["position"], bodies["velocity"]
        assert pos["value"].shape == (50, 3, 2) and pos["value"].dtype == np.float64
        assert pos["time"].shape == (50,) and pos["time"].dtype == np.float64
        assert pos["step"].dtype == np.int64
        assert np.array_equal(pos["step"][()], np.arange(50))
        assert pos["value"].maxshape[0] is None  # H5MD: the time axis is [variable]
        assert bodies["mass"].shape == (3,)
        assert bodies.attrs["body_names"].tolist() == ["body0", "body1", "body2"]
        energy = f["observables/energy"]
        assert energy["value"].shape == (50,)
        # Hard links: one time grid and one step list, shared by every element.
        for other in (vel, energy):
            assert other["time"] == pos["time"]
            assert other["step"] == pos["step"]
        assert h5py.h5o.get_info(pos["time"].id).rc == 3  # position, velocity, energy

        params = f["parameters"].attrs
        assert params["system"] == "n-body" and params["G"] == 1.0
        for key in ("preset", "method", "rtol", "atol", "seed", "noise_std"):
            assert key in params
        assert "state" not in f["observables"]


def test_raw_layout_state_and_ensemble(tmp_path, state_traj, ensemble):
    write_trajectory(tmp_path / "s.h5", state_traj)
    with h5py.File(tmp_path / "s.h5", "r") as f:
        assert "particles" not in f
        state = f["observables/state"]
        assert state["value"].shape == (40, 2)
        assert list(state.attrs["names"]) == ["theta", "omega"]
        assert f["observables/energy/time"] == state["time"]
        assert f["parameters"].attrs["system"] == "pendulum"

    write_trajectory(tmp_path / "e.h5", ensemble)
    with h5py.File(tmp_path / "e.h5", "r") as f:
        bodies = f["particles/bodies"]
        assert bodies.attrs["ensemble_size"] == 4
        value = bodies["position/value"][()]
        assert value.shape == (30, 4 * 3, 3)  # plain H5MD: B*N particles, member-major
        assert np.array_equal(value[:, 3:6], ensemble.positions[:, 1])
        assert bodies["mass"].shape == (12,)
        assert f["observables/energy/value"].shape == (30, 4)


# ---------------------------------------------------------------- files by other programs
def _foreign(path, group="bodies", *, time=None, step=None, value=None, h5md=True, offsets=None):
    """A file as another H5MD writer might produce it: no velocity, mass or /parameters."""
    rng = np.random.default_rng(5)
    value = rng.normal(size=(6, 2, 3)) if value is None else value
    with h5py.File(path, "w") as f:
        if h5md:
            g = f.create_group("h5md")
            g.attrs["version"] = np.array([1, 1])
            g.create_group("author").attrs["name"] = "someone"
            c = g.create_group("creator")
            c.attrs["name"] = "other-md-code"
            c.attrs["version"] = "2.0"
        p = f.create_group(f"particles/{group}")
        box = p.create_group("box")
        box.attrs["dimension"] = 3
        box.attrs["boundary"] = np.array([b"none"] * 3)
        pos = p.create_group("position")
        pos["value"] = value
        if time is not None:
            pos["time"] = time
        if step is not None:
            pos["step"] = step
        for name, offset in (offsets or {}).items():
            pos[name].attrs["offset"] = offset


def test_foreign_file_without_velocity_mass_parameters_loads(tmp_path):
    t = np.array([0.0, 0.1, 0.25, 0.5, 0.75, 1.0])
    _foreign(tmp_path / "f.h5", time=t, step=np.arange(6) * 10)
    traj = read_trajectory(tmp_path / "f.h5")
    assert traj.velocities is None and traj.masses is None and traj.energy is None
    assert traj.parameters == {}
    assert np.array_equal(traj.times, t)
    assert traj.positions.shape == (6, 2, 3)
    info = describe(tmp_path / "f.h5")
    assert info["creator"] == "other-md-code 2.0" and info["format_version"] is None
    assert info["system"] is None and info["energy_drift"] is None


def test_foreign_fixed_interval_time_and_step(tmp_path):
    # H5MD 1.1: scalar time/step = the interval, with an optional offset attribute.
    offsets = {"time": 2.0, "step": 1000}
    _foreign(tmp_path / "f.h5", group="all", time=0.5, step=100, offsets=offsets)
    traj = read_trajectory(tmp_path / "f.h5")
    assert np.array_equal(traj.times, 2.0 + 0.5 * np.arange(6))


def test_foreign_step_only_and_float32(tmp_path):
    value = np.random.default_rng(1).normal(size=(6, 2, 3)).astype(np.float32)
    _foreign(tmp_path / "f.h5", step=np.arange(6) * 5, value=value, h5md=False)
    traj = read_trajectory(tmp_path / "f.h5")
    assert np.array_equal(traj.times, np.arange(6) * 5.0)  # no time: steps used as times
    assert traj.positions.dtype == np.float64
    assert np.array_equal(traj.positions, value.astype(np.float64))  # float32 -> 64 is exact


# ---------------------------------------------------------------- bad files
def _write_ok(path, particle):
    write_trajectory(path, particle)
    return path


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match=r"nope\.h5: no such file"):
        read_trajectory(tmp_path / "nope.h5")


def test_not_hdf5(tmp_path):
    (tmp_path / "data.h5").write_text("t,x,y\n0,1,2\n")
    with pytest.raises(DataError, match=r"data\.h5: not an HDF5 file"):
        read_trajectory(tmp_path / "data.h5")


def test_directory(tmp_path):
    with pytest.raises(DataError, match="is a directory"):
        read_trajectory(tmp_path)


def test_truncated_file(tmp_path, particle):
    path = _write_ok(tmp_path / "t.h5", particle)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"t\.h5"):
        read_trajectory(path)


def test_empty_hdf5_names_missing_position(tmp_path):
    with h5py.File(tmp_path / "data.h5", "w") as f:
        f.create_group("h5md")
    with pytest.raises(
        DataError,
        match=r"data\.h5: /particles/bodies/position/value is missing — not a physnode/H5MD",
    ):
        read_trajectory(tmp_path / "data.h5")


def test_particle_group_without_position(tmp_path, particle):
    path = _write_ok(tmp_path / "p.h5", particle)
    with h5py.File(path, "a") as f:
        del f["particles/bodies/position"]
    with pytest.raises(DataError, match="/particles/bodies/position/value is missing"):
        read_trajectory(path)


def test_position_without_value(tmp_path):
    with h5py.File(tmp_path / "p.h5", "w") as f:
        f["particles/bodies/position/time"] = np.arange(3.0)
    with pytest.raises(DataError, match="/particles/bodies/position/value is missing"):
        read_trajectory(tmp_path / "p.h5")


def _edit(path, edit):
    with h5py.File(path, "a") as f:
        edit(f)
    return path


def _replace(f, name, data):
    del f[name]
    f[name] = data


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (
            lambda f: f["particles/bodies/position/value"].__setitem__((7, 1, 0), np.nan),
            r"/particles/bodies/position/value holds NaN or inf \(first at time index 7",
        ),
        (
            lambda f: f["observables/energy/value"].__setitem__(3, np.inf),
            "/observables/energy/value holds NaN or inf",
        ),
        (
            lambda f: f["particles/bodies/position/time"].__setitem__(5, 0.0),
            "/particles/bodies/position/time is not strictly increasing: entry 5",
        ),
        (
            lambda f: _replace(f, "particles/bodies/position/time", np.linspace(0, 1, 49)),
            r"mismatched lengths: /particles/bodies/position/time has shape \(49,\)",
        ),
        (
            lambda f: _replace(f, "particles/bodies/velocity/value", np.zeros((50, 2, 2))),
            r"shape mismatch: /particles/bodies/velocity/value has shape \(50, 2, 2\)",
        ),
        (
            lambda f: _replace(f, "particles/bodies/velocity/time", np.linspace(0, 3, 50)),
            "/particles/bodies/velocity/time .* differs from /particles/bodies/position/time",
        ),
        (
            lambda f: _replace(f, "particles/bodies/mass", np.ones(4)),
            r"shape mismatch: /particles/bodies/mass has shape \(4,\)",
        ),
        (
            lambda f: _replace(f, "observables/energy/value", np.ones((50, 2))),
            "energy has shape",
        ),
        (
            lambda f: f["particles/bodies/box"].attrs.__setitem__("dimension", 3),
            "box has dimension 3",
        ),
        (
            lambda f: f["h5md"].attrs.__setitem__("version", [2, 0]),
            "H5MD 1.x",
        ),
        (
            lambda f: f["h5md/creator"].attrs.__setitem__(
                "physnode_format_version", FORMAT_VERSION + 1
            ),
            "upgrade physnode",
        ),
        (
            lambda f: (
                f["particles/bodies/position"].__delitem__("time")
                or f["particles/bodies/position"].__delitem__("step")
            ),
            "position has neither time nor step",
        ),
    ],
    ids=[
        "nan-position",
        "inf-energy",
        "non-monotone-time",
        "time-length",
        "velocity-shape",
        "velocity-grid",
        "mass-shape",
        "energy-shape",
        "box-dimension",
        "h5md-version",
        "newer-format",
        "no-time",
    ],
)
def test_bad_file_names_the_problem(tmp_path, particle, edit, match):
    path = _edit(_write_ok(tmp_path / "data.h5", particle), edit)
    with pytest.raises(DataError, match=match) as info:
        read_trajectory(path)
    assert str(info.value).startswith(str(path))  # the message starts with the file name


def test_bad_ensemble_size(tmp_path, ensemble):
    path = tmp_path / "e.h5"
    write_trajectory(path, ensemble)
    _edit(path, lambda f: f["particles/bodies"].attrs.__setitem__("ensemble_size", 5))
    with pytest.raises(DataError, match="ensemble_size = 5, which does not divide its 12"):
        read_trajectory(path)


# ---------------------------------------------------------------- overwrite
def test_overwrite_refused_and_original_kept(tmp_path, particle, state_traj):
    path = _write_ok(tmp_path / "p.h5", particle)
    before = path.read_bytes()
    with pytest.raises(FileExistsOutputError, match=r"overwrite=True \(CLI: --overwrite\)"):
        write_trajectory(path, state_traj)
    assert path.read_bytes() == before
    assert no_temp_files(tmp_path)
    write_trajectory(path, state_traj, overwrite=True)
    assert_same(state_traj, read_trajectory(path))


# ---------------------------------------------------------------- describe
def test_describe(tmp_path, particle, ensemble):
    noisy = add_noise(particle, 0.01, seed=4)
    write_trajectory(tmp_path / "n.h5", noisy, author="Ada")
    info = describe(tmp_path / "n.h5")
    json.dumps(info)  # plain Python values only
    assert info["system"] == "n-body" and info["kind"] == "particles"
    assert (info["n_bodies"], info["dim"], info["n_times"], info["n_members"]) == (3, 2, 50, None)
    assert (info["t_start"], info["t_end"]) == (0.0, 2.0)
    assert info["noise"] == {"std": 0.01, "seed": 4, "relative": True}
    assert info["energy_drift"] == noisy.energy_drift()
    assert info["author"] == "Ada" and info["creator"] == f"physnode {__version__}"
    assert info["format_version"] == FORMAT_VERSION
    assert info["parameters"]["t_span"] == [0.0, 2.0]

    write_trajectory(tmp_path / "e.h5", ensemble)
    info = describe(tmp_path / "e.h5")
    assert info["n_members"] == 4 and info["noise"] is None
    with pytest.raises(DataError, match="no such file"):
        describe(tmp_path / "missing.h5")
