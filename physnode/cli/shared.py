"""``physnode fit DATA... --shared NAMES``: one model fitted to all the data files at once.

The fit itself is :func:`physnode.fit.shared.fit_shared`; this module checks the command, sorts
out what the outputs already hold, reads this rank's share of the files, writes each file's fit
file (all-or-nothing) and prints the summary on rank 0. The files fitted together are one unit:
a rerun skips them when every output is a complete shared fit of the same files with the same
settings, resumes them when every output is a stopped one (each fit file holds its share of the
state, :mod:`physnode.fit.shared_state`), and replaces them (``--overwrite``) otherwise.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from physnode import distributed
from physnode.cli import fit as cli
from physnode.cli._errors import err_console
from physnode.data import Trajectory, read_trajectory
from physnode.data.fitfile import sha256_file, write_fit
from physnode.errors import InvalidInputError
from physnode.fit import many
from physnode.fit.many import FileResult, Job, Prior, Status
from physnode.fit.shared import (
    NO_FINISH,
    SETTING,
    SharedFit,
    check_shared,
    fit_shared,
    parse_shared,
)

#: The settings that name the group of files a member was fitted with.
GROUP = "shared_group"
COUNT = "shared_files"


def _fit_shared_seam() -> Any:
    """:func:`fit_shared`; a seam so tests can shorten the fits."""
    return fit_shared


def run(
    files: Sequence[Path],
    options: dict[str, Any],
    output: Path | None,
    resume: Path | None,
    overwrite: bool,
    world: distributed.World,
    shared_text: str,
) -> None:
    """Fit ``files`` jointly into ``DIR/<stem>.fit.h5`` (this rank's share under torchrun);
    rank 0 prints one summary; exit non-zero when the fit or a file failed."""
    with cli._errors_on_root_only(world):
        shared, settings, jobs = _check(files, options, output, resume, shared_text)
    start = time.perf_counter()
    with distributed.process_group(world, device=str(options.get("device", "cpu"))):
        distributed.require_agreement([str(p) for p in files], world, "data files")
        mine = distributed.shard(jobs, world)
        with cli._errors_on_root_only(world):
            results, todo, plan = _priors(mine, options, ",".join(shared), overwrite, world)
            if plan is not None:
                if plan.stored is not None:  # a resumed fit keeps the settings it began with
                    settings = cli._settings(options, plan.stored)
                results += _fit_and_write(todo, settings, shared, overwrite, world, plan)
        results = [dataclasses.replace(r, rank=world.rank) for r in results]
        gathered = distributed.all_gather(results, world)
    everything = sorted(itertools.chain.from_iterable(gathered), key=lambda r: r.index)
    if world.is_root:
        cli._report(everything, world, time.perf_counter() - start)
    cli._exit_for(everything)


def _check(files, options, output, resume, shared_text) -> tuple[tuple[str, ...], dict, list]:
    """Everything that can be refused before a file is read."""
    if resume is not None:
        raise InvalidInputError(
            "--resume is for one fit; a stopped shared fit resumes when the same command is "
            "rerun (its members' fit files hold the state)"
        )
    if len(files) < 2:
        raise InvalidInputError("--shared fits one model to several data files; give two or more")
    shared = parse_shared(shared_text)
    settings = cli._settings(options, None)
    check_shared(shared, settings)
    out_dir = cli._output_dir(output)
    jobs = many.plan(files, out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    return shared, settings, jobs


@dataclasses.dataclass
class _Plan:
    """What the group's fit is to do: ``group`` names it in every member's settings;
    ``states`` (this rank's files' ``{index: state}``) and ``stored`` (the settings it was
    begun with) are set when it resumes a stopped fit."""

    group: dict
    states: dict[int, dict] | None = None
    stored: dict | None = None


def _priors(
    jobs: Sequence[Job], options: dict, shared_text: str, overwrite: bool, world
) -> tuple[list[FileResult], list[Job], _Plan | None]:
    """What the outputs hold, decided for the whole group: ``(results so far, jobs to fit,
    the plan)``; no plan when every output is already a complete shared fit of these files
    with these settings (they are skipped).

    Raises:
        InvalidInputError: an output holds a fit the group would replace, without --overwrite.
    """
    results, usable = [], []
    for job in jobs:
        if job.is_fit:
            results.append(FileResult.of(job, Status.SKIPPED, "a fit file"))
            continue
        try:
            held = _held(job, options, shared_text, overwrite)
            usable.append((job, sha256_file(job.data), *held))
        except many.FIT_ERRORS as exc:
            results.append(FileResult.of(job, Status.FAILED, many.describe(exc)))
    mine = [(j.index, str(j.output), d, h, g, r.settings if r else None)
            for j, d, h, g, r in usable]  # fmt: skip
    everyone = sorted(x for part in distributed.all_gather(mine, world) for x in part)
    digest = hashlib.sha256("\n".join(x[2] for x in everyone).encode()).hexdigest()
    group = {GROUP: digest, COUNT: len(everyone)}
    members = everyone and all(x[4] == digest for x in everyone)
    if members and all(x[3] == "complete" for x in everyone):
        results += [FileResult.skipped(j, record) for j, _, _, _, record in usable]
        return results, [], None
    if members and all(x[3] == "interrupted" for x in everyone):
        states = {j.index: record.state for j, _, _, _, record in usable}
        return results, [j for j, *_ in usable], _Plan(group, states, dict(everyone[0][5]))
    held = [x[1] for x in everyone if x[3] != "none"]
    if held and not overwrite:
        raise InvalidInputError(
            f"{held[0]}{f' and {len(held) - 1} more' if len(held) > 1 else ''} already "
            f"hold{'s' if len(held) == 1 else ''} a fit; a shared fit refits all "
            f"{len(everyone)} files together: rerun with --overwrite"
        )
    return results, [j for j, *_ in usable], _Plan(group)


def _held(job: Job, options: dict, shared_text: str, overwrite: bool) -> tuple[str, str, Any]:
    """What ``job``'s output holds: ``("none" | "complete" | "interrupted" | "other", its
    group, record)``; ``complete`` and ``interrupted`` are a finished and a stopped shared fit
    of this data with these settings."""
    prior, record = many.prior_fit(job.output, job.data, overwrite)
    if prior is Prior.NONE or record is None:
        return "none", "", None
    stored = {k: cli._from_file(k, v) for k, v in record.settings.items()}
    same = stored.get(SETTING) == shared_text and cli._setting_conflict(options, stored) is None
    status = {Prior.COMPLETE: "complete", Prior.INTERRUPTED: "interrupted"}[prior]
    return (status if same else "other"), str(stored.get(GROUP, "")), record


def _fit_and_write(
    jobs: Sequence[Job], settings: dict, shared: tuple[str, ...], overwrite: bool, world,
    plan: _Plan,
) -> list[FileResult]:  # fmt: skip
    """Read this rank's files, fit them with the others' (or go on with a stopped fit) and
    write each fit file: complete, or stopped with its share of the state."""
    results, data, read = [], [], {}
    for job in jobs:
        try:
            traj = read_trajectory(job.data)
        except many.FIT_ERRORS as exc:
            results.append(FileResult.of(job, Status.FAILED, many.describe(exc)))
            continue
        data.append((job.index, traj))
        read[job.index] = (job, traj)
    outcome = _run_fit(data, settings, shared, world, plan)
    for index, reason in outcome.failed.items():
        results.append(FileResult.of(read[index][0], Status.FAILED, reason))
    replace = overwrite or plan.states is not None  # a resumed fit replaces its own files
    for index, fitter in outcome.fitters.items():
        job, traj = read[index]
        results.append(_write(job, fitter, traj, replace, outcome.wall_time))
    if world.is_root and not outcome.interrupted:
        _say_shared(outcome, shared)
    return results


def _run_fit(data, settings, shared, world, plan: _Plan) -> SharedFit:
    """The shared fit, with Ctrl-C / SIGTERM stopping every rank after a step and an epoch bar
    on rank 0."""
    stop = cli._make_stop_flag()
    epochs = int(settings.get("epochs", cli.DEFAULT["epochs"]))
    with cli._stop_on_signals(stop), cli._progress_bar(epochs) as progress:
        return _fit_shared_seam()(data, settings, shared, world, group=plan.group,
                                  progress=progress, should_stop=stop,
                                  resume=plan.states)  # fmt: skip


def _write(job: Job, fitter: Any, traj: Trajectory, overwrite: bool, seconds: float) -> FileResult:
    """Write one member's fit file (all-or-nothing); a write that fails fails its file."""
    try:
        write_fit(job.output, fitter, data_path=job.data, observed=traj, overwrite=overwrite)
    except many.FIT_ERRORS as exc:
        return FileResult.of(job, Status.FAILED, many.describe(exc))
    result = FileResult.from_fitter(job, fitter)
    result.wall_time = seconds
    return result


def _say_shared(outcome: SharedFit, shared: tuple[str, ...]) -> None:
    """One line: what was shared, and the kinds of correction compared (``auto``)."""
    line = f"shared: {', '.join(shared)}"
    if len(outcome.scores) > 1:
        each = ", ".join(f"{k} {v:.2e}" for k, v in outcome.scores.items())
        line += f"; correction {outcome.correction} (lowest RMSE over all files: {each})"
    err_console.print(line)
    err_console.print(f"note: {NO_FINISH}")
