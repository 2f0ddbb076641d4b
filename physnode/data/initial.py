"""Initial conditions of a particle run, read from a small JSON or CSV file or an H5MD trajectory.

The formats are documented in ``docs/FORMAT.md`` (section "Initial conditions")::

    from physnode.data import read_initial

    start = read_initial("start.json")   # {"positions": [[x, y], ...], "velocities": ...}
    start = read_initial("run.h5")       # the last frame: continue a run from start.t0
    start.positions                      # (N, dim) float64

Every check is made once, in :class:`InitialConditions`; a bad file raises
:class:`~physnode.errors.InvalidInputError` whose message starts with the file name, names the
field and says what to change. A file that cannot be read at all (missing, a directory, not
UTF-8, not HDF5) raises :class:`~physnode.errors.DataError`, as :func:`read_trajectory` does.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from physnode.data.h5md import read_trajectory
from physnode.errors import DataError, InvalidInputError

__all__ = ["INITIAL_SUFFIXES", "InitialConditions", "read_initial"]

_AXES = ("x", "y", "z")
_JSON_KEYS = ("positions", "velocities", "masses")


@dataclass(frozen=True, eq=False)
class InitialConditions:
    """The start of a particle run: one state of ``N`` bodies in ``dim`` = 2 or 3 dimensions.

    Attributes:
        positions: shape ``(N, dim)``, float64, in the run's length unit; no two bodies at the
            same place.
        velocities: shape ``(N, dim)``, float64, length per time unit.
        masses: shape ``(N,)``, float64, positive, in units where G = the run's ``G``; None
            when the source gives none (the run then takes ``masses=`` or unit masses).
        t0: the time of this state (0 for JSON and CSV; an H5MD file's last sample time).
        source: where it came from (a file name), used in error messages and recorded.
        sha256: hex SHA-256 of the source file's bytes, or None when built in memory.
        member: the ensemble member taken from an H5MD ensemble file, else None.

    The arrays are converted to float64 and made read-only; every value is checked here, so
    an instance built in memory is held to the same rules as one read from a file.
    """

    positions: np.ndarray
    velocities: np.ndarray
    masses: np.ndarray | None = None
    t0: float = 0.0
    source: str = "initial conditions"
    sha256: str | None = None
    member: int | None = None

    def __post_init__(self) -> None:
        positions = _numbers(self.positions, "positions", self.source)
        _check_layout(positions, self.source)
        velocities = _numbers(self.velocities, "velocities", self.source)
        if velocities.shape != positions.shape:
            raise InvalidInputError(
                f"{self.source}: velocities has shape {velocities.shape} but positions has "
                f"{positions.shape}; give one velocity of {positions.shape[1]} components per body"
            )
        masses = None if self.masses is None else _numbers(self.masses, "masses", self.source)
        if masses is not None:
            _check_masses(masses, positions.shape[0], self.source)
        if not math.isfinite(self.t0):
            raise InvalidInputError(f"{self.source}: t0 = {self.t0!r}; it must be finite")
        _check_apart(positions, self.source)
        for name, value in (
            ("positions", positions),
            ("velocities", velocities),
            ("masses", masses),
        ):
            if value is not None:
                value.flags.writeable = False
            object.__setattr__(self, name, value)
        object.__setattr__(self, "t0", float(self.t0))

    @property
    def n_bodies(self) -> int:
        """``N``, the number of bodies."""
        return int(self.positions.shape[0])

    @property
    def dim(self) -> int:
        """The spatial dimension, 2 or 3."""
        return int(self.positions.shape[1])

    def state(self) -> np.ndarray:
        """The flat state ``(2 * N * dim,)``: positions then velocities, body-major."""
        return np.concatenate([self.positions.ravel(), self.velocities.ravel()])

    def provenance(self) -> dict[str, Any]:
        """What a run started from it records: ``initial`` (the source), ``initial_sha256``,
        ``initial_member`` and ``initial_t0`` (each only when known)."""
        out: dict[str, Any] = {"initial": self.source}
        if self.sha256 is not None:
            out["initial_sha256"] = self.sha256
        if self.member is not None:
            out["initial_member"] = int(self.member)
        out["initial_t0"] = self.t0
        return out


# ---------------------------------------------------------------------------- validation
def _numbers(value: Any, name: str, source: str) -> np.ndarray:
    """``value`` as a float64 array; InvalidInputError for ragged lists, text, booleans, NaN."""
    try:
        arr = np.asarray(value)
    except ValueError:  # ragged nested lists
        arr = np.asarray(value, dtype=object)
    if arr.dtype.kind not in "fiu":
        raise InvalidInputError(
            f"{source}: {name} must hold numbers only, in rows of equal length (got "
            f"{_describe(value)}); write {name} as a list of N lists of dim numbers"
            + (" (masses: a list of N numbers)" if name == "masses" else "")
        )
    arr = np.array(arr, dtype=np.float64)
    bad = ~np.isfinite(arr)
    if bad.any():
        where = ", ".join(str(int(i)) for i in np.argwhere(bad)[0])
        raise InvalidInputError(
            f"{source}: {name} holds NaN or inf at index [{where}]; every value must be finite"
        )
    return arr


def _describe(value: Any) -> str:
    """A short description of a bad value for a message."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _check_layout(positions: np.ndarray, source: str) -> None:
    if positions.ndim != 2 or positions.shape[0] < 1:
        raise InvalidInputError(
            f"{source}: positions has shape {positions.shape}; give at least one body, each a "
            "row of 2 or 3 coordinates, shape (N, dim)"
        )
    if positions.shape[1] not in (2, 3):
        raise InvalidInputError(
            f"{source}: positions has {positions.shape[1]} coordinates per body; physnode "
            "simulates dim 2 (x, y) or 3 (x, y, z)"
        )


def _check_masses(masses: np.ndarray, n_bodies: int, source: str) -> None:
    if masses.shape != (n_bodies,):
        raise InvalidInputError(
            f"{source}: masses has shape {masses.shape} for {n_bodies} bodies; give one mass "
            "per body"
        )
    bad = np.flatnonzero(masses <= 0)
    if bad.size:
        i = int(bad[0])
        raise InvalidInputError(
            f"{source}: masses[{i}] = {float(masses[i])!r}; every mass must be positive"
        )


def _check_apart(positions: np.ndarray, source: str) -> None:
    """InvalidInputError naming the first two bodies at exactly the same place (the force
    between them is infinite)."""
    _, first, counts = np.unique(positions, axis=0, return_index=True, return_counts=True)
    if (counts == 1).all():
        return
    where = positions[first[counts > 1][0]]
    i, j = np.flatnonzero((positions == where).all(axis=1))[:2]
    raise InvalidInputError(
        f"{source}: positions: bodies {i} and {j} are both at {where.tolist()}; coincident "
        "bodies have infinite attraction, move one of them"
    )


# ------------------------------------------------------------------------------- reading
def read_initial(path: str | os.PathLike[str], *, member: int | None = None) -> InitialConditions:
    """The initial conditions in ``path``; the format is chosen by its suffix.

    Args:
        path: ``.json`` (an object with ``positions``, ``velocities`` and optional
            ``masses``), ``.csv`` (a header row, then one row per body: optional ``m``,
            ``x, y[, z]``, ``vx, vy[, vz]``, columns found by name), or ``.h5`` / ``.h5md`` /
            ``.hdf5`` (an H5MD trajectory: its last frame, at ``t0`` = its last time).
        member: H5MD ensemble files: which member (0-based) to start from; required there
            and refused for every other file.

    Raises:
        InvalidInputError: an unknown suffix, or content that is not a valid start; the
            message starts with the file name and names the field.
        DataError: the file is missing or unreadable (from the H5MD reader: breaks the layout).
    """
    path = Path(path)
    reader = _READERS.get(path.suffix.lower())
    if reader is None:
        raise InvalidInputError(
            f"{path}: unknown initial-condition format {path.suffix!r}; use one of "
            f"{list(INITIAL_SUFFIXES)} (see docs/FORMAT.md)"
        )
    if member is not None and reader is not _read_h5md:
        raise InvalidInputError(
            f"{path}: member applies to H5MD ensemble files only; leave it out for "
            f"{path.suffix} files"
        )
    return reader(path, member)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _read_text(path: Path) -> str:
    """The file as text; DataError if it is missing, a directory or not UTF-8."""
    if not path.is_file():
        what = "is a directory" if path.is_dir() else "no such file"
        raise DataError(f"{path}: {what}")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: cannot be read as UTF-8 text ({err})") from err
    if not text.strip():
        raise InvalidInputError(f"{path}: the file is empty; see docs/FORMAT.md for the layout")
    return text


def _read_json(path: Path, member: int | None) -> InitialConditions:
    """``{"positions": [[...], ...], "velocities": [[...], ...], "masses": [...]}``."""
    del member  # refused by read_initial
    try:
        data = json.loads(_read_text(path))
    except json.JSONDecodeError as err:
        raise InvalidInputError(f"{path}: not valid JSON ({err})") from err
    if not isinstance(data, Mapping):
        raise InvalidInputError(
            f"{path}: the JSON must be an object with keys {list(_JSON_KEYS)}; got "
            f"{type(data).__name__}"
        )
    unknown = sorted(set(data) - set(_JSON_KEYS))
    missing = [k for k in _JSON_KEYS[:2] if k not in data]
    if unknown or missing:
        raise InvalidInputError(
            f"{path}: "
            + (f"unknown key(s) {unknown}; " if unknown else "")
            + (f"missing key(s) {missing}; " if missing else "")
            + f"the keys are {list(_JSON_KEYS[:2])} and optional 'masses'"
        )
    return InitialConditions(
        data["positions"], data["velocities"], data.get("masses"), 0.0, str(path), _sha256(path)
    )


def _read_csv(path: Path, member: int | None) -> InitialConditions:
    """A header row (``m,x,y,vx,vy`` or with ``z, vz``; any order), then one row per body."""
    del member  # refused by read_initial
    rows = [r for r in csv.reader(io.StringIO(_read_text(path))) if any(c.strip() for c in r)]
    header = [c.strip().lower() for c in rows[0]]
    dim = _csv_dim(header, path)
    body = rows[1:]
    if not body:
        raise InvalidInputError(f"{path}: a header row but no bodies; add one row per body")
    values = [_csv_row(row, len(header), n + 2, path) for n, row in enumerate(body)]
    table = np.array(values)
    column = {name: table[:, i] for i, name in enumerate(header)}
    axes = _AXES[:dim]
    positions = np.stack([column[a] for a in axes], axis=1)
    velocities = np.stack([column[f"v{a}"] for a in axes], axis=1)
    masses = column.get("m")
    return InitialConditions(positions, velocities, masses, 0.0, str(path), _sha256(path))


def _csv_dim(header: list[str], path: Path) -> int:
    """The dimension the header declares; InvalidInputError unless it is a known layout."""
    for dim in (2, 3):
        axes = _AXES[:dim]
        wanted = {*axes, *(f"v{a}" for a in axes)}
        if set(header) - {"m"} == wanted and len(header) == len(set(header)):
            return dim
    raise InvalidInputError(
        f"{path}: header {','.join(header)!r} is not a known layout; the first row must name "
        "the columns: optional m, then x,y,vx,vy (2-D) or x,y,z,vx,vy,vz (3-D), in any order"
    )


def _csv_row(row: list[str], width: int, line: int, path: Path) -> list[float]:
    """One body's numbers; InvalidInputError naming the line for a wrong count or junk."""
    if len(row) != width:
        raise InvalidInputError(
            f"{path}: line {line} has {len(row)} values but the header names {width} columns; "
            "give one value per column"
        )
    try:
        return [float(cell) for cell in row]
    except ValueError as err:
        raise InvalidInputError(f"{path}: line {line}: {err}; every cell must be a number") from err


def _read_h5md(path: Path, member: int | None) -> InitialConditions:
    """The last frame of an H5MD trajectory: positions, velocities, masses if stored."""
    traj = read_trajectory(path)
    if traj.positions is None:
        raise InvalidInputError(
            f"{path}: holds the state of a non-particle system (/observables/state), not "
            "bodies; an initial condition needs positions and velocities"
        )
    if traj.velocities is None:
        raise InvalidInputError(
            f"{path}: /particles/bodies/velocity is missing; a run cannot continue from "
            "positions alone: use a file with velocities (physnode simulate writes them)"
        )
    if traj.parameters.get("noise_std"):
        raise InvalidInputError(
            f"{path}: holds noisy observations (noise_std = {traj.parameters['noise_std']}); "
            "continue from a clean run (simulated with noise 0)"
        )
    positions, velocities, masses = _member_frame(
        traj.positions, traj.velocities, traj.masses, member, path
    )
    return InitialConditions(
        positions, velocities, masses, float(traj.times[-1]), str(path), _sha256(path), member
    )


def _member_frame(
    positions: np.ndarray,
    velocities: np.ndarray,
    masses: np.ndarray | None,
    member: int | None,
    path: Path,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """The last frame ``(positions, velocities, masses)`` of a trajectory's arrays
    (``(T, N, D)``, ensemble ``(T, B, N, D)``), or of its ``member``."""
    if positions.ndim == 3:
        if member is not None:
            raise InvalidInputError(
                f"{path}: is a single trajectory, not an ensemble; leave out member"
            )
        return positions[-1], velocities[-1], masses
    n_members = positions.shape[1]
    if member is None or isinstance(member, bool) or not 0 <= member < n_members:
        raise InvalidInputError(
            f"{path}: is an ensemble of {n_members} members; choose one with member = 0 .. "
            f"{n_members - 1} (CLI: --initial-member)"
            + ("" if member is None else f"; got {member!r}")
        )
    if masses is not None and masses.ndim == 2:
        masses = masses[member]
    return positions[-1, member], velocities[-1, member], masses


_READERS: dict[str, Callable[[Path, int | None], InitialConditions]] = {
    ".json": _read_json,
    ".csv": _read_csv,
    ".h5": _read_h5md,
    ".h5md": _read_h5md,
    ".hdf5": _read_h5md,
}

#: The file suffixes :func:`read_initial` reads (case-insensitive).
INITIAL_SUFFIXES: tuple[str, ...] = tuple(_READERS)
