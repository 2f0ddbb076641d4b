"""Many independent fits: one fit file per data file, each fitted on its own.

:func:`plan` names the outputs (``<out_dir>/<stem>.fit.h5``) and refuses a batch that would
write two results to one file or a result over an input. :func:`prior_fit` says what an output
that exists already holds: nothing to keep, a complete fit of the same data (skip it), an
interrupted one (resume it), or something else (refuse). :func:`run_jobs` runs the jobs one by
one; a job that raises becomes a failed :class:`FileResult` and the others go on, like each
member of a batch with its own status.

Nothing here knows about ranks: :mod:`physnode.distributed` shards the jobs.
"""

from __future__ import annotations

import enum
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from physnode.data.fitfile import FitRecord, is_fit_file, read_fit, sha256_file
from physnode.errors import DataError, InvalidInputError, PhysnodeError

__all__ = [
    "FIT_ERRORS",
    "FIT_SUFFIX",
    "FileResult",
    "Job",
    "Prior",
    "Status",
    "describe",
    "fit_output",
    "plan",
    "prior_fit",
    "run_jobs",
]

#: What a fit file is named after its data file's stem: ``a.h5`` -> ``a.fit.h5``.
FIT_SUFFIX = ".fit.h5"

#: Errors that fail one file and let the others go on with one line of reason (bad data, a
#: solver that gives up, a file that cannot be read or written). Any other exception fails
#: the file too, with its traceback kept in :attr:`FileResult.detail`.
FIT_ERRORS: tuple[type[BaseException], ...] = (PhysnodeError, OSError, ValueError)


class Status(str, enum.Enum):
    """What happened to one file."""

    FITTED = "fitted"
    SKIPPED = "skipped"
    FAILED = "failed"
    INTERRUPTED = "interrupted"
    NOT_STARTED = "not started"


@dataclass(frozen=True)
class Job:
    """Fit ``data`` into ``output``; ``index`` is the data file's place on the command line.
    ``is_fit`` marks a data file that is itself a fit file (``physnode fit *.h5`` run again
    beside its own outputs): it is skipped, not fitted."""

    index: int
    data: Path
    output: Path
    is_fit: bool = False


@dataclass
class FileResult:
    """The outcome of one job: small and picklable, so ranks can gather them.

    ``params`` holds the fitted values (from the fit just run, or from the fit file a skip
    kept); the RMSEs are in the data's units; ``wall_time`` is seconds spent on the file (None
    when skipped); ``reason`` says why a file failed, was skipped or not started; ``detail`` is
    the traceback of an unexpected error; ``rank`` the rank that did the job.
    """

    index: int
    data: str
    output: str
    status: Status
    reason: str = ""
    params: dict[str, np.ndarray] = field(default_factory=dict)
    train_rmse: float | None = None
    extrapolation_rmse: float | None = None
    wall_time: float | None = None
    warnings: list[str] = field(default_factory=list)
    detail: str = ""
    rank: int = 0

    @classmethod
    def of(cls, job: Job, status: Status, reason: str = "", **values: Any) -> FileResult:
        """A result for ``job``."""
        return cls(job.index, str(job.data), str(job.output), status, reason, **values)

    @classmethod
    def from_fitter(cls, job: Job, fitter: Any) -> FileResult:
        """The result of a fit just run (``interrupted`` when the fitter was stopped)."""
        warnings = list(getattr(fitter, "warnings_", []))
        undetermined = list(getattr(fitter, "undetermined_", []))
        if undetermined:
            warnings.append(f"the data cannot determine {', '.join(undetermined)}")
        status = Status.INTERRUPTED if fitter.interrupted_ else Status.FITTED
        return cls.of(
            job, status, "stopped; rerun to resume" if fitter.interrupted_ else "",
            params=_arrays(fitter.params_), train_rmse=float(fitter.train_rmse_),
            extrapolation_rmse=_optional_float(fitter.extrapolation_rmse_), warnings=warnings,
        )  # fmt: skip

    @classmethod
    def skipped(cls, job: Job, record: FitRecord) -> FileResult:
        """A complete fit file kept as it is; its stored results stand for the file."""
        return cls.of(
            job, Status.SKIPPED, "complete", params=_arrays(record.params),
            train_rmse=record.train_rmse, extrapolation_rmse=record.extrapolation_rmse,
        )  # fmt: skip

    @property
    def ok(self) -> bool:
        """True when the file has its fit: fitted now, or skipped because it was complete."""
        return self.status in (Status.FITTED, Status.SKIPPED)


def _arrays(params: dict[str, Any]) -> dict[str, np.ndarray]:
    return {k: np.asarray(v, dtype=np.float64) for k, v in params.items()}


def _optional_float(value: Any) -> float | None:
    return None if value is None else float(value)


def fit_output(data: Path, out_dir: Path) -> Path:
    """Where the fit of ``data`` goes: ``out_dir/<stem>.fit.h5`` (``a.h5`` -> ``a.fit.h5``)."""
    return out_dir / f"{Path(data).stem}{FIT_SUFFIX}"


