"""``physnode info FILE``: what a trajectory file holds."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from physnode.cli._errors import handle_errors
from physnode.data import describe

console = Console(highlight=False)


@handle_errors
def info_command(
    path: Annotated[Path, typer.Argument(help="A trajectory file (.h5).")],
) -> None:
    """Show what a trajectory file holds: system, shapes, times, parameters, energy drift."""
    d = describe(path)
    table = Table(title=str(path), show_header=False)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("system", str(d["system"]))
    table.add_row("kind", d["kind"])
    if d["kind"] == "particles":
        table.add_row("bodies", f"{d['n_bodies']} in {d['dim']}-D")
        table.add_row("masses", str(d["masses"]))
        table.add_row("velocities", "yes" if d["has_velocities"] else "no")
    else:
        table.add_row("state", ", ".join(d["state_names"] or []))
    if d["n_members"] is not None:
        table.add_row("ensemble members", str(d["n_members"]))
    table.add_row("samples", f"{d['n_times']} from t={d['t_start']:g} to {d['t_end']:g}")
    drift = d["energy_drift"]
    table.add_row("energy drift max|ΔE/E0|", "n/a" if drift is None else f"{drift:.3e}")
    noise = d["noise"]
    table.add_row("noise", "none" if noise is None else f"{noise['std']:g} (seed {noise['seed']})")
    for key, value in d["parameters"].items():
        if key not in ("system", "noise_std", "noise_seed", "noise_relative"):
            table.add_row(f"  {key}", str(value))
    table.add_row("created by", str(d["creator"]))
    table.add_row("format version", str(d["format_version"]))
    console.print(table)
