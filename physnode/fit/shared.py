"""One model fitted to many trajectories at once: shared parameters, and each file's own.

A shared fit (``physnode fit a.h5 b.h5 ... --shared correction,G``) learns one set of the
*shared* parameters (the hybrid model's correction network, :data:`SHARED_NETWORK`, and/or
learned physical parameters such as ``G``) from every data file, while each file keeps its own
other parameters (its masses, its initial state). The loss is the mean squared scaled misfit
over every sample of every file: a file weighs by its number of samples. Each file's horizon in
a curriculum stage is the same fraction of its own fitting window.

Data-parallel under ``torchrun``: a rank builds the problems of its shard of the files only,
but holds a copy of every file's own parameters too (a few numbers per file, a network's
weights when the correction is not shared). So the optimiser acts on one global parameter
vector, the same on every rank: after the local backward pass the gradients are summed over the
ranks (one all-reduce of one flat vector, which also carries the loss, a stop request and a
solver failure), and every rank takes the same Adam or L-BFGS step. A world of one runs the
same code with no communication, so one process and N ranks give the same fit up to the order
of the sums (rounding).

A stopped fit leaves every member with a resumable ``state_``, its share of the whole
(:mod:`physnode.fit.shared_state`); ``resume`` goes on from the members' states.

What a shared fit does not do (yet): the least-squares finish (so no σ), validation windows,
ensembles, multiple shooting and the symbolic refit. :func:`check_shared` refuses those
settings.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from physnode import distributed
from physnode.data import Trajectory
from physnode.errors import DataError, InvalidInputError, PhysnodeError, SolverError
from physnode.fit.fitter import Fitter, Progress
from physnode.fit.problem import INITIAL_STATE_NAMES, FitProblem
from physnode.fit.schedule import Cursor, Stopped, Training, adam_optimizer, plan
from physnode.fit.shared_state import as_kind, load_model, load_training, member_state, of_kind
from physnode.models import AUTO, AUTO_PARTICLE_KINDS

__all__ = ["SHARED_NETWORK", "SharedFit", "check_shared", "fit_shared", "parse_shared"]

#: The ``--shared`` name of the hybrid model's correction network.
SHARED_NETWORK = "correction"

#: The setting (in each member's ``settings_`` and fit file) that names the shared parameters.
SETTING = "shared"

#: Why a shared fit reports no uncertainties, said once in every member's warnings.
NO_FINISH = (
    "a shared fit has no least-squares finish yet, so no uncertainties (σ) are reported; the "
    "parameters are those of the last Adam/L-BFGS step"
)

#: Settings a shared fit cannot honour yet: name -> (the value it needs, why).
UNSUPPORTED = {
    "schedule": ("shooting", "multiple shooting"),
    "refit_symbolic": (True, "the symbolic refit"),
    "correction_penalty": ("auto", "choosing the correction penalty (give a number)"),
}


def parse_shared(text: str) -> tuple[str, ...]:
    """``"correction,G"`` -> ``("correction", "G")``.

    Raises:
        InvalidInputError: no name, or a name given twice.
    """
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    if not names:
        raise InvalidInputError(
            f"--shared {text!r} names nothing; e.g. --shared {SHARED_NETWORK} or {SHARED_NETWORK},G"
        )
    if len(set(names)) != len(names):
        raise InvalidInputError(f"--shared {text!r} names a parameter twice")
    return names


def check_shared(shared: Sequence[str], settings: dict) -> None:
    """Refuse shared names and settings a shared fit cannot act on (``settings``: the
    :class:`~physnode.fit.Fitter` keyword arguments).

    Raises:
        InvalidInputError: says what to change.
    """
    fitter = Fitter(**settings)
    fitter._check_settings()
    for name in shared:
        if name == SHARED_NETWORK:
            if fitter.model != "hybrid":
                raise InvalidInputError(
                    f"--shared {SHARED_NETWORK} is for --model hybrid (its correction network); "
                    f"the {fitter.model} model has none"
                )
        elif name in INITIAL_STATE_NAMES:
            raise InvalidInputError(
                f"--shared {name}: each file has its own initial state; share physical "
                f"parameters or the {SHARED_NETWORK}"
            )
        elif name not in fitter.learn:
            raise InvalidInputError(
                f"--shared {name}: {name} is not learned; add it to --learn (a shared "
                "parameter is one learned value for every file)"
            )
    for name, (value, what) in UNSUPPORTED.items():
        if getattr(fitter, name) == value:
            raise InvalidInputError(f"a shared fit does not support {what} yet ({name}={value!r})")
    if fitter.ensemble > 1 or fitter.validation:
        raise InvalidInputError(
            "a shared fit does not support ensembles or validation windows yet; leave "
            "--ensemble at 1 and --validation unset"
        )


@dataclass
class SharedFit:
    """The outcome on this rank.

    Attributes:
        fitters: data-file index -> its fitted :class:`~physnode.fit.Fitter` (results set as
            after a single fit, ``shared_`` naming the shared parameters), for this rank's
            files that took part.
        failed: data-file index -> why the file took no part (unreadable data, other layout).
        interrupted: a stop was requested; no result is final, and ``fitters`` hold the
            members as they stood (``interrupted_`` set, ``state_`` resumable).
        correction: the kind of correction fitted (``"auto"`` resolved), else ``None``.
        scores: kind -> RMSE over the fitting windows of all files (one entry unless
            ``correction="auto"`` tried several).
        wall_time: seconds.
        states: data-file index -> its state at the end or at the stop (of the kind fitted
            last); the members' ``state_`` holds every kind's.
    """

    fitters: dict[int, Fitter] = field(default_factory=dict)
    failed: dict[int, str] = field(default_factory=dict)
    interrupted: bool = False
    correction: str | None = None
    scores: dict[str, float] = field(default_factory=dict)
    wall_time: float = 0.0
    states: dict[int, dict] = field(default_factory=dict)


@dataclass(frozen=True)
class _FileInfo:
    """What every rank knows of every file in the fit."""

    index: int
    layout: tuple  # (n, d) bodies and dimensions, or the state's names
    n_fit: int  # samples in its fitting window
    width: int  # observed components per sample
    own: tuple[tuple[str, bool, np.ndarray], ...]  # its own parameters: (name, start?, value)


def fit_shared(
    data: Sequence[tuple[int, Trajectory]],
    settings: dict,
    shared: Sequence[str],
    world: distributed.World = distributed.World(),
    *,
    group: dict | None = None,
    progress: Progress | None = None,
    should_stop: Callable[[], bool] | None = None,
    resume: dict[int, dict] | None = None,
) -> SharedFit:
    """Fit one model to this rank's ``data`` (``(file index, trajectory)`` pairs) and the other
    ranks' together; call it on every rank, inside :func:`physnode.distributed.process_group`.

    Args:
        data: this rank's share of the files (may be empty).
        settings: the :class:`~physnode.fit.Fitter` keyword arguments, the same on every rank.
        shared: what the files share (:func:`parse_shared`; checked by :func:`check_shared`).
        world: this rank's place.
        group: settings that name the group of files (``shared_group``, ``shared_files``),
            recorded in every member's ``settings_`` with :data:`SETTING`.
        progress: called after every step with ``(epoch, total, loss, params)`` (the loss over
            all files; ``params`` this rank's first file's).
        should_stop: polled every step; any rank's request stops every rank. A stopped fit
            returns with ``interrupted`` set and every member's ``state_`` resumable.
        resume: this rank's files' ``state_`` (``{index: state}``) from a stopped fit of the
            same files and settings (on any number of ranks): the fit goes on from there.

    Returns:
        :class:`SharedFit`. With ``correction="auto"`` on particle data each kind of
        :data:`~physnode.models.AUTO_PARTICLE_KINDS` is fitted and the one with the lowest
        RMSE over all fitting windows is kept.

    Raises:
        DataError: no file could take part, or the files' layouts differ.
        InvalidInputError: ``resume`` lacks a file's state, or the states are not of one stop.
        SolverError: the solver failed on some file during an Adam phase.
        DistributedError: a rank was lost.
    """
    check_shared(shared, settings)
    group = group or {}
    start = time.perf_counter()
    best, best_score = None, math.inf
    scores: dict[str, float] = {}
    done: dict[int, dict] = {}  # each file's states of the kinds fitted so far
    for kind in _kinds(data, settings, world):
        states = _states_of(data, resume, kind, world)
        run = _fit_kind(data, {**settings, "correction": kind}, tuple(shared), dict(group), world,
                        progress, should_stop or (lambda: False), states)  # fmt: skip
        for index, state in run.states.items():
            done.setdefault(index, {}).update(as_kind(state, kind))
        if run.interrupted:
            run.wall_time = time.perf_counter() - start
            for index, fitter in run.fitters.items():
                fitter.state_ = done[index]
                fitter.wall_time_ = run.wall_time
            return run
        score = next(iter(run.scores.values()))
        scores[run.correction or kind] = score
        if best is None or score < best_score:
            best, best_score = run, score
    assert best is not None
    best.scores = scores
    best.wall_time = time.perf_counter() - start
    for fitter in best.fitters.values():
        fitter.wall_time_ = best.wall_time
    return best


def _kinds(data: Sequence[tuple[int, Trajectory]], settings: dict, world) -> tuple[str, ...]:
    """The kinds of correction to fit: those of ``AUTO_PARTICLE_KINDS`` for a hybrid with
    ``correction="auto"`` on particle data (on any rank), else the one given."""
    correction = settings.get("correction", AUTO)
    if settings.get("model") != "hybrid" or correction != AUTO:
        return (correction,)
    particles = any(getattr(t, "positions", None) is not None for _, t in data)
    if any(distributed.all_gather(particles, world)):
        return AUTO_PARTICLE_KINDS
    return (AUTO,)


def _states_of(data, resume: dict[int, dict] | None, kind: str, world) -> dict | None:
    """This rank's files' states for ``kind`` (``None``: not resuming, or no file got to
    ``kind``); refused on every rank when some file's is missing."""
    if resume is None:
        return None
    states = {index: of_kind(resume.get(index, {}), kind) for index, _ in data}
    have = distributed.all_gather([s is not None for s in states.values()], world)
    flags = [flag for part in have for flag in part]
    if not any(flags):
        return None
    if not all(flags):
        raise InvalidInputError(
            f"a shared fit's state to resume lacks some file's part (kind {kind!r}); rerun "
            "with --overwrite to fit the files again"
        )
    return states


