"""The :class:`Fitter`: settings in the constructor, ``fit(data)`` returns ``self``."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence

import numpy as np
import torch

from physnode.data import Trajectory
from physnode.errors import InvalidInputError
from physnode.fit.problem import FitProblem, build_problem
from physnode.fit.state import (
    load_module_state,
    load_optimizer_state,
    module_state,
    optimizer_state,
)
from physnode.solver import RK_METHODS, odeint
from physnode.solver.api import GRAD_METHODS
from physnode.systems.base import inverse_softplus

MODELS = ("physics", "hybrid", "neural")
SCHEDULES = ("curriculum", "shooting", "full")


class _Stopped(Exception):
    """Raised inside an optimisation step when ``should_stop()`` asks to stop."""


class Fitter:
    """Fit a hybrid model to a trajectory.

    Args:
        model: ``"physics"`` (known equations, learnable parameters), ``"hybrid"`` (physics plus
            a zero-initialised MLP correction) or ``"neural"`` (a pure neural ODE).
        learn: what to learn: physical parameters of the system (``"masses"``, ``"G"``, ``"g"``,
            ...) and optionally the initial state (``"y0"``, or only ``"velocities"``).
        grad: gradient method of the solver: ``aca`` (default), ``adjoint``, ``backprop``,
            ``naive``.
        method, rtol, atol: solver method and tolerances during the fit.
        epochs: Adam epochs (one full-batch step each).
        lr: Adam learning rate (on the unconstrained parameters: softplus space for masses).
        train_until: end of the training window (time units); default: the middle of the data.
            Later samples are kept for extrapolation scoring.
        schedule: ``"curriculum"`` (default: the horizon grows 1/8 → 1/4 → 1/2 → 1 of the
            training window over the Adam epochs; right for chaotic, long horizons),
            ``"shooting"`` (multiple shooting: segments with their own learnable starts and a
            continuity penalty, then the full window) or ``"full"`` (the whole window at once).
        lbfgs_steps: L-BFGS iterations on the full window after Adam (0 to skip).
        seed: seeds the network initialisation; the fit is deterministic on CPU.
        device: ``"cpu"`` or ``"cuda"``.
        hidden: width of the neural correction.
        init_masses: starting masses when they are learned (scalar or one per body; default 1).
        observe: ``"auto"`` (positions and velocities when present) or ``"positions"``.

    After :meth:`fit`: ``params_``, ``uncertainties_`` (1σ, Gauss–Newton), ``history_``,
    ``train_rmse_``, ``extrapolation_rmse_``, ``prediction_`` (a Trajectory at every data time),
    ``network_state_``, ``state_`` (resumable), ``interrupted_``, ``wall_time_``,
    ``train_until_``, ``settings_``, ``model_``.
    """

    def __init__(
        self,
        model: str = "physics",
        learn: Sequence[str] = ("masses",),
        grad: str = "aca",
        method: str = "dopri5",
        rtol: float = 1e-7,
        atol: float = 1e-9,
        epochs: int = 100,
        lr: float = 0.05,
        train_until: float | None = None,
        schedule: str = "curriculum",
        lbfgs_steps: int = 50,
        seed: int = 0,
        device: str = "cpu",
        hidden: int = 32,
        init_masses: float | Sequence[float] | None = None,
        observe: str = "auto",
    ) -> None:
        self.model = model
        self.learn = tuple(learn)
        self.grad = grad
        self.method = method
        self.rtol = rtol
        self.atol = atol
        self.epochs = epochs
        self.lr = lr
        self.train_until = train_until
        self.schedule = schedule
        self.lbfgs_steps = lbfgs_steps
        self.seed = seed
        self.device = device
        self.hidden = hidden
        self.init_masses = init_masses
        self.observe = observe

    # -- settings ------------------------------------------------------------------------
    def _check_settings(self) -> None:
        choices = {
            "model": (self.model, MODELS),
            "grad": (self.grad, GRAD_METHODS),
            "method": (self.method, tuple(RK_METHODS)),
            "schedule": (self.schedule, SCHEDULES),
            "observe": (self.observe, ("auto", "positions")),
        }
        for name, (value, valid) in choices.items():
            if value not in valid:
                raise InvalidInputError(f"unknown {name} {value!r}; choose one of {list(valid)}")
        for name in ("epochs", "lbfgs_steps", "hidden"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise InvalidInputError(f"{name} must be an integer >= 0; got {value!r}")
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise InvalidInputError(f"lr must be a positive number; got {self.lr!r}")
        if not self.learn and self.model == "physics":
            raise InvalidInputError("nothing to learn: give learn=('masses',) or similar")

    @property
    def settings_(self) -> dict:
        """Every constructor setting, as JSON-simple values."""
        return {
            "model": self.model,
            "learn": ",".join(self.learn),
            "grad": self.grad,
            "method": self.method,
            "rtol": float(self.rtol),
            "atol": float(self.atol),
            "epochs": int(self.epochs),
            "lr": float(self.lr),
            "train_until": None if self.train_until is None else float(self.train_until),
            "schedule": self.schedule,
            "lbfgs_steps": int(self.lbfgs_steps),
            "seed": int(self.seed),
            "device": self.device,
            "hidden": int(self.hidden),
            "init_masses": None
            if self.init_masses is None
            else ",".join(str(float(m)) for m in np.atleast_1d(self.init_masses)),
            "observe": self.observe,
        }

    # -- the fit -------------------------------------------------------------------------
    def fit(
        self,
        data: Trajectory,
        *,
        y0: torch.Tensor | None = None,
        progress: Callable[[int, int, float, dict], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
        resume: dict | None = None,
    ) -> Fitter:
        """Fit the model to ``data`` and return ``self``.

        Args:
            data: the observed trajectory (positions, optionally velocities; or a state).
            y0: explicit initial state ``(D,)`` (default: the first sample; unobserved
                velocities are estimated by finite differences and learned).
            progress: called after every epoch with ``(epoch, total, loss, params)``.
            should_stop: polled every epoch; when it returns True the fit stops cleanly with
                ``interrupted_ = True`` and a resumable ``state_``.
            resume: a ``state_`` from an interrupted fit with the same settings and data.
        """
        self._check_settings()
        start_time = time.perf_counter()
        torch.manual_seed(self.seed)
        prob = build_problem(
            data, model=self.model, learn=self.learn, train_until=self.train_until,
            hidden=self.hidden, init_masses=self.init_masses, observe=self.observe, y0=y0,
            seed=self.seed, device=self.device,
        )  # fmt: skip
        self._prob = prob
        self.model_ = prob.model
        self.train_until_ = float(prob.times[prob.n_train - 1])
        trainable = [p for p in self._modules_params() if p.requires_grad]
        if not trainable:
            raise InvalidInputError("nothing to learn: the model has no trainable parameters")
        history: dict[str, list] = {"epoch": [], "loss": []}
        phases = self._phases()
        total = sum(count for _, _, count in phases)
        # the initial state moves in state units, where a step of ``lr`` would be ~10 % of a
        # typical coordinate: it learns ten times slower than the (softplus-space) parameters
        start_ids = {id(p) for p in prob.start.parameters()}
        groups = [
            {"params": [p for p in trainable if id(p) not in start_ids], "scale": 1.0},
            {"params": [p for p in trainable if id(p) in start_ids], "scale": 0.1},
        ]
        adam = torch.optim.Adam([g for g in groups if g["params"]], lr=self.lr)
        first_phase, first_step = 0, 0
        if resume is not None:
            first_phase, first_step = int(resume["phase"]), int(resume["phase_step"])
            load_module_state("model", prob.model, resume)
            load_module_state("start", prob.start, resume)
            load_optimizer_state(adam, resume)
            for key, value in resume.items():
                if key.startswith("history/"):
                    history[key[len("history/") :]] = list(np.asarray(value))
        self.interrupted_ = False
        stop = should_stop or (lambda: False)

        def record(loss: float) -> None:
            epoch = len(history["loss"])
            history["epoch"].append(epoch)
            history["loss"].append(loss)
            for name, value in self._physical().items():
                history.setdefault(f"param/{name}", []).append(value)
            if progress is not None:
                progress(epoch + 1, total, loss, self._physical())

        shooting = _Shooting(self, prob) if self.schedule == "shooting" else None
        phase, done = first_phase, first_step
        snapshot = None
        try:
            for phase in range(first_phase, len(phases)):
                kind, horizon, count = phases[phase]
                done = first_step if phase == first_phase else 0
                # the state this phase starts from: an interrupted L-BFGS phase reruns from it
                snapshot = self._snapshot(adam, history, phase, 0)
                if kind == "lbfgs":
                    self._lbfgs(trainable, horizon, count, record, stop)
                    continue
                # Adam's steps are ~lr in size whatever the gradient: after L-BFGS has polished a
                # shorter horizon, a full-size step would throw the fit out of its basin
                stage = sum(1 for k, _, _ in phases[:phase] if k != "lbfgs")
                for group in adam.param_groups:
                    group["lr"] = self.lr * group["scale"] * 0.1**stage
                for _ in range(done, count):
                    if stop():
                        raise _Stopped
                    adam.zero_grad()
                    loss = shooting.loss() if kind == "shooting" else self._loss(horizon)
                    loss.backward()
                    adam.step()
                    if kind == "shooting":
                        shooting.after_step()
                    record(float(loss.detach()))
                    done += 1
            self.state_ = self._snapshot(adam, history, len(phases), 0)
        except _Stopped:
            self.interrupted_ = True
            if phases[phase][0] == "lbfgs":
                self.state_ = snapshot
                load_module_state("model", prob.model, snapshot)
                load_module_state("start", prob.start, snapshot)
                n_keep = len(snapshot["history/loss"])
                history = {k: v[:n_keep] for k, v in history.items()}
            else:
                self.state_ = self._snapshot(adam, history, phase, done)
        self.history_ = {k: np.asarray(v) for k, v in history.items()}
        self._finish(prob)
        self.wall_time_ = time.perf_counter() - start_time
        return self

    # -- pieces ----------------------------------------------------------------------------
    def _modules_params(self):
        yield from self._prob.model.parameters()
        yield from self._prob.start.parameters()

    def _physical(self) -> dict[str, np.ndarray]:
        system = self._prob.system
        if system is None:
            return {}
        values = system.physical_parameters()
        return {n: values[n].detach().cpu().numpy().copy() for n in self._prob.learned}

    def _solve(self, m: int, grad: str | None = None, rtol=None, atol=None) -> torch.Tensor:
        prob = self._prob
        t = torch.as_tensor(prob.times[:m], dtype=torch.float64, device=self.device)
        return odeint(
            prob.model, prob.start(), t, rtol=rtol or self.rtol, atol=atol or self.atol,
            method=self.method, grad=grad or self.grad,
        )  # fmt: skip

    def _residual(self, ys: torch.Tensor, m: int) -> torch.Tensor:
        prob = self._prob
        return (ys[:, prob.index] - prob.observed[:m]) / prob.scale

    def _loss(self, m: int) -> torch.Tensor:
        return self._residual(self._solve(m), m).square().mean()

    def _phases(self) -> list[tuple[str, int, int]]:
        """The optimisation plan: ``(kind, horizon, count)`` with kind ``adam``, ``shooting``
        (count = epochs) or ``lbfgs`` (count = most iterations). Curriculum: per stage, Adam
        epochs then an L-BFGS polish on that stage's horizon, so each longer horizon starts
        inside the basin the shorter one found."""
        n = self._prob.n_train
        if self.schedule == "curriculum":
            stages = max(1, min(4, math.floor(math.log2(max(n / 10, 1))) + 1))
            horizons = [max(3, math.ceil(n / 2 ** (stages - 1 - s))) for s in range(stages)]
        else:
            stages, horizons = 1, [n]
        plan: list[tuple[str, int, int]] = []
        kind = "shooting" if self.schedule == "shooting" else "adam"
        # physics models: Adam only warms up the shortest horizon; later stages are L-BFGS
        # polishes (Adam's fixed-size steps would leave the basin L-BFGS found). Models with a
        # network spread the Adam epochs over the stages, with a falling learning rate.
        adam_stages = 1 if self.model == "physics" else stages
        for s, horizon in enumerate(horizons):
            count = 0
            if s < adam_stages:
                count = self.epochs // adam_stages + (1 if s < self.epochs % adam_stages else 0)
            if count:
                plan.append((kind, horizon, count))
            if self.lbfgs_steps:
                plan.append(("lbfgs", horizon, self.lbfgs_steps))
        return plan

    def _lbfgs(self, trainable, horizon: int, iterations: int, record, stop) -> None:
        optimizer = torch.optim.LBFGS(
            trainable, lr=1.0, max_iter=iterations, line_search_fn="strong_wolfe",
            tolerance_grad=1e-10, tolerance_change=1e-12, history_size=20,
        )  # fmt: skip

        def closure():
            if stop():
                raise _Stopped
            optimizer.zero_grad()
            loss = self._loss(horizon)
            loss.backward()
            record(float(loss.detach()))
            return loss

        optimizer.step(closure)

    def _snapshot(self, adam, history, phase: int, phase_step: int) -> dict:
        state: dict = {"phase": int(phase), "phase_step": int(phase_step),
                       "epoch": len(history["loss"])}  # fmt: skip
        state.update(module_state("model", self._prob.model))
        state.update(module_state("start", self._prob.start))
        state.update(optimizer_state(adam))
        for key, values in history.items():
            state[f"history/{key}"] = np.asarray(values).copy()
        return state

    # -- results ---------------------------------------------------------------------------
    def _finish(self, prob: FitProblem) -> None:
        if self.interrupted_:
            # a stop must stay quick: no tight-tolerance polish or uncertainties mid-fit
            self.uncertainties_ = {k: np.full_like(v, np.nan) for k, v in self._physical().items()}
        else:
            self.uncertainties_ = _gauss_newton(self, prob)
        self.params_ = self._physical()
        with torch.no_grad():
            ys = self._solve(len(prob.times), grad="aca")
        pred = ys.cpu().numpy()
        obs = prob.observed.cpu().numpy()
        idx = prob.index.cpu().numpy()
        if prob.particles is not None:
            n, d = prob.particles
            err = pred[:, : n * d] - obs[:, : n * d]
        else:
            err = pred[:, idx] - obs
        self.train_rmse_ = float(np.sqrt(np.mean(err[: prob.n_train] ** 2)))
        rest = err[prob.n_train :]
        self.extrapolation_rmse_ = float(np.sqrt(np.mean(rest**2))) if len(rest) else None
        self.prediction_ = self._prediction(prob, pred)
        self.network_state_ = {
            k: v.detach().cpu().numpy().copy()
            for k, v in prob.model.state_dict().items()
            if not k.startswith("system.")
        }

    def _prediction(self, prob: FitProblem, pred: np.ndarray) -> Trajectory:
        params = {"system": "n-body" if prob.particles else "fit", "model": self.model}
        if prob.system is not None:
            for name, value in prob.system.physical_parameters().items():
                if value.numel() == 1:
                    params[name] = float(value)
        if prob.particles is not None:
            n, d = prob.particles
            t_len = pred.shape[0]
            masses = (
                prob.system.physical_parameters()["masses"].detach().cpu().numpy()
                if prob.system is not None
                else None
            )
            return Trajectory(
                prob.times,
                positions=pred[:, : n * d].reshape(t_len, n, d),
                velocities=pred[:, n * d :].reshape(t_len, n, d),
                masses=masses,
                parameters=params,
            )
        return Trajectory(prob.times, state=pred, state_names=prob.state_names, parameters=params)


class _Shooting:
    """Multiple shooting for autonomous models on a uniform time grid: ``S`` segments solved
    as one batch from learnable starts, with a continuity penalty between segments."""

    def __init__(self, fitter: Fitter, prob: FitProblem) -> None:
        self.fitter = fitter
        self.prob = prob
        n = prob.n_train
        self.n_seg = max(1, min(8, (n - 1) // 10))
        self.length = (n - 1) // self.n_seg + 1  # points per segment, sharing end points
        dt = np.diff(prob.times[:n])
        if not np.allclose(dt, dt[0], rtol=1e-9, atol=0):
            raise InvalidInputError(
                "schedule='shooting' needs equally spaced samples; use 'curriculum'"
            )
        starts = [i * (self.length - 1) for i in range(self.n_seg)]
        self.starts = starts
        with torch.no_grad():
            ys = fitter._solve(starts[-1] + 1, grad="aca")
        self.segment_starts = torch.nn.Parameter(ys[starts[1:]].clone())
        self.extra = torch.optim.Adam([self.segment_starts], lr=fitter.lr * 0.1)
        self.t = torch.as_tensor(
            prob.times[: self.length] - prob.times[0], dtype=torch.float64, device=fitter.device
        )

    def loss(self) -> torch.Tensor:
        f, prob = self.fitter, self.prob
        self.extra.zero_grad()
        y0 = torch.cat([prob.start()[None], self.segment_starts], dim=0)
        ys = odeint(prob.model, y0, self.t, rtol=f.rtol, atol=f.atol, method=f.method,
                    grad=f.grad)  # fmt: skip  # (L, S, D)
        misfit = []
        for s, i0 in enumerate(self.starts):
            m = ys[:, s][:, prob.index]
            obs = prob.observed[i0 : i0 + self.length]
            misfit.append(((m - obs) / prob.scale).square().mean())
        gap = ys[-1, :-1] - self.segment_starts
        state_scale = torch.cat([prob.scale, prob.scale])[: gap.shape[-1]]
        if state_scale.shape[-1] != gap.shape[-1]:
            state_scale = torch.ones(gap.shape[-1], dtype=gap.dtype, device=gap.device)
        continuity = (gap / state_scale).square().mean()
        return torch.stack(misfit).mean() + continuity

    def after_step(self) -> None:
        self.extra.step()


def _gauss_newton(fitter: Fitter, prob: FitProblem) -> dict[str, np.ndarray]:
    """1σ uncertainties of the learned physical parameters from the Gauss–Newton covariance
    ``s² (JᵀJ)⁻¹`` at the optimum (``J``: central differences of the normalised residuals with
    respect to the natural parameters and any learned initial state; ``s²``: residual
    variance). Network weights are held fixed. NaN where undefined."""
    system = prob.system
    if system is None or not prob.learned:
        return {}
    entries: list[tuple[str, torch.Tensor, int]] = []  # (name, natural value tensor, index)
    values = system.physical_parameters()
    for name in prob.learned:
        for i in range(values[name].numel()):
            entries.append((name, values[name].detach().clone(), i))
    free = prob.start.free
    n_start = 0 if free is None else free.numel()
    m = prob.n_train

    def residual() -> np.ndarray:
        with torch.no_grad():
            ys = fitter._solve(m, grad="aca", rtol=min(fitter.rtol, 1e-10), atol=1e-12)
            return fitter._residual(ys, m).reshape(-1).cpu().numpy()

    def set_physical(name: str, value: torch.Tensor) -> None:
        module = system.params[name]
        with torch.no_grad():
            if module.positive:
                module.raw.copy_(inverse_softplus(value.clamp_min(1e-300)))
            else:
                module.raw.copy_(value)

    r0 = residual()
    cols = []
    for name, base, i in entries:
        h = 1e-6 * max(abs(float(base.reshape(-1)[i])), 1e-3)
        col = []
        for sign in (1, -1):
            v = base.clone()
            v.reshape(-1)[i] += sign * h
            set_physical(name, v)
            col.append(residual())
        set_physical(name, base)
        cols.append((col[0] - col[1]) / (2 * h))
    for i in range(n_start):
        base = free.detach().clone()
        h = 1e-6 * max(abs(float(base[i])), 1e-3)
        col = []
        for sign in (1, -1):
            with torch.no_grad():
                free[i] = base[i] + sign * h
            col.append(residual())
        with torch.no_grad():
            free.copy_(base)
        cols.append((col[0] - col[1]) / (2 * h))
    jac = np.stack(cols, axis=1)

    def apply(delta: np.ndarray) -> None:
        k = 0
        for name in prob.learned:
            base = system.physical_parameters()[name].detach().clone()
            size = base.numel()
            step = torch.as_tensor(delta[k : k + size], dtype=base.dtype).reshape(base.shape)
            set_physical(name, base + step)
            k += size
        if n_start:
            with torch.no_grad():
                free.add_(torch.as_tensor(delta[k:], dtype=free.dtype, device=free.device))

    # One Gauss–Newton step at the tight tolerance: the optimiser's minimum is that of the
    # fit tolerance's solver error; this polishes it towards the exact model's, and is kept only
    # if it lowers the residual.
    delta = np.linalg.lstsq(jac, -r0, rcond=None)[0]
    apply(delta)
    r1 = residual()
    if np.all(np.isfinite(r1)) and r1 @ r1 < r0 @ r0:
        r0 = r1
    else:
        apply(-delta)
    dof = max(len(r0) - jac.shape[1], 1)
    s2 = float(r0 @ r0) / dof
    cov = s2 * np.linalg.pinv(jac.T @ jac)
    sigma = np.sqrt(np.clip(np.diag(cov), 0, None))
    out: dict[str, np.ndarray] = {}
    k = 0
    for name in prob.learned:
        size = values[name].numel()
        out[name] = sigma[k : k + size].reshape(values[name].shape).copy()
        k += size
    return out
