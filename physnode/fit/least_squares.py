"""The fit's finish: least squares with the exact Jacobian, noise levels from the data, and
the covariance of the physical parameters.

The physical parameters (in their unconstrained space: a positive one through its raw
softplus value, so no step can push it through zero) and any learned initial state are
refined by ``scipy.optimize.least_squares`` (MINPACK's Levenberg–Marquardt: damping adapted
by the gain ratio, rejected steps reverted exactly). Residuals and their Jacobian come from
one forward-sensitivity solve per point (:func:`physnode.solver.sensitivities`) at a tight
tolerance. Network weights are held fixed.

The residuals of each kind of observation (positions, velocities; the whole state for
non-particle data) are weighted by that kind's noise level, estimated from the residuals
themselves and refined for a few rounds: the weighted least-squares estimate, whose
covariance ``s² (JᵀJ)⁻¹`` (natural parameters, at the final point) is then the most precise
the data allow.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.optimize
import torch

from physnode.errors import SolverError
from physnode.fit.objective import Objective, StepBudget
from physnode.fit.problem import FitProblem
from physnode.fit.uncertainty import covariance_sigma
from physnode.solver import sensitivities

__all__ = ["Finish", "Linearisation", "least_squares_finish", "linearise", "observed_kinds"]

#: the finish's solver: DOP853 (at this tolerance it takes ~5x fewer steps than dopri5, so
#: the augmented solves cost less whatever method the fit used) with tolerances tight enough
#: that the solver's error (~1e-10 relative) is far below any noise level data carry
FINISH_METHOD = "dop853"
FINISH_RTOL = 1e-10
FINISH_ATOL = 1e-12
#: rounds of noise re-estimation (each a Levenberg–Marquardt run from the last point); they
#: stop early once no kind's noise level moves by more than NOISE_SETTLED relative to the
#: others (only the ratios between kinds change the estimate)
NOISE_ROUNDS = 3
NOISE_SETTLED = 0.02
#: residuals below this fraction of the data's spread are the solver's error (clean data):
#: their levels are not noise levels, and they are not re-weighted
CLEAN = 1e-8
#: Levenberg–Marquardt's stopping tolerances (relative change of the cost and of the
#: parameters): far below the statistical error of any fit, and ~3 evaluations from a point
#: the optimiser left near the optimum
STOP = 1e-10
#: the least step attempts a trial of the finish may take (else 20x the first point's,
#: physnode.fit.objective.STEP_BUDGET): the fit's floor of 20 000 would let each trial of a
#: law that blows up (the symbolic refit's) run for minutes, its sensitivities costing several
#: times a plain solve; a trial near the optimum takes about as many steps as the first point
FINISH_MIN_STEPS = 1000
#: solved points kept (residuals and Jacobian): the start and the latest ones
CACHED_POINTS = 4
#: evaluations (one sensitivity solve each) one Levenberg–Marquardt run may take: near an
#: optimum it needs ~3 (twice that leaves room for a rejected step); more means the
#: optimiser stopped far from one, and the finish stops rather than spend minutes doing the
#: optimiser's work (the fit then says so)
MAX_EVALUATIONS = 6


@dataclass
class Finish:
    """What the finish found.

    Attributes:
        sigma: 1σ of each learned physical parameter, shaped like it (``inf``: undetermined).
        noise: estimated noise level (data units) per kind of observation.
        evaluations: sensitivity solves taken (each gives residuals and Jacobian).
        cost_start, cost_end: half the sum of squared weighted residuals (final weights) at the
            start and at the end.
        clean: the residuals are at the solver's error level (no noise to speak of).
        converged: Levenberg–Marquardt converged within :data:`MAX_EVALUATIONS`; ``False``
            means the optimiser left the fit far from the optimum (the σ describe a point
            that is not one).
    """

    sigma: dict[str, np.ndarray]
    noise: dict[str, float] = field(default_factory=dict)
    evaluations: int = 0
    cost_start: float = float("nan")
    cost_end: float = float("nan")
    clean: bool = True
    converged: bool = True


def least_squares_finish(objective: Objective) -> Finish:
    """Refine the physical parameters and the learned start, estimate the noise per kind, and
    return the covariance's 1σ. ``Finish({})`` when no physical parameter is learned."""
    prob = objective.problem
    if prob.system is None or not prob.learned:
        return Finish({})
    space = _Space(prob)
    model = _Residuals(objective, space)
    x0 = space.get()
    scale = prob.scale.detach().cpu().double().numpy()
    x, weights, clean = x0, scale, True
    for _ in range(NOISE_ROUNDS):
        x, converged = _levenberg_marquardt(model, x, weights)
        if not converged:
            break  # far from the optimum: the optimiser's job, not the finish's; said below
        noise = model.noise(x, weights)
        clean = bool(np.all(noise < CLEAN * scale))
        if clean:
            break  # clean data: the residuals are the solver's error, not a noise to weigh
        change = (noise / weights) / (noise[0] / weights[0])
        settled = bool(np.all(np.abs(change - 1) < NOISE_SETTLED))
        weights = noise
        if settled:
            break
    cost_start, cost_end = model.cost(x0, weights), model.cost(x, weights)
    if not np.isfinite(cost_end) or cost_end > cost_start:
        x = x0  # never leave the fit worse than the optimiser did
    space.set(x)
    sigma = _sigma(model, space, x, weights)
    return Finish(
        sigma=_split(prob, sigma),
        noise=model.noise_by_kind(x, weights),
        evaluations=model.evaluations,
        cost_start=cost_start,
        cost_end=min(cost_end, cost_start),
        clean=clean,
        converged=converged,
    )