def _fit_kind(data, settings, shared, group, world, progress, should_stop, resume) -> SharedFit:
    """One shared fit with one kind of correction, from ``resume`` (``{index: state}``) when
    given; stopped, it returns every local file's state in ``states``."""
    setup = _set_up(data, settings, shared, world, should_stop, resume)
    ref = Fitter(**settings)
    phases = plan(ref.schedule, ref.model, setup.loss.n_ref, ref.epochs, ref.lbfgs_steps)
    fitters = setup.fitters
    record = _recorder(fitters, sum(p.count for p in phases), progress if world.is_root else None)
    adam = adam_optimizer(setup.params, setup.starts, ref.lr)
    first = Cursor()
    if resume is not None:
        first = load_training(resume, fitters, setup.shared, setup.own, adam, world)
    training = Training(setup.loss, phases, setup.params, adam, ref.lr, record=record,
                        stop=lambda: False)  # fmt: skip
    run = SharedFit(failed=setup.failed, fitters=fitters)
    cursor = first
    try:
        for phase in range(first.phase, len(phases)):
            cursor = Cursor(phase, first.step if phase == first.phase else 0)
            # the state this phase starts from: an interrupted L-BFGS phase reruns from it
            snapshot = _states(setup, adam, Cursor(phase, 0))
            training.run(cursor)
    except Stopped:
        run.interrupted = True
        if phases[cursor.phase].kind == "lbfgs":
            _rewind(fitters, snapshot)
            run.states = snapshot
        else:
            run.states = _states(setup, adam, cursor)
        _finish(fitters, shared, group, world, interrupted=True)
        return run
    run.states = _states(setup, adam, Cursor(len(phases), 0))
    run.correction = _agreed_correction(fitters, world)
    score = _finish(fitters, shared, group, world)
    run.scores = {run.correction or ref.correction: score}
    return run


