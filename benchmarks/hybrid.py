"""Hybrid benchmark: physics-only vs hybrid fits on three-body data with hidden physics.

Issue 9, section 4. Every case simulates three bodies in 2-D (true masses (0.8, 1.3, 1.0),
G = 1) under Newtonian gravity plus a term the fitted model does not know, with a right-hand
side written here in plain NumPy and integrated by SciPy's DOP853 (rtol = atol = 1e-11); the
data never come from physnode's own ``NBody``. 81 samples on [0, 4]; the fit sees t <= 2 and is
scored on the rest (``extrapolation_rmse_``). Fits start from unit masses (the Fitter default).

Hidden accelerations (added to body i; q_i, v_i its position and velocity, r_ij = |q_j - q_i|):

- ``drag``            a_i = -0.1 v_i
- ``quadratic-drag``  a_i = -0.1 |v_i| v_i
- ``tidal``           a_i = -0.05 q_i                                (harmonic external field)
- ``point-mass``      a_i = -M q_i / (|q_i|² + ε²)^{3/2}, M = 0.3, ε = 0.05  (unseen mass at 0)
- ``yukawa``          a_i = Σ_j α m_j (1 + r_ij/λ) exp(-r_ij/λ) (q_j - q_i) / r_ij³,
                      α = 0.3, λ = 0.5: the force of the Yukawa pair potential
                      U_ij = -α m_i m_j exp(-r_ij/λ) / r_ij (an attractive, short-range
                      "fifth force"; momentum and energy conserving)

- ``lotka-volterra``  the universal differential equations paper's case (benchmarks/ude.py):
                      the known physics is Lotka–Volterra without its interaction terms
                      (``x' = α x``, ``y' = -γ y``), the network must learn ``-0.9 x y`` and
                      ``+0.8 x y``; 61 samples on [0, 6], trained on t <= 3; rates instead
                      of masses in the results, ``mlp`` correction (no bodies)

Models per case: physics-only (``model="physics"``) and ``model="hybrid"`` with each kind in
``--corrections``; every fit uses the same settings (no per-case tuning).

    python benchmarks/hybrid.py            # full run (~3 min on 2 CPU cores)
    python benchmarks/hybrid.py --quick    # smoke run (~1 min)
    python benchmarks/hybrid.py --corrections field --penalties 0,1,auto   # penalty or not

Every fit runs under a wall-clock limit (``--fit-limit``): the Fitter is stopped cleanly
through ``should_stop`` and the row is marked ``stopped``.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from scipy.integrate import solve_ivp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import ude  # the Lotka–Volterra case of the universal differential equations paper
from fit import fmt_masses, run_fit, table  # the fit benchmark's helpers (benchmarks/fit.py)

from physnode.data import Trajectory, add_noise, write_trajectory
from physnode.fit import Fitter
from physnode.models.symbolic import TARGET_SEPARATOR
from tests.reference import bound_start

TRUE_MASSES = np.array([0.8, 1.3, 1.0])
G = 1.0
DIM = 2
TOL = 1e-11
MIN_APPROACH = 0.2  # the closest pair distance a start must keep over the whole span

# hidden-physics constants
GAMMA = 0.1  # linear drag
GAMMA2 = 0.1  # quadratic drag
K_TIDAL = 0.05  # harmonic field
K_CUBIC = 0.03  # anharmonic field, near-collinear with the tidal one on these orbits (|q| ~ 1)
M_POINT, EPS_POINT = 0.3, 0.05  # unseen softened point mass at the origin
ALPHA_YUKAWA, LAMBDA_YUKAWA = 0.3, 0.5  # Yukawa pair term


# -- independent right-hand sides (NumPy) -------------------------------------------------------
def pair_vectors(q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``d[i, j] = q_j - q_i`` ``(N, N, dim)`` and ``r[i, j] = |d[i, j]|`` (``inf`` on the
    diagonal, so every ``1/r`` term vanishes there)."""
    d = q[None, :, :] - q[:, None, :]
    r = np.sqrt(np.sum(d * d, axis=-1))
    np.fill_diagonal(r, np.inf)
    return d, r


