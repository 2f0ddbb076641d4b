"""Per-step cost of one three-body trajectory: physnode eager vs compiled steps vs scipy.

Figure-eight orbit, DOP853 at rtol = atol = 1e-12 over ``--periods`` periods with 20 outputs per
period: physnode's eager steps, ``options={"compile": True}`` (first call with its compile, then
a second call with the kernels cached) and scipy's ``solve_ivp(method="DOP853")`` on a NumPy
right-hand side, all in this run. Then Yoshida-4 (dt = T/2000) eager vs ``compile=True``.

    taskset -c 1 .venv/bin/python benchmarks/fused_step.py [--periods 100] [--yoshida-periods 2]

Times are wall seconds of one call each; "µs/step" is per accepted step (scipy: the steps its
own DOP853 takes, counted by stepping the solver class once more, untimed).
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import scipy.integrate
import torch

from physnode import solve
from physnode.solver.symplectic import integrate_symplectic
from physnode.systems import three_body

TOL = 1e-12


def _gravity_numpy(masses: np.ndarray, dim: int = 2):
    """``dy/dt`` of N point masses (G = 1) for scipy, the equations of ``NBody.forward``."""
    n = len(masses)
    eye, off = np.eye(n), 1 - np.eye(n)

    def rhs(_t, y):
        q = y[: n * dim].reshape(n, dim)
        d = q[None, :, :] - q[:, None, :]
        inv3 = ((d * d).sum(-1) + eye) ** -1.5 * off
        acc = (d * (inv3 * masses)[..., None]).sum(1)
        return np.concatenate([y[n * dim :], acc.reshape(-1)])

    return rhs


def _energy_error(system, ys: torch.Tensor) -> float:
    """``max_t |E(t) - E(0)| / |E(0)|`` over the output times."""
    e = system.energy(ys.to(torch.float64)).detach()
    return float(((e - e[0]).abs() / e[0].abs()).max())


def _physnode_row(system, y0, t, compile: bool) -> dict:
    start = time.perf_counter()
    with torch.no_grad():
        sol = solve(system, y0, t, rtol=TOL, atol=TOL, method="dop853",
                    options={"compile": True} if compile else None)  # fmt: skip
    wall = time.perf_counter() - start
    s = sol.stats
    return dict(wall=wall, compile=s.compile_seconds, acc=s.n_accepted, rej=s.n_rejected,
                err=_energy_error(system, sol.ys), ys=sol.ys)  # fmt: skip


def _scipy_row(system, y0, t) -> dict:
    rhs = _gravity_numpy(system.masses.detach().numpy())
    t_np, y_np = t.numpy(), y0.numpy()
    start = time.perf_counter()
    ref = scipy.integrate.solve_ivp(rhs, (t_np[0], t_np[-1]), y_np, method="DOP853",
                                    t_eval=t_np, rtol=TOL, atol=TOL)  # fmt: skip
    wall = time.perf_counter() - start
    solver = scipy.integrate.DOP853(rhs, t_np[0], y_np, t_np[-1], rtol=TOL, atol=TOL)
    acc = 0
    while solver.status == "running":
        solver.step()
        acc += 1
    ys = torch.from_numpy(ref.y.T.copy())
    return dict(wall=wall, compile=0.0, acc=acc, rej=None, err=_energy_error(system, ys), ys=ys)


def _dop853(periods: float) -> None:
    system, y0, period = three_body("figure-eight")
    t = torch.linspace(0, periods * period, round(20 * periods) + 1, dtype=torch.float64)
    with torch.no_grad():  # warm-up of the eager kernels (not of the compiled ones)
        solve(system, y0, t[:3], rtol=TOL, atol=TOL, method="dop853")
    rows = {
        "physnode eager": _physnode_row(system, y0, t, False),
        "physnode compile, 1st call": _physnode_row(system, y0, t, True),
        "physnode compile, cached": _physnode_row(system, y0, t, True),
        "scipy DOP853 (solve_ivp)": _scipy_row(system, y0, t),
    }
    scipy_wall = rows["scipy DOP853 (solve_ivp)"]["wall"]
    eager_ys = rows["physnode eager"]["ys"]
    print(
        f"\n## DOP853, rtol = atol = {TOL:g}, figure eight, {periods:g} periods, {len(t)} outputs"
    )
    print(
        f"{'solver':<28} {'wall s':>8} {'compile s':>9} {'accepted':>8} {'rejected':>8} "
        f"{'µs/step':>8} {'max dE/E':>9} {'x scipy':>7} {'max |dy| vs eager':>17}"
    )
    for name, r in rows.items():
        run = r["wall"] - r["compile"]
        rej = "" if r["rej"] is None else r["rej"]
        dy = float((r["ys"] - eager_ys).abs().max() / eager_ys.abs().max())
        print(
            f"{name:<28} {r['wall']:8.3f} {r['compile']:9.2f} {r['acc']:8d} {rej!s:>8} "
            f"{run / r['acc'] * 1e6:8.1f} {r['err']:9.2e} {run / scipy_wall:7.2f} {dy:17.2e}"
        )
    print("(µs/step and x scipy leave the compile out; 'wall s' includes it)")


def _yoshida(periods: float) -> None:
    system, y0, period = three_body("figure-eight")
    t = torch.linspace(0, periods * period, round(20 * periods) + 1, dtype=torch.float64)
    dt = period / 2000
    n_steps = round(periods * 2000)
    print(f"\n## Yoshida-4, dt = T/2000, figure eight, {periods:g} periods, {n_steps} steps")
    print(f"{'integrator':<28} {'wall s':>8} {'µs/step':>8} {'max dE/E':>9} {'speed-up':>8}")
    ref = None
    with torch.no_grad():
        for name, compile in (("eager", False), ("compile, 1st call", True),
                              ("compile, cached", True)):  # fmt: skip
            start = time.perf_counter()
            ys = integrate_symplectic(system, y0, t, dt, "yoshida4", compile=compile)
            wall = time.perf_counter() - start
            ref = ref if ref is not None else wall
            print(
                f"{name:<28} {wall:8.3f} {wall / n_steps * 1e6:8.1f} "
                f"{_energy_error(system, ys):9.2e} {ref / wall:8.2f}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--periods", type=float, default=100)
    parser.add_argument("--yoshida-periods", type=float, default=2)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(
        f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"scipy {scipy.__version__}, threads {torch.get_num_threads()}"
    )
    _dop853(args.periods)
    _yoshida(args.yoshida_periods)


if __name__ == "__main__":
    main()