@dataclass
class Linearisation:
    """The weighted residuals and their exact Jacobian at a problem's current parameters.

    Attributes:
        residuals: ``(R,)``: ``(model - data) / level`` over the training window, each kind
            of observation divided by its RMS residual there (the finish's noise levels).
        jacobian: ``(R, P)``: ``d residuals / d natural parameter``: the learned physical
            parameters (flattened, in the problem's ``learned`` order), then the learned
            entries of the start.
        columns: each learned physical parameter's columns of ``jacobian``.
    """

    residuals: np.ndarray
    jacobian: np.ndarray
    columns: dict[str, slice]


def linearise(objective: Objective) -> Linearisation:
    """:class:`Linearisation` at the problem's current parameters, from one sensitivity solve
    at the finish's tolerance (a start the solver cannot integrate gives residuals of 1e100
    and a zero Jacobian)."""
    prob = objective.problem
    space = _Space(prob)
    model = _Residuals(objective, space)
    x = space.get()
    weights = model.noise(x, prob.scale.detach().cpu().double().numpy())
    r, jac = model.weighted(x, weights)
    _, slopes = space.natural(x)
    columns, k = {}, 0
    for name, raw in zip(prob.learned, space.raws, strict=True):
        columns[name] = slice(k, k + raw.numel())
        k += raw.numel()
    return Linearisation(r, jac / slopes, columns)


