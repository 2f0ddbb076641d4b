"""``physnode fit DATA...``: fit a model's physical parameters to trajectory files.

The command parses options, checks them against the data, hands the work to
:class:`physnode.fit.Fitter`, and writes the result with :func:`physnode.data.fitfile.write_fit`.
Ctrl-C / SIGTERM ask the fitter to stop at the end of the current epoch; the state so far is
written (``interrupted = True``) and ``--resume`` continues from it.

With several data files each is fitted on its own, with the same settings, into
``-o DIR/<stem>.fit.h5`` (:mod:`physnode.fit.many`); under ``torchrun`` the files are shared
out over the ranks (:mod:`physnode.distributed`) and rank 0 prints one summary.
"""

from __future__ import annotations

import contextlib
import inspect
import itertools
import math
import signal
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from rich import box
from rich.console import Console
from rich.progress import BarColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from physnode import distributed
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
from physnode.constraints import Constraint
from physnode.constraints import Optional as OptionalConstraint
from physnode.data import Trajectory, read_trajectory
from physnode.data.fitfile import FitRecord, read_fit, sha256_file, write_fit
from physnode.errors import InvalidInputError, PhysnodeError
from physnode.fit import Fitter, many
from physnode.fit.fitter import element_labels
from physnode.fit.many import FileResult, Job, Prior, Status
from physnode.fit.penalty import CHOICES as PENALTY_CHOICES
from physnode.fit.shared import SETTING as SHARED_SETTING
from physnode.fit.shared import SHARED_NETWORK
from physnode.models import AUTO_PARTICLE_KINDS

console = Console(highlight=False)

EXIT_INTERRUPTED = 130

# Settings a resumed run may change: only the number of epochs (to train longer).
RESUME_MAY_CHANGE = ("epochs",)


def _given_constraint(name: str) -> Constraint:
    """The Fitter's declared constraint on ``name``, for a value given on the command line
    (an ``Optional`` one's inner constraint: not giving the option is its ``None``)."""
    constraint = Fitter.CONSTRAINTS[name]
    return constraint.inner if isinstance(constraint, OptionalConstraint) else constraint


def _number_or_word(text: str | float) -> float | str:
    """``"0.5"`` -> 0.5; a word (``"auto"``) stays a word for the constraint to judge."""
    try:
        return float(text)
    except ValueError:
        return str(text)


def _check_setting(name: str, value: Any) -> Any:
    """``value`` when the Fitter's declared constraint on ``name`` accepts it (None: not
    given), else one ``error:`` line naming the flag, before any file is read."""
    if value is not None:
        try:
            _given_constraint(name).check(f"--{name.replace('_', '-')}", value)
        except InvalidInputError as exc:
            raise fail(str(exc)) from None
    return value


