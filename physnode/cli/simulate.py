"""``physnode simulate SYSTEM``: integrate a system and write an H5MD trajectory file.

The command parses its options, calls :func:`physnode.simulate.simulate` (whose signature gives
every default), writes the trajectory and prints a summary.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from physnode.cli._errors import fail, handle_errors
from physnode.cli._progress import progress_bar
from physnode.cli.choices import SIMULATE_DEFAULTS as DEFAULT
from physnode.cli.choices import IntegrationMethod, Preset, System, plain
from physnode.cli.options import (
    Atol,
    Device,
    Overwrite,
    Rtol,
    Seed,
    output_option,
    refuse_existing,
    refuse_input,
)
from physnode.data import (
    INITIAL_SUFFIXES,
    InitialConditions,
    Trajectory,
    read_initial,
    write_trajectory,
)
from physnode.simulate import simulate

console = Console(highlight=False)

SystemArg = Annotated[System, typer.Argument(help="The system to simulate.")]
PresetOpt = Annotated[Preset, typer.Option(help="Three-body preset (see `physnode systems`).")]
Periods = Annotated[
    float | None,
    typer.Option(help="Run length in periods of a periodic preset (default 10)."),
]
TEnd = Annotated[
    float | None,
    typer.Option("--t-end", help="Run length in time units (default 10; pythagorean 70)."),
]
Points = Annotated[int, typer.Option(help="Number of output samples (>= 2).")]
Noise = Annotated[
    float, typer.Option(help="Relative Gaussian noise on the stored state (energy stays clean).")
]
Method = Annotated[IntegrationMethod, typer.Option(help="Integration method.")]
Dim = Annotated[int, typer.Option(help="Spatial dimension of particle systems: 2 or 3.")]
Bodies = Annotated[int, typer.Option(help="Number of bodies (n-body).")]
Masses = Annotated[
    str | None,
    typer.Option(help="One mass per body, comma-separated (three-body, n-body), e.g. 0.8,1.3,1."),
]
Param = Annotated[
    list[str] | None,
    typer.Option("--param", "-p", help="Physical parameter NAME=VALUE; repeatable."),
]
Batch = Annotated[
    int | None, typer.Option(help="Three-body ensemble of perturbed figure-eight starts.")
]
StepSize = Annotated[float | None, typer.Option(help="Step of fixed-step and symplectic methods.")]
Initial = Annotated[
    Path | None,
    typer.Option(
        help=f"Start from this file's bodies ({', '.join(INITIAL_SUFFIXES)}; an H5MD file: its "
        "last frame, continuing its times) instead of the preset or random start "
        "(three-body, n-body; docs/FORMAT.md).",
    ),
]
InitialMember = Annotated[
    int | None,
    typer.Option(help="Which member (0-based) of an H5MD ensemble file --initial starts from."),
]
Output = output_option("Output file (default data.h5 or <system>.h5).")


@handle_errors
def simulate_command(
    system: SystemArg = System(DEFAULT["system"]),
    preset: PresetOpt = Preset(DEFAULT["preset"]),
    periods: Periods = DEFAULT["periods"],
    t_end: TEnd = DEFAULT["t_end"],
    points: Points = DEFAULT["points"],
    noise: Noise = DEFAULT["noise"],
    seed: Seed = DEFAULT["seed"],
    method: Method = IntegrationMethod(DEFAULT["method"]),
    rtol: Rtol = DEFAULT["rtol"],
    atol: Atol = DEFAULT["atol"],
    dim: Dim = DEFAULT["dim"],
    device: Device = DEFAULT["device"],
    bodies: Bodies = DEFAULT["bodies"],
    masses: Masses = None,
    initial: Initial = None,
    initial_member: InitialMember = None,
    param: Param = None,
    batch: Batch = DEFAULT["batch"],
    step_size: StepSize = DEFAULT["step_size"],
    output: Output = None,
    overwrite: Overwrite = False,
) -> None:
    """Simulate SYSTEM and write its trajectory (H5MD, readable by any HDF5 tool)."""
    name = plain(system)
    params = parse_params(param)
    out = output if output is not None else default_output(name)
    refuse_input(out, initial)
    refuse_existing(out, overwrite)
    start = _read_start(initial, initial_member)
    with _progress(name) as progress:
        traj, summary = simulate(
            name,
            preset=plain(preset),
            periods=periods,
            t_end=t_end,
            points=points,
            noise=noise,
            seed=seed,
            method=plain(method),
            rtol=rtol,
            atol=atol,
            dim=dim,
            device=device,
            bodies=bodies,
            params=params,
            batch=batch,
            step_size=step_size,
            progress=progress,
            masses=parse_masses(masses),
            initial=start,
        )
    path = write_trajectory(out, traj, overwrite=overwrite)
    settings = {"rtol": rtol, "atol": atol, "noise": noise, "seed": seed}
    console.print(_summary_table(name, traj, summary, path, **settings))


def _read_start(path: Path | None, member: int | None) -> InitialConditions | None:
    """The initial conditions in ``path`` (``member``: of an H5MD ensemble), or None."""
    if path is None:
        if member is not None:
            raise fail("--initial-member applies with --initial only")
        return None
    return read_initial(path, member=member)


def parse_masses(text: str | None) -> tuple[float, ...] | None:
    """``"0.8,1.3,1"`` -> ``(0.8, 1.3, 1.0)``; raises typer.Exit on junk (the library checks
    the count and the signs)."""
    if text is None:
        return None
    try:
        values = tuple(float(x) for x in text.split(","))
    except ValueError:
        values = ()
    if not values or not all(math.isfinite(v) for v in values):
        raise fail(f"--masses {text!r} is not a comma-separated list of numbers (e.g. 0.8,1.3,1)")
    return values


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


def default_output(system: str) -> Path:
    """``data.h5`` for the default system (three-body), else ``<system>.h5``."""
    return Path("data.h5" if system == DEFAULT["system"] else f"{system}.h5")


@contextlib.contextmanager
def _progress(system: str) -> Iterator[Callable[[float], None] | None]:
    """``progress(fraction)`` driving a bar on a terminal; None otherwise."""
    columns = (
        TextColumn("[bold]simulating[/] {task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
    )
    with progress_bar(*columns) as bar:
        if bar is None:
            yield None
            return
        task = bar.add_task(system, total=1.0)
        yield lambda fraction: bar.update(task, completed=fraction)


def _summary_table(
    system: str,
    traj: Trajectory,
    summary: Any,
    path: Path,
    *,
    rtol: float,
    atol: float,
    noise: float,
    seed: int,
) -> Table:
    """What the run did (``summary``: a :class:`physnode.simulate.SimulationSummary`)."""
    table = Table(title=f"physnode simulate {system}", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    if "preset" in traj.parameters:
        table.add_row("preset", str(traj.parameters["preset"]))
    if "initial" in traj.parameters:
        table.add_row("initial conditions", str(traj.parameters["initial"]))
    span = f"{traj.times[0]:.6g} .. {summary.t_end:.6g}"
    table.add_row("time span", f"{span} ({traj.n_times} points)")
    table.add_row("method", f"{summary.method} (rtol {rtol:g}, atol {atol:g})")
    energy = "n/a (no energy)" if summary.energy_error is None else f"{summary.energy_error:.3e}"
    table.add_row("energy error max|ΔE/E0|", energy)
    table.add_row("steps", f"{summary.n_accepted} accepted, {summary.n_rejected} rejected")
    table.add_row("function evaluations", str(summary.nfe))
    table.add_row("wall time", f"{summary.wall_time:.2f} s")
    if noise:
        table.add_row("noise", f"{noise:g} relative (seed {seed})")
    table.add_row("output", str(path))
    return table
