"""Per-sample vs shared adaptive steps on a batch of perturbed three-body starts.

    .venv/bin/python benchmarks/per_sample.py                      # B=1024, 2 periods, dopri5
    .venv/bin/python benchmarks/per_sample.py --batch 256 --tols 1e-8 --device cuda

Every solver integrates the same equations (``_threebody.ThreeBody``, masses 1) from the same
starts: the figure eight with every coordinate perturbed by ``--spread`` (default 0.05: some
members pass close to each other), moved to zero momentum. For each tolerance it prints, per
solver, the right-hand-side work (member evaluations), the wall time, and the members' largest
and median relative energy error (the accuracy actually reached: the shared solve's RMS norm
spans the whole batch, so at equal tolerance its members are less accurate). Solvers:
physnode ``steps="shared"``, physnode ``steps="per-sample"``, torchode (``Dopri5`` with its
per-sample ``IntegralController``, compiled off) when installed. Ratios are against
physnode per-sample in the same run.
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import torch
from _threebody import ThreeBody, figure_eight_y0

from physnode.errors import SolverError
from physnode.solver import solve
from physnode.solver.per_sample import SampleFailureWarning

PERIOD = 6.325914012016


def starts(batch: int, spread: float, seed: int) -> torch.Tensor:
    """``(batch, 12)`` perturbed figure-eight starts with zero total momentum (unit masses)."""
    rng = np.random.default_rng(seed)
    y0 = figure_eight_y0() + spread * rng.standard_normal((batch, 12))
    y0 = y0.reshape(batch, 2, 3, 2)
    y0 -= y0.mean(axis=2, keepdims=True)
    return torch.as_tensor(y0.reshape(batch, 12))


def energy(y: torch.Tensor) -> torch.Tensor:
    """Total energy of unit-mass bodies, ``y`` ``(..., 12)``."""
    q, v = y[..., :6].reshape(*y.shape[:-1], 3, 2), y[..., 6:]
    kinetic = 0.5 * v.square().sum(-1)
    pot = 0.0
    for i, j in ((0, 1), (0, 2), (1, 2)):
        pot = pot - 1.0 / (q[..., i, :] - q[..., j, :]).norm(dim=-1)
    return kinetic + pot


def energy_errors(ys: torch.Tensor) -> tuple[float, float]:
    """Largest and median over members of ``max_t |E - E0| / |E0|`` (``ys`` ``(T, B, 12)``)."""
    e = energy(ys)
    err = ((e - e[0]).abs() / e[0].abs()).amax(0)
    err = err[torch.isfinite(err)]
    return float(err.max()), float(err.median())


def run_physnode(field, y0, t, tol, steps, method):
    """``(ys, RHS work, wall s, members failed)``; a shared solve fails as a whole."""
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", SampleFailureWarning)
        start = time.perf_counter()
        options = {"steps": steps} if steps == "per-sample" else None
        sol = solve(field, y0, t, rtol=tol, atol=tol, method=method, options=options)
        _sync(y0)
        wall = time.perf_counter() - start
    if steps == "per-sample":
        return sol.ys, sol.stats.n_sample_evals, wall, int((sol.status != 0).sum())
    return sol.ys, sol.stats.nfe_forward * len(y0), wall, 0


def run_torchode(field, y0, t, tol):
    import torchode as to

    term = to.ODETerm(field)
    solver = to.AutoDiffAdjoint(to.Dopri5(term=term), to.IntegralController(tol, tol, term=term))
    problem = to.InitialValueProblem(y0=y0, t_eval=t.expand(len(y0), -1))
    with torch.no_grad():
        start = time.perf_counter()
        sol = solver.solve(problem)
        _sync(y0)
        wall = time.perf_counter() - start
    failed = int((sol.status != 0).sum())
    return sol.ys.transpose(0, 1), int(sol.stats["n_f_evals"].sum()), wall, failed


def _sync(x: torch.Tensor) -> None:
    if x.device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--periods", type=float, default=2.0)
    ap.add_argument("--spread", type=float, default=0.05)
    ap.add_argument("--tols", type=float, nargs="+", default=[1e-6, 1e-9])
    ap.add_argument("--method", default="dopri5")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    dev = torch.device(args.device)
    field = ThreeBody(masses=(1.0, 1.0, 1.0), device=dev).requires_grad_(False)
    y0 = starts(args.batch, args.spread, args.seed).to(dev)
    t = torch.linspace(0.0, args.periods * PERIOD, 51, dtype=torch.float64, device=dev)
    print(f"B={args.batch}, {args.periods} periods, spread {args.spread}, {args.method}, "
          f"{args.device}, torch threads {torch.get_num_threads()}")  # fmt: skip
    print(f"{'tol':>7} {'solver':<20} {'RHS work':>11} {'ratio':>6} {'wall s':>8} {'ratio':>6} "
          f"{'max dE/E':>9} {'median':>9} {'failed':>6}", flush=True)  # fmt: skip
    for tol in args.tols:
        rows = {}
        for steps in ("shared", "per-sample"):
            try:
                rows[f"physnode {steps}"] = run_physnode(field, y0, t, tol, steps, args.method)
            except SolverError as exc:
                print(f"{tol:7.0e} physnode {steps:<11} failed as a whole: {exc}", flush=True)
        try:
            rows["torchode dopri5"] = run_torchode(field, y0, t, tol)
        except ImportError:
            print("  (torchode not installed: skipped)")
        ref_work, ref_wall = rows["physnode per-sample"][1:3]
        for name, (ys, work, wall, failed) in rows.items():
            worst, median = energy_errors(ys)
            line = f"{tol:7.0e} {name:<20} {work:11d} {work / ref_work:6.2f} {wall:8.2f} "
            line += f"{wall / ref_wall:6.2f} {worst:9.1e} {median:9.1e} {failed:6d}"
            print(line, flush=True)


if __name__ == "__main__":
    main()
