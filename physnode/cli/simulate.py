"""``physnode simulate SYSTEM``: integrate a system and write an H5MD trajectory file."""

from __future__ import annotations

import contextlib
import math
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from physnode.cli._errors import err_console, fail, handle_errors
from physnode.cli.app import app
from physnode.data import write_trajectory
from physnode.simulate import ALL_METHODS, simulate
from physnode.systems import SYSTEMS, VALID_PRESETS

console = Console(highlight=False)


def parse_params(items: list[str] | None) -> dict[str, float]:
    """``["g=9.81", "length=2"]`` -> ``{"g": 9.81, "length": 2.0}``; raises typer.Exit on junk."""
    out: dict[str, float] = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        name = name.strip()
        try:
            number = float(value)
        except ValueError:
            number = math.nan
        if not sep or not name or not math.isfinite(number):
            raise fail(
                f"--param {item!r} is not NAME=NUMBER (e.g. --param g=9.81); "
                "see `physnode systems` for each system's parameters"
            )
        out[name] = number
    return out


@app.command("simulate")
@handle_errors
def simulate_command(
    system: Annotated[
        str, typer.Argument(help=f"The system to simulate: {', '.join(SYSTEMS)}.")
    ] = "three-body",
    preset: Annotated[
        str,
        typer.Option(help=f"Three-body preset: {', '.join(VALID_PRESETS)}."),
    ] = "figure-eight",
    periods: Annotated[
        float | None,
        typer.Option(help="Run length in periods of a periodic preset (default 10)."),
    ] = None,
    t_end: Annotated[
        float | None,
        typer.Option("--t-end", help="Run length in time units (default 10; pythagorean 70)."),
    ] = None,
    points: Annotated[int, typer.Option(help="Number of output samples (>= 2).")] = 1000,
    noise: Annotated[
        float,
        typer.Option(help="Relative Gaussian noise on the stored state (energy stays clean)."),
    ] = 0.0,
    seed: Annotated[int, typer.Option(help="Seed of random starts and of the noise.")] = 0,
    method: Annotated[
        str, typer.Option(help=f"Integration method: {', '.join(ALL_METHODS)}.")
    ] = "dop853",
    rtol: Annotated[float, typer.Option(help="Relative tolerance (adaptive methods).")] = 1e-13,
    atol: Annotated[float, typer.Option(help="Absolute tolerance (adaptive methods).")] = 1e-13,
    dim: Annotated[int, typer.Option(help="Spatial dimension of particle systems: 2 or 3.")] = 2,
    device: Annotated[str, typer.Option(help="Torch device: cpu or cuda.")] = "cpu",
    bodies: Annotated[int, typer.Option(help="Number of bodies (n-body).")] = 5,
    param: Annotated[
        list[str] | None,
        typer.Option("--param", "-p", help="Physical parameter NAME=VALUE; repeatable."),
    ] = None,
    batch: Annotated[
        int | None,
        typer.Option(help="Three-body ensemble of perturbed figure-eight starts."),
    ] = None,
    step_size: Annotated[
        float | None, typer.Option(help="Step of fixed-step and symplectic methods.")
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Output file (default data.h5 or <system>.h5)."),
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing output file.")] = False,
) -> None:
    """Simulate SYSTEM and write its trajectory (H5MD, readable by any HDF5 tool)."""
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise fail(f"unknown device {device!r}; valid devices are ['cpu', 'cuda']")
    params = parse_params(param)
    out = (
        output
        if output is not None
        else Path("data.h5" if system == "three-body" else f"{system}.h5")
    )
    if out.exists() and not overwrite:
        raise fail(f"{out}: exists already; pass --overwrite to replace it")

    with (
        contextlib.nullcontext(None)
        if not err_console.is_terminal
        else Progress(
            TextColumn("[bold]simulating[/] {task.description}"),
            BarColumn(),
            TextColumn("{task.percentage:>3.0f}%"),
            TimeElapsedColumn(),
            console=err_console,
            transient=True,
        ) as bar
    ):
        # The bar only on a terminal: piped or captured output stays clean.
        task = bar.add_task(system, total=1.0) if bar is not None else None
        traj, summary = simulate(
            system,
            preset=preset,
            periods=periods,
            t_end=t_end,
            points=points,
            noise=noise,
            seed=seed,
            method=method,
            rtol=rtol,
            atol=atol,
            dim=dim,
            device=device,
            bodies=bodies,
            params=params,
            batch=batch,
            step_size=step_size,
            progress=None if bar is None else (lambda f: bar.update(task, completed=f)),
        )
    path = write_trajectory(out, traj, overwrite=overwrite)

    table = Table(title=f"physnode simulate {system}", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    if "preset" in traj.parameters:
        table.add_row("preset", str(traj.parameters["preset"]))
    table.add_row("time span", f"0 .. {summary.t_end:.6g} ({traj.n_times} points)")
    table.add_row("method", f"{summary.method} (rtol {rtol:g}, atol {atol:g})")
    energy = "n/a (no energy)" if summary.energy_error is None else f"{summary.energy_error:.3e}"
    table.add_row("energy error max|ΔE/E0|", energy)
    table.add_row("steps", f"{summary.n_accepted} accepted, {summary.n_rejected} rejected")
    table.add_row("function evaluations", str(summary.nfe))
    table.add_row("wall time", f"{summary.wall_time:.2f} s")
    if noise:
        table.add_row("noise", f"{noise:g} relative (seed {seed})")
    table.add_row("output", str(path))
    console.print(table)