def _states(setup: _SetUp, adam, cursor: Cursor) -> dict[int, dict]:
    """Every local file's state at ``cursor`` (:func:`~physnode.fit.shared_state.member_state`)."""
    return {
        index: member_state(fitter, setup.shared, setup.own[index], adam, cursor)
        for index, fitter in setup.fitters.items()
    }


def _rewind(fitters: dict[int, Fitter], states: dict[int, dict]) -> None:
    """Each local file's model, start and history back to its ``states`` entry."""
    for index, fitter in fitters.items():
        load_model(fitter, states[index])
        keep = len(states[index]["history/loss"])
        for values in fitter._history.values():
            del values[keep:]


class _SetUp(NamedTuple):
    """A shared fit before its first step."""

    fitters: dict[int, Fitter]  # this rank's files that take part
    failed: dict[int, str]  # this rank's files that could not be set up, and why
    shared: list[nn.Parameter]  # the shared parameters
    own: dict[int, list[nn.Parameter]]  # every file's own (copies for the other ranks')
    starts: list[nn.Parameter]  # the initial-state parameters among them
    loss: _JointLoss

    @property
    def params(self) -> list[nn.Parameter]:
        """What the optimiser moves, in one order on every rank."""
        return [*self.shared, *(p for own in self.own.values() for p in own)]