def gravity(q: np.ndarray, masses: np.ndarray) -> np.ndarray:
    """Newton: ``a_i = Σ_{j≠i} G m_j (q_j - q_i) / r_ij³``."""
    d, r = pair_vectors(q)
    return np.einsum("ij,ijk->ik", G * masses[None, :] / r**3, d)


def hidden_drag(q, v, masses):
    return -GAMMA * v


def hidden_quadratic_drag(q, v, masses):
    return -GAMMA2 * np.linalg.norm(v, axis=-1, keepdims=True) * v


def hidden_tidal(q, v, masses):
    return -K_TIDAL * q


def hidden_cubic(q, v, masses):
    return -K_CUBIC * np.sum(q * q, axis=-1, keepdims=True) * q


def hidden_point_mass(q, v, masses):
    s2 = np.sum(q * q, axis=-1, keepdims=True) + EPS_POINT**2
    return -M_POINT * q / s2**1.5


def hidden_yukawa(q, v, masses):
    d, r = pair_vectors(q)
    x = r / LAMBDA_YUKAWA
    np.fill_diagonal(x, 0.0)  # the self term is zeroed by 1/r³ = 0 below (avoids inf · 0)
    coef = ALPHA_YUKAWA * masses[None, :] * (1 + x) * np.exp(-x)
    return np.einsum("ij,ijk->ik", coef / r**3, d)


#: the hidden term as the discovered-law library names it, where the library has it (the
#: point mass is softened, ε = 0.05, so q/|q|^3 is its far field only; Yukawa is not there)
TRUE_TERMS: dict[str, dict[str, float]] = {
    "drag": {"v": -GAMMA},
    "quadratic-drag": {"|v| v": -GAMMA2},
    "tidal": {"q": -K_TIDAL},
    "cubic-field": {"|q|^2 q": -K_CUBIC},
    "point-mass": {"q/|q|^3": -M_POINT},
    "yukawa": {},
}

Hidden = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]
CASES: dict[str, tuple[Hidden, str]] = {
    "drag": (hidden_drag, f"a = -{GAMMA} v"),
    "quadratic-drag": (hidden_quadratic_drag, f"a = -{GAMMA2} |v| v"),
    "tidal": (hidden_tidal, f"a = -{K_TIDAL} q"),
    "cubic-field": (hidden_cubic, f"a = -{K_CUBIC} |q|² q"),
    "point-mass": (hidden_point_mass, f"a = -{M_POINT} q / (|q|² + {EPS_POINT}²)^1.5"),
    "yukawa": (
        hidden_yukawa,
        f"a_i = Σ_j {ALPHA_YUKAWA} m_j (1 + r/{LAMBDA_YUKAWA}) e^(-r/{LAMBDA_YUKAWA}) r_ij / r³",
    ),
}


#: the state-system case (benchmarks/ude.py), after the three-body ones
UDE_CASE = "lotka-volterra"
ALL_CASES = [*CASES, UDE_CASE]


def simulate(hidden: Hidden, q0: np.ndarray, v0: np.ndarray, times: np.ndarray):
    """Positions and velocities ``(T, N, dim)`` of gravity + ``hidden`` (DOP853, 1e-11)."""
    n, dim = q0.shape
    masses = TRUE_MASSES

    def rhs(t: float, y: np.ndarray) -> np.ndarray:
        q = y[: n * dim].reshape(n, dim)
        v = y[n * dim :].reshape(n, dim)
        a = gravity(q, masses) + hidden(q, v, masses)
        return np.concatenate([y[n * dim :], a.ravel()])

    sol = solve_ivp(rhs, (times[0], times[-1]), np.concatenate([q0.ravel(), v0.ravel()]),
                    method="DOP853", t_eval=times, rtol=TOL, atol=TOL)  # fmt: skip
    if not sol.success:
        raise RuntimeError(f"reference integration failed: {sol.message}")
    ys = sol.y.T
    t_count = len(times)
    return ys[:, : n * dim].reshape(t_count, n, dim), ys[:, n * dim :].reshape(t_count, n, dim)