class _Space:
    """The parameters the finish moves, as one float64 vector: the learned physical
    parameters' raw values (the ``nn.Parameter`` s themselves), then the learned start."""

    def __init__(self, prob: FitProblem) -> None:
        self.prob = prob
        self.raws = [prob.system.params[name].raw for name in prob.learned]
        self.positive = [prob.system.params[name].positive for name in prob.learned]
        free = prob.start.free
        self.free = free if free is not None and free.numel() else None
        self.tensors = self.raws + ([self.free] if self.free is not None else [])

    def get(self) -> np.ndarray:
        return np.concatenate([t.detach().cpu().double().reshape(-1).numpy() for t in self.tensors])

    def set(self, x: np.ndarray) -> None:
        k = 0
        with torch.no_grad():
            for t in self.tensors:
                n = t.numel()
                t.copy_(torch.as_tensor(x[k : k + n], dtype=t.dtype).reshape(t.shape))
                k += n

    def natural(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The natural values at ``x`` and ``d natural / d x`` (softplus' = sigmoid for
        positive parameters, 1 otherwise), per column."""
        values, slopes, k = [], [], 0
        for t, positive in zip(self.raws, self.positive, strict=True):
            raw = x[k : k + t.numel()]
            values.append(np.logaddexp(0.0, raw) if positive else raw)
            slopes.append(0.5 * (1 + np.tanh(raw / 2)) if positive else np.ones_like(raw))
            k += t.numel()
        rest = x[k:]
        return np.concatenate([*values, rest]), np.concatenate([*slopes, np.ones_like(rest)])


class _Residuals:
    """Residuals ``(model - data) / weight`` over the training window and their Jacobian in
    the :class:`_Space` vector, from one sensitivity solve per point (cached)."""

    def __init__(self, objective: Objective, space: _Space) -> None:
        self.objective, self.space = objective, space
        prob = objective.problem
        self.prob, self.m = prob, prob.n_train
        self.index = prob.index
        self.kinds = observed_kinds(prob)
        self.evaluations = 0
        # the finish's own budget (its tolerances differ from the fit's): the first point,
        # the fit's result, sets it
        self.budget = StepBudget(floor=FINISH_MIN_STEPS)
        # the points solved so far (a few: the start, the last trials), so that no point is
        # solved twice (the start's cost is read again at the end)
        self._cache: dict[bytes, tuple[np.ndarray, np.ndarray]] = {}
        self._first: bytes | None = None

    def raw(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Unweighted residuals ``(m, M)`` and their Jacobian ``(m, M, P)`` at ``x``."""
        key = x.tobytes()
        if key not in self._cache:
            if len(self._cache) >= CACHED_POINTS:  # drop the oldest but the start
                self._cache.pop(next(k for k in self._cache if k != self._first))
            self._cache[key] = self._solve(x)
            self._first = self._first or key
        return self._cache[key]

    def _solve(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self.space.set(x)
        self.evaluations += 1
        prob, obj = self.prob, self.objective
        t = torch.as_tensor(prob.times[: self.m], dtype=torch.float64, device=obj.device)
        y0 = prob.start().detach()
        key = self.budget.key(y0, t, FINISH_RTOL, FINISH_ATOL)
        limit = self.budget.limit(key)  # a trial past the fit's STEP_BUDGET is rejected
        try:
            sens = sensitivities(
                prob.model, y0, t, rtol=FINISH_RTOL, atol=FINISH_ATOL, method=FINISH_METHOD,
                params=self.space.raws, wrt_y0=self.space.free is not None,
                options=None if limit is None else {"max_steps": limit},
            )  # fmt: skip
        except SolverError:  # a trial the model cannot integrate: a huge residual rejects it
            shape = (self.m, len(self.index))
            return np.full(shape, 1e100), np.zeros((*shape, len(x)))
        self.budget.record(key, sens.stats)
        r = sens.ys[:, self.index] - prob.observed[: self.m]
        jac = _columns(sens.jac, self.space)[:, :, self.index]  # (m, P, M)
        return r.cpu().numpy(), jac.permute(0, 2, 1).cpu().numpy()

    def weighted(self, x: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        r, jac = self.raw(x)
        return (r / weights).reshape(-1), (jac / weights[:, None]).reshape(r.size, -1)

    def cost(self, x: np.ndarray, weights: np.ndarray) -> float:
        r, _ = self.weighted(x, weights)
        return 0.5 * float(r @ r)

    def noise(self, x: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """Per observed component, the RMS residual of its kind (floored far below any
        meaningful level so clean data keep finite weights)."""
        r, _ = self.raw(x)
        out = np.empty(r.shape[1])
        for members in self.kinds.values():
            level = float(np.sqrt(np.mean(r[:, members] ** 2)))
            out[members] = max(level, 1e-12 * float(weights[members].max()), 1e-300)
        return out

    def noise_by_kind(self, x: np.ndarray, weights: np.ndarray) -> dict[str, float]:
        levels = self.noise(x, weights)
        return {kind: float(levels[members[0]]) for kind, members in self.kinds.items()}


def _columns(jac: torch.Tensor, space: _Space) -> torch.Tensor:
    """Sensitivity columns reordered to the space's order: ``jac`` holds ``y0``'s entries
    first (when the start is learned), then the raw parameters; the space wants the raw
    parameters, then the learned entries of the start."""
    if space.free is None:
        return jac
    dim = jac.shape[-1]
    first_free = dim - space.free.numel()  # "velocities": the second half; "all": everything
    return torch.cat([jac[:, dim:], jac[:, first_free:dim]], dim=1)


def observed_kinds(prob: FitProblem) -> dict[str, np.ndarray]:
    """Observed components grouped by kind: ``positions`` and ``velocities`` for particle
    data (blocks of ``N·D`` components), ``state`` otherwise."""
    m = len(prob.index)
    if prob.particles is None:
        return {"state": np.arange(m)}
    nd = prob.particles[0] * prob.particles[1]
    names = ("positions", "velocities")
    return {names[k // nd]: np.arange(k, min(k + nd, m)) for k in range(0, m, nd)}


def _levenberg_marquardt(
    model: _Residuals, x0: np.ndarray, weights: np.ndarray
) -> tuple[np.ndarray, bool]:
    """One MINPACK Levenberg–Marquardt run from ``x0`` under fixed ``weights``: the point it
    reached and whether it converged (``False``: it ran out of evaluations)."""
    result = scipy.optimize.least_squares(
        lambda x: model.weighted(x, weights)[0], x0,
        jac=lambda x: model.weighted(x, weights)[1],
        method="lm", x_scale="jac", ftol=STOP, xtol=STOP, gtol=STOP,
        max_nfev=MAX_EVALUATIONS,
    )  # fmt: skip
    if not np.all(np.isfinite(result.x)):
        return x0, False
    return result.x, result.status > 0


def _sigma(model: _Residuals, space: _Space, x: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """1σ of the natural parameters at ``x`` (``inf``: undetermined; NaN: not computable,
    the residuals or their Jacobian at ``x`` are not finite: a solve that blows up, or a
    positive parameter driven so near 0 that its softplus slope underflows)."""
    r, jac = model.weighted(x, weights)
    values, slopes = space.natural(x)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        natural = jac / slopes  # d r / d natural = (d r / d x) / (d natural / d x)
    if not (np.all(np.isfinite(r)) and np.all(np.isfinite(natural))):
        return np.full(jac.shape[1], np.nan)
    return covariance_sigma(natural, r, values)


def _split(prob: FitProblem, sigma: np.ndarray) -> dict[str, np.ndarray]:
    """The flat σ vector back into one array per learned parameter, shaped like it."""
    values = prob.system.physical_parameters()
    out: dict[str, np.ndarray] = {}
    k = 0
    for name in prob.learned:
        size = values[name].numel()
        out[name] = sigma[k : k + size].reshape(values[name].shape).copy()
        k += size
    return out
