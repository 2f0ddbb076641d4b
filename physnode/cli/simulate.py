"""``physnode simulate SYSTEM``: integrate a system and write an H5MD trajectory file.

The command parses its options, calls :func:`physnode.simulate.simulate` (whose signature gives
every default), writes the trajectory and prints a summary.

Under ``torchrun`` (``WORLD_SIZE`` set, see :mod:`physnode.distributed`) a ``--batch N``
ensemble is shared out: rank ``r`` simulates a contiguous block of members
(:func:`physnode.data.shards.member_blocks`) and writes it to its shard file beside the output;
after all ranks report, rank 0 copies the shards into the one output file
(:func:`physnode.data.shards.join_shards`) and removes them (docs/SCALING.md).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import traceback
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from physnode import distributed
from physnode.cli._errors import err_console, fail, handle_errors
from physnode.cli._progress import progress_bar
from physnode.cli.choices import SIMULATE_DEFAULTS as DEFAULT
from physnode.cli.choices import IntegrationMethod, Preset, Steps, System, plain
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
from physnode.data.shards import join_shards, member_blocks, shard_path
from physnode.errors import PhysnodeError
from physnode.simulate import SimulationSummary, simulate

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
StepsOpt = Annotated[
    Steps | None,
    typer.Option(
        help="How an adaptive method steps a --batch: per-sample (default: each member its own "
        "steps) or shared (one step sequence for all, the pace of the hardest)."
    ),
]
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
    steps: StepsOpt = DEFAULT["steps"],
    output: Output = None,
    overwrite: Overwrite = False,
) -> None:
    """Simulate SYSTEM and write its trajectory (H5MD, readable by any HDF5 tool)."""
    name = plain(system)
    world = distributed.world_from_env()
    with _quiet_unless_root(world):
        params = parse_params(param)
        out = output if output is not None else default_output(name)
        refuse_input(out, initial)
        refuse_existing(out, overwrite)
        start = _read_start(initial, initial_member)
        settings = {
            "preset": plain(preset), "periods": periods, "t_end": t_end, "points": points,
            "noise": noise, "seed": seed, "method": plain(method), "rtol": rtol, "atol": atol,
            "dim": dim, "device": device, "bodies": bodies, "params": params, "batch": batch,
            "step_size": step_size, "masses": parse_masses(masses), "initial": start,
            "steps": None if steps is None else plain(steps),
        }  # fmt: skip
        shown = {"rtol": rtol, "atol": atol, "noise": noise, "seed": seed}
        if world.size > 1:
            _simulate_sharded(name, settings, out, overwrite, world, shown)
            return
        with _progress(name) as progress:
            traj, summary = simulate(name, **settings, progress=progress)
        path = write_trajectory(out, traj, overwrite=overwrite)
        console.print(_summary_table(name, traj, summary, path, **shown))


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
    ranks: str | None = None,
) -> Table:
    """What the run did (``summary``: a :class:`physnode.simulate.SimulationSummary`;
    ``ranks``: how a sharded ensemble was shared out, shown as a row)."""
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
    if ranks is not None:
        table.add_row("ranks", ranks)
    if noise:
        table.add_row("noise", f"{noise:g} relative (seed {seed})")
    table.add_row("output", str(path))
    return table


# ====================================================================== an ensemble on ranks
@contextlib.contextmanager
def _quiet_unless_root(world: distributed.World) -> Iterator[None]:
    """Under torchrun only rank 0 prints ``error:`` lines: a check that fails on every rank
    (an existing output, a bad option) says so once, and a rank's own failure reaches rank 0
    through the gather. The other ranks still exit 1. A :class:`DistributedError` (ranks
    lost) is every rank's own news and is printed everywhere."""
    if world.is_root:
        yield
        return
    quiet, err_console.quiet = err_console.quiet, True
    try:
        yield
    except distributed.DistributedError:
        err_console.quiet = quiet
        raise
    except PhysnodeError:
        raise typer.Exit(code=1) from None
    finally:
        err_console.quiet = quiet


@dataclasses.dataclass(frozen=True)
class _RankOutcome:
    """What one rank reports after its share: its trajectory's summary (None: no members),
    or the line saying why it failed."""

    summary: SimulationSummary | None = None
    error: str | None = None


