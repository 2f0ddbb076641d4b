"""HDF5 helpers shared by trajectory files (:mod:`physnode.data.h5md`) and fit files
(:mod:`physnode.data.fitfile`).

One place for what both layouts need: creating and opening files (a missing, non-HDF5 or
truncated file becomes a :class:`~physnode.errors.DataError` that names it), turning Python
values into HDF5 attributes and back, the ``/parameters``-style attribute trees, string arrays and
checked numeric datasets. Nothing here knows either layout.

::

    from physnode.data import hdf5

    hdf5.check_parameters(params, "parameters")  # before anything touches the disk
    with hdf5.create_file(tmp) as f:
        hdf5.write_parameters(f.create_group("parameters", track_order=True), params)
    with hdf5.open_file(path) as f:
        params = hdf5.read_parameters(f["parameters"])
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from physnode.errors import DataError, InvalidInputError

__all__ = [
    "LIBVER",
    "attr_value",
    "check_int64",
    "check_parameters",
    "create_file",
    "int_attr",
    "open_file",
    "python_value",
    "read_numeric",
    "read_parameters",
    "string_array",
    "strings",
    "write_parameters",
]

LIBVER = ("v108", "v108")
"""``h5py.File`` ``libver`` for every file physnode writes: HDF5 file format version 2, the version
H5MD recommends."""

_INT64_MIN, _INT64_END = -(2**63), 2**63


# ====================================================================== files
def create_file(path: str | os.PathLike[str]) -> h5py.File:
    """A new HDF5 file at ``path`` (truncating whatever is there), in the :data:`LIBVER` format.

    Meant for the temporary name handed out by :func:`~physnode.data.atomic_write`.
    """
    return h5py.File(path, "w", libver=LIBVER)


def open_file(path: Path) -> h5py.File:
    """Open ``path`` read-only.

    Raises:
        DataError: ``path`` does not exist, is a directory, is not HDF5, or cannot be opened
            (e.g. truncated); the message starts with the file name and says which.
    """
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if path.is_dir():
        raise DataError(f"{path}: is a directory, not a trajectory file")
    try:
        is_hdf5 = h5py.is_hdf5(path)
    except OSError as err:
        raise DataError(f"{path}: cannot be read ({err})") from err
    if not is_hdf5:
        raise DataError(
            f"{path}: not an HDF5 file — physnode trajectories are HDF5 (H5MD layout, see "
            "docs/FORMAT.md)"
        )
    try:
        return h5py.File(path, "r")
    except OSError as err:
        raise DataError(f"{path}: could not be opened as HDF5 ({err}); is it truncated?") from err


# ====================================================================== datasets and attributes
def read_numeric(ds: Any, name: str, path: Path) -> np.ndarray:
    """The whole of dataset ``ds`` as float64.

    Args:
        ds: the object found at HDF5 path ``name`` of file ``path`` (named in errors).

    Raises:
        DataError: ``ds`` is not a dataset, or does not hold integers or floats.
    """
    if not isinstance(ds, h5py.Dataset):
        raise DataError(f"{path}: {name} is not a dataset")
    if ds.dtype.kind not in "fiu":
        raise DataError(f"{path}: {name} has dtype {ds.dtype}; expected numbers")
    return np.asarray(ds[()], dtype=np.float64)


def int_attr(obj: h5py.HLObject, name: str, default: int | None = None) -> int | None:
    """Attribute ``name`` of ``obj`` as a Python int, or ``default`` when it is absent."""
    if name not in obj.attrs:
        return default
    return int(np.asarray(obj.attrs[name]))


def string_array(values: str | Sequence[str]) -> np.ndarray:
    """``values`` as an array of HDF5 variable-length UTF-8 strings (a str gives a 0-d array)."""
    return np.array(values, dtype=h5py.string_dtype())


def strings(value: Any) -> list[str]:
    """A stored string or array of strings (bytes or str, any shape) as a flat list of str."""
    arr = np.atleast_1d(np.asarray(value, dtype=object))
    return [x.decode() if isinstance(x, bytes) else str(x) for x in arr.ravel()]


def check_int64(value: int, where: str) -> None:
    """Raise InvalidInputError, naming ``where``, when the Python int ``value`` is not an int64."""
    if not _INT64_MIN <= value < _INT64_END:
        raise InvalidInputError(f"{where} = {value} does not fit in int64")


def attr_value(value: Any, where: str) -> Any:
    """The HDF5 attribute value that stores ``value`` faithfully.

    None becomes an empty float64 attribute; bool, int and float become NumPy bool, int64 and
    float64 (NumPy scalars keep their dtype); str stays str; lists and arrays of numbers become
    arrays, of strings variable-length string arrays. :func:`python_value` is the inverse.

    Raises:
        InvalidInputError: ``value`` has no faithful attribute form (an int beyond int64, a list
            mixing strings and numbers, any other type); the message starts with ``where``.
    """
    if value is None:
        return h5py.Empty("f8")
    if isinstance(value, (bool, np.bool_)):
        return np.bool_(value)
    if isinstance(value, (int, np.integer)):
        if isinstance(value, int):
            check_int64(value, where)
        return value if isinstance(value, np.integer) else np.int64(value)
    if isinstance(value, (float, np.floating)):
        return value if isinstance(value, np.floating) else np.float64(value)
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple, np.ndarray)):
        arr = _sequence_attr(value, where)
        if arr is not None:
            return arr
    raise InvalidInputError(
        f"{where} = {value!r} ({type(value).__name__}) cannot be stored in an HDF5 attribute; "
        "use str, bool, int, float, None, a list/array of numbers or strings, or a dict of those"
    )


def _sequence_attr(value: list | tuple | np.ndarray, where: str) -> np.ndarray | None:
    """A list/array of numbers or of strings as an attribute array; None for any other items."""
    items = list(np.ravel(np.asarray(value, dtype=object)))
    n_str = sum(isinstance(x, (str, np.str_)) for x in items)
    if 0 < n_str < len(items):  # numpy would silently turn the numbers into strings
        raise InvalidInputError(
            f"{where} = {value!r} mixes strings and other values; an HDF5 attribute holds one type"
        )
    arr = np.asarray(value)
    if arr.dtype.kind in "biuf":
        return arr
    if arr.dtype.kind in "US" or (
        arr.dtype.kind == "O" and all(isinstance(x, str) for x in arr.ravel())
    ):
        return string_array([str(x) for x in arr.ravel()]).reshape(arr.shape)
    return None


def python_value(value: Any) -> Any:
    """A stored attribute value as plain Python: None, str, bool, int, float, or an array
    (string arrays: a list of str when 1-D, else an array of str)."""
    if isinstance(value, h5py.Empty):
        return None
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.ndarray):
        if value.dtype.kind in "OSU":
            texts = strings(value)
            return texts if value.ndim == 1 else np.array(texts).reshape(value.shape)
        return value
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    return value


# ====================================================================== parameter trees
def check_parameters(params: Mapping[str, Any], where: str) -> None:
    """Check that :func:`write_parameters` can store ``params``, without writing anything.

    Raises:
        InvalidInputError: a name is not a non-empty string without ``/``, or a value has no
            attribute form (see :func:`attr_value`); the message gives its dotted path from
            ``where``.
    """
    for key, value in params.items():
        if not isinstance(key, str) or not key or "/" in key or key == ".":
            raise InvalidInputError(
                f"{where}: parameter name {key!r} cannot be stored; use a non-empty string "
                "without '/'"
            )
        if isinstance(value, Mapping):
            check_parameters(value, f"{where}.{key}")
        else:
            attr_value(value, f"{where}.{key}")


def write_parameters(group: h5py.Group, params: Mapping[str, Any]) -> None:
    """Store ``params`` as attributes of ``group``, nested dicts as subgroups (in given order).

    ``group`` should be created with ``track_order=True`` so the order survives the round trip.
    """
    for key, value in params.items():
        if isinstance(value, Mapping):
            write_parameters(group.create_group(key, track_order=True), value)
        else:
            group.attrs[key] = attr_value(value, key)


def read_parameters(group: h5py.Group) -> dict[str, Any]:
    """The inverse of :func:`write_parameters`: attributes as plain Python values, subgroups as
    nested dicts."""
    params: dict[str, Any] = {k: python_value(v) for k, v in group.attrs.items()}
    for key, sub in group.items():
        if isinstance(sub, h5py.Group):
            params[key] = read_parameters(sub)
    return params
