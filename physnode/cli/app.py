"""The typer application behind the ``physnode`` console script.

Every command is registered here, in one place. A command is a plain function in its own module
(it never imports this one): it parses its options, calls one library function, and turns a
:class:`~physnode.errors.PhysnodeError` into one readable line on stderr and exit code 1.

Adding a command: write ``physnode/cli/<name>.py`` with one ``<name>_command`` function, then
add one ``app.command("<name>", cls=Command)(<name>_command)`` line below.
"""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer

from physnode._version import __version__
from physnode.cli._errors import Command
from physnode.cli.fit import fit_command
from physnode.cli.info import info_command
from physnode.cli.plot import plot_command
from physnode.cli.simulate import simulate_command
from physnode.cli.systems import systems_command

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


app.command("simulate", cls=Command)(simulate_command)
app.command("systems", cls=Command)(systems_command)
app.command("info", cls=Command)(info_command)
app.command("plot", cls=Command)(plot_command)
app.command("fit", cls=Command)(fit_command)


def main() -> None:
    """Console-script entry point.

    Under ``torchrun`` (``WORLD_SIZE`` > 1) the process ends with ``os._exit`` once the
    command has returned (its files closed, the ranks' process group left, stdout and stderr
    flushed): the interpreter's own shutdown can then abort a rank with ``terminate called
    without an active exception`` from a distributed-library thread (seen once in CI, on a rank
    with no file to fit, after a complete fit), turning a finished run into a failed one.
    """
    if os.environ.get("WORLD_SIZE", "1").strip() in ("", "1"):
        app()
        return
    code = _exit_code(app)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _exit_code(run) -> int:
    """The exit status ``run()`` ends with (``SystemExit`` or returning: 0)."""
    try:
        run()
    except SystemExit as stop:
        if stop.code is None or isinstance(stop.code, int):
            return int(stop.code or 0)
        print(stop.code, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    main()