def _simulate_sharded(
    name: str,
    settings: dict[str, Any],
    out: Path,
    overwrite: bool,
    world: distributed.World,
    shown: dict[str, Any],
) -> None:
    """Simulate this rank's block of the ``--batch`` members into its shard file; rank 0 then
    joins the shards into ``out`` (all-or-nothing) and prints the summary. A failure on any
    rank fails every rank (exit 1; rank 0 prints one line naming the rank) and leaves no
    ``out``; each surviving rank removes its own shard."""
    batch = settings["batch"]
    if batch is None:
        raise fail(
            f"torchrun started {world.size} ranks, but only a --batch ensemble is shared out "
            "over ranks: give --batch N, or run the command without torchrun"
        )
    with distributed.process_group(world, device=str(settings["device"])):
        agreed = {k: repr(v) for k, v in settings.items()} | {"out": str(out.resolve())}
        distributed.require_agreement(agreed, world, "simulate settings")
        blocks = member_blocks(int(batch), world.size)
        part = shard_path(out, world.rank, world.size)
        try:
            mine, traj = _simulate_block(name, settings, blocks[world.rank], part, world)
            outcomes: list[_RankOutcome] = distributed.all_gather(mine, world)
            _fail_on_errors(outcomes)
            joined = _RankOutcome()
            if world.is_root:
                written = [r for r, (lo, hi) in enumerate(blocks) if hi > lo]
                parts = [shard_path(out, r, world.size) for r in written]
                joined = _join(parts, out, overwrite)
            _fail_on_errors(distributed.all_gather(joined, world)[:1])
        except BaseException:
            part.unlink(missing_ok=True)  # no stray shard of a failed run
            raise
    if world.is_root and traj is not None:
        summary = _combined([o.summary for o in outcomes if o.summary is not None])
        shares = ", ".join(str(hi - lo) for lo, hi in blocks)
        ranks = f"{world.size} (members per rank: {shares}; steps and evaluations summed)"
        console.print(_summary_table(name, traj, summary, out, **shown, ranks=ranks))


def _simulate_block(
    name: str,
    settings: dict[str, Any],
    members: tuple[int, int],
    part: Path,
    world: distributed.World,
) -> tuple[_RankOutcome, Trajectory | None]:
    """Simulate ``members`` (``(lo, hi)``; none when empty) and write them to ``part``; the
    outcome to gather (an error as its line, never raised: the others must hear of it) and
    the trajectory (None: no members or failed)."""
    lo, hi = members
    if hi <= lo:
        return _RankOutcome(), None
    try:
        progress_of = _progress(name) if world.is_root else contextlib.nullcontext(None)
        with progress_of as progress:
            traj, summary = simulate(name, **settings, members=members, progress=progress)
        write_trajectory(part, traj, overwrite=True)  # a stale shard of an earlier run goes
    except (PhysnodeError, OSError) as exc:
        return _RankOutcome(error=_where(world, members) + _one_line(exc)), None
    except Exception as exc:  # a bug: its traceback on this rank's stderr, a line for rank 0
        traceback.print_exc()
        return _RankOutcome(error=_where(world, members) + f"{type(exc).__name__}: {exc}"), None
    return _RankOutcome(summary=summary), traj


def _join(parts: Sequence[Path], out: Path, overwrite: bool) -> _RankOutcome:
    """Rank 0's join of the shards into ``out``, its failure as an outcome to share."""
    try:
        join_shards(parts, out, overwrite=overwrite)
    except (PhysnodeError, OSError) as exc:
        return _RankOutcome(error=f"rank 0 could not join the shards into {out}: {exc}")
    return _RankOutcome()


def _where(world: distributed.World, members: tuple[int, int]) -> str:
    lo, hi = members
    return f"rank {world.rank} of {world.size} (members {lo}..{hi - 1}): "


def _one_line(exc: BaseException) -> str:
    text = str(exc)
    if isinstance(exc, OSError) and exc.filename:
        text = f"{exc.filename}: {exc.strerror or exc}"
    return " ".join(text.split())


def _fail_on_errors(outcomes: Sequence[_RankOutcome]) -> None:
    """Exit 1 (rank 0 printing the first failure, and how many more) when any outcome failed;
    no output file was written then."""
    errors = [o.error for o in outcomes if o.error is not None]
    if errors:
        more = f" (and {len(errors) - 1} more rank(s) failed)" if len(errors) > 1 else ""
        raise fail(f"{errors[0]}{more}; no output was written")


def _combined(summaries: Sequence[SimulationSummary]) -> SimulationSummary:
    """One summary of the ranks' shares: the largest energy error and wall time, the steps
    and function evaluations summed (each rank integrates its own block)."""
    errors = [s.energy_error for s in summaries if s.energy_error is not None]
    return dataclasses.replace(
        summaries[0],
        energy_error=max(errors) if errors else None,
        n_accepted=sum(s.n_accepted for s in summaries),
        n_rejected=sum(s.n_rejected for s in summaries),
        nfe=sum(s.nfe for s in summaries),
        wall_time=max(s.wall_time for s in summaries),
    )
