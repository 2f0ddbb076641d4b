"""Fit files: write_fit/read_fit round trip, layout, hash, atomicity, refusals (no fitter)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from types import SimpleNamespace

import h5py
import numpy as np
import pytest

from physnode.data import Trajectory, read_trajectory, write_trajectory
from physnode.data.fitfile import is_fit_file, read_fit, sha256_file, write_fit
from physnode.errors import DataError, FileExistsOutputError, InvalidInputError


def make_data(n_times: int = 40, seed: int = 0) -> Trajectory:
    rng = np.random.default_rng(seed)
    t = np.linspace(0.0, 4.0, n_times)
    pos = rng.normal(size=(n_times, 3, 2))
    vel = rng.normal(size=(n_times, 3, 2))
    return Trajectory(
        t,
        positions=pos,
        velocities=vel,
        masses=np.array([1.0, 1.5, 0.5]),
        parameters={"system": "n-body", "G": 1.0},
    )


def fake_fitter(data: Trajectory, seed: int = 1, interrupted: bool = False) -> SimpleNamespace:
    """An object with the attributes of a fitted physnode.fit.Fitter."""
    rng = np.random.default_rng(seed)
    n_epochs = 7
    masses = data.masses + rng.normal(scale=1e-3, size=3)
    prediction = Trajectory(
        data.times,
        positions=data.positions + rng.normal(scale=1e-3, size=data.positions.shape),
        velocities=data.velocities + rng.normal(scale=1e-3, size=data.velocities.shape),
        masses=masses,
        parameters={"system": "n-body", "G": 1.0, "fitted": True},
    )
    return SimpleNamespace(
        settings_={
            "model": "hybrid",
            "learn": "masses,y0",
            "grad": "aca",
            "method": "dopri5",
            "rtol": 1e-7,
            "atol": 1e-9,
            "epochs": 200,
            "lr": 0.05,
            "train_until": None,
            "schedule": "curriculum",
            "seed": 0,
            "device": "cpu",
            "init_masses": None,
        },
        params_={"masses": masses, "G": np.float64(1.0)},
        uncertainties_={"masses": rng.uniform(size=3) * 1e-4, "G": np.array(np.nan)},
        noise_={"positions": float(rng.uniform()) * 1e-3, "velocities": float(rng.uniform())},
        history_={
            "epoch": np.arange(n_epochs),
            "loss": rng.uniform(size=n_epochs),
            "param/masses": rng.normal(size=(n_epochs, 3)),
            "param/G": rng.normal(size=n_epochs),
            "lr": np.full(n_epochs, 0.05),
        },
        train_rmse_=1.25e-3,
        extrapolation_rmse_=None if interrupted else 4.5e-3,
        wall_time_=3.5,
        prediction_=prediction,
        network_state_={
            "net.0.weight": rng.normal(size=(32, 12)).astype(np.float32),
            "net.0.bias": rng.normal(size=32),
        },
        interrupted_=interrupted,
        state_={
            "epoch": 7,
            "loss_scale": 0.1 + 0.2,  # a float with a long binary expansion
            "flag": True,
            "np_scalar": np.float32(2.5),
            "schedule": "curriculum",
            "rng/torch": rng.integers(0, 256, size=5056).astype(np.uint8),
            "rng/blob": b"\x00\x01\xffraw",
            "model/params.masses.raw": rng.normal(size=3),
            "optim/0/exp_avg": rng.normal(size=3),
            "optim/0/step": np.array(7.0),
            "history/param/masses": rng.normal(size=(7, 3)),
        },
        train_until_=2.0,
    )


@pytest.fixture
def data_file(tmp_path: Path) -> tuple[Path, Trajectory]:
    data = make_data()
    path = write_trajectory(tmp_path / "data.h5", data)
    return path, data


def test_round_trip_is_exact(tmp_path: Path, data_file: tuple[Path, Trajectory]) -> None:
    data_path, data = data_file
    fitter = fake_fitter(data)
    out = write_fit(tmp_path / "fit.h5", fitter, data_path=data_path, observed=data)
    rec = read_fit(out)

    assert rec.settings == fitter.settings_
    assert rec.noise == fitter.noise_  # float64 attributes: bit-exact
    for got, want in ((rec.params, fitter.params_), (rec.uncertainties, fitter.uncertainties_)):
        assert got.keys() == want.keys()
        for key in want:
            np.testing.assert_array_equal(got[key], want[key])  # bit-exact, NaN == NaN
    assert rec.history.keys() == fitter.history_.keys()
    for key, want in fitter.history_.items():
        np.testing.assert_array_equal(rec.history[key], want)
        assert rec.history[key].dtype == want.dtype
    assert rec.network.keys() == fitter.network_state_.keys()
    for key, want in fitter.network_state_.items():
        assert rec.network[key].dtype == want.dtype
        np.testing.assert_array_equal(rec.network[key], want)

    # The resumable state comes back with the same keys, types and values.
    assert rec.state.keys() == fitter.state_.keys()
    for key, want in fitter.state_.items():
        got = rec.state[key]
        assert type(got) is type(want), key
        if isinstance(want, (np.ndarray, np.generic)):
            assert got.dtype == want.dtype and got.shape == np.shape(want), key
            np.testing.assert_array_equal(got, want)
        else:
            assert got == want, key

    assert rec.train_rmse == fitter.train_rmse_
    assert rec.extrapolation_rmse == fitter.extrapolation_rmse_
    assert rec.train_until == fitter.train_until_
    assert rec.wall_time == fitter.wall_time_
    assert rec.interrupted is False
    assert rec.data_file == "data.h5"

    np.testing.assert_array_equal(rec.prediction.positions, fitter.prediction_.positions)
    np.testing.assert_array_equal(rec.prediction.masses, fitter.params_["masses"])
    np.testing.assert_array_equal(rec.observed.positions, data.positions)
    np.testing.assert_array_equal(rec.observed.velocities, data.velocities)
    np.testing.assert_array_equal(rec.observed.masses, data.masses)
    np.testing.assert_array_equal(rec.observed.times, data.times)


def test_none_extrapolation_and_interrupted(
    tmp_path: Path, data_file: tuple[Path, Trajectory]
) -> None:
    data_path, data = data_file
    out = write_fit(
        tmp_path / "fit.h5", fake_fitter(data, interrupted=True), data_path=data_path, observed=data
    )
    rec = read_fit(out)
    assert rec.extrapolation_rmse is None
    assert rec.interrupted is True
    with h5py.File(out, "r") as f:
        assert np.isnan(f["fit"].attrs["extrapolation_rmse"])


def test_layout_with_plain_h5py(tmp_path: Path, data_file: tuple[Path, Trajectory]) -> None:
    data_path, data = data_file
    fitter = fake_fitter(data)
    out = write_fit(tmp_path / "fit.h5", fitter, data_path=data_path, observed=data)
    with h5py.File(out, "r") as f:
        np.testing.assert_array_equal(f["particles/bodies/mass"][()], fitter.params_["masses"])
        assert f["particles/bodies/position/value"].shape == (40, 3, 2)
        g = f["fit"]
        assert g.attrs["data_sha256"] == hashlib.sha256(data_path.read_bytes()).hexdigest()
        assert g.attrs["data_file"] == "data.h5"
        assert g.attrs["fit_format_version"] == 1
        assert g["settings"].attrs["model"] == "hybrid"
        assert g["settings"].attrs["rtol"] == 1e-7
        assert g["loss"].shape == (7,) and g["epoch"].shape == (7,)
        assert g["params/masses"].shape == (3,)
        assert g["params/G"].shape == ()
        assert g["uncertainties/masses"].shape == (3,)
        assert g["history/masses"].shape == (7, 3)
        assert g["series/lr"].shape == (7,)
        assert g["network/net.0.weight"].dtype == np.float32
        assert g["state/rng/torch"].dtype == np.uint8
        assert g["state/optim/0/exp_avg"].attrs["kind"] == "array"
        assert g["state/epoch"].attrs["kind"] == "int"
        assert g["state/schedule"].attrs["kind"] == "str"
        assert g["observed/position"].shape == (40, 3, 2)
        assert g["observed/time"].shape == (40,)
        assert g["observed/mass"].shape == (3,)
    # The prediction part is a plain trajectory file.
    traj = read_trajectory(out)
    np.testing.assert_array_equal(traj.positions, fitter.prediction_.positions)
    np.testing.assert_array_equal(traj.times, data.times)
    assert traj.parameters["fitted"] is True
    assert is_fit_file(out)
    assert not is_fit_file(data_path)
    assert not is_fit_file(tmp_path / "missing.h5")


def test_sha256_matches_hashlib(data_file: tuple[Path, Trajectory]) -> None:
    data_path, _ = data_file
    assert sha256_file(data_path) == hashlib.sha256(data_path.read_bytes()).hexdigest()


def test_atomic_no_file_on_error(tmp_path: Path, data_file: tuple[Path, Trajectory]) -> None:
    data_path, data = data_file
    fitter = fake_fitter(data)
    fitter.state_ = {**fitter.state_, "bad": object()}  # fails inside the write
    with pytest.raises(InvalidInputError, match="bad"):
        write_fit(tmp_path / "fit.h5", fitter, data_path=data_path, observed=data)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.h5"]  # no output, no temp


def test_clashing_state_keys_refused(tmp_path: Path, data_file: tuple[Path, Trajectory]) -> None:
    data_path, data = data_file
    fitter = fake_fitter(data)
    fitter.state_ = {"optim": 1, "optim/0/step": 2}
    with pytest.raises(InvalidInputError, match="clashes"):
        write_fit(tmp_path / "fit.h5", fitter, data_path=data_path, observed=data)
    assert not (tmp_path / "fit.h5").exists()


def test_existing_output_refused(tmp_path: Path, data_file: tuple[Path, Trajectory]) -> None:
    data_path, data = data_file
    out = write_fit(tmp_path / "fit.h5", fake_fitter(data), data_path=data_path, observed=data)
    with pytest.raises(FileExistsOutputError):
        write_fit(out, fake_fitter(data, seed=2), data_path=data_path, observed=data)
    write_fit(out, fake_fitter(data, seed=2), data_path=data_path, observed=data, overwrite=True)


def test_non_fit_files_raise_data_error(tmp_path: Path, data_file: tuple[Path, Trajectory]) -> None:
    data_path, _ = data_file
    with pytest.raises(DataError, match="/fit is missing"):
        read_fit(data_path)
    junk = tmp_path / "junk.h5"
    junk.write_text("not hdf5")
    with pytest.raises(DataError, match="not an HDF5 file"):
        read_fit(junk)
    with pytest.raises(DataError, match="no such file"):
        read_fit(tmp_path / "missing.h5")
    partial = tmp_path / "partial.h5"
    with h5py.File(partial, "w") as f:
        f.create_group("fit")
    with pytest.raises(DataError, match="/fit/settings"):
        read_fit(partial)


def test_state_only_prediction(tmp_path: Path) -> None:
    """A non-particle system: the prediction and the observed data are states."""
    t = np.linspace(0, 1, 20)
    y = np.stack([np.sin(t), np.cos(t)], axis=1)
    data = Trajectory(t, state=y, state_names=("theta", "omega"))
    data_path = write_trajectory(tmp_path / "pendulum.h5", data)
    fitter = fake_fitter(make_data())
    fitter.prediction_ = Trajectory(t, state=y * 1.001, state_names=("theta", "omega"))
    fitter.params_ = {"g": np.float64(9.8)}
    fitter.uncertainties_ = {"g": np.float64(0.01)}
    rec = read_fit(write_fit(tmp_path / "fit.h5", fitter, data_path=data_path, observed=data))
    np.testing.assert_array_equal(rec.observed.state, y)
    assert rec.observed.state_names == ("theta", "omega")
    np.testing.assert_array_equal(rec.prediction.state, y * 1.001)


def test_plot_fit_file(tmp_path: Path, data_file: tuple[Path, Trajectory]) -> None:
    from physnode.plot import plot_fit_file

    data_path, data = data_file
    out = write_fit(tmp_path / "fit.h5", fake_fitter(data), data_path=data_path, observed=data)
    png = plot_fit_file(out, tmp_path / "fit.png")
    assert png.stat().st_size > 1000


def test_the_kinds_auto_tried_round_trip(
    tmp_path: Path, data_file: tuple[Path, Trajectory]
) -> None:
    """``/fit/candidates``: the kinds, seeds and RMSEs of the members ``correction="auto"``
    fitted, which was reported and by which RMSE; bit-exact (float64 datasets), read with
    plain h5py as documented in docs/FORMAT.md."""
    from physnode.fit.ensemble import Candidates

    data_path, data = data_file
    fitter = fake_fitter(data)
    fitter.candidates_ = Candidates(
        ("field", "pairwise"), np.array([3, 3]), 1, "train", np.array([2.5e-3, 1.25e-3]),
        np.array([np.nan, np.nan]), np.array([0.1, 4.5e-3]), penalties=np.array([0.0, 0.01]),
        retrained=True,
    )  # fmt: skip
    out = write_fit(tmp_path / "fit.h5", fitter, data_path=data_path, observed=data)
    rec = read_fit(out)
    assert rec.candidates["retrained"] is True
    np.testing.assert_array_equal(rec.candidates["penalties"], [0.0, 0.01])
    assert rec.candidates["corrections"] == ["field", "pairwise"]
    assert rec.candidates["best"] == 1 and rec.candidates["score"] == "train"
    for name in ("seeds", "train_rmse", "validation_rmse", "extrapolation_rmse"):
        np.testing.assert_array_equal(rec.candidates[name], getattr(fitter.candidates_, name))
    with h5py.File(out, "a") as f:
        assert f["fit/candidates/corrections"].asstr()[()].tolist() == ["field", "pairwise"]
        assert f["fit/candidates"].attrs["best"] == 1
        del f["fit/candidates/penalties"]  # as a file from before the weight was chosen
        del f["fit/candidates"].attrs["retrained"]  # and before the retrain
    assert read_fit(out).candidates["penalties"].tolist() == [0.0, 0.0]
    assert read_fit(out).candidates["retrained"] is False
    assert read_fit(write_fit(tmp_path / "plain.h5", fake_fitter(data), data_path=data_path,
                              observed=data)).candidates is None  # fmt: skip
