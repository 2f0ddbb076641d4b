"""The typer application behind the ``physnode`` console script.

Each command lives in its own module and registers itself here; a command parses its options,
calls one library function, and turns a :class:`~physnode.errors.PhysnodeError` into one readable
line on stderr and exit code 1.
"""

from __future__ import annotations

from typing import Annotated

import typer

from physnode._version import __version__

app = typer.Typer(
    name="physnode",
    help="Physics-informed modelling of dynamical systems: simulate, fit, plot.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"physnode {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version_callback, is_eager=True, help="Print the version."
        ),
    ] = False,
) -> None:
    """Physics-informed modelling of dynamical systems: simulate, fit, plot."""


# Each command module registers itself on ``app`` when imported.
from physnode.cli import fit, info, plot, simulate, systems  # noqa: E402, F401


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