def _set_up(data, settings, shared, world, should_stop=lambda: False, resume=None) -> _SetUp:
    """Each file's problem (from its ``resume`` state, ``{index: state}``, where given), the
    shared modules tied into them, the global parameters and the joint loss."""
    fitters, failed = _build(data, settings)
    for index, fitter in fitters.items():
        if resume is not None:
            load_model(fitter, resume[index])
    infos = _gather_infos(fitters, shared, world)
    modules = _shared_modules(fitters, infos, shared, world)
    for fitter in fitters.values():
        _tie(fitter._prob, modules)
    shared_params, own, starts = _global_params(fitters, infos, modules)
    params = [*shared_params, *(p for ps in own.values() for p in ps)]
    n_ref = max(i.n_fit for i in infos)
    loss = _JointLoss(fitters, infos, params, world, n_ref, should_stop)
    return _SetUp(fitters, failed, shared_params, own, starts, loss)


def _agreed_correction(fitters: dict[int, Fitter], world) -> str | None:
    """The kind of correction fitted, from any rank that has a file."""
    mine = next((f.correction_ for f in fitters.values()), None)
    return next((k for k in distributed.all_gather(mine, world) if k is not None), None)


# -- building ------------------------------------------------------------------------------
def _build(
    data: Sequence[tuple[int, Trajectory]], settings: dict
) -> tuple[dict[int, Fitter], dict[int, str]]:
    """A Fitter with its problem set up for each file; a file that cannot be set up is
    failed (with its reason) and takes no part."""
    fitters: dict[int, Fitter] = {}
    failed: dict[int, str] = {}
    for index, traj in data:
        fitter = Fitter(**settings)
        try:
            torch.manual_seed(fitter.seed)
            fitter._set_up(traj, None)
        except (PhysnodeError, ValueError) as exc:
            failed[index] = " ".join(str(exc).split())
            continue
        fitter._start_from_data = True
        fitters[index] = fitter
    return fitters, failed


def _layout(prob: FitProblem) -> tuple:
    if prob.particles is not None:
        return ("particles", *prob.particles)
    return ("state", *(prob.state_names or (len(prob.start()),)))


def _prefixes(shared: Sequence[str]) -> tuple[str, ...]:
    """The parameter-name prefixes (``model.…``) of the shared modules."""
    return tuple(
        "model.correction." if n == SHARED_NETWORK else f"model.system.params.{n}." for n in shared
    )


def _own_params(prob: FitProblem, shared: Sequence[str]) -> list[tuple[str, bool, nn.Parameter]]:
    """A file's own trainable parameters, in a fixed order: ``(name, is a start parameter,
    parameter)``; the shared modules' are left out."""
    prefixes = _prefixes(shared)
    named = [(f"model.{n}", False, p) for n, p in prob.model.named_parameters()]
    named += [(f"start.{n}", True, p) for n, p in prob.start.named_parameters()]
    return [x for x in named if x[2].requires_grad and not x[0].startswith(prefixes)]


