"""``physnode fit DATA``: fit a model's physical parameters to a trajectory file.

The command parses options, checks them against the data, hands the work to
:class:`physnode.fit.Fitter`, and writes the result with :func:`physnode.data.fitfile.write_fit`.
Ctrl-C / SIGTERM ask the fitter to stop at the end of the current epoch; the state so far is
written (``interrupted = True``) and ``--resume`` continues from it.
"""

from __future__ import annotations

import contextlib
import inspect
import math
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from rich.console import Console
from rich.progress import BarColumn, TextColumn, TimeRemainingColumn
from rich.table import Table

from physnode.cli._errors import err_console, fail, handle_errors
from physnode.cli._progress import progress_bar
from physnode.cli.choices import FIT_DEFAULTS as DEFAULT
from physnode.cli.choices import Correction, FitModel, GradMethod, Schedule, SolverMethod, plain
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
from physnode.data import Trajectory, read_trajectory
from physnode.data.fitfile import FitRecord, read_fit, sha256_file, write_fit
from physnode.fit import Fitter
from physnode.fit.fitter import element_labels

console = Console(highlight=False)

EXIT_INTERRUPTED = 130

# Settings a resumed run may change: only the number of epochs (to train longer).
RESUME_MAY_CHANGE = ("epochs",)

DataArg = Annotated[Path, typer.Argument(help="Trajectory file to fit (.h5, H5MD).")]
Model = Annotated[FitModel, typer.Option(help="Model: physics parameters, hybrid or neural.")]
Learn = Annotated[str, typer.Option(help="Parameters to learn, comma-separated, e.g. masses,y0.")]
Grad = Annotated[GradMethod, typer.Option(help="Gradient method.")]
Method = Annotated[SolverMethod, typer.Option(help="ODE solver.")]
Epochs = Annotated[int, typer.Option(help="Adam epochs.")]
Lr = Annotated[float, typer.Option(help="Learning rate.")]
TrainUntil = Annotated[
    float | None,
    typer.Option(help="End of the training window; later data is for extrapolation."),
]
ScheduleOpt = Annotated[Schedule, typer.Option(help="Training schedule.")]
CorrectionOpt = Annotated[
    Correction,
    typer.Option(
        help="Hybrid model's correction: per-body field, pair term, their conservative "
        "variants, or a full-state MLP; auto: field for particle data, else mlp."
    ),
]
Output = output_option("Fit file (default fit.h5; with --resume: the resumed file).")
Resume = Annotated[Path | None, typer.Option(help="Continue the fit stored in this fit file.")]


def _fitter_class() -> Any:
    """The Fitter class; a seam so tests can substitute a fake."""
    return Fitter


class StopFlag:
    """Callable ``should_stop()``: True once a stop was requested (first SIGINT/SIGTERM)."""

    def __init__(self) -> None:
        self.requested = False

    def set(self) -> None:
        self.requested = True

    def __call__(self) -> bool:
        return self.requested


def _make_stop_flag() -> Callable[[], bool]:
    """The should_stop the fitter polls each epoch; a seam for tests (monkeypatch it)."""
    return StopFlag()


