"""Options more than one command takes, declared once as ``Annotated`` types.

A command writes ``rtol: Rtol = SIMULATE_DEFAULTS["rtol"]``: the declaration (flag, help, check)
comes from here, the default from the library function the command calls.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from physnode.cli._errors import fail

#: Torch device types the CLI accepts, besides ``cuda:N``.
DEVICES = ("cpu", "cuda")


def _check_device(value: str) -> str:
    if value not in DEVICES and not value.startswith("cuda:"):
        raise fail(f"--device {value!r} is not valid; valid values are {[*DEVICES, 'cuda:N']}")
    return value


def output_option(help: str) -> Any:
    """``--output/-o PATH`` (None when not given); ``help`` says what the command writes."""
    return Annotated[Path | None, typer.Option("--output", "-o", help=help)]


Rtol = Annotated[float, typer.Option(help="Relative tolerance of adaptive solvers.")]
Atol = Annotated[float, typer.Option(help="Absolute tolerance of adaptive solvers.")]
Seed = Annotated[int, typer.Option(help="Seed of everything random (starts, noise, weights).")]
Device = Annotated[
    str, typer.Option(help="Torch device: cpu, cuda or cuda:N.", callback=_check_device)
]
Overwrite = Annotated[bool, typer.Option(help="Replace an existing output file.")]


def refuse_input(out: Path, *inputs: Path | None) -> None:
    """Fail in one line when the output ``out`` is one of the command's own input files: an
    output never replaces its input, ``--overwrite`` or not."""
    for src in inputs:
        if src is not None and _same_file(out, src):
            raise fail(f"{out}: is this command's input file {src}; choose another output (-o)")


def _same_file(a: Path, b: Path) -> bool:
    if a.exists() and b.exists():
        return a.samefile(b)
    return a.resolve() == b.resolve()


def refuse_existing(path: Path, overwrite: bool) -> None:
    """Fail in one line when ``path`` exists and ``--overwrite`` was not given."""
    if path.exists() and not overwrite:
        raise fail(f"{path}: exists already; pass --overwrite to replace it")