def _gather_infos(fitters: dict[int, Fitter], shared: Sequence[str], world) -> list[_FileInfo]:
    """Every rank's :class:`_FileInfo` of every file set up, in file order; the layouts must
    agree."""
    mine = []
    for index, fitter in fitters.items():
        prob = fitter._prob
        own = tuple(
            (name, s, p.detach().cpu().numpy().copy()) for name, s, p in _own_params(prob, shared)
        )
        mine.append(_FileInfo(index, _layout(prob), prob.n_fit, len(prob.index), own))
    infos = sorted((i for part in distributed.all_gather(mine, world) for i in part),
                   key=lambda i: i.index)  # fmt: skip
    if not infos:
        raise DataError("no data file could be set up for the shared fit (see each file's reason)")
    layouts = {i.layout for i in infos}
    if len(layouts) > 1:
        raise DataError(
            "a shared fit needs files of one layout (the same bodies and dimensions, or the same "
            f"state); these have {sorted(map(str, layouts))}"
        )
    return infos


def _shared_modules(fitters, infos, shared, world) -> dict[str, nn.Module]:
    """The shared modules (``{name: module}``) every rank uses: those of the first file in the
    fit, sent by the rank that holds it, so every rank starts from the same weights, scales and
    values."""
    owner = infos[0].index
    mine = None
    if owner in fitters:
        prob = fitters[owner]._prob
        mine = {name: _module(prob, name) for name in shared}
    if world.size == 1:
        return mine
    sent = [m for m in distributed.all_gather(mine, world) if m is not None]
    return mine if mine is not None else sent[0]


def _module(prob: FitProblem, name: str) -> nn.Module:
    if name == SHARED_NETWORK:
        return prob.model.correction
    return prob.system.params[name]


def _tie(prob: FitProblem, modules: dict[str, nn.Module]) -> None:
    """Make ``prob`` use the shared ``modules`` in place of its own."""
    for name, module in modules.items():
        if name == SHARED_NETWORK:
            prob.model.correction = module
        else:
            prob.system.params[name] = module


def _global_params(
    fitters: dict[int, Fitter], infos: list[_FileInfo], modules: dict[str, nn.Module]
) -> tuple[list[nn.Parameter], dict[int, list[nn.Parameter]], list[nn.Parameter]]:
    """The parameters every rank's optimiser moves, in one order on every rank: the shared
    ones, then each file's own (this rank's files: their parameters; the others': copies of
    their starting values, moved alike by the same steps). Returns the shared ones, each
    file's own by index, and the start parameters among them."""
    shared = [p for m in modules.values() for p in m.parameters() if p.requires_grad]
    own_of: dict[int, list[nn.Parameter]] = {}
    starts = []
    for info in infos:
        if info.index in fitters:
            own = _own_params(fitters[info.index]._prob, tuple(modules))
        else:
            own = [(n, s, nn.Parameter(torch.as_tensor(v))) for n, s, v in info.own]
        own_of[info.index] = [p for _, _, p in own]
        starts.extend(p for _, s, p in own if s)
    return shared, own_of, starts