DataArgs = Annotated[
    list[Path],
    typer.Argument(
        help="Trajectory files to fit (.h5, H5MD); several are fitted one by one, each on its "
        "own, and shared out over the ranks under torchrun.",
        show_default=False,
    ),
]
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
        "variants, or a full-state MLP; auto: on particle data fit each of "
        f"{', '.join(AUTO_PARTICLE_KINDS)} and keep the better (twice the time), else mlp."
    ),
]
RefitSymbolic = Annotated[
    bool,
    typer.Option(
        "--refit-symbolic",
        help="Hybrid: refit physics plus the discovered law's terms as a physics model "
        "(coefficients with uncertainties; docs/FITTING.md).",
    ),
]
Output = output_option(
    "Fit file (default fit.h5; with --resume: the resumed file). With several DATA files: the "
    "directory for their <stem>.fit.h5 files (default: the current directory)."
)
Validation = Annotated[
    float | None,
    typer.Option(
        help="Fraction of the training window, at its end, held out of the gradient steps to "
        "choose the model (the best on it is kept); "
        f"{_given_constraint('validation').describe()}; default: 0.2 with --ensemble > 1, "
        "else 0.",
        callback=lambda value: _check_setting("validation", value),
        show_default=False,
    ),
]
EnsembleOpt = Annotated[
    int,
    typer.Option(
        help="Hybrid or neural: fit this many members from seeds SEED.. SEED+K-1; the best on "
        "the validation window is reported, their spread is the extrapolation uncertainty "
        f"({_given_constraint('ensemble').describe()}).",
        callback=lambda value: _check_setting("ensemble", value),
    ),
]
CorrectionPenalty = Annotated[
    str,
    typer.Option(
        help="Hybrid: weight of the correction's size (mean squared, relative to the physics "
        "along the fit) in the loss, so the network explains only what the physics cannot; "
        f"{_given_constraint('correction_penalty').describe()}; 0: none; auto: one fit per "
        f"weight of {list(PENALTY_CHOICES)}, the lowest validation RMSE kept "
        "(docs/FITTING.md).",
        callback=lambda value: _check_setting("correction_penalty", _number_or_word(value)),
    ),
]
Retrain = Annotated[
    bool,
    typer.Option(
        "--retrain/--no-retrain",
        help="Hybrid, after --correction auto or --correction-penalty auto chose on a "
        "validation window (one seed each): fit the chosen kind and weight once more on the "
        "whole training window and report that fit.",
    ),
]
Resume = Annotated[Path | None, typer.Option(help="Continue the fit stored in this fit file.")]
SharedOpt = Annotated[
    str | None,
    typer.Option(
        help="Fit one model to all DATA files at once: these parameters are shared, "
        f"comma-separated ('{SHARED_NETWORK}' for the hybrid's network, or learned physical "
        "parameters such as G); the rest (masses, initial states) are each file's own. Each "
        "file gets its <stem>.fit.h5 with the shared values in it (docs/SCALING.md).",
        show_default=False,
    ),
]


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
        raise InvalidInputError(
            f"--learn {value!r} names no parameter; e.g. --learn masses or masses,y0"
        )
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
    if key in ("init_masses", "init_coefficients") and isinstance(value, str):
        return tuple(float(m) for m in value.split(",") if m)
    if key == "terms" and isinstance(value, str):  # settings_ joins them with ";"
        return tuple(t for t in value.split(";") if t)
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
        if "validation" not in resume_settings and "validation" in accepted:
            settings["validation"] = 0.0  # files from before validation windows held none out
        if "retrain" not in resume_settings and "retrain" in accepted:
            settings["retrain"] = False  # files from before the retrain reported the member
        conflict = _setting_conflict(options, settings, may_change=RESUME_MAY_CHANGE)
        if conflict is not None:
            flag, shown, was = conflict
            raise InvalidInputError(
                f"{flag} {shown} differs from the resumed fit's {was}; "
                "a resumed fit keeps its settings (only --epochs may change)"
            )
    settings.update({k: v for k, v in options.items() if v is not None and k in accepted})
    return settings


def _setting_conflict(
    options: dict[str, Any], stored: dict[str, Any], may_change: Sequence[str] = ()
) -> tuple[str, str, str] | None:
    """``(flag, given, stored)`` of the first option given that differs from the stored
    setting of the same name (floats compared with ``math.isclose``); None when all agree."""
    for key, value in options.items():
        if value is None or key in may_change or key not in stored:
            continue
        old = stored[key]
        same = old == value or (
            isinstance(old, float) and isinstance(value, float) and math.isclose(old, value)
        )
        if not same:
            shown = ",".join(value) if key == "learn" else value
            was = ",".join(old) if key == "learn" else old
            return f"--{key.replace('_', '-')}", str(shown), str(was)
    return None


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
    valid = getattr(fitter, "validation_rmse_", None)
    if valid is not None:
        window = f"{fitter.fit_until_:g} < t ≤ {fitter.train_until_:g}"
        table.add_row(f"validation RMSE ({window})", f"{valid:.3e}", "", "")
    table.add_row(
        "extrapolation RMSE", "n/a (no data beyond)" if extrap is None else f"{extrap:.3e}", "", ""
    )
    _add_candidates(table, getattr(fitter, "candidates_", None))
    _add_ensemble(table, getattr(fitter, "ensemble_", None))
    _add_discovered(table, getattr(fitter, "discovered_", None), getattr(fitter, "refit_", None))
    table.add_row("wall time", f"{fitter.wall_time_:.2f} s", "", "")
    table.add_row("output", str(out), "", "")
    return table