@contextlib.contextmanager
def _stop_on_signals(flag: Callable[[], bool]) -> Iterator[None]:
    """First SIGINT/SIGTERM sets ``flag``; a second one interrupts at once (KeyboardInterrupt)."""
    setter = getattr(flag, "set", None)
    if setter is None:
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        del frame
        if flag():
            raise KeyboardInterrupt
        setter()
        err_console.print(
            f"[yellow]{signal.Signals(signum).name}: stopping after this epoch "
            "(again to abort without saving)[/]"
        )

    previous: dict[int, Any] = {}
    try:
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, handler)
    except ValueError:  # not the main thread: no handlers, Ctrl-C still aborts
        pass
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _learn(value: str | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    names = tuple(n.strip() for n in value.split(",") if n.strip())
    if not names:
        raise fail(f"--learn {value!r} names no parameter; e.g. --learn masses or masses,y0")
    return names


def _as_learn(value: Any) -> tuple[str, ...]:
    """``learn`` as stored in settings (``"masses,y0"``, a list, or a tuple) -> tuple."""
    if isinstance(value, str):
        return tuple(n for n in value.split(",") if n)
    return tuple(str(v) for v in value)


def _from_file(key: str, value: Any) -> Any:
    """A setting as stored in a fit file -> the Fitter's keyword value."""
    if key == "learn":
        return _as_learn(value)
    if key == "init_masses" and isinstance(value, str):
        return tuple(float(m) for m in value.split(",") if m)
    return value


def _settings(options: dict[str, Any], resume_settings: dict[str, Any] | None) -> dict[str, Any]:
    """Fitter keyword arguments: the options given, else the resumed file's settings; anything
    else is left to the Fitter's own defaults."""
    accepted = set(inspect.signature(_fitter_class()).parameters)
    settings: dict[str, Any] = {}
    if resume_settings is not None:
        for key, value in resume_settings.items():
            if key in accepted:
                settings[key] = _from_file(key, value)
        if settings.get("model") == "hybrid" and "correction" not in resume_settings:
            settings["correction"] = "mlp"  # files from before corrections had kinds
        for key, value in options.items():
            if value is None or key in RESUME_MAY_CHANGE or key not in settings:
                continue
            old = settings[key]
            same = old == value or (
                isinstance(old, float) and isinstance(value, float) and math.isclose(old, value)
            )
            if not same:
                shown = ",".join(value) if key == "learn" else value
                was = ",".join(old) if key == "learn" else old
                raise fail(
                    f"--{key.replace('_', '-')} {shown} differs from the resumed fit's {was}; "
                    "a resumed fit keeps its settings (only --epochs may change)"
                )
    settings.update({k: v for k, v in options.items() if v is not None and k in accepted})
    return settings


def _fmt_params(params: dict[str, np.ndarray], width: int = 60) -> str:
    parts = []
    for name, value in params.items():
        arr = np.atleast_1d(np.asarray(value, dtype=float))
        shown = ", ".join(f"{x:.4g}" for x in arr.ravel()[:6])
        more = ", …" if arr.size > 6 else ""
        parts.append(f"{name}=[{shown}{more}]" if arr.size > 1 else f"{name}={shown}")
    text = " ".join(parts)
    return text if len(text) <= width else text[: width - 1] + "…"


def _true_value(name: str, data: Trajectory) -> np.ndarray | None:
    if name == "masses":
        return None if data.masses is None else np.asarray(data.masses, dtype=float)
    value = data.parameters.get(name)
    if isinstance(value, (int, float, np.ndarray, list)) and not isinstance(value, bool):
        arr = np.asarray(value)
        return arr.astype(float) if arr.dtype.kind in "iuf" else None
    return None


def _result_table(fitter: Any, data: Trajectory, out: Path, title: str) -> Table:
    table = Table(title=title)
    for col in ("parameter", "fitted ± 1σ", "true", "rel. error"):
        table.add_column(col, justify="left" if col == "parameter" else "right")
    for name, value in fitter.params_.items():
        fitted = np.atleast_1d(np.asarray(value, dtype=float))
        sigma = np.atleast_1d(
            np.asarray(fitter.uncertainties_.get(name, np.full(fitted.shape, np.nan)), float)
        )
        sigma = np.broadcast_to(sigma, fitted.shape) if sigma.size in (1, fitted.size) else None
        true = _true_value(name, data)
        if true is not None:
            true = np.atleast_1d(true)
            if true.shape != fitted.shape:
                true = None
        for i, (label, x) in enumerate(
            zip(element_labels(name, value), fitted.ravel(), strict=True)
        ):
            s = math.nan if sigma is None else float(sigma.ravel()[i])
            cell = f"{x:.8g}" + ("" if math.isnan(s) else f" ± {s:.2g}")
            if math.isinf(s):  # the data do not see it: the value is the starting guess
                cell = f"{x:.8g} (undetermined)"
            if true is None:
                table.add_row(label, cell, "—", "—")
                continue
            t = float(true.ravel()[i])
            rel = abs(x - t) / abs(t) if t != 0 else abs(x - t)
            table.add_row(label, cell, f"{t:.8g}", f"{rel:.2e}")
    table.add_section()
    extrap = fitter.extrapolation_rmse_
    table.add_row("train RMSE", f"{fitter.train_rmse_:.3e}", "", "")
    table.add_row(
        "extrapolation RMSE", "n/a (no data beyond)" if extrap is None else f"{extrap:.3e}", "", ""
    )
    table.add_row("wall time", f"{fitter.wall_time_:.2f} s", "", "")
    table.add_row("output", str(out), "", "")
    return table


@contextlib.contextmanager
def _progress_bar(total: int) -> Iterator[Callable[..., None] | None]:
    """``progress(epoch, total, loss, params)`` driving a bar (epoch, loss, parameters, ETA) on a
    terminal; None otherwise."""
    columns = (
        TextColumn("[bold]epoch[/] {task.completed:>4.0f}/{task.total:.0f}"),
        BarColumn(),
        TextColumn("loss {task.fields[loss]}"),
        TextColumn("{task.fields[params]}"),
        TimeRemainingColumn(),
    )
    with progress_bar(*columns) as bar:
        if bar is None:
            yield None
            return
        task = bar.add_task("fit", total=total, loss="—", params="")

        def progress(epoch: int, total: int, loss: float, params: dict[str, np.ndarray]) -> None:
            bar.update(
                task, completed=epoch, total=total, loss=f"{loss:.3e}", params=_fmt_params(params)
            )

        yield progress


@handle_errors
def fit_command(
    ctx: typer.Context,
    data: DataArg,
    model: Model = FitModel(DEFAULT["model"]),
    learn: Learn = ",".join(DEFAULT["learn"]),
    grad: Grad = GradMethod(DEFAULT["grad"]),
    method: Method = SolverMethod(DEFAULT["method"]),
    rtol: Rtol = DEFAULT["rtol"],
    atol: Atol = DEFAULT["atol"],
    epochs: Epochs = DEFAULT["epochs"],
    lr: Lr = DEFAULT["lr"],
    train_until: TrainUntil = DEFAULT["train_until"],
    schedule: ScheduleOpt = Schedule(DEFAULT["schedule"]),
    correction: CorrectionOpt = Correction(DEFAULT["correction"]),
    seed: Seed = DEFAULT["seed"],
    device: Device = DEFAULT["device"],
    output: Output = None,
    resume: Resume = None,
    overwrite: Overwrite = False,
) -> None:
    """Fit a model to DATA; print fitted parameters with uncertainties and RMSEs.

    Options not given are the resumed fit's (with --resume), else the Fitter's defaults shown.
    """
    options = _given_settings(ctx)
    # Everything that can be checked is checked before the (long) fit starts.
    record = _resumed_fit(resume, data)
    out = _output_path(output, data, resume, overwrite)
    traj = read_trajectory(data)
    settings = _settings(options, None if record is None else record.settings)
    _check_train_until(settings.get("train_until"), traj)
    fitter = _run_fit(settings, traj, record)
    _refuse_if_nothing_determined(fitter)
    path = write_fit(out, fitter, data_path=data, observed=traj, overwrite=True)
    if fitter.interrupted_:
        epoch = fitter.state_.get("epoch", len(fitter.history_.get("epoch", ())))
        err_console.print(
            f"interrupted at epoch {int(epoch)}; resume with: physnode fit {data} --resume {path}"
        )
        raise typer.Exit(code=EXIT_INTERRUPTED)
    console.print(_result_table(fitter, traj, path, f"physnode fit {data.name}"))
    for message in fitter.warnings_:
        err_console.print(f"warning: {message}")
    if fitter.undetermined_:
        err_console.print(
            "warning: the data cannot determine "
            f"{', '.join(fitter.undetermined_)}: reported as undetermined, not fitted"
        )


def _refuse_if_nothing_determined(fitter: Any) -> None:
    """Fail in one line (no file written) when the data determine none of the learned
    physical parameters: there is no result to report."""
    params = fitter.params_
    n_values = sum(np.size(v) for v in params.values())
    if params and len(fitter.undetermined_) == n_values and not fitter.interrupted_:
        raise fail(
            f"the data cannot determine {', '.join(fitter.undetermined_)} (the motion does not "
            "depend on them); learn other parameters or give data that depend on them"
        )


def _given_settings(ctx: typer.Context) -> dict[str, Any]:
    """The Fitter settings given on the command line, as plain values.

    An option left at its default is not a setting: the defaults shown are the Fitter's own,
    and a resumed fit keeps the settings it was started with.
    """
    options = {
        name: plain(value)
        for name, value in ctx.params.items()
        if name in DEFAULT and _given(ctx, name)
    }
    if "learn" in options:
        options["learn"] = _learn(options["learn"])
    epochs = options.get("epochs")
    if epochs is not None and epochs < 1:
        raise fail(f"--epochs {epochs} must be at least 1")
    return options


def _given(ctx: typer.Context, name: str) -> bool:
    source = ctx.get_parameter_source(name)
    return source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP")


def _resumed_fit(resume: Path | None, data: Path) -> FitRecord | None:
    """The fit file to resume (None without --resume); it must have been fitted to ``data``."""
    if resume is None:
        return None
    record = read_fit(resume)
    digest = sha256_file(data) if data.is_file() else None
    if digest is not None and digest != record.data_sha256:
        raise fail(
            f"{data}: its SHA-256 differs from the data {resume} was fitted to "
            f"({record.data_file}); resume with the same data file"
        )
    return record


def _output_path(output: Path | None, data: Path, resume: Path | None, overwrite: bool) -> Path:
    """``--output``, else the resumed file (replaced in place), else ``fit.h5``; never the
    data file itself."""
    out = output if output is not None else (resume if resume is not None else Path("fit.h5"))
    refuse_input(out, data)
    replacing_resumed = resume is not None and out.resolve() == resume.resolve()
    refuse_existing(out, overwrite or replacing_resumed)
    return out


def _check_train_until(until: float | None, traj: Trajectory) -> None:
    """``--train-until`` must lie inside the data (None: the Fitter's default, inside it)."""
    if until is None:
        return
    t0, t_end = float(traj.times[0]), float(traj.times[-1])
    if not (math.isfinite(until) and t0 < until <= t_end):
        raise fail(
            f"--train-until {until:g} is outside the data: it must lie in ({t0:g}, {t_end:g}]"
        )


def _run_fit(settings: dict[str, Any], traj: Trajectory, record: FitRecord | None) -> Any:
    """The fitted Fitter; Ctrl-C / SIGTERM stop it at the end of an epoch (``interrupted_``)."""
    fitter = _fitter_class()(**settings)
    should_stop = _make_stop_flag()
    with (
        _stop_on_signals(should_stop),
        _progress_bar(int(getattr(fitter, "epochs", 0) or 0)) as progress,
    ):
        fitter.fit(
            traj,
            progress=progress,
            should_stop=should_stop,
            resume=None if record is None else record.state,
        )
    return fitter
