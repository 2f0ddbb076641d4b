"""The Lotka–Volterra case of the universal differential equations paper, for benchmarks/hybrid.py.

Rackauckas et al. 2020 ("Universal Differential Equations for Scientific Machine Learning",
section 2.1, and their code ``LotkaVolterra/scenario_1.jl``): prey ``x`` and predators ``y``
with ``x' = α x - β x y``, ``y' = γ_p x y - δ_p y``, ``(α, β, γ_p, δ_p) = (1.3, 0.9, 0.8,
1.8)``, ``u0 = (0.44249296, 4.6280594)``, sampled every 0.1 and trained on ``t <= 3``. The
known physics is the linear part (growth ``α x``, death ``-δ_p y``); the interaction terms are
what the network must learn. physnode's ``lotka-volterra`` system names the rates
``x' = α x - β x y``, ``y' = δ x y - γ y``, so the paper's ``γ_p`` is its ``delta`` and
``δ_p`` its ``gamma``; the known physics is that system with ``beta = delta = 0``, learning
``alpha`` and ``gamma`` from the system's defaults (1.5, 3: not the truth).

The data come from SciPy's DOP853 (rtol = atol = 1e-11) on the right-hand side written here,
not from physnode's system. Scored on ``(3, t_end]``.
"""

from __future__ import annotations

import numpy as np
from scipy.integrate import solve_ivp

from physnode.data import Trajectory, add_noise

ALPHA, BETA, GAIN, DEATH = 1.3, 0.9, 0.8, 1.8  # the paper's α, β, γ, δ
U0 = (0.44249296, 4.6280594)
DT, TRAIN_UNTIL = 0.1, 3.0
#: physnode's names of the learned rates and their true values
TRUE_RATES = {"alpha": ALPHA, "gamma": DEATH}
#: the hidden interaction as the readout names it: (target, term) -> coefficient
TRUE_TERMS = {("prey", "prey predator"): -BETA, ("predator", "prey predator"): GAIN}
DESCRIPTION = f"x' += -{BETA} x y, y' += {GAIN} x y (missing interactions, UDE paper)"


def rhs(t: float, u: np.ndarray) -> np.ndarray:
    x, y = u
    return np.array([ALPHA * x - BETA * x * y, GAIN * x * y - DEATH * y])


def make_data(t_end: float, noise: float) -> Trajectory:
    """The observed populations on ``[0, t_end]`` every :data:`DT`; the file's parameters
    are the known physics (no interaction)."""
    times = np.round(np.arange(0.0, t_end + DT / 2, DT), 12)
    sol = solve_ivp(rhs, (0.0, times[-1]), U0, method="DOP853", t_eval=times,
                    rtol=1e-11, atol=1e-11)  # fmt: skip
    if not sol.success:
        raise RuntimeError(f"reference integration failed: {sol.message}")
    known = {"system": "lotka-volterra", "beta": 0.0, "delta": 0.0, "hidden": "interaction"}
    data = Trajectory(times, state=sol.y.T, state_names=("prey", "predator"), parameters=known)
    return add_noise(data, noise, seed=1) if noise else data


def rate_error(params: dict) -> float:
    return max(abs(float(params[n]) - v) / v for n, v in TRUE_RATES.items())


def fmt_rates(params: dict) -> str:
    return "(" + ", ".join(f"{n} {float(params[n]):.4f}" for n in TRUE_RATES) + ")"


def coefficient_error(targets: list[str], terms: list[str], coefficients) -> str:
    """The worse relative error of the two interaction coefficients, or which is missed."""
    found = dict(zip(zip(targets, terms, strict=True), np.asarray(coefficients), strict=True))
    errors = []
    for key, value in TRUE_TERMS.items():
        if key not in found:
            return f"missed {key[1]!r} in d{key[0]}/dt"
        errors.append(abs(float(found[key]) - value) / abs(value))
    extra = len(terms) - len(TRUE_TERMS)
    return f"{max(errors):.1e}" + (f" (+{extra} terms)" if extra else "")


def configs(args) -> list[tuple[str, dict]]:
    """Physics-only (the known linear part) and the hybrid (its correction: ``mlp``, the
    kind for systems without bodies) with its symbolic refit, with hybrid.py's settings."""
    settings = {"epochs": args.epochs, "lr": args.lr, "hidden": args.hidden,
                "lbfgs_steps": args.lbfgs_steps, "learn": tuple(TRUE_RATES),
                "train_until": TRAIN_UNTIL}  # fmt: skip
    hybrid = {"model": "hybrid", "refit_symbolic": True, **settings}
    return [("physics", {"model": "physics", **settings}), ("hybrid mlp", hybrid)]