def _add_candidates(table: Table, candidates: Any) -> None:
    """A row for ``correction="auto"`` / ``correction_penalty="auto"``: the kind (and weight)
    chosen, by which RMSE, and every member's."""
    if candidates is None:
        return
    rmse = candidates.validation_rmse if candidates.score == "validation" else candidates.train_rmse
    labels = list(candidates.corrections)
    if len(set(candidates.penalties.tolist())) > 1:
        labels = [f"{kind} w={w:g}" for kind, w in zip(labels, candidates.penalties, strict=True)]
    each = ", ".join(f"{label} {x:.2e}" for label, x in zip(labels, rmse, strict=True))
    chosen = labels[candidates.best]
    then = "; then fitted on the whole training window" if candidates.retrained else ""
    table.add_row(
        "correction", Text(f"{chosen} (lowest {candidates.score} RMSE: {each}{then})"), "", ""
    )


def _add_ensemble(table: Table, ensemble: Any) -> None:
    """Rows for an ensemble fit: the members, the one reported, their spread at the end."""
    if ensemble is None:
        return
    seeds = ensemble.seeds
    table.add_row("ensemble", f"{len(seeds)} seeds {seeds[0]}..{seeds[-1]}, "
                  f"reported {seeds[ensemble.best]}", "", "")  # fmt: skip
    extrap = ", ".join(f"{x:.2e}" for x in ensemble.extrapolation_rmse)
    table.add_row("members' extrap. RMSE", Text(extrap), "", "")
    end = float(np.sqrt(np.mean(ensemble.spread[-1] ** 2)))
    table.add_row("spread at the last time (RMS)", f"{end:.3e}", "", "")


def _add_discovered(table: Table, discovered: Any, refit: Any = None) -> None:
    """Rows for a law the fitter discovered in its correction (``formula``, ``explained``, the
    fraction of the correction it accounts for, and the whole library's) and for its symbolic
    refit, in their own section; nothing when None."""
    if discovered is None:
        return
    table.add_section()
    table.add_row("discovered law", Text(str(discovered.formula)), "", "")
    explained = f"{float(discovered.explained):.1%}"
    library = getattr(discovered, "library_explained", None)
    if library is not None:
        explained += f" (whole library {float(library):.1%})"
    table.add_row("explained", explained, "", "")
    size = getattr(discovered, "relative_size", math.nan)
    if not math.isnan(size):
        table.add_row("correction / physics (RMS)", f"{size:.2e}", "", "")
    if refit is not None:
        table.add_row("symbolic refit", Text(str(refit.formula)), "", "")
        extrap = refit.extrapolation_rmse
        shown = "n/a (no data beyond)" if extrap is None else f"{extrap:.3e}"
        table.add_row("refit extrapolation RMSE", shown, "", "")
        for name, value in refit.params.items():
            if name != "coefficients":
                sigma = np.max(np.atleast_1d(refit.uncertainties.get(name, np.nan)))
                shown = ", ".join(f"{x:.8g}" for x in np.atleast_1d(value))
                table.add_row(f"refit {name}", Text(f"{shown} (σ ≤ {sigma:.2g})"), "", "")
        if refit.dropped:
            table.add_row("refit dropped", Text(", ".join(refit.dropped)), "", "")
        if getattr(refit, "added", None):
            table.add_row("refit added", Text(", ".join(refit.added)), "", "")
        rivals = zip(getattr(refit, "rivals", []), getattr(refit, "rival_delta", []),
                     getattr(refit, "rival_held_out_rmse", []), strict=True)  # fmt: skip
        if getattr(refit, "held_out_rmse", None) is not None:
            table.add_row("refit held-out RMSE", f"{refit.held_out_rmse:.4g}", "", "")
        for formula, delta, held in rivals:
            shown = f"{formula} (BIC {delta:+.2f}, held-out RMSE {held:.4g})"
            table.add_row("refit rival", Text(shown), "", "")
    table.add_section()


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
    data: DataArgs,
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
    refit_symbolic: RefitSymbolic = DEFAULT["refit_symbolic"],
    validation: Validation = DEFAULT["validation"],
    ensemble: EnsembleOpt = DEFAULT["ensemble"],
    correction_penalty: CorrectionPenalty = str(DEFAULT["correction_penalty"]),
    retrain: Retrain = DEFAULT["retrain"],
    seed: Seed = DEFAULT["seed"],
    device: Device = DEFAULT["device"],
    output: Output = None,
    resume: Resume = None,
    overwrite: Overwrite = False,
    shared: SharedOpt = None,
) -> None:
    """Fit a model to DATA; print fitted parameters with uncertainties and RMSEs.

    Options not given are the resumed fit's (with --resume), else the Fitter's defaults shown.

    Several DATA files: each is fitted on its own into -o DIR/<stem>.fit.h5 (docs/SCALING.md).

    A rerun skips complete fits and resumes interrupted ones; --overwrite refits them.
    """
    world = distributed.world_from_env()
    with _errors_on_root_only(world):
        options = _given_settings(ctx)
        if len(data) == 1 and world.size > 1 and shared is None:
            raise InvalidInputError(
                f"torchrun started {world.size} ranks for one data file; ranks share out "
                "several files, so run one file without torchrun"
            )
    if shared is not None:
        from physnode.cli import shared as shared_cli  # it builds on this module

        shared_cli.run(data, options, output, resume, overwrite, world, shared)
    elif len(data) == 1:
        _fit_one_file(data[0], options, output, resume, overwrite)
    else:
        _fit_many(data, options, output, resume, overwrite, world)


