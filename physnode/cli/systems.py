"""``physnode systems``: the systems, their parameters and the three-body presets."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from physnode.cli._errors import handle_errors
from physnode.systems import PRESETS, SYSTEMS

console = Console(highlight=False)


@handle_errors
def systems_command() -> None:
    """List the systems with their default parameters, and the three-body presets."""
    table = Table(title="systems")
    table.add_column("system", style="bold")
    table.add_column("parameters (defaults)")
    table.add_column("description")
    for info in SYSTEMS.values():
        params = ", ".join(f"{k}={v}" for k, v in info.defaults.items())
        table.add_row(info.name, params, info.description)
    console.print(table)

    presets = Table(title="three-body presets (physnode simulate three-body --preset NAME)")
    presets.add_column("preset", style="bold")
    presets.add_column("period", justify="right")
    presets.add_column("description")
    for p in PRESETS.values():
        presets.add_row(p.name, "-" if p.period is None else f"{p.period:.9g}", p.description)
    presets.add_row("random", "-", "Random bound equal-mass start from --seed.")
    console.print(presets)
