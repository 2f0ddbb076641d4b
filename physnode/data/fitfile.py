"""Fit files: a fitted model's prediction as an H5MD trajectory, plus a ``/fit`` group.

The layout (documented path by path in ``docs/FORMAT.md``, section "Fit files")::

    /h5md, /particles/bodies, /observables, /parameters    the prediction: plain H5MD, so
                                                          read_trajectory(fit.h5) works
    /fit                         +fit_format_version, +physnode_version, +data_file,
                                 +data_sha256, +train_rmse, +extrapolation_rmse, +train_until,
                                 +interrupted, +wall_time, [+validation_rmse, +fit_until]
        settings                 +model, +grad, +method, +rtol, ... (the Fitter's settings_)
        epoch (E,)  loss (E,)
        params/<name>            fitted value, float64, the parameter's shape
        uncertainties/<name>     1-sigma, same shape (NaN where unavailable, inf where the
                                 data cannot determine the parameter)
        noise                    +positions, +velocities or +state: noise levels (data
                                 units) the least-squares finish estimated
        history/<name> (E, *shape)
        series/<key> (E, ...)    any other per-epoch history (rare)
        network/<key>            neural-correction weights by state_dict key
        discovered               +formula, +explained, +library_explained, +relative_size:
                                 the law read from
                                 a hybrid's correction (hybrid fits only)
            terms (K,)  coefficients (K,)  [targets (K,): state systems]
            refit                +formula, +train_rmse, +extrapolation_rmse, +wall_time
                terms (K',)  coefficients (K',)  sigma (K',)  dropped, added (strings)
                rivals (strings)  rival_delta (R,)  rival_held_out_rmse (R,)
                                 +held_out_rmse: the chosen law's (NaN without rivals)
                params/<name>  uncertainties/<name>
        ensemble                 +best: an ensemble fit's members (ensemble > 1 only)
            seeds (K,)  train_rmse (K,)  validation_rmse (K,)  extrapolation_rmse (K,)
            spread (T, D)  params/<name> (K, *shape)
        candidates               +best, +score, +retrained: the kinds correction="auto" and the
                                 weights correction_penalty="auto" tried
            corrections (M,)  seeds (M,)  penalties (M,)  train_rmse (M,)
            validation_rmse (M,)  extrapolation_rmse (M,)
        state/<k1>/<k2>/...      the resumable state; flat key "a/b/c" -> nested path
        observed/time (T,), position (T, N, D), velocity, mass (N,), state (T, S)

Every array is a dataset (never a pickle); nothing here needs torch.
"""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from physnode._version import __version__
from physnode.data import h5md, hdf5
from physnode.data.atomic import atomic_write
from physnode.data.trajectory import Trajectory, as_numpy
from physnode.errors import DataError, InvalidInputError

__all__ = ["FIT_FORMAT_VERSION", "FitRecord", "is_fit_file", "read_fit", "sha256_file", "write_fit"]

FIT_FORMAT_VERSION = 1
"""Version of the ``/fit`` group layout; stored as ``/fit`` attribute ``fit_format_version``."""

FIT_GROUP = "fit"

# How a state entry was given, so read_fit returns exactly the Python type that was written.
_KIND = "kind"
_KINDS = ("array", "int", "float", "bool", "str", "bytes")

# /fit/observed: Trajectory field -> dataset name, in the order they are written.
_OBSERVED_DATASETS = (
    ("positions", "position"),
    ("velocities", "velocity"),
    ("masses", "mass"),
    ("state", "state"),
)

_RESULT_ATTRS = ("train_rmse", "extrapolation_rmse", "train_until", "interrupted", "wall_time")


