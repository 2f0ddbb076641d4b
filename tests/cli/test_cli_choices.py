"""The CLI's choices and defaults come from the library's registries and signatures."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from physnode.cli.app import app
from physnode.fit import Fitter
from physnode.fit.fitter import MODELS, SCHEDULES
from physnode.simulate import ALL_METHODS, simulate
from physnode.solver import ADAPTIVE_METHODS, GRAD_METHODS
from physnode.systems import SYSTEMS, VALID_PRESETS

runner = CliRunner()


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)


def help_text(*command: str) -> str:
    # Wide enough that rich does not wrap a list of choices inside a name.
    result = runner.invoke(app, [*command, "--help"], env={"COLUMNS": "400"})
    assert result.exit_code == 0, result.output
    return " ".join(result.output.split())


def choices_of(text: str, option: str) -> list[str]:
    match = re.search(rf"{re.escape(option)}\s+(?:-\w\s+)?<([^>]*)>", text)
    assert match, f"{option} has no <choices> in --help"
    return match.group(1).split("|")


def default_of(text: str, option: str) -> str:
    match = re.search(rf"{re.escape(option)}\s.*?\[default: ([^\]]*)\]", text)
    assert match, f"{option} shows no default in --help"
    return match.group(1)


def test_simulate_help_lists_the_registries_and_the_library_defaults() -> None:
    text = help_text("simulate")
    assert choices_of(text, "system") == list(SYSTEMS)
    assert choices_of(text, "--preset") == list(VALID_PRESETS)
    assert choices_of(text, "--method") == list(ALL_METHODS)
    defaults = {k: p.default for k, p in inspect.signature(simulate).parameters.items()}
    for name in ("preset", "points", "method", "rtol", "atol", "seed", "dim", "bodies"):
        option = "--" + name.replace("_", "-")
        assert default_of(text, option) == str(defaults[name]), option


def test_fit_help_lists_the_registries_and_the_fitter_defaults() -> None:
    text = help_text("fit")
    assert choices_of(text, "--model") == list(MODELS)
    assert choices_of(text, "--grad") == list(GRAD_METHODS)
    assert choices_of(text, "--method") == list(ADAPTIVE_METHODS)
    assert choices_of(text, "--schedule") == list(SCHEDULES)
    assert choices_of(text, "--correction") == list(Fitter.CONSTRAINTS["correction"].choices)
    defaults = {k: p.default for k, p in inspect.signature(Fitter.__init__).parameters.items()}
    names = ("model", "grad", "method", "rtol", "atol", "epochs", "lr", "schedule", "seed",
             "correction")  # fmt: skip
    for name in names:
        assert default_of(text, f"--{name}") == str(defaults[name]), name
    assert default_of(text, "--learn") == ",".join(defaults["learn"])


@pytest.mark.parametrize(
    "args",
    [
        ("simulate", "--method", "magic"),
        ("simulate", "--device", "tpu"),
        ("fit", "data.h5", "--schedule", "never"),
        ("fit", "data.h5", "--method", "leapfrog"),  # symplectic: simulate only, not fit
        ("fit", "data.h5", "--device", "gpu"),
    ],
)
def test_a_bad_choice_is_one_line_and_exit_1(args: tuple[str, ...]) -> None:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), result.output
    assert args[-2] in lines[0]  # names the option
    assert list(Path(".").iterdir()) == []


def test_other_usage_errors_stay_typers() -> None:
    """Only choices are turned into one line; a non-number or a missing argument is typer's."""
    assert runner.invoke(app, ["simulate", "--points", "many"]).exit_code == 2
    assert runner.invoke(app, ["fit"]).exit_code == 2
