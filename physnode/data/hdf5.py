"""HDF5 helpers shared by trajectory files (:mod:`~physnode.data.h5md`) and fit files
(:mod:`~physnode.data.fitfile`): opening with a clear error, parameters as attributes (checked,
written, read back as plain Python values) and string attributes."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from physnode.errors import DataError, InvalidInputError

__all__ = [
    "attr_value",
    "check_parameters",
    "open_file",
    "python_value",
    "read_parameters",
    "strings",
    "write_parameters",
]


def check_parameters(params: Mapping[str, Any], where: str) -> None:
    """InvalidInputError (naming ``where``) if a parameter name or value (nested dicts
    included) cannot be stored as an HDF5 attribute; checked before anything is written."""
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


def attr_value(value: Any, where: str) -> Any:
    """The HDF5 attribute value for one parameter; InvalidInputError if it has no faithful one."""
    if value is None:
        return h5py.Empty("f8")
    if isinstance(value, (bool, np.bool_)):
        return np.bool_(value)
    if isinstance(value, (int, np.integer)):
        if isinstance(value, int) and not -(2**63) <= value < 2**63:
            raise InvalidInputError(f"{where} = {value} does not fit in int64")
        return value if isinstance(value, np.integer) else np.int64(value)
    if isinstance(value, (float, np.floating)):
        return value if isinstance(value, np.floating) else np.float64(value)
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple, np.ndarray)):
        items = list(np.ravel(np.asarray(value, dtype=object)))
        n_str = sum(isinstance(x, (str, np.str_)) for x in items)
        if 0 < n_str < len(items):  # numpy would silently turn the numbers into strings
            raise InvalidInputError(
                f"{where} = {value!r} mixes strings and other values; an HDF5 attribute holds "
                "one type"
            )
        arr = np.asarray(value)
        if arr.dtype.kind in "biuf":
            return arr
        if arr.dtype.kind in "US" or (
            arr.dtype.kind == "O" and all(isinstance(x, str) for x in arr.ravel())
        ):
            return np.array([str(x) for x in arr.ravel()], dtype=h5py.string_dtype()).reshape(
                arr.shape
            )
    raise InvalidInputError(
        f"{where} = {value!r} ({type(value).__name__}) cannot be stored in an HDF5 attribute; "
        "use str, bool, int, float, None, a list/array of numbers or strings, or a dict of those"
    )


def write_parameters(group: h5py.Group, params: Mapping[str, Any]) -> None:
    """``params`` as attributes of ``group``; nested dicts become subgroups."""
    for key, value in params.items():
        if isinstance(value, Mapping):
            write_parameters(group.create_group(key, track_order=True), value)
        else:
            group.attrs[key] = attr_value(value, key)


def open_file(path: Path) -> h5py.File:
    """``path`` opened read-only; DataError saying why not (missing, a folder, not HDF5,
    truncated)."""
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


def strings(value: Any) -> list[str]:
    """A string attribute (str, bytes or an array of them) as a flat list of ``str``."""
    arr = np.atleast_1d(np.asarray(value, dtype=object))
    return [x.decode() if isinstance(x, bytes) else str(x) for x in arr.ravel()]


def python_value(value: Any) -> Any:
    """An attribute value as a plain Python value (None, str, bool, int, float, list of str,
    or a numeric array)."""
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


def read_parameters(group: h5py.Group) -> dict[str, Any]:
    """The attributes of ``group`` (subgroups as nested dicts): :func:`write_parameters`
    read back."""
    params: dict[str, Any] = {k: python_value(v) for k, v in group.attrs.items()}
    for key, sub in group.items():
        if isinstance(sub, h5py.Group):
            params[key] = read_parameters(sub)
    return params