def _fit_one_file(
    data: Path, options: dict[str, Any], output: Path | None, resume: Path | None, overwrite: bool
) -> None:
    """``physnode fit DATA``: one fit, its table, its fit file (``-o``, default ``fit.h5``)."""
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
        raise InvalidInputError(
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
        raise InvalidInputError(f"--epochs {epochs} must be at least 1")
    return options


def _given(ctx: typer.Context, name: str) -> bool:
    source = ctx.get_parameter_source(name)
    return source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP")


def _resumed_fit(resume: Path | None, data: Path) -> FitRecord | None:
    """The fit file to resume (None without --resume); it must have been fitted to ``data``."""
    if resume is None:
        return None
    record = read_fit(resume)
    if SHARED_SETTING in record.settings:
        raise InvalidInputError(
            f"{resume} is a member of a shared fit (--shared {record.settings[SHARED_SETTING]}), "
            "which cannot be resumed as one fit; rerun the shared fit"
        )
    digest = sha256_file(data) if data.is_file() else None
    if digest is not None and digest != record.data_sha256:
        raise InvalidInputError(
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
        raise InvalidInputError(
            f"--train-until {until:g} is outside the data: it must lie in ({t0:g}, {t_end:g}]"
        )


def _run_fit(
    settings: dict[str, Any],
    traj: Trajectory,
    record: FitRecord | None,
    should_stop: Callable[[], bool] | None = None,
) -> Any:
    """The fitted Fitter; Ctrl-C / SIGTERM stop it at the end of an epoch (``interrupted_``).

    Without ``should_stop`` (one file) the fit installs its own signal handlers and shows an
    epoch bar; with it (one of many files) the caller has done both, and no bar is shown.
    """
    fitter = _fitter_class()(**settings)
    resume = None if record is None else record.state
    if should_stop is not None:
        fitter.fit(traj, progress=None, should_stop=should_stop, resume=resume)
        return fitter
    should_stop = _make_stop_flag()
    with (
        _stop_on_signals(should_stop),
        _progress_bar(int(getattr(fitter, "epochs", 0) or 0)) as progress,
    ):
        fitter.fit(traj, progress=progress, should_stop=should_stop, resume=resume)
    return fitter


# ====================================================================== several data files
@contextlib.contextmanager
def _errors_on_root_only(world: distributed.World) -> Iterator[None]:
    """A check that fails the same way on every rank says so once: rank 0 prints the
    ``error:`` line, the other ranks exit 1 silently."""
    try:
        yield
    except PhysnodeError:
        if world.is_root:
            raise
        raise typer.Exit(code=1) from None


def _fit_many(
    files: Sequence[Path],
    options: dict[str, Any],
    output: Path | None,
    resume: Path | None,
    overwrite: bool,
    world: distributed.World,
) -> None:
    """Fit each file into ``DIR/<stem>.fit.h5`` (this rank's share under torchrun), gather
    every rank's results, print one summary on rank 0, exit non-zero on any failure."""
    with _errors_on_root_only(world):
        if resume is not None:
            raise InvalidInputError(
                "--resume takes one data file; with several, rerun the same command: "
                "interrupted fits in the output directory are resumed, complete ones skipped"
            )
        out_dir = _output_dir(output)
        jobs = many.plan(files, out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with distributed.process_group(world, device=str(options.get("device", "cpu"))):
        # a shell glob sorts by locale: ranks on other nodes might shard another order
        distributed.require_agreement([str(p) for p in files], world, "data files")
        mine = distributed.shard(jobs, world)
        try:
            results = _fit_shard(mine, options, overwrite, world)
        except KeyboardInterrupt:  # a second Ctrl-C: abort the fit under way
            raise fail(
                "interrupted; the fit files written so far are complete: rerun the same "
                "command to do the rest",
                code=EXIT_INTERRUPTED,
            ) from None
        gathered = distributed.all_gather(results, world)
    everything = sorted(itertools.chain.from_iterable(gathered), key=lambda r: r.index)
    if world.is_root:
        _report(everything, world, time.perf_counter() - start)
    _exit_for(everything)


def _output_dir(output: Path | None) -> Path:
    """``-o DIR`` (default: the current directory); it may not exist yet, but not be a file."""
    out_dir = Path(".") if output is None else output
    if out_dir.exists() and not out_dir.is_dir():
        raise InvalidInputError(
            f"{out_dir}: is a file; with several DATA files -o names a directory for their "
            f"<stem>{many.FIT_SUFFIX} files"
        )
    return out_dir


def _fit_shard(
    jobs: Sequence[Job], options: dict[str, Any], overwrite: bool, world: distributed.World
) -> list[FileResult]:
    """This rank's jobs, one after the other; Ctrl-C / SIGTERM stop the fit under way at the
    end of an epoch (it is written, resumable) and start no other."""
    stop = _make_stop_flag()
    with _stop_on_signals(stop), _files_bar(len(jobs), world) as done:
        results = many.run_jobs(
            jobs,
            lambda job: _fit_job(job, options, overwrite, stop),
            should_stop=stop,
            on_done=done,
            rank=world.rank,
        )
    for result in results:
        if result.detail:  # an unexpected error: its traceback, on the rank where it happened
            err_console.print(f"{result.data}: {result.detail}", markup=False)
    return results


def _fit_job(
    job: Job, options: dict[str, Any], overwrite: bool, should_stop: Callable[[], bool]
) -> FileResult:
    """Fit one file into its fit file: skip a complete fit of the same data, resume an
    interrupted one, refuse anything else in the way (without --overwrite)."""
    prior, record = many.prior_fit(job.output, job.data, overwrite)
    if prior is Prior.COMPLETE and record is not None:
        _refuse_other_settings(job, options, record)
        return FileResult.skipped(job, record)
    resumed = record if prior is Prior.INTERRUPTED else None
    traj = read_trajectory(job.data)
    settings = _job_settings(job, options, resumed)
    _check_train_until(settings.get("train_until"), traj)
    fitter = _run_fit(settings, traj, resumed, should_stop=should_stop)
    _refuse_if_nothing_determined(fitter)
    replace = overwrite or resumed is not None
    write_fit(job.output, fitter, data_path=job.data, observed=traj, overwrite=replace)
    return FileResult.from_fitter(job, fitter)


def _job_settings(job: Job, options: dict[str, Any], resumed: FitRecord | None) -> dict[str, Any]:
    """The Fitter's settings for ``job``: those given, over a resumed fit's own."""
    if resumed is None:
        return _settings(options, None)
    try:
        return _settings(options, resumed.settings)
    except InvalidInputError as exc:
        raise InvalidInputError(
            f"{job.output} is an interrupted fit: {exc}; or rerun with --overwrite to start "
            "it again"
        ) from None


def _refuse_other_settings(job: Job, options: dict[str, Any], record: FitRecord) -> None:
    """A complete fit made with other settings than those given now is not what was asked
    for: refuse it rather than skip it silently or replace it without --overwrite."""
    stored = {k: _from_file(k, v) for k, v in record.settings.items()}
    if SHARED_SETTING in stored:
        raise InvalidInputError(
            f"{job.output} is a member of a shared fit (--shared {stored[SHARED_SETTING]}); "
            "rerun with that --shared, or with --overwrite to fit the file on its own"
        )
    conflict = _setting_conflict(options, stored)
    if conflict is not None:
        flag, shown, was = conflict
        raise InvalidInputError(
            f"{job.output} is a complete fit made with {flag} {was}, not {shown}; rerun with "
            "--overwrite to refit it"
        )


@contextlib.contextmanager
def _files_bar(total: int, world: distributed.World) -> Iterator[Callable[..., None] | None]:
    """``done(result)`` advancing a bar over this rank's files on a terminal (rank 0 only,
    so ranks sharing a terminal do not fight over it); None otherwise."""
    where = f"rank {world.rank}/{world.size} " if world.size > 1 else ""
    columns = (
        TextColumn(f"[bold]{where}files[/] {{task.completed:.0f}}/{{task.total:.0f}}"),
        BarColumn(),
        TextColumn("{task.fields[last]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with progress_bar(*columns) as bar:
        if bar is None or not world.is_root:
            yield None
            return
        task = bar.add_task("files", total=total, last="")

        def done(result: FileResult) -> None:
            name = Text(f"{Path(result.data).name}: {result.status.value}").markup
            bar.update(task, advance=1, last=name)

        yield done


def _status_cell(result: FileResult) -> Text:
    """``fitted``, ``skipped (complete)``, ``interrupted``, ...; a failure is ``failed``, in
    red, its reason on a line of its own below the table (a table cell would fold it)."""
    if result.status is Status.FAILED:
        return Text("failed", style="red")
    if result.reason and result.status is Status.SKIPPED:
        return Text(f"{result.status.value} ({result.reason})")
    return Text(result.status.value)


def _rmse_cell(value: float | None) -> str:
    return "—" if value is None else f"{value:.2e}"


def _summary_table(results: Sequence[FileResult], world: distributed.World) -> Table:
    """One row per data file: status, fitted parameters, RMSEs, seconds (and the rank); laid
    out to fit 80 columns (no side borders; long names and parameters fold)."""
    table = Table(
        title=f"physnode fit: {len(results)} files",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
        collapse_padding=True,
    )
    table.add_column("file", overflow="fold")
    table.add_column("status", no_wrap=True)
    table.add_column("parameters", overflow="fold", min_width=10)
    for col in ("train\nRMSE", "extrap.\nRMSE", "wall\ntime", "rank")[: 4 if world.size > 1 else 3]:
        table.add_column(col, justify="right", no_wrap=True)
    for r in results:
        row: list[Text | str] = [
            Text(r.data),
            _status_cell(r),
            Text(_fmt_params(r.params, width=48)) if r.params else "—",
            _rmse_cell(r.train_rmse),
            _rmse_cell(r.extrapolation_rmse),
            "—" if r.wall_time is None else f"{r.wall_time:.1f} s",
        ]
        if world.size > 1:
            row.append(str(r.rank))
        table.add_row(*row)
    return table


def _report(results: Sequence[FileResult], world: distributed.World, seconds: float) -> None:
    """The summary table, a count line, each file's warnings and what to do next."""
    console.print(_summary_table(results, world))
    counts = {s: sum(r.status is s for r in results) for s in Status}
    told = ", ".join(f"{n} {s.value}" for s, n in counts.items() if n)
    ranks = f" on {world.size} ranks" if world.size > 1 else ""
    console.print(f"{told} of {len(results)} files in {seconds:.1f} s{ranks}")
    for r in results:
        if r.status is Status.FAILED:
            named = r.reason if r.reason.startswith(f"{r.data}:") else f"{r.data}: {r.reason}"
            err_console.print(Text.assemble(("failed:", "bold red"), f" {named}"))
        for message in r.warnings:
            err_console.print(Text(f"warning: {r.data}: {message}"))
    if counts[Status.INTERRUPTED] or counts[Status.NOT_STARTED]:
        err_console.print("interrupted; rerun the same command to resume")


def _exit_for(results: Sequence[FileResult]) -> None:
    """Exit 130 when stopped (resume by rerunning), 1 when a file failed, else return."""
    if any(r.status in (Status.INTERRUPTED, Status.NOT_STARTED) for r in results):
        raise typer.Exit(code=EXIT_INTERRUPTED)
    if any(r.status is Status.FAILED for r in results):
        raise typer.Exit(code=1)