def closest_approach(positions: np.ndarray) -> float:
    """The smallest pair distance over all samples (checked on a fine grid by the caller)."""
    d = positions[:, None, :, :] - positions[:, :, None, :]
    r = np.sqrt(np.sum(d * d, axis=-1))
    n = positions.shape[1]
    r[:, np.arange(n), np.arange(n)] = np.inf
    return float(r.min())


def make_data(case: str, args) -> tuple[Trajectory, int, float, float]:
    """The case's trajectory, the seed of its start, its closest approach (on a 20× finer grid),
    and the RMS effect of the hidden term on the extrapolated positions."""
    hidden = CASES[case][0]
    times = np.linspace(0.0, args.t_end, args.points)
    fine = np.linspace(0.0, args.t_end, 20 * (args.points - 1) + 1)
    for seed in range(args.seed, args.seed + 200):
        q0, v0 = bound_start(TRUE_MASSES, DIM, seed)
        try:
            q_fine, _ = simulate(hidden, q0, v0, fine)
        except RuntimeError:
            continue
        approach = closest_approach(q_fine)
        if approach > MIN_APPROACH and np.all(np.isfinite(q_fine)):
            break
    else:
        raise RuntimeError(f"no start with closest approach > {MIN_APPROACH} for {case}")
    q, v = simulate(hidden, q0, v0, times)
    q_plain, _ = simulate(lambda q, v, m: np.zeros_like(q), q0, v0, times)
    n_train = int(np.searchsorted(times, args.train_until, side="right"))
    gap = q[n_train:] - q_plain[n_train:]
    effect = float(np.sqrt(np.mean(gap**2)))
    data = Trajectory(times, positions=q, velocities=v, masses=TRUE_MASSES,
                      parameters={"system": "n-body", "G": G, "hidden": case})  # fmt: skip
    return data, seed, approach, effect


# -- fitting ------------------------------------------------------------------------------------
def rel_err(masses) -> float:
    return float(np.max(np.abs(np.asarray(masses) - TRUE_MASSES) / TRUE_MASSES))


def fmt(x) -> str:
    return "–" if x is None or not np.isfinite(x) else f"{x:.2e}"


def wall(r: dict) -> str:
    """A fit's wall time, marked when the time limit stopped it."""
    return f"{r['wall']:.1f}" + (" (stopped)" if r["stopped"] else "")


def result_row(case, name, train, extra, physics_rmse, params: str, error: float, seconds: str):
    """One row of the results table: RMSEs, extrapolation over physics-only, parameters."""
    ratio = extra / physics_rmse if physics_rmse and extra is not None else float("nan")
    shown = "–" if not np.isfinite(ratio) else f"{ratio:.3f}"
    return [case, name, fmt(train), fmt(extra), shown, params, f"{error:.1e}", seconds]


def configs(args) -> list[tuple[str, dict]]:
    settings = {"epochs": args.epochs, "lr": args.lr, "hidden": args.hidden,
                "lbfgs_steps": args.lbfgs_steps}  # fmt: skip
    out = [("physics", {"model": "physics", **settings})]
    for kind in args.corrections:
        for weight in args.penalties:
            label = weight if isinstance(weight, str) else f"{weight:g}"
            name = f"hybrid {kind}" + (f" penalty {label}" if weight else "")
            out.append((name, {"model": "hybrid", "correction": kind, "refit_symbolic": True,
                               "correction_penalty": weight, **settings}))  # fmt: skip
    return out


def coefficient_error(case: str, terms: list[str], coefficients) -> str:
    """Relative error of the hidden term's coefficient, or why there is none."""
    truth = TRUE_TERMS[case]
    if not truth:
        return "not in library"
    ((term, value),) = truth.items()
    if term not in terms:
        return "term missed"
    c = float(np.asarray(coefficients)[terms.index(term)])
    extra = len(terms) - 1
    return f"{abs(c - value) / abs(value):.1e}" + (f" (+{extra} terms)" if extra else "")


