"""Fit benchmark: physnode's Fitter on three-body data, on this machine.

Four parts (see ``benchmarks/README.md``):

1. the same mass fit (3-D three bodies, masses (0.7, 1.6, 1.1)) with every gradient method,
   clean and with 1 % noise: mass error, final loss, loss evaluations, wall time;
2. the time of one fit epoch (forward + backward of the loss) on 400 observations;
3. hidden physics: data with a drag force the model does not know; physics-only vs hybrid
   (physics + MLP correction) extrapolation;
4. the ACA paper's three-body experiment (``/work/shared/docs/three-body.md``);
5. the least-squares finish: its sensitivity solves with the model's closed-form Jacobian
   rows (``NBody.jacobians``) against autograd's rows, on three fits.

    python benchmarks/fit.py            # full run (~20 min on 2 CPU cores)
    python benchmarks/fit.py --quick    # smoke run (~2 min)

Every fit runs under a per-case wall-clock limit (``--case-limit``): the Fitter is stopped
cleanly through ``should_stop`` and the row is marked ``stopped``.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import time

import numpy as np
import torch
from torch import nn

from physnode import odeint
from physnode.data import Trajectory, add_noise
from physnode.fit import Fitter
from physnode.systems import NBody, random_nbody

TRUE_MASSES = np.array([0.7, 1.6, 1.1])
GRADS = ("aca", "adjoint", "backprop", "naive", "forward")


# -- data ------------------------------------------------------------------------------------
def simulate(model: nn.Module, y0: torch.Tensor, t_end: float, points: int, masses, **params):
    """Positions and velocities at ``points`` equally spaced times (dop853, 1e-12)."""
    t = torch.linspace(0, t_end, points, dtype=torch.float64)
    with torch.no_grad():
        ys = odeint(model, y0, t, rtol=1e-12, atol=1e-12, method="dop853")
    n = len(masses)
    half = ys.shape[-1] // 2
    q = ys[:, :half].reshape(points, n, -1).numpy()
    v = ys[:, half:].reshape(points, n, -1).numpy()
    return Trajectory(t.numpy(), positions=q, velocities=v, masses=np.asarray(masses),
                      parameters={"system": "three-body", **params})  # fmt: skip


def three_d_data(t_end: float = 3.0, points: int = 150, noise: float = 0.0) -> Trajectory:
    system, y0 = random_nbody(3, dim=3, seed=3, masses=TRUE_MASSES)
    data = simulate(system, y0, t_end, points, TRUE_MASSES, G=1.0)
    return add_noise(data, noise, seed=1) if noise else data


class Drag(nn.Module):
    """Three-body gravity plus a force the fitted model does not know: ``a_i += -gamma v_i``."""

    def __init__(self, system: NBody, gamma: float) -> None:
        super().__init__()
        self.system = system
        self.gamma = gamma

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        f = self.system(t, y)
        half = y.shape[-1] // 2
        extra = torch.cat([torch.zeros_like(y[..., :half]), -self.gamma * y[..., half:]], -1)
        return f + extra


# -- helpers -----------------------------------------------------------------------------------
def run_fit(fitter: Fitter, data: Trajectory, limit: float, y0=None) -> dict:
    """Fit under a wall-clock limit; times every loss evaluation through ``progress``."""
    stamps: list[float] = []
    start = time.perf_counter()

    def progress(epoch, total, loss, params):
        stamps.append(time.perf_counter())

    fitter.fit(data, y0=y0, progress=progress,
               should_stop=lambda: time.perf_counter() - start > limit)  # fmt: skip
    evals = len(fitter.history_["loss"])
    steps = np.diff([start, *stamps])
    return {
        "fitter": fitter,
        "evals": evals,
        "wall": fitter.wall_time_,
        "per_eval": float(np.median(steps)) if len(steps) else float("nan"),
        "loss": float(fitter.history_["loss"][-1]) if evals else float("nan"),
        "stopped": fitter.interrupted_,
    }


def rel_err(fitter: Fitter, true: np.ndarray) -> float:
    return float(np.max(np.abs(fitter.params_["masses"] - true) / true))


def fmt_masses(m) -> str:
    return "(" + ", ".join(f"{x:.4f}" for x in np.asarray(m)) + ")"


def table(header: list[str], rows: list[list[str]]) -> None:
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print(flush=True)


# -- 1. gradient methods side by side ------------------------------------------------------------
def part_methods(args) -> None:
    print("## 1. Same fit, every gradient method\n")
    cases = [
        ("clean", three_d_data(), {"learn": ("masses",), "epochs": 20, "lbfgs_steps": 15}),
        ("1 % noise", three_d_data(noise=0.01),
         {"learn": ("masses", "y0"), "epochs": 20, "lbfgs_steps": 60}),
    ]  # fmt: skip
    if args.quick:
        cases = [(n, d, {**s, "epochs": 5, "lbfgs_steps": 5}) for n, d, s in cases]
    rows = []
    for name, data, settings in cases:
        for grad in args.grads:
            r = run_fit(Fitter(grad=grad, **settings), data, args.case_limit)
            f = r["fitter"]
            sig = f.uncertainties_.get("masses")
            rows.append([
                name, grad, f"{rel_err(f, TRUE_MASSES):.1e}", fmt_masses(f.params_["masses"]),
                "–" if sig is None else f"{np.max(sig / TRUE_MASSES):.1e}", f"{r['loss']:.2e}",
                str(r["evals"]), f"{r['wall']:.1f}" + (" (stopped)" if r["stopped"] else ""),
                f"{1e3 * r['per_eval']:.0f}",
            ])  # fmt: skip
            print(f"  {name} {grad}: {rows[-1][2:]}", flush=True)
    print()
    table(["data", "grad", "max rel. mass err", "masses", "max σ/m", "final loss",
           "loss evals", "wall s", "ms / eval (median)"], rows)  # fmt: skip


# -- 2. time per epoch -----------------------------------------------------------------------------
def part_epoch(args) -> None:
    print("## 2. One fit epoch (forward + backward of the loss), 400 observations\n")
    points = 100 if args.quick else 400
    data = three_d_data(t_end=3.0, points=points)
    rows = []
    for grad in args.grads:
        # the route the Fitter takes: epochs Adam steps on the full window, no L-BFGS
        epochs = 2 if args.quick else 5
        r = run_fit(Fitter(grad=grad, epochs=epochs, lbfgs_steps=0, schedule="full",
                           train_until=3.0), data, args.case_limit)  # fmt: skip
        f = r["fitter"]
        # the loss alone, repeated on the fitted problem (median of `repeats`)
        times = []
        n = f._prob.n_train
        for _ in range(3 if args.quick else 7):
            t0 = time.perf_counter()
            loss = f._loss(n)
            loss.backward()
            times.append(time.perf_counter() - t0)
        rows.append([
            grad, str(n), f"{r['per_eval']:.3f}", f"{statistics.median(times):.3f}",
            f"{min(times):.3f}", f"{max(times):.3f}", f"{r['wall']:.1f}",
        ])  # fmt: skip
        print(f"  {grad}: {rows[-1][1:]}", flush=True)
    print()
    table(["grad", "observations", "Fitter s / epoch (median)", "_loss+backward s (median)",
           "min", "max", f"Fitter wall s ({epochs} epochs + setup + GN)"], rows)  # fmt: skip


# -- 3. hidden physics ---------------------------------------------------------------------------
def part_hidden(args) -> None:
    gamma = args.gamma
    t_end, points, train_until = args.hidden_t_end, args.hidden_points, args.hidden_train
    print(f"## 3. Hidden physics: drag a_i += -{gamma} v_i, train t <= {train_until}, "
          f"extrapolate to {t_end}\n")  # fmt: skip
    system, y0 = random_nbody(3, dim=3, seed=3, masses=TRUE_MASSES)
    data = simulate(Drag(system, gamma), y0, t_end, points, TRUE_MASSES, G=1.0)
    no_drag = simulate(system, y0, t_end, points, TRUE_MASSES, G=1.0)
    n_train = int(np.searchsorted(data.times, train_until, side="right"))
    gap = data.positions[n_train:] - no_drag.positions[n_train:]
    print(f"  effect of the drag on the extrapolated positions (RMS): "
          f"{np.sqrt(np.mean(gap**2)):.3e}; positions RMS "
          f"{np.sqrt(np.mean(data.positions**2)):.3f}\n", flush=True)  # fmt: skip
    configs = [("physics", {"model": "physics", "epochs": 30, "lbfgs_steps": 40})]
    for spec in args.hybrid:
        epochs, lr, hidden, lbfgs = spec.split(",")
        for kind in args.corrections.split(","):
            configs.append((f"hybrid {kind} e={epochs} lr={lr} h={hidden} lbfgs={lbfgs}",
                            {"model": "hybrid", "correction": kind, "epochs": int(epochs),
                             "lr": float(lr), "hidden": int(hidden),
                             "lbfgs_steps": int(lbfgs)}))  # fmt: skip
    if args.quick:
        configs = [(n, {**s, "epochs": 6, "lbfgs_steps": 4}) for n, s in configs[:2]]
    rows = []
    physics_rmse = None
    for name, settings in configs:
        r = run_fit(Fitter(learn=("masses",), train_until=train_until, **settings), data,
                    args.hidden_limit)  # fmt: skip
        f = r["fitter"]
        if settings["model"] == "physics":
            physics_rmse = f.extrapolation_rmse_
        ratio = f.extrapolation_rmse_ / physics_rmse if physics_rmse else float("nan")
        rows.append([
            name, f"{f.train_rmse_:.2e}", f"{f.extrapolation_rmse_:.2e}", f"{ratio:.3f}",
            fmt_masses(f.params_["masses"]), f"{rel_err(f, TRUE_MASSES):.1e}", str(r["evals"]),
            f"{r['wall']:.0f}" + (" (stopped)" if r["stopped"] else ""),
        ])  # fmt: skip
        print(f"  {rows[-1]}", flush=True)
    print()
    table(["model", "train RMSE", "extrapolation RMSE", "/ physics", "masses",
           "max rel. mass err", "loss evals", "wall s"], rows)  # fmt: skip


# -- 4. the ACA paper's experiment ----------------------------------------------------------------
def part_paper(args) -> None:
    print("## 4. The ACA paper's three-body experiment\n")
    k1, k2 = 0.2005, 7.239
    true = np.array([1.1, 1.1, 0.9])
    r0 = np.array([[0, 0.2, 0], [0.5, 0, 0.5], [0, 0, 0.5]])
    v0 = np.array([[0, 0.1, 0], [0, 0, 0.1], [0.1, 0, 0]]) * k2
    system = NBody(true, G=k1 * k2, dim=3)
    y0 = torch.tensor(np.concatenate([r0.ravel(), v0.ravel()]))
    data = simulate(system, y0, 2.0, 2000, true, G=k1 * k2)
    data = Trajectory(data.times, positions=data.positions, parameters=data.parameters)
    epochs, lbfgs = (5, 3) if args.quick else (30, 20)
    fitter = Fitter(train_until=1.0, init_masses=[1.0, 0.95, 1.05], epochs=epochs,
                    lbfgs_steps=lbfgs)  # fmt: skip
    r = run_fit(fitter, data, args.case_limit, y0=y0)
    rel = np.abs(fitter.params_["masses"] - true) / true
    table(["masses", "rel. error (max)", "paper's own", "loss evals", "wall s",
           "train RMSE", "extrapolation RMSE"],
          [[fmt_masses(fitter.params_["masses"]), f"{rel.max():.1e}", "2.4e-5",
            str(r["evals"]), f"{r['wall']:.1f}" + (" (stopped)" if r["stopped"] else ""),
            f"{fitter.train_rmse_:.1e}", f"{fitter.extrapolation_rmse_:.1e}"]])  # fmt: skip


# -- 5. the least-squares finish -------------------------------------------------------------------
def finish_cases() -> list[tuple[str, Trajectory, np.ndarray, dict]]:
    """The README job (figure-eight start, masses 0.8, 1.3, 1.0, 2 periods, 400 samples), four
    bodies in 3-D with a mass 6.7x below the default start of ones, and the 1 %-noisy 3-D
    three bodies with the start learned (21 sensitivity columns)."""
    from physnode.systems import three_body

    readme_masses = np.array([0.8, 1.3, 1.0])
    _, y0, period = three_body("figure-eight")
    readme = simulate(NBody(readme_masses), y0, 2 * period, 400, readme_masses, G=1.0)
    four_masses = np.array([0.15, 1.0, 1.2, 0.8])
    system, y4 = random_nbody(4, dim=3, seed=5, masses=four_masses)
    four = simulate(system, y4, 3.0, 150, four_masses, G=1.0)
    return [
        ("README job", readme, readme_masses, {}),
        ("4 bodies 3-D, a mass 6.7x off", four, four_masses, {}),
        ("3-D, 1 % noise, masses + y0", three_d_data(noise=0.01), TRUE_MASSES,
         {"learn": ("masses", "y0")}),
    ]  # fmt: skip


def one_solve(data: Trajectory, masses: np.ndarray, repeats: int = 3) -> float:
    """Seconds for one plain solve of the data's window at rtol 1e-10 (dopri5), the unit the
    issue states fit times in (best of ``repeats``)."""
    dim = data.positions.shape[-1]
    y0 = torch.as_tensor(np.concatenate([data.positions[0].ravel(), data.velocities[0].ravel()]))
    t = torch.as_tensor(data.times)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        with torch.no_grad():
            odeint(NBody(masses, dim=dim), y0, t, rtol=1e-10, atol=1e-10, method="dopri5")
        best = min(best, time.perf_counter() - start)
    return best


def part_finish(args) -> None:
    import physnode.fit.fitter as fitter_module

    print("## 5. The least-squares finish: closed-form Jacobian rows vs autograd's\n")
    finish = fitter_module.least_squares_finish
    spent: list[float] = []

    def timed(objective):
        start = time.perf_counter()
        try:
            return finish(objective)
        finally:
            spent.append(time.perf_counter() - start)

    rows = []
    fitter_module.least_squares_finish = timed
    closed = NBody.jacobians
    try:
        for name, data, masses, settings in finish_cases():
            solve_s = one_solve(data, masses)
            for rows_by in ("autograd", "closed form"):
                NBody.jacobians = closed if rows_by == "closed form" else (lambda *a: None)
                r = run_fit(Fitter(**settings), data, args.case_limit)
                f = r["fitter"]
                rows.append([
                    name, rows_by, f"{r['wall']:.2f}", f"{spent[-1]:.2f}",
                    f"{r['wall'] / solve_s:.1f}", f"{rel_err(f, masses):.1e}",
                    f"{solve_s * 1e3:.0f}",
                ])  # fmt: skip
                print(f"  {name}, {rows_by}: {rows[-1][2:]}", flush=True)
    finally:
        fitter_module.least_squares_finish, NBody.jacobians = finish, closed
    print()
    table(["fit", "Jacobian rows", "Fitter wall s", "finish s", "wall / one solve at 1e-10",
           "max rel. mass err", "one solve ms"], rows)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run (~2 min)")
    parser.add_argument("--parts", default="1,2,3,4,5", help="which parts to run (default all)")
    parser.add_argument("--grads", default=",".join(GRADS), help="gradient methods")
    parser.add_argument("--case-limit", type=float, default=180.0,
                        help="wall-clock seconds per fit (parts 1, 2, 4); default 180")  # fmt: skip
    parser.add_argument("--hidden-limit", type=float, default=300.0,
                        help="wall-clock seconds per fit in part 3; default 300")  # fmt: skip
    parser.add_argument("--gamma", type=float, default=0.05, help="drag coefficient (part 3)")
    parser.add_argument("--hidden-t-end", type=float, default=3.0)
    parser.add_argument("--hidden-points", type=int, default=150)
    parser.add_argument("--hidden-train", type=float, default=2.0)
    parser.add_argument("--hybrid", action="append",
                        help="hybrid settings 'epochs,lr,hidden,lbfgs' (repeatable); default "
                             "'60,0.01,32,40'")  # fmt: skip
    parser.add_argument(
        "--corrections",
        default="field,mlp",
        help="hybrid correction kinds to compare in part 3 (comma-separated)",
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = parser.parse_args()
    args.grads = [g for g in args.grads.split(",") if g]
    args.hybrid = args.hybrid or ["60,0.01,32,40"]
    torch.set_num_threads(args.threads)
    print(f"# physnode fit benchmark — {datetime.datetime.now():%Y-%m-%d %H:%M}, "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"torch {torch.__version__}, {args.threads} thread(s), load average "
          f"{os.getloadavg()[0]:.2f}{' (quick)' if args.quick else ''}\n")  # fmt: skip
    start = time.perf_counter()
    parts = {
        "1": part_methods, "2": part_epoch, "3": part_hidden, "4": part_paper, "5": part_finish,
    }  # fmt: skip
    for key in args.parts.split(","):
        parts[key](args)
        print(f"(elapsed {time.perf_counter() - start:.0f} s, load average "
              f"{os.getloadavg()[0]:.2f})\n", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