# -- the joint loss ------------------------------------------------------------------------
class _JointLoss:
    """The loss over every file of every rank, in the place of one file's
    :class:`~physnode.fit.objective.Objective` in :class:`~physnode.fit.schedule.Training`.

    :meth:`loss` evaluates this rank's files, differentiates them, sums the gradients and the
    loss over the ranks and leaves the mean's gradient in ``params[i].grad``; the tensor it
    returns holds the value only (its ``backward`` adds nothing), so Adam's and L-BFGS's
    ``zero_grad(); loss(); backward(); step()`` take the global step.
    """

    def __init__(self, fitters, infos, params, world, n_ref, should_stop) -> None:
        self.fitters = fitters
        self.infos = infos
        self.params = params
        self.world = world
        self.n_ref = n_ref
        self.should_stop = should_stop

    def horizon(self, info: _FileInfo, m: int) -> int:
        """A file's samples in a stage of ``m`` of the longest window's ``n_ref``: the same
        fraction of its own fitting window (at least 3)."""
        if m >= self.n_ref:
            return info.n_fit
        return min(info.n_fit, max(3, math.ceil(m * info.n_fit / self.n_ref)))

    def count(self, m: int) -> int:
        """The number of scaled residuals over all files in a stage of ``m``."""
        return sum(self.horizon(i, m) * i.width for i in self.infos)

    def loss(self, m: int) -> torch.Tensor:
        """The mean squared scaled misfit over every file (a 0-d tensor of the value)."""
        stop = bool(self.should_stop())
        local, failure = 0.0, ""
        try:
            local = self._local(m)
        except SolverError as exc:
            failure = str(exc).splitlines()[0]
            for p in self.params:
                p.grad = None
        flags = torch.tensor([local, float(stop), float(bool(failure))], dtype=torch.float64)
        grads = [torch.zeros_like(p) if p.grad is None else p.grad for p in self.params]
        buffer = torch.cat([*(g.reshape(-1).to("cpu", torch.float64) for g in grads), flags])
        buffer = distributed.all_reduce_sum(buffer, self.world)
        if buffer[-2] > 0:
            raise Stopped
        if buffer[-1] > 0:
            raise SolverError(failure or "the solver failed on another rank's file")
        n = self.count(m)
        offset = 0
        for p in self.params:
            size = p.numel()
            p.grad = (buffer[offset : offset + size] / n).reshape(p.shape).to(p.device, p.dtype)
            offset += size
        return torch.tensor(float(buffer[-3]) / n, dtype=torch.float64, requires_grad=True)

    def _local(self, m: int) -> float:
        """This rank's summed squared scaled misfit, differentiated into the parameters."""
        total = None
        for info in self.infos:
            fitter = self.fitters.get(info.index)
            if fitter is None:
                continue
            h = self.horizon(info, m)
            objective = fitter._objective
            ys = objective.solve(h)
            # the penalty per residual, as in one file's mean loss
            term = objective.residual(ys, h).square().sum()
            term = term + h * info.width * objective.correction_term(ys)
            total = term if total is None else total + term
        if total is None:
            return 0.0
        total.backward()
        return float(total.detach())


def _recorder(fitters: dict[int, Fitter], total: int, progress: Progress | None):
    """``record(loss)``: the loss and each file's physical parameters into its history;
    ``progress`` told with the first file's."""
    for fitter in fitters.values():
        fitter._history = {"epoch": [], "loss": []}  # a resumed fit's is loaded after this

    def record(loss: float) -> None:
        shown: dict = {}
        for fitter in fitters.values():
            history = fitter._history
            history["epoch"].append(len(history["loss"]))
            history["loss"].append(loss)
            physical = fitter._prob.physical()
            for name, value in physical.items():
                history.setdefault(f"param/{name}", []).append(value)
            shown = shown or physical
        if progress is not None:
            progress(len(next(iter(fitters.values()))._history["loss"]) if fitters else 0,
                     total, loss, shown)  # fmt: skip

    return record


def _finish(
    fitters: dict[int, Fitter], shared: Sequence[str], group: dict, world, interrupted=False
) -> float:
    """Set each file's results as a single fit's (no least-squares finish: σ NaN); return the
    RMSE over every file's fitting window (the kinds of correction are compared by it)."""
    sums = torch.zeros(2, dtype=torch.float64)
    for fitter in fitters.values():
        prob = fitter._prob
        fitter.interrupted_ = interrupted
        fitter.history_ = {k: np.asarray(v) for k, v in fitter._history.items()}
        fitter.state_ = {}
        fitter.warnings_ = []
        fitter.uncertainties_ = {k: np.full_like(v, np.nan) for k, v in prob.physical().items()}
        fitter.noise_ = {}
        fitter.converged_ = False  # no finish ran
        fitter.ensemble_ = fitter.candidates_ = fitter.refit_ = None
        fitter.shared_ = {SETTING: ",".join(shared), **group}
        fitter._results(prob)
        cols = prob.particles[0] * prob.particles[1] if prob.particles else len(prob.index)
        n = prob.n_fit * cols
        sums += torch.tensor([fitter.train_rmse_**2 * n, n], dtype=torch.float64)
    sums = distributed.all_reduce_sum(sums, world)
    return float(torch.sqrt(sums[0] / sums[1]))