@dataclass(eq=False)
class FitRecord:
    """Everything a fit file holds, as NumPy arrays and plain Python values.

    Attributes:
        prediction: the model's prediction at every data time (the file read as a trajectory);
            ``masses`` are the fitted masses.
        observed: the data the model was fitted to (times, positions/velocities or state, true
            masses when the data file had them).
        settings: the Fitter's settings (model, learn, grad, method, rtol, atol, epochs, lr,
            train_until, schedule, seed, device, ...).
        params: fitted physical parameters by name, e.g. ``{"masses": (N,), "G": ()}``.
        uncertainties: 1-sigma uncertainties, same keys and shapes (NaN where unavailable).
        history: ``"epoch"`` (E,), ``"loss"`` (E,), ``"param/<name>"`` (E, *shape), plus any
            other per-epoch series.
        network: neural-correction weights by ``state_dict`` key (empty for a physics model).
        state: the resumable state, flat keys, exactly as the fitter gave it.
        train_rmse: position (or state) RMSE over the fitting window (the training window
            less the validation window).
        validation_rmse: RMSE over the validation window; None without one (or in a file
            from before validation windows).
        fit_until: time of the last sample the gradient steps fitted (``train_until``
            without a validation window).
        extrapolation_rmse: RMSE beyond ``train_until``; None when the data ends there.
        train_until: end of the training window actually used.
        interrupted: True when the fit was stopped early (Ctrl-C, SIGTERM); resume it.
        wall_time: seconds spent fitting.
        data_file: name of the data file as given to the fitter.
        data_sha256: SHA-256 (hex) of the data file's bytes.
        physnode_version: version of physnode that wrote the file.
        noise: noise level (data units) per kind of observation (``positions``,
            ``velocities`` or ``state``) estimated by the least-squares finish; empty when it
            did not run (an interrupted fit, a pure neural ODE, a file from before it).
        discovered: the law read from a hybrid's correction: ``terms``, ``coefficients``,
            ``targets``, ``formula``, ``explained``, ``library_explained`` and ``refit`` (the
            symbolic refit's ``terms``, ``coefficients``, ``sigma``, ``dropped``, ``added``
            (empty in files from before it), ``params``,
            ``uncertainties``, ``formula``, ``train_rmse``, ``extrapolation_rmse``,
            ``wall_time``; ``None`` without one); ``None`` for other fits.
        ensemble: an ensemble fit's ``best``, ``seeds``, ``train_rmse``,
            ``validation_rmse``, ``extrapolation_rmse`` (each ``(K,)``), ``spread``
            ``(T, D)`` and ``params`` (``{name: (K, *shape)}``); ``None`` otherwise.
        candidates: the members fitted to choose the kind (``correction="auto"``) or the
            penalty weight (``correction_penalty="auto"``): ``corrections`` (list of str),
            ``seeds``, ``penalties`` (0 in files from before the weight could be chosen),
            ``train_rmse``, ``validation_rmse``,
            ``extrapolation_rmse`` (each ``(M,)``), ``best``, ``score`` (``"validation"`` or
            ``"train"``: which RMSE chose), ``retrained`` (the reported fit is the chosen
            kind and weight fitted again on the whole training window; False in files from
            before the retrain); ``None`` for other fits.
    """

    prediction: Trajectory
    observed: Trajectory
    settings: dict[str, Any]
    params: dict[str, np.ndarray]
    uncertainties: dict[str, np.ndarray]
    history: dict[str, np.ndarray]
    network: dict[str, np.ndarray]
    state: dict[str, Any]
    train_rmse: float
    extrapolation_rmse: float | None
    train_until: float
    interrupted: bool
    wall_time: float
    data_file: str
    data_sha256: str
    physnode_version: str = field(default=__version__)
    noise: dict[str, float] = field(default_factory=dict)
    discovered: dict[str, Any] | None = None
    validation_rmse: float | None = None
    fit_until: float | None = None
    ensemble: dict[str, Any] | None = None
    candidates: dict[str, Any] | None = None


