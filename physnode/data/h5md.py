"""Trajectory files: H5MD 1.1 layout in HDF5.

The layout (documented path by path in ``docs/FORMAT.md``)::

    /h5md                        +version = [1, 1]
        author                   +name
        creator                  +name = "physnode", +version, +physnode_format_version
    /particles/bodies            (+ensemble_size, +body_names)
        box                      +dimension = D, +boundary = [b"none"] * D
        position/{value (T, N, D), time (T,), step (T,)}
        velocity/{value, time, step}      time and step: hard links to position's
        mass (N,)
    /observables
        energy/{value (T,), time, step}
        state/{value (T, S), time, step}  +names (non-particle systems)
    /parameters                  +system, +G, run settings ...

A single trajectory is plain H5MD; an ensemble of B members stores its B*N bodies as one particle
group of B*N particles (member-major) and marks it with ``ensemble_size = B``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from physnode._version import __version__
from physnode.data import hdf5
from physnode.data.atomic import atomic_write
from physnode.data.trajectory import Trajectory, first_non_increasing
from physnode.errors import DataError, InvalidInputError

__all__ = [
    "FORMAT_VERSION",
    "PARTICLE_GROUP",
    "describe",
    "read_trajectory",
    "write_into",
    "write_trajectory",
]

FORMAT_VERSION = 1
"""Version of physnode's conventions on top of H5MD; stored as
``/h5md/creator`` attribute ``physnode_format_version``. Bump it on any incompatible change."""

PARTICLE_GROUP = "bodies"
"""Name of the particle group physnode writes: ``/particles/bodies``."""

H5MD_VERSION = (1, 1)

_NOT_A_TRAJECTORY = "not a physnode/H5MD trajectory"


# ====================================================================== writing
def write_trajectory(
    path: str | os.PathLike[str],
    traj: Trajectory,
    *,
    overwrite: bool = False,
    author: str | None = None,
) -> Path:
    """Write ``traj`` to ``path`` in the H5MD 1.1 layout of ``docs/FORMAT.md``, all-or-nothing.

    Arrays are stored exactly (float64 values and times, int64 steps 0..T-1), so
    :func:`read_trajectory` returns bit-identical arrays.

    Args:
        path: the output ``.h5`` file. Its directory must exist.
        traj: the trajectory (single or ensemble, particle or non-particle).
        overwrite: replace an existing file. Without it an existing file raises
            :class:`~physnode.errors.FileExistsOutputError` and is left untouched.
        author: stored as ``/h5md/author`` attribute ``name`` (H5MD requires one); default
            ``"unknown"``.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        InvalidInputError: ``traj`` is not a Trajectory, or a parameter value cannot be stored
            (the message names the key).
        FileExistsOutputError: ``path`` exists and ``overwrite`` is False.
    """
    if not isinstance(traj, Trajectory):
        raise InvalidInputError(f"traj must be a Trajectory; got {type(traj).__name__}")
    hdf5.check_parameters(traj.parameters, "parameters")  # fail before anything touches the disk
    path = Path(path)
    with atomic_write(path, overwrite=overwrite) as tmp:
        with hdf5.create_file(tmp) as f:
            write_into(f, traj, author if author is not None else "unknown")
    return path


def write_into(f: h5py.File, traj: Trajectory, author: str) -> None:
    """Write ``traj`` into the empty, open file ``f`` in the layout of ``docs/FORMAT.md``.

    The building block of :func:`write_trajectory` and of fit files (which add a ``/fit``
    group). ``author`` is stored as ``/h5md/author`` attribute ``name``. Check the parameters
    with :func:`~physnode.data.hdf5.check_parameters` first: a value that cannot be stored
    raises :class:`~physnode.errors.InvalidInputError` half-way through.
    """
    _write_h5md_group(f, author)
    elements = _ElementWriter(traj.times)
    if traj.positions is not None:
        _write_bodies(f.create_group(f"particles/{PARTICLE_GROUP}"), traj, elements)
    _write_observables(f.create_group("observables"), traj, elements)
    hdf5.write_parameters(f.create_group("parameters", track_order=True), traj.parameters)


def _write_h5md_group(f: h5py.File, author: str) -> None:
    """``/h5md``: the H5MD version, the author and the creator (with physnode's format version)."""
    meta = f.create_group("h5md")
    meta.attrs["version"] = np.array(H5MD_VERSION, dtype=np.int32)
    meta.create_group("author").attrs["name"] = str(author)
    creator = meta.create_group("creator")
    creator.attrs["name"] = "physnode"
    creator.attrs["version"] = __version__
    creator.attrs["physnode_format_version"] = np.int32(FORMAT_VERSION)


class _ElementWriter:
    """Writes H5MD time-dependent elements that share one (time, step) pair of datasets: the
    first element stores them, every later one hard-links to them."""

    def __init__(self, times: np.ndarray) -> None:
        self.times = times
        self.clock: tuple[h5py.Dataset, h5py.Dataset] | None = None

    def write(self, parent: h5py.Group, name: str, value: np.ndarray) -> h5py.Group:
        """Group ``parent/name`` holding ``value`` (time first, resizable along time)."""
        group = parent.create_group(name)
        group.create_dataset("value", data=value, maxshape=(None, *value.shape[1:]), chunks=True)
        if self.clock is None:
            time = group.create_dataset("time", data=self.times, maxshape=(None,), chunks=True)
            steps = np.arange(self.times.shape[0], dtype=np.int64)
            step = group.create_dataset("step", data=steps, maxshape=(None,), chunks=True)
            self.clock = (time, step)
        else:  # hard links: one time grid, stored once
            group["time"] = self.clock[0]
            group["step"] = self.clock[1]
        return group


def _write_bodies(bodies: h5py.Group, traj: Trajectory, elements: _ElementWriter) -> None:
    """The particle group: ensemble size, body names, box, position, velocity and mass."""
    positions = np.asarray(traj.positions)
    n_members = traj.n_members
    n_bodies, dim = positions.shape[-2:]
    flat = (traj.n_times, (n_members or 1) * n_bodies, dim)  # ensemble: member-major particles
    if n_members is not None:
        bodies.attrs["ensemble_size"] = np.int64(n_members)
    if traj.body_names is not None:
        bodies.attrs["body_names"] = hdf5.string_array(traj.body_names)
    box = bodies.create_group("box")
    box.attrs["dimension"] = np.int32(dim)
    box.attrs["boundary"] = np.array([b"none"] * dim, dtype="S4")
    elements.write(bodies, "position", positions.reshape(flat))
    if traj.velocities is not None:
        elements.write(bodies, "velocity", traj.velocities.reshape(flat))
    if traj.masses is not None:
        _write_masses(bodies, traj.masses, n_members)


def _write_masses(bodies: h5py.Group, masses: np.ndarray, n_members: int | None) -> None:
    """``mass`` (one per particle): shared ensemble masses tiled, per-member ones flagged."""
    if n_members is None:
        bodies.create_dataset("mass", data=masses)
    elif masses.ndim == 1:
        bodies.create_dataset("mass", data=np.tile(masses, n_members))
    else:
        mass = bodies.create_dataset("mass", data=masses.reshape(-1))
        mass.attrs["per_member"] = True


def _write_observables(observables: h5py.Group, traj: Trajectory, elements: _ElementWriter) -> None:
    """``/observables``: the state of a non-particle system (with names) and the energy."""
    if traj.state is not None:
        state = elements.write(observables, "state", traj.state)
        if traj.state_names is not None:
            state.attrs["names"] = hdf5.string_array(traj.state_names)
        if traj.n_members is not None:
            state.attrs["ensemble_size"] = np.int64(traj.n_members)
    if traj.energy is not None:
        elements.write(observables, "energy", traj.energy)


# ====================================================================== reading
def read_trajectory(path: str | os.PathLike[str]) -> Trajectory:
    """Read a trajectory written by :func:`write_trajectory` or by another program in this layout.

    Accepted beyond what physnode writes: velocities, masses, ``step``, ``box``, ``/h5md`` or
    ``/parameters`` absent; a particle group with another name when it is the only one
    (e.g. LAMMPS's ``/particles/all``); ``time`` and/or ``step`` stored as H5MD 1.1 scalars
    (fixed interval, optional ``offset`` attribute: ``time[i] = offset + i * time``); no ``time``
    at all (the step numbers are used as times); float32 values (converted to float64).

    Returns:
        A validated :class:`Trajectory` (time-first arrays, see its docstring).

    Raises:
        DataError: the file does not exist, is not HDF5, or breaks the layout; the message starts
            with the file name and names the offending HDF5 path (missing element, NaN/inf in a
            value, non-increasing or mismatched time, wrong shape).
    """
    path = Path(path)
    with hdf5.open_file(path) as f:
        try:
            return _read(f, path)
        except InvalidInputError as err:  # the Trajectory constructor's own checks
            raise DataError(f"{path}: {err}") from err


def _check_versions(f: h5py.File, path: Path) -> None:
    meta = f.get("h5md")
    if not isinstance(meta, h5py.Group):
        return  # tolerated on read: some writers omit /h5md
    version = meta.attrs.get("version")
    if version is not None:
        v = np.atleast_1d(np.asarray(version))
        if v.size < 1 or int(v[0]) != H5MD_VERSION[0]:
            raise DataError(
                f"{path}: /h5md version {v.tolist()} is not supported; physnode reads H5MD 1.x"
            )
    fmt = _format_version(meta.get("creator"))
    if fmt is not None and fmt > FORMAT_VERSION:
        raise DataError(
            f"{path}: written with physnode format version {fmt}, newer than this physnode "
            f"({__version__}, format {FORMAT_VERSION}) can read; upgrade physnode"
        )


def _format_version(creator: Any) -> int | None:
    """``physnode_format_version`` of a ``/h5md/creator`` group; None when absent."""
    return (
        hdf5.int_attr(creator, "physnode_format_version")
        if isinstance(creator, h5py.Group)
        else None
    )


def _particle_group(f: h5py.File, path: Path) -> h5py.Group | None:
    particles = f.get("particles")
    if not isinstance(particles, h5py.Group):
        return None
    if PARTICLE_GROUP in particles:
        group = particles[PARTICLE_GROUP]
        if not isinstance(group, h5py.Group):
            raise DataError(f"{path}: /particles/{PARTICLE_GROUP} is not a group")
        return group
    groups = [k for k, v in particles.items() if isinstance(v, h5py.Group)]
    if len(groups) == 1:
        return particles[groups[0]]
    if len(groups) > 1:
        raise DataError(
            f"{path}: /particles holds several particle groups ({', '.join(groups)}) and no "
            f"/particles/{PARTICLE_GROUP}; physnode reads one group of bodies"
        )
    return None


def _read(f: h5py.File, path: Path) -> Trajectory:
    """The trajectory in an open file: particles and/or a state, energy, parameters, all on
    one time grid."""
    _check_versions(f, path)
    bodies = _particle_group(f, path)
    observables = f.get("observables")
    if observables is not None and not isinstance(observables, h5py.Group):
        raise DataError(f"{path}: /observables is not a group")
    state_group = observables.get("state") if observables is not None else None
    if bodies is None and state_group is None:
        raise DataError(
            f"{path}: /particles/{PARTICLE_GROUP}/position/value is missing — "
            f"{_NOT_A_TRAJECTORY} (a non-particle trajectory has /observables/state/value instead)"
        )
    clock = _Clock(path)
    kwargs: dict[str, Any] = {}
    n_members = _read_bodies(bodies, path, clock, kwargs) if bodies is not None else None
    if state_group is not None:
        _read_state(state_group, bodies, n_members, path, clock, kwargs)
    if observables is not None and "energy" in observables:
        kwargs["energy"] = clock.read(observables["energy"], "/observables/energy")
    params = f.get("parameters")
    kwargs["parameters"] = hdf5.read_parameters(params) if isinstance(params, h5py.Group) else {}
    return Trajectory(clock.times, **kwargs)


class _Clock:
    """The one time grid of a file: the first element read sets it, every other must match."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.name: str | None = None
        self.times = np.empty(0)

    def read(self, group: Any, name: str) -> np.ndarray:
        """The element's values; DataError if its times differ from the grid's."""
        values, times = _read_element(group, self.path)
        if self.name is None:
            self.name, self.times = name, times
        elif not np.array_equal(times, self.times):
            raise DataError(
                f"{self.path}: {name}/time ({times.shape[0]} samples) differs from "
                f"{self.name}/time ({self.times.shape[0]} samples); physnode needs all elements "
                "on one time grid"
            )
        return values


def _read_bodies(bodies: h5py.Group, path: Path, clock: _Clock, kwargs: dict) -> int | None:
    """Positions, velocities, masses and body names into ``kwargs``; returns the ensemble
    size (None: a single trajectory)."""
    base = bodies.name
    if "position" not in bodies:
        raise DataError(f"{path}: {base}/position/value is missing — {_NOT_A_TRAJECTORY}")
    pos = clock.read(bodies["position"], f"{base}/position")
    if pos.ndim != 3:
        raise DataError(f"{path}: {base}/position/value has shape {pos.shape}; expected (T, N, D)")
    n_particles, dim = pos.shape[1:]
    _check_box(bodies, dim, path)
    n_members = _ensemble_size(bodies, path)
    n_bodies = n_particles
    if n_members is not None:
        if n_members < 1 or n_particles % n_members:
            raise DataError(
                f"{path}: {base} has ensemble_size = {n_members}, which does not divide its "
                f"{n_particles} particles"
            )
        n_bodies = n_particles // n_members
    unflat = pos.shape if n_members is None else (pos.shape[0], n_members, n_bodies, dim)
    kwargs["positions"] = pos.reshape(unflat)
    if "velocity" in bodies:
        vel = clock.read(bodies["velocity"], f"{base}/velocity")
        if vel.shape != pos.shape:
            raise DataError(
                f"{path}: shape mismatch: {base}/velocity/value has shape {vel.shape} but "
                f"{base}/position/value has shape {pos.shape}"
            )
        kwargs["velocities"] = vel.reshape(unflat)
    if "mass" in bodies:
        kwargs["masses"] = _read_masses(bodies["mass"], n_particles, n_members, path)
    if "body_names" in bodies.attrs:
        kwargs["body_names"] = tuple(hdf5.strings(bodies.attrs["body_names"]))
    return n_members


def _read_state(
    group: Any, bodies: Any, n_members: int | None, path: Path, clock: _Clock, kwargs: dict
) -> None:
    """The state observable (and its names) into ``kwargs``; its ensemble size must agree
    with the particles'."""
    state = clock.read(group, "/observables/state")
    if state.ndim == 1:
        state = state[:, None]  # a scalar observable: one component
    size = _ensemble_size(group, path)
    if size is not None:
        if state.ndim != 3 or state.shape[1] != size:
            raise DataError(
                f"{path}: /observables/state has ensemble_size = {size} but value has shape "
                f"{state.shape}; expected (T, {size}, S)"
            )
    elif state.ndim != 2:
        raise DataError(
            f"{path}: /observables/state/value has shape {state.shape}; expected (T, S)"
        )
    if bodies is not None and size != n_members:
        raise DataError(
            f"{path}: /observables/state and {bodies.name} disagree on ensemble_size "
            f"({size} vs {n_members})"
        )
    kwargs["state"] = state
    if "names" in group.attrs:
        kwargs["state_names"] = tuple(hdf5.strings(group.attrs["names"]))


def _read_element(group: Any, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """``(value, times)`` of an H5MD time-dependent element, both float64 and checked."""
    name = group.name
    if not isinstance(group, h5py.Group):
        raise DataError(
            f"{path}: {name} is a dataset; physnode expects a time-dependent H5MD element "
            f"(a group with value, time, step)"
        )
    if "value" not in group:
        raise DataError(f"{path}: {name}/value is missing — {_NOT_A_TRAJECTORY}")
    value = hdf5.read_numeric(group["value"], f"{name}/value", path)
    if value.ndim == 0 or value.shape[0] == 0:
        raise DataError(f"{path}: {name}/value has shape {value.shape}; it holds no samples")
    n = value.shape[0]
    times = _read_times(group, n, path)
    bad = ~np.isfinite(value)
    if bad.any():
        i = int(np.argwhere(bad)[0][0])
        raise DataError(
            f"{path}: {name}/value holds NaN or inf (first at time index {i}, t = {times[i]!r})"
        )
    return value, times


def _read_times(group: h5py.Group, n: int, path: Path) -> np.ndarray:
    name = group.name
    step = group.get("step")
    steps = None
    if step is not None:
        steps = _fixed_or_series(step, n, f"{name}/step", path)
    if "time" in group:
        times = _fixed_or_series(group["time"], n, f"{name}/time", path)
        where = f"{name}/time"
    elif steps is not None:
        times, where = steps, f"{name}/step (no time dataset: steps used as times)"
    else:
        raise DataError(f"{path}: {name} has neither time nor step — {_NOT_A_TRAJECTORY}")
    if not np.isfinite(times).all():
        raise DataError(f"{path}: {where} holds NaN or inf")
    i = first_non_increasing(times)
    if i is not None:
        raise DataError(
            f"{path}: {where} is not strictly increasing: entry {i + 1} = {times[i + 1]!r} "
            f"<= entry {i} = {times[i]!r}"
        )
    return times


def _fixed_or_series(ds: Any, n: int, name: str, path: Path) -> np.ndarray:
    """An H5MD ``time``/``step``: a (T,) series, or a scalar interval with optional ``offset``."""
    data = hdf5.read_numeric(ds, name, path)
    if data.ndim == 0:  # H5MD 1.1 fixed interval: x[i] = offset + i * interval
        offset = float(np.asarray(ds.attrs.get("offset", 0)))
        return offset + np.arange(n, dtype=np.float64) * float(data)
    if data.ndim != 1 or data.shape[0] != n:
        raise DataError(
            f"{path}: mismatched lengths: {name} has shape {data.shape} but the value has {n} "
            "samples"
        )
    return data


def _check_box(bodies: h5py.Group, dim: int, path: Path) -> None:
    box = bodies.get("box")
    box_dim = None if box is None else hdf5.int_attr(box, "dimension")
    if box_dim is None:
        return  # tolerated on read
    if box_dim != dim:
        raise DataError(
            f"{path}: shape mismatch: {bodies.name}/box has dimension {box_dim} but positions "
            f"have {dim} components"
        )


def _ensemble_size(group: h5py.Group, path: Path) -> int | None:
    if "ensemble_size" not in group.attrs:
        return None
    size = np.asarray(group.attrs["ensemble_size"])
    if size.ndim != 0 or size.dtype.kind not in "iu":
        raise DataError(f"{path}: {group.name} attribute ensemble_size must be an integer")
    return int(size)


def _read_masses(ds: Any, n_particles: int, n_members: int | None, path: Path) -> np.ndarray:
    name = ds.name
    if isinstance(ds, h5py.Group):
        raise DataError(f"{path}: {name} is time-dependent; physnode needs constant masses")
    masses = hdf5.read_numeric(ds, name, path)
    if masses.ndim == 0:
        masses = np.full(n_particles, float(masses))
    if masses.shape != (n_particles,):
        raise DataError(
            f"{path}: shape mismatch: {name} has shape {masses.shape} but there are "
            f"{n_particles} particles"
        )
    if n_members is None:
        return masses
    per_member = masses.reshape(n_members, -1)
    if bool(ds.attrs.get("per_member", False)) or not (per_member == per_member[0]).all():
        return per_member
    return per_member[0].copy()


# ====================================================================== summary
def describe(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A summary of a trajectory file, for ``physnode info``; plain Python values (JSON-ready).

    Keys: ``path``, ``system`` (``parameters["system"]`` or None), ``kind`` (``"particles"`` or
    ``"state"``), ``n_bodies``, ``dim``, ``n_members`` (None unless an ensemble), ``n_times``,
    ``t_start``, ``t_end``, ``has_velocities``, ``masses`` (list or None), ``body_names``,
    ``state_names``, ``parameters`` (arrays as lists), ``noise`` (``{"std", "seed", "relative"}``
    when ``noise_std`` is a non-zero parameter, else None), ``energy_drift`` (max relative drift
    ``max|E - E0| / |E0|``, absolute when ``E0 == 0``, None without energy), ``creator``,
    ``author``, ``format_version``.

    Raises:
        DataError: as :func:`read_trajectory`.
    """
    path = Path(path)
    traj = read_trajectory(path)
    with hdf5.open_file(path) as f:
        creator, author, fmt = _provenance(f)
    params = traj.parameters
    return {
        "path": str(path),
        "system": params.get("system"),
        "kind": "particles" if traj.positions is not None else "state",
        "n_bodies": traj.n_bodies,
        "dim": traj.dim,
        "n_members": traj.n_members,
        "n_times": traj.n_times,
        "t_start": float(traj.times[0]),
        "t_end": float(traj.times[-1]),
        "has_velocities": traj.velocities is not None,
        "masses": None if traj.masses is None else traj.masses.tolist(),
        "body_names": None if traj.body_names is None else list(traj.body_names),
        "state_names": None if traj.state_names is None else list(traj.state_names),
        "parameters": _plain(params),
        "noise": _noise_summary(params),
        "energy_drift": traj.energy_drift(),
        "creator": creator,
        "author": author,
        "format_version": fmt,
    }


def _provenance(f: h5py.File) -> tuple[str | None, Any, int | None]:
    """``(creator, author, format_version)`` from ``/h5md``: creator as "name version", each
    None when absent."""
    creator = f.get("h5md/creator")
    author = f.get("h5md/author")
    creator_text = None
    if isinstance(creator, h5py.Group):
        parts = [hdf5.python_value(creator.attrs.get(k)) for k in ("name", "version")]
        creator_text = " ".join(str(p) for p in parts if p is not None) or None
    author_text = (
        hdf5.python_value(author.attrs.get("name")) if isinstance(author, h5py.Group) else None
    )
    return creator_text, author_text, _format_version(creator)


def _noise_summary(params: Mapping[str, Any]) -> dict[str, Any] | None:
    """``{"std", "seed", "relative"}`` of the observation noise; None for a clean trajectory."""
    if not params.get("noise_std"):
        return None
    return {
        "std": params["noise_std"],
        "seed": params.get("noise_seed", params.get("seed")),
        "relative": params.get("noise_relative"),
    }


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value