def plan(data_files: Sequence[Path], out_dir: Path) -> list[Job]:
    """One job per data file, outputs in ``out_dir``, in the order given. A data file named
    ``*.fit.h5`` that is a fit file (:func:`~physnode.data.fitfile.is_fit_file`) gets a job
    marked ``is_fit``, whose output is never written.

    Raises:
        InvalidInputError: two data files share a stem (their fits would be one file), or an
            output would replace one of the data files.
    """
    jobs: list[Job] = []
    taken: dict[Path, Path] = {}
    for index, data in enumerate(map(Path, data_files)):
        out = fit_output(data, out_dir)
        if data.name.endswith(FIT_SUFFIX) and is_fit_file(data):
            jobs.append(Job(index, data, out, is_fit=True))
            continue
        if out in taken:
            raise InvalidInputError(
                f"{taken[out]} and {data} have the same stem, so both fits would be {out}; "
                "rename one, or fit them in separate runs with different -o"
            )
        taken[out] = data
        jobs.append(Job(index, data, out))
    inputs = {_identity(j.data): j.data for j in jobs if not j.is_fit}
    for job in (j for j in jobs if not j.is_fit):
        data = inputs.get(_identity(job.output))
        if data is not None:
            raise InvalidInputError(
                f"{job.output}: the fit of {job.data} would replace the data file {data}; "
                "choose another output directory (-o)"
            )
    return jobs


def _identity(path: Path) -> tuple[int, int] | str:
    """What makes two names one file: device and inode when it exists (links, other
    spellings), else the absolute path."""
    try:
        stat = path.stat()
    except OSError:
        return str(path.resolve())
    return stat.st_dev, stat.st_ino


class Prior(enum.Enum):
    """What an output holds before its job runs."""

    NONE = "none"  # nothing to keep (absent, or --overwrite)
    COMPLETE = "complete"  # a finished fit of the same data: skip the job
    INTERRUPTED = "interrupted"  # a stopped fit of the same data: resume it


def prior_fit(output: Path, data: Path, overwrite: bool) -> tuple[Prior, FitRecord | None]:
    """What ``output`` holds and, for a fit of ``data``, its record.

    Raises:
        InvalidInputError: ``output`` exists (and ``overwrite`` is False) but is no complete
            fit file, or is the fit of other data (its ``data_sha256`` differs from ``data``'s):
            it is never replaced without ``--overwrite``.
        OSError: ``data`` cannot be read.
    """
    if overwrite or not output.exists():
        return Prior.NONE, None
    digest = sha256_file(data)
    try:
        record = read_fit(output)
    except (DataError, OSError) as exc:
        raise InvalidInputError(
            f"{output}: exists and is not a readable fit file ({describe(exc)}); rerun with "
            "--overwrite to replace it"
        ) from None
    if record.data_sha256 != digest:
        raise InvalidInputError(
            f"{output}: is the fit of other data ({record.data_file or 'unknown file'}), not of "
            f"{data}; rerun with --overwrite to replace it"
        )
    return (Prior.INTERRUPTED if record.interrupted else Prior.COMPLETE), record


def run_jobs(
    jobs: Sequence[Job],
    fit_one: Callable[[Job], FileResult],
    *,
    should_stop: Callable[[], bool] = lambda: False,
    on_done: Callable[[FileResult], None] | None = None,
    rank: int = 0,
) -> list[FileResult]:
    """Run ``fit_one`` on each job in turn and return the results in job order.

    A job that raises is a :attr:`Status.FAILED` result and the next job starts. Once
    ``should_stop()`` is true (Ctrl-C, SIGTERM) no job starts: the rest are
    :attr:`Status.NOT_STARTED`. ``on_done(result)`` is called after each job; ``rank`` is
    stamped on every result.
    """
    results = []
    for job in jobs:
        if should_stop():
            result = FileResult.of(job, Status.NOT_STARTED, "stopped before it began")
        else:
            result = _run_one(job, fit_one)
        result = replace(result, rank=rank)
        results.append(result)
        if on_done is not None:
            on_done(result)
    return results


def _run_one(job: Job, fit_one: Callable[[Job], FileResult]) -> FileResult:
    """``fit_one(job)`` timed; an exception becomes a failed result."""
    if job.is_fit:
        return FileResult.of(job, Status.SKIPPED, "a fit file")
    start = time.perf_counter()
    try:
        result = fit_one(job)
    except FIT_ERRORS as exc:
        result = FileResult.of(job, Status.FAILED, describe(exc))
    except Exception as exc:  # a bug must not cost the other files their fits
        result = FileResult.of(
            job, Status.FAILED, f"unexpected {type(exc).__name__}: {describe(exc)}",
            detail=traceback.format_exc(),
        )  # fmt: skip
    if result.status is not Status.SKIPPED:
        result = replace(result, wall_time=time.perf_counter() - start)
    return result


def describe(exc: BaseException) -> str:
    """One line saying what went wrong: the file and the reason for I/O errors, else the
    message."""
    if isinstance(exc, FileNotFoundError):
        return f"{exc.filename or exc}: no such file"
    if isinstance(exc, OSError) and not isinstance(exc, PhysnodeError) and exc.strerror:
        return f"{exc.filename}: {exc.strerror}" if exc.filename else exc.strerror
    return " ".join(str(exc).split()) or type(exc).__name__