def sha256_file(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file's bytes, as 64 lowercase hex digits."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# ====================================================================== writing
def write_fit(
    path: str | os.PathLike[str],
    fitter: Any,
    *,
    data_path: str | os.PathLike[str],
    observed: Trajectory,
    overwrite: bool = False,
) -> Path:
    """Write a fitted model to ``path``, all-or-nothing.

    The file is an H5MD trajectory of ``fitter.prediction_`` (readable by
    :func:`~physnode.data.read_trajectory`) plus a ``/fit`` group with the settings, results,
    histories, network weights, resumable state and the observed data (see ``docs/FORMAT.md``).

    Args:
        path: the output ``.h5`` file; its directory must exist.
        fitter: a fitted :class:`~physnode.fit.Fitter` (anything with its ``*_`` attributes).
        data_path: the data file the fit used; its SHA-256 is stored so ``--resume`` can check it.
        observed: the data as read from ``data_path``.
        overwrite: replace an existing ``path``.

    Raises:
        InvalidInputError: a setting, parameter or state entry cannot be stored (names the key).
        FileExistsOutputError: ``path`` exists and ``overwrite`` is False.
    """
    prediction = fitter.prediction_
    if not isinstance(prediction, Trajectory):
        raise InvalidInputError(
            f"fitter.prediction_ must be a Trajectory; got {type(prediction).__name__}"
        )
    settings = dict(fitter.settings_)
    # Fail before anything touches the disk.
    hdf5.check_parameters(prediction.parameters, "prediction.parameters")
    hdf5.check_parameters(settings, "settings")
    digest = sha256_file(data_path)
    path = Path(path)
    with atomic_write(path, overwrite=overwrite) as tmp:
        with hdf5.create_file(tmp) as f:
            h5md.write_into(f, prediction, "physnode fit")
            _write_fit_group(f, fitter, settings, Path(data_path).name, digest, observed)
    return path


def _write_fit_group(
    f: h5py.File,
    fitter: Any,
    settings: dict[str, Any],
    data_file: str,
    digest: str,
    observed: Trajectory,
) -> None:
    """``/fit``: results, settings, histories, fitted arrays, resumable state, observed data."""
    g = f.create_group(FIT_GROUP, track_order=True)
    _write_results(g, fitter, data_file, digest)
    hdf5.write_parameters(g.create_group("settings", track_order=True), settings)
    _write_history(g, dict(fitter.history_))
    for group_name, values, where in (
        ("params", fitter.params_, "params_"),
        ("uncertainties", fitter.uncertainties_, "uncertainties_"),
        ("network", fitter.network_state_, "network_state_"),
    ):
        group = g.create_group(group_name, track_order=True)
        for key, value in values.items():
            _put_array(group, key, value, where)
    state = g.create_group("state", track_order=True)
    for key, value in fitter.state_.items():
        _put_state(state, key, value)
    noise = g.create_group("noise", track_order=True)
    for kind, level in getattr(fitter, "noise_", {}).items():
        noise.attrs[kind] = np.float64(level)
    _write_observed(g.create_group("observed"), observed)
    _write_discovered(g, getattr(fitter, "discovered_", None), getattr(fitter, "refit_", None))
    _write_ensemble(g, getattr(fitter, "ensemble_", None))
    _write_candidates(g, getattr(fitter, "candidates_", None))


_ENSEMBLE_ARRAYS = ("seeds", "train_rmse", "validation_rmse", "extrapolation_rmse", "spread")


def _write_ensemble(g: h5py.Group, ensemble: Any) -> None:
    """``/fit/ensemble``, when the fit was an ensemble's."""
    if ensemble is None:
        return
    e = g.create_group("ensemble", track_order=True)
    e.attrs["best"] = np.int64(ensemble.best)
    for name in _ENSEMBLE_ARRAYS:
        e.create_dataset(name, data=np.asarray(getattr(ensemble, name)))
    params = e.create_group("params", track_order=True)
    for key, value in ensemble.params.items():
        _put_array(params, key, value, "ensemble_.params")


def _read_ensemble(e: Any) -> dict[str, Any] | None:
    if not isinstance(e, h5py.Group):
        return None
    out: dict[str, Any] = {name: e[name][()] for name in _ENSEMBLE_ARRAYS}
    out["best"] = int(e.attrs["best"])
    out["params"] = _read_arrays(e.get("params"))
    return out


_CANDIDATE_ARRAYS = ("seeds", "train_rmse", "validation_rmse", "extrapolation_rmse")


def _write_candidates(g: h5py.Group, candidates: Any) -> None:
    """``/fit/candidates``, when ``correction="auto"`` chose among kinds or
    ``correction_penalty="auto"`` among weights."""
    if candidates is None:
        return
    c = g.create_group("candidates", track_order=True)
    c.attrs["best"] = np.int64(candidates.best)
    c.attrs["score"] = str(candidates.score)
    c.attrs["retrained"] = np.int8(bool(candidates.retrained))
    c.create_dataset("corrections", data=hdf5.string_array(list(candidates.corrections)))
    for name in _CANDIDATE_ARRAYS:
        c.create_dataset(name, data=np.asarray(getattr(candidates, name)))
    c.create_dataset("penalties", data=np.asarray(candidates.penalties, np.float64))


def _read_candidates(c: Any) -> dict[str, Any] | None:
    if not isinstance(c, h5py.Group):
        return None
    out: dict[str, Any] = {name: c[name][()] for name in _CANDIDATE_ARRAYS}
    out["corrections"] = hdf5.strings(c["corrections"][()])
    # files from before the weight could be chosen had no penalty: 0 for every member
    held = c.get("penalties")
    out["penalties"] = held[()] if held is not None else np.zeros(len(out["seeds"]))
    out["best"] = int(c.attrs["best"])
    out["score"] = str(hdf5.python_value(c.attrs["score"]))
    # files from before the retrain reported the chosen member itself
    out["retrained"] = bool(c.attrs.get("retrained", 0))
    return out


def _write_discovered(g: h5py.Group, discovery: Any, refit: Any) -> None:
    """``/fit/discovered`` (and its ``refit``), when the fit read out a law."""
    if discovery is None:
        return
    d = g.create_group("discovered", track_order=True)
    d.attrs["formula"] = discovery.formula
    d.attrs["explained"] = np.float64(discovery.explained)
    d.attrs["library_explained"] = np.float64(discovery.library_explained)
    d.attrs["relative_size"] = np.float64(getattr(discovery, "relative_size", math.nan))
    d.create_dataset("terms", data=hdf5.string_array(list(discovery.terms)))
    d.create_dataset("coefficients", data=np.asarray(discovery.coefficients, np.float64))
    if discovery.targets:
        d.create_dataset("targets", data=hdf5.string_array(list(discovery.targets)))
    if refit is None:
        return
    r = d.create_group("refit", track_order=True)
    r.attrs["formula"] = refit.formula
    r.attrs["train_rmse"] = np.float64(refit.train_rmse)
    extrap = refit.extrapolation_rmse
    r.attrs["extrapolation_rmse"] = np.float64(math.nan if extrap is None else extrap)
    r.attrs["wall_time"] = np.float64(refit.wall_time)
    r.create_dataset("terms", data=hdf5.string_array(list(refit.terms)))
    r.create_dataset("coefficients", data=np.asarray(refit.coefficients, np.float64))
    r.create_dataset("sigma", data=np.asarray(refit.sigma, np.float64))
    r.create_dataset("dropped", data=hdf5.string_array(list(refit.dropped)))
    r.create_dataset("added", data=hdf5.string_array(list(refit.added)))
    r.create_dataset("rivals", data=hdf5.string_array(list(refit.rivals)))
    r.create_dataset("rival_delta", data=np.asarray(refit.rival_delta, np.float64))
    held = refit.held_out_rmse
    r.attrs["held_out_rmse"] = np.float64(math.nan if held is None else held)
    r.create_dataset("rival_held_out_rmse",
                     data=np.asarray(refit.rival_held_out_rmse, np.float64))  # fmt: skip
    for name, values in (("params", refit.params), ("uncertainties", refit.uncertainties)):
        group = r.create_group(name, track_order=True)
        for key, value in values.items():
            _put_array(group, key, value, f"refit_.{name}")


def _write_results(g: h5py.Group, fitter: Any, data_file: str, digest: str) -> None:
    """The attributes of ``/fit``: versions, the data file and its hash, the fit's results."""
    g.attrs["fit_format_version"] = np.int32(FIT_FORMAT_VERSION)
    g.attrs["physnode_version"] = __version__
    g.attrs["data_file"] = data_file
    g.attrs["data_sha256"] = digest
    extrap = fitter.extrapolation_rmse_
    g.attrs["train_rmse"] = np.float64(fitter.train_rmse_)
    g.attrs["extrapolation_rmse"] = np.float64(math.nan if extrap is None else extrap)
    g.attrs["train_until"] = np.float64(fitter.train_until_)
    g.attrs["interrupted"] = np.bool_(bool(fitter.interrupted_))
    g.attrs["wall_time"] = np.float64(fitter.wall_time_)
    valid = getattr(fitter, "validation_rmse_", None)
    g.attrs["validation_rmse"] = np.float64(math.nan if valid is None else valid)
    g.attrs["fit_until"] = np.float64(getattr(fitter, "fit_until_", fitter.train_until_))


def _write_history(g: h5py.Group, history: dict[str, Any]) -> None:
    """``epoch`` and ``loss``, ``history/<name>`` for ``"param/<name>"`` entries, ``series/``
    for any other per-epoch entry. ``history`` is a copy: the two required entries are popped."""
    for name in ("epoch", "loss"):
        if name not in history:
            raise InvalidInputError(f"fitter.history_ has no {name!r} entry")
    g.create_dataset("epoch", data=np.asarray(history.pop("epoch")))
    g.create_dataset("loss", data=np.asarray(history.pop("loss"), dtype=np.float64))
    hist = g.create_group("history", track_order=True)
    series = g.create_group("series", track_order=True)
    for key, value in history.items():
        if key.startswith("param/"):
            _put_array(hist, key[len("param/") :], value, "history_")
        else:
            _put_array(series, key, value, "history_")


def _check_key(key: Any, where: str) -> list[str]:
    parts = key.split("/") if isinstance(key, str) else []
    if not parts or any(p in ("", ".", "..") for p in parts):
        raise InvalidInputError(
            f"{where}: key {key!r} cannot be stored; use a non-empty string whose '/'-separated "
            "parts are non-empty"
        )
    return parts


def _parent(group: h5py.Group, key: str, where: str) -> tuple[h5py.Group, str]:
    """The group that holds ``key``'s last part, creating intermediate groups."""
    parts = _check_key(key, where)
    for part in parts[:-1]:
        sub = group.get(part)
        if sub is None:
            sub = group.create_group(part, track_order=True)
        elif not isinstance(sub, h5py.Group):
            raise InvalidInputError(
                f"{where}: key {key!r} clashes with another key that is a prefix of it"
            )
        group = sub
    if parts[-1] in group:
        raise InvalidInputError(f"{where}: key {key!r} clashes with another key")
    return group, parts[-1]


def _put_array(group: h5py.Group, key: str, value: Any, where: str) -> None:
    """``value`` (numeric array-like or CPU torch tensor) as dataset ``key`` under ``group``."""
    arr = np.asarray(as_numpy(value))
    if arr.dtype.kind not in "biuf":
        raise InvalidInputError(f"{where}[{key!r}] has dtype {arr.dtype}; expected numbers")
    parent, name = _parent(group, key, where)
    parent.create_dataset(name, data=arr)


def _put_state(group: h5py.Group, key: str, value: Any) -> None:
    """One resumable-state entry: a dataset with attribute ``kind`` naming its Python type."""
    value = as_numpy(value)
    kind, data = _state_kind(key, value)
    parent, name = _parent(group, key, "state_")
    ds = parent.create_dataset(name, data=data)
    ds.attrs[_KIND] = kind
    if kind == "array" and isinstance(value, np.generic):
        ds.attrs["numpy_scalar"] = True


def _state_kind(key: str, value: Any) -> tuple[str, Any]:
    """``(kind, data)`` for a state entry: its Python type's name in :data:`_KINDS` and the
    value as HDF5 can store it."""
    if isinstance(value, (bool, np.bool_)):
        kind, data = "bool", np.bool_(value)
    elif isinstance(value, np.generic) and not isinstance(value, (np.str_, np.bytes_)):
        kind, data = "array", np.asarray(value)  # a NumPy scalar stays one (numpy_scalar)
        if data.dtype.kind not in "biuf":
            raise InvalidInputError(f"state_[{key!r}] has dtype {data.dtype}; expected numbers")
    elif isinstance(value, int):
        hdf5.check_int64(value, f"state_[{key!r}]")
        kind, data = "int", np.int64(value)
    elif isinstance(value, float):
        kind, data = "float", np.float64(value)
    elif isinstance(value, str):
        kind, data = "str", hdf5.string_array(value)
    elif isinstance(value, bytes):
        kind, data = "bytes", np.frombuffer(value, dtype=np.uint8)
    elif isinstance(value, np.ndarray):
        kind, data = "array", value
        if data.dtype.kind not in "biuf":
            raise InvalidInputError(
                f"state_[{key!r}] has dtype {data.dtype}; the state holds numeric arrays, "
                "int, float, bool, str or bytes"
            )
    else:
        raise InvalidInputError(
            f"state_[{key!r}] = {value!r} ({type(value).__name__}) cannot be stored; the state "
            "holds numeric arrays, int, float, bool, str or bytes"
        )
    return kind, data


def _write_observed(group: h5py.Group, observed: Trajectory) -> None:
    """``/fit/observed``: the data's arrays as plain datasets (no H5MD elements)."""
    group.create_dataset("time", data=observed.times)
    for field_name, name in _OBSERVED_DATASETS:
        value = getattr(observed, field_name)
        if value is not None:
            group.create_dataset(name, data=value)
    if observed.state_names is not None:  # only ever set together with state
        group["state"].attrs["names"] = hdf5.string_array(observed.state_names)
    if observed.body_names is not None:
        group.attrs["body_names"] = hdf5.string_array(observed.body_names)


# ====================================================================== reading
def is_fit_file(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` is an HDF5 file with a ``/fit`` group; False otherwise (never raises
    for a missing or non-HDF5 file)."""
    path = Path(path)
    try:
        if not path.is_file() or not h5py.is_hdf5(path):
            return False
        with h5py.File(path, "r") as f:
            return isinstance(f.get(FIT_GROUP), h5py.Group)
    except OSError:
        return False


def read_fit(path: str | os.PathLike[str]) -> FitRecord:
    """Read a fit file written by :func:`write_fit`.

    Raises:
        DataError: the file is missing, not HDF5, has no ``/fit`` group (a trajectory, not a
            fit), or its ``/fit`` group lacks a required entry (the message names the path).
    """
    path = Path(path)
    with hdf5.open_file(path) as f:
        g = _fit_group(f, path)
        record_fields = _read_record_fields(g, path)
    prediction = h5md.read_trajectory(path)
    return FitRecord(prediction=prediction, **record_fields)


def _fit_group(f: h5py.File, path: Path) -> h5py.Group:
    """``/fit``, checked: present, of a format this physnode reads, and complete."""
    g = f.get(FIT_GROUP)
    if not isinstance(g, h5py.Group):
        raise DataError(
            f"{path}: /{FIT_GROUP} is missing — not a fit file (write one with `physnode fit DATA`)"
        )
    version = hdf5.int_attr(g, "fit_format_version", 1)
    if version > FIT_FORMAT_VERSION:
        raise DataError(
            f"{path}: /fit format version {version} is newer than this physnode "
            f"({__version__}) can read; upgrade physnode"
        )
    required = [f"/fit/{n}" for n in ("settings", "epoch", "loss", "params", "observed")]
    required += [f"/fit@{a}" for a in (*_RESULT_ATTRS, "data_sha256")]
    missing = [
        r
        for r in required
        if ("@" in r and r.split("@")[1] not in g.attrs)
        or ("@" not in r and r[len("/fit/") :] not in g)
    ]
    if missing:
        raise DataError(f"{path}: not a complete fit file; missing {', '.join(missing)}")
    return g


def _read_record_fields(g: h5py.Group, path: Path) -> dict[str, Any]:
    """Every :class:`FitRecord` field but ``prediction``, from a checked ``/fit`` group."""
    history = _read_history(g)
    state = _read_resumable_state(g.get("state"))
    extrap = float(g.attrs["extrapolation_rmse"])
    valid = float(g.attrs.get("validation_rmse", math.nan))
    attrs = {
        k: hdf5.python_value(g.attrs[k]) for k in ("data_file", "physnode_version") if k in g.attrs
    }
    observed = _read_observed(g["observed"], path)
    return dict(
        observed=observed,
        settings=hdf5.read_parameters(g["settings"]),
        params=_read_arrays(g.get("params")),
        uncertainties=_read_arrays(g.get("uncertainties")),
        history=history,
        network=_read_arrays(g.get("network")),
        state=state,
        train_rmse=float(g.attrs["train_rmse"]),
        extrapolation_rmse=None if math.isnan(extrap) else extrap,
        train_until=float(g.attrs["train_until"]),
        interrupted=bool(g.attrs["interrupted"]),
        wall_time=float(g.attrs["wall_time"]),
        data_file=str(attrs.get("data_file", "")),
        data_sha256=str(hdf5.python_value(g.attrs["data_sha256"])),
        physnode_version=str(attrs.get("physnode_version", "")),
        noise={k: float(v) for k, v in g["noise"].attrs.items()} if "noise" in g else {},
        discovered=_read_discovered(g.get("discovered")),
        validation_rmse=None if math.isnan(valid) else valid,
        fit_until=float(g.attrs.get("fit_until", g.attrs["train_until"])),
        ensemble=_read_ensemble(g.get("ensemble")),
        candidates=_read_candidates(g.get("candidates")),
    )


def _read_discovered(d: Any) -> dict[str, Any] | None:
    if not isinstance(d, h5py.Group):
        return None
    out: dict[str, Any] = {
        "terms": hdf5.strings(d["terms"][()]),
        "coefficients": d["coefficients"][()],
        "targets": hdf5.strings(d["targets"][()]) if "targets" in d else [],
        "formula": str(hdf5.python_value(d.attrs["formula"])),
        "explained": float(d.attrs["explained"]),
        "library_explained": float(d.attrs["library_explained"]),
        "relative_size": float(d.attrs.get("relative_size", math.nan)),
        "refit": None,
    }
    r = d.get("refit")
    if isinstance(r, h5py.Group):
        extrap = float(r.attrs["extrapolation_rmse"])
        out["refit"] = {
            "terms": hdf5.strings(r["terms"][()]),
            "coefficients": r["coefficients"][()],
            "sigma": r["sigma"][()],
            "dropped": hdf5.strings(r["dropped"][()]),
            "added": hdf5.strings(r["added"][()]) if "added" in r else [],
            "rivals": hdf5.strings(r["rivals"][()]) if "rivals" in r else [],
            "rival_delta": r["rival_delta"][()] if "rival_delta" in r else np.zeros(0),
            "held_out_rmse": _nan_none(float(r.attrs.get("held_out_rmse", math.nan))),
            "rival_held_out_rmse": (
                r["rival_held_out_rmse"][()] if "rival_held_out_rmse" in r else np.zeros(0)
            ),
            "params": _read_arrays(r.get("params")),
            "uncertainties": _read_arrays(r.get("uncertainties")),
            "formula": str(hdf5.python_value(r.attrs["formula"])),
            "train_rmse": float(r.attrs["train_rmse"]),
            "extrapolation_rmse": _nan_none(extrap),
            "wall_time": float(r.attrs["wall_time"]),
        }
    return out


def _nan_none(x: float) -> float | None:
    """``None`` for a NaN stored for "none"."""
    return None if math.isnan(x) else x


def _read_history(g: h5py.Group) -> dict[str, np.ndarray]:
    """``epoch``, ``loss``, ``param/<name>`` from ``history/``, then the ``series/`` entries."""
    history: dict[str, np.ndarray] = {"epoch": g["epoch"][()], "loss": g["loss"][()]}
    history.update({f"param/{k}": v for k, v in _read_arrays(g.get("history")).items()})
    history.update(_read_arrays(g.get("series")))
    return history


def _read_resumable_state(group: Any) -> dict[str, Any]:
    """The resumable state, flat keys, each entry of the Python type it was written as."""
    state: dict[str, Any] = {}
    if isinstance(group, h5py.Group):
        group.visititems(lambda name, obj: _get_state(state, name, obj))
    return state


def _read_arrays(group: Any) -> dict[str, np.ndarray]:
    """Datasets under ``group`` by relative path ('a/b' for nested groups), in stored order."""
    out: dict[str, np.ndarray] = {}
    if isinstance(group, h5py.Group):
        group.visititems(
            lambda name, obj: (
                out.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None
            )
        )
    return out


def _get_state(out: dict[str, Any], name: str, obj: Any) -> None:
    if not isinstance(obj, h5py.Dataset):
        return
    kind = hdf5.python_value(obj.attrs.get(_KIND, "array"))
    raw = obj[()]
    if kind == "bool":
        out[name] = bool(raw)
    elif kind == "int":
        out[name] = int(raw)
    elif kind == "float":
        out[name] = float(raw)
    elif kind == "str":
        out[name] = raw.decode() if isinstance(raw, bytes) else str(raw)
    elif kind == "bytes":
        out[name] = np.asarray(raw, dtype=np.uint8).tobytes()
    elif obj.attrs.get("numpy_scalar", False):
        out[name] = raw if isinstance(raw, np.generic) else np.asarray(raw)[()]
    else:
        out[name] = np.asarray(raw)


def _read_observed(group: Any, path: Path) -> Trajectory:
    """``/fit/observed`` as a Trajectory; DataError when incomplete or invalid."""
    if not isinstance(group, h5py.Group) or "time" not in group:
        raise DataError(f"{path}: /fit/observed/time is missing — not a complete fit file")
    kwargs: dict[str, Any] = {}
    for key, name in _OBSERVED_DATASETS:
        if name in group:
            kwargs[key] = group[name][()]
    if "state" in group and "names" in group["state"].attrs:
        kwargs["state_names"] = tuple(hdf5.strings(group["state"].attrs["names"]))
    if "body_names" in group.attrs:
        kwargs["body_names"] = tuple(hdf5.strings(group.attrs["body_names"]))
    try:
        return Trajectory(group["time"][()], **kwargs)
    except InvalidInputError as err:
        raise DataError(f"{path}: /fit/observed: {err}") from err
