"""``physnode plot FILE``: save a figure of a trajectory file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from physnode.cli._errors import handle_errors
from physnode.cli.options import output_option, refuse_input

console = Console(highlight=False)

Output = output_option("Image file (default: <input>.png beside the input).")


@handle_errors
def plot_command(
    path: Annotated[Path, typer.Argument(help="A trajectory or fit file (.h5).")],
    output: Output = None,
) -> None:
    """Plot orbits and energy drift (particles) or a phase portrait (other systems).

    A fit file (from ``physnode fit``) gets observed vs predicted orbits, loss and parameter
    history, and the prediction error over time.
    """
    from physnode.data.fitfile import is_fit_file
    from physnode.plot import plot_fit_file, plot_trajectory_file  # matplotlib only when plotting

    if not path.exists():
        raise FileNotFoundError(2, "No such file", str(path))
    out = output if output is not None else path.with_suffix(".png")
    refuse_input(out, path)
    (plot_fit_file if is_fit_file(path) else plot_trajectory_file)(path, out)
    console.print(f"wrote {out}")