def run_case(
    case: str, args, rows: list[list[str]], summary: list[str], laws: list[list[str]]
) -> None:
    data, seed, approach, effect = make_data(case, args)
    if args.noise:
        data = add_noise(data, args.noise, seed=args.noise_seed)
    print(f"## {case}: {CASES[case][1]}\n\n  start seed {seed}, closest approach {approach:.3f} "
          f"over [0, {args.t_end}]; hidden term's effect on extrapolated positions (RMS) "
          f"{effect:.3e}; positions RMS {np.sqrt(np.mean(data.positions**2)):.3f}",
          flush=True)  # fmt: skip
    physics_rmse = None
    results: list[tuple[str, float]] = []
    for name, settings in configs(args):
        try:
            fitter = Fitter(learn=args.learn, train_until=args.train_until, **settings)
            r = run_fit(fitter, data, args.fit_limit)
        except Exception as exc:  # a failed fit is a row, not the end of the run
            print(f"  {name}: failed: {type(exc).__name__}: {exc}", flush=True)
            rows.append([case, name, "failed", "–", "–", "–", "–", "–"])
            continue
        f = r["fitter"]
        if getattr(f, "candidates_", None) is not None:  # "auto": say what it chose
            name = f"{name} ({f.correction_}, w={f.correction_penalty_:g})"
        extra = f.extrapolation_rmse_
        if settings["model"] == "physics":
            physics_rmse = extra
        masses = f.params_["masses"]
        rows.append(result_row(case, name, f.train_rmse_, extra, physics_rmse,
                               fmt_masses(masses), rel_err(masses), wall(r)))  # fmt: skip
        if extra is not None:
            results.append((name, extra))
        print(f"  {rows[-1][1:]}", flush=True)
        if getattr(f, "discovered_", None) is not None:
            refit_rows(case, name, f, physics_rmse, rows, laws)
    if results:
        best, best_rmse = min(results, key=lambda x: x[1])
        ratio = best_rmse / physics_rmse if physics_rmse else float("nan")
        summary.append(f"- {case}: lowest extrapolation RMSE: {best} ({best_rmse:.2e}, "
                       f"{ratio:.3f} × physics-only)")  # fmt: skip
    print(flush=True)


def run_ude_case(args, rows: list[list[str]], summary: list[str], laws: list[list[str]]) -> None:
    """The Lotka–Volterra case (benchmarks/ude.py): rates instead of masses, the readout's
    and the symbolic refit's interaction coefficients."""
    case = UDE_CASE
    data = ude.make_data(args.ude_t_end, args.noise)
    print(f"## {case}: {ude.DESCRIPTION}\n\n  u0 {ude.U0}, {data.n_times} samples on "
          f"[0, {data.times[-1]:g}], train t <= {ude.TRAIN_UNTIL}; learn alpha, gamma from "
          "(1.5, 3.0)", flush=True)  # fmt: skip
    physics_rmse = None
    for name, settings in ude.configs(args):
        try:
            r = run_fit(Fitter(**settings), data, args.fit_limit)
        except Exception as exc:  # a failed fit is a row, not the end of the run
            print(f"  {name}: failed: {type(exc).__name__}: {exc}", flush=True)
            rows.append([case, name, "failed", "–", "–", "–", "–", "–"])
            continue
        f = r["fitter"]
        extra = f.extrapolation_rmse_
        physics_rmse = extra if settings["model"] == "physics" else physics_rmse
        rates, error = ude.fmt_rates(f.params_), ude.rate_error(f.params_)
        row = result_row(case, name, f.train_rmse_, extra, physics_rmse, rates, error, wall(r))
        rows.append(row)
        print(f"  {rows[-1][1:]}", flush=True)
        found = getattr(f, "discovered_", None)
        if found is not None:
            laws.append([case, name, found.formula, f"{found.explained:.3f}",
                         ude.coefficient_error(found.targets, found.terms,
                                               found.coefficients)])  # fmt: skip
            print(f"  law: {found.formula}", flush=True)
        refit = getattr(f, "refit_", None)
        if refit is not None:
            ude_refit_rows(case, name, refit, physics_rmse, rows, laws)
        if settings["model"] == "hybrid" and extra is not None and physics_rmse:
            summary.append(f"- {case}: hybrid mlp {extra:.2e}, {row[4]} × physics-only")
    print(flush=True)


