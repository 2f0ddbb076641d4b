"""The shared HDF5 helpers (physnode.data.hdf5) and the rule that data modules call no other
module's private functions."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import h5py
import numpy as np
import pytest

from physnode.data import hdf5
from physnode.errors import DataError, InvalidInputError

DATA_PACKAGE = Path(hdf5.__file__).parent


def test_parameters_round_trip(tmp_path: Path) -> None:
    params = {
        "system": "n-body",
        "G": 1.0,
        "seed": 7,
        "adaptive": True,
        "softening": None,
        "t_span": [0.0, 2.0],
        "names": ["a", "b"],
        "grid": np.arange(6).reshape(2, 3),
        "nested": {"inner": 3, "deeper": {"x": "y"}},
    }
    hdf5.check_parameters(params, "parameters")
    with hdf5.create_file(tmp_path / "p.h5") as f:
        hdf5.write_parameters(f.create_group("parameters", track_order=True), params)
    with hdf5.open_file(tmp_path / "p.h5") as f:
        back = hdf5.read_parameters(f["parameters"])
    assert list(back) == list(params)  # track_order keeps the order given
    assert back["names"] == ["a", "b"]
    assert back["softening"] is None
    assert back["nested"] == {"inner": 3, "deeper": {"x": "y"}}
    np.testing.assert_array_equal(back["grid"], params["grid"])
    assert type(back["seed"]) is int and type(back["adaptive"]) is bool


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({"a/b": 1}, "parameter name 'a/b' cannot be stored"),
        ({"big": 2**63}, "parameters.big = 9223372036854775808 does not fit in int64"),
        ({"mix": [1, "a"]}, "mixes strings and other values"),
        ({"obj": object()}, "cannot be stored in an HDF5 attribute"),
        ({"d": {"bad": {1, 2}}}, "parameters.d.bad = "),
    ],
)
def test_check_parameters_names_the_key(params: dict, fragment: str) -> None:
    with pytest.raises(InvalidInputError, match=re.escape(fragment)):
        hdf5.check_parameters(params, "parameters")


def test_check_int64() -> None:
    hdf5.check_int64(2**63 - 1, "x")
    hdf5.check_int64(-(2**63), "x")
    with pytest.raises(InvalidInputError, match=r"state_\['k'\] = -9223372036854775809"):
        hdf5.check_int64(-(2**63) - 1, "state_['k']")


def test_strings_and_attributes(tmp_path: Path) -> None:
    with hdf5.create_file(tmp_path / "s.h5") as f:
        f.attrs["names"] = hdf5.string_array(("sun", "earth"))
        f.attrs["one"] = hdf5.string_array("moon")
        f.attrs["n"] = np.int32(3)
    with h5py.File(tmp_path / "s.h5", "r") as f:
        assert hdf5.strings(f.attrs["names"]) == ["sun", "earth"]
        assert hdf5.strings(f.attrs["one"]) == ["moon"]
        assert hdf5.strings(b"raw") == ["raw"]
        assert hdf5.int_attr(f, "n") == 3
        assert hdf5.int_attr(f, "absent") is None
        assert hdf5.int_attr(f, "absent", 1) == 1


def test_open_file_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file"):
        hdf5.open_file(tmp_path / "missing.h5")
    with pytest.raises(DataError, match="is a directory"):
        hdf5.open_file(tmp_path)
    junk = tmp_path / "junk.h5"
    junk.write_text("not hdf5")
    with pytest.raises(DataError, match="not an HDF5 file"):
        hdf5.open_file(junk)


def test_read_numeric(tmp_path: Path) -> None:
    with hdf5.create_file(tmp_path / "n.h5") as f:
        f["ints"] = np.arange(3, dtype=np.int32)
        f["text"] = hdf5.string_array(["a"])
        f.create_group("group")
    with h5py.File(tmp_path / "n.h5", "r") as f:
        values = hdf5.read_numeric(f["ints"], "/ints", tmp_path)
        assert values.dtype == np.float64 and values.tolist() == [0.0, 1.0, 2.0]
        with pytest.raises(DataError, match="/text has dtype"):
            hdf5.read_numeric(f["text"], "/text", tmp_path)
        with pytest.raises(DataError, match="/group is not a dataset"):
            hdf5.read_numeric(f["group"], "/group", tmp_path)


def test_no_module_calls_another_modules_private_functions() -> None:
    offenders = []
    for path in sorted(DATA_PACKAGE.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in {"h5md", "hdf5", "fitfile", "atomic", "noise", "trajectory"}
                and node.attr.startswith("_")
            ):
                offenders.append(f"{path.name}:{node.lineno} {node.value.id}.{node.attr}")
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("physnode"):
                offenders += [
                    f"{path.name}:{node.lineno} from {node.module} import {a.name}"
                    for a in node.names
                    if a.name.startswith("_") and a.name != "__version__"
                ]
    assert offenders == []