def ude_refit_rows(case, name, refit, physics_rmse, rows, laws) -> None:
    """The Lotka–Volterra refit's rows of the results and laws tables."""
    rows.append(result_row(case, f"{name} → symbolic refit", refit.train_rmse,
                           refit.extrapolation_rmse, physics_rmse, ude.fmt_rates(refit.params),
                           ude.rate_error(refit.params), f"{refit.wall_time:.1f}"))  # fmt: skip
    targets, monomials = zip(*(t.split(TARGET_SEPARATOR, 1) for t in refit.terms), strict=True)
    error = ude.coefficient_error(list(targets), list(monomials), refit.coefficients)
    laws.append([case, f"{name} → refit", refit.formula, "–", error])
    print(f"  {rows[-1][1:]}\n  refit: {refit.formula}", flush=True)


def refit_rows(case, name, f, physics_rmse, rows, laws) -> None:
    """The discovered law and its symbolic refit as rows of the results and laws tables."""
    found, refit = f.discovered_, f.refit_
    laws.append([case, name, found.formula, f"{found.explained:.3f}",
                 coefficient_error(case, found.terms, found.coefficients)])  # fmt: skip
    if refit is None:
        return
    masses = refit.params["masses"]
    rows.append(result_row(case, f"{name} → symbolic refit", refit.train_rmse,
                           refit.extrapolation_rmse, physics_rmse, fmt_masses(masses),
                           rel_err(masses), f"{refit.wall_time:.1f}"))  # fmt: skip
    laws.append([case, f"{name} → refit", refit.formula, "–",
                 coefficient_error(case, refit.terms, refit.coefficients)])  # fmt: skip
    print(f"  {rows[-1][1:]}\n  law: {found.formula}\n  refit: {refit.formula}", flush=True)
    if refit.rivals:  # the criterion did not tell these apart: the held-out window chose
        each = zip(refit.rivals, refit.rival_delta, refit.rival_held_out_rmse, strict=True)
        listed = "; ".join(f"{r} (criterion {d:+.2f}, held-out {h:.4e})" for r, d, h in each)
        print(f"  held-out RMSE {refit.held_out_rmse:.4e}; rivals: {listed}", flush=True)


def write_data(args) -> None:
    """Each case's data (noise as ``--noise``) as ``DIR/<case>.h5``, for ``physnode fit``."""
    for case in args.cases:
        if case == UDE_CASE:
            data, what = ude.make_data(args.ude_t_end, args.noise), ude.DESCRIPTION
        else:
            data, what = make_data(case, args)[0], CASES[case][1]
            data = add_noise(data, args.noise, seed=args.noise_seed) if args.noise else data
        path = write_trajectory(Path(args.write_data) / f"{case}.h5", data, overwrite=True)
        print(f"wrote {path}: {what} hidden from the fitted model")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run (~1 min)")
    parser.add_argument("--cases", default=",".join(ALL_CASES),
                        help=f"comma-separated cases (default all: {','.join(ALL_CASES)})",
                        )  # fmt: skip
    parser.add_argument("--ude-t-end", type=float, default=6.0,
                        help="the Lotka–Volterra case's last time (trained on t <= 3)")  # fmt: skip
    parser.add_argument("--corrections", default="field,mlp",
                        help="hybrid correction kinds (comma-separated)")  # fmt: skip
    parser.add_argument("--penalties", default="0",
                        help="correction_penalty weights tried for each hybrid kind "
                        "(comma-separated numbers or auto; default 0: none)")  # fmt: skip
    parser.add_argument("--fit-limit", type=float, default=120.0,
                        help="wall-clock seconds per fit (default 120)")  # fmt: skip
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--hidden", type=int, default=32, help="width of the correction")
    parser.add_argument("--lbfgs-steps", type=int, default=40)
    parser.add_argument("--t-end", type=float, default=4.0)
    parser.add_argument("--points", type=int, default=81)
    parser.add_argument("--train-until", type=float, default=2.0)
    parser.add_argument("--seed", type=int, default=0, help="first start seed tried")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument(
        "--noise",
        type=float,
        default=0.0,
        help="relative Gaussian noise on the data (physnode.data.add_noise)",
    )
    parser.add_argument("--noise-seed", type=int, default=1, help="seed of the noise draw")
    parser.add_argument("--write-data", metavar="DIR", default=None,
                        help="write each case's data to DIR/<case>.h5 (H5MD) and stop")  # fmt: skip
    parser.add_argument("--learn", default="masses",
                        help="what the fits learn (masses; masses,y0 for noisy data)")  # fmt: skip
    parser.add_argument("--autograd-rows", action="store_true",
                        help="hide the closed-form Jacobian rows (HybridModel.jacobians): the "
                             "finish's sensitivities take autograd's, for comparison")  # fmt: skip
    args = parser.parse_args()
    if args.autograd_rows:
        from physnode.models import HybridModel

        HybridModel.jacobians = lambda self, t, y, params: None
    args.learn = tuple(x for x in args.learn.split(",") if x)
    args.cases = [c for c in args.cases.split(",") if c]
    args.corrections = [c for c in args.corrections.split(",") if c]
    args.penalties = [w if w == "auto" else float(w) for w in args.penalties.split(",") if w]
    unknown = [c for c in args.cases if c not in ALL_CASES]
    if unknown:
        parser.error(f"unknown case(s) {unknown}; choose from {ALL_CASES}")
    if args.write_data is not None:
        write_data(args)
        return
    if args.quick:
        args.epochs, args.lbfgs_steps = 6, 4
        args.cases = args.cases[:2]
    torch.set_num_threads(args.threads)
    print(f"# physnode hybrid benchmark — {datetime.datetime.now():%Y-%m-%d %H:%M}, "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"torch {torch.__version__}, {args.threads} thread(s), load average "
          f"{os.getloadavg()[0]:.2f}{' (quick)' if args.quick else ''}\n")  # fmt: skip
    print(f"three bodies in 2-D, true masses {fmt_masses(TRUE_MASSES)}, G = {G}; "
          f"{args.points} samples on [0, {args.t_end}], train t <= {args.train_until}; "
          f"Fitter(learn={','.join(args.learn)}, epochs={args.epochs}, lr={args.lr}, "
          f"hidden={args.hidden}, "
          f"lbfgs_steps={args.lbfgs_steps}) from unit masses; {args.fit_limit:.0f} s per fit; "
          f"noise {args.noise:g} (seed {args.noise_seed}); Jacobian rows "
          f"{'autograd' if args.autograd_rows else 'closed form where the model has them'}\n",
          flush=True)  # fmt: skip
    start = time.perf_counter()
    rows: list[list[str]] = []
    summary: list[str] = []
    laws: list[list[str]] = []
    for case in args.cases:
        if case == UDE_CASE:
            run_ude_case(args, rows, summary, laws)
        else:
            run_case(case, args, rows, summary, laws)
        print(f"(elapsed {time.perf_counter() - start:.0f} s)\n", flush=True)
    print("## Results\n")
    table(["case", "model", "train RMSE", "extrapolation RMSE", "/ physics", "masses",
           "max rel. mass err", "wall s"], rows)  # fmt: skip
    print("\n".join(summary))
    print("\n## Discovered laws (hidden coefficient's relative error)\n")
    table(["case", "from", "law", "explained", "hidden coefficient error"], laws)
    print(f"\n(total {time.perf_counter() - start:.0f} s, load average "
          f"{os.getloadavg()[0]:.2f})")  # fmt: skip


if __name__ == "__main__":
    main()
