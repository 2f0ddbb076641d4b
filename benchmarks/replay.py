"""ACA replay paths: step-by-step vs batched (torch.func.vmap) backward time by state size.

Measures what the ``replay="auto"`` cost model in ``physnode.solver.gradients.aca`` is built on:
the state size up to which the batched replay pays. Model: a damped chain of D/2 masses with a
learnable stiffness (a user's module as is, no flags), dopri5 at rtol=atol=1e-8, 20 outputs.

    python benchmarks/replay.py [--dims 4 12 24 32 48 64] [--repeats 3]
"""

from __future__ import annotations

import argparse
import platform
import time

import torch
from torch import nn

from physnode import solve
from physnode.solver import RK_METHODS
from physnode.solver.gradients import aca
from physnode.solver.options import SolverOptions


class Chain(nn.Module):
    def __init__(self, n: int) -> None:
        super().__init__()
        self.n = n
        self.k = nn.Parameter(torch.tensor(1.3, dtype=torch.float64))

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        q, v = y[: self.n], y[self.n :]
        lap = torch.roll(q, 1) + torch.roll(q, -1) - 2 * q
        return torch.cat([v, self.k * lap - 0.1 * v + 0.05 * torch.sin(t) * q.norm()])


def _time(d: int, replay: str, repeats: int) -> tuple[float, int]:
    model = Chain(d // 2)
    y0 = torch.linspace(-1, 1, d, dtype=torch.float64).sin()
    t = torch.linspace(0.0, 10.0, 20, dtype=torch.float64)
    best, steps = float("inf"), 0
    for _ in range(repeats):
        model.zero_grad()
        start = time.perf_counter()
        sol = solve(model, y0, t, rtol=1e-8, atol=1e-8, options={"replay": replay})
        sol.ys.square().sum().backward()
        best = min(best, time.perf_counter() - start)
        steps = sol.stats.n_checkpoints
    return best, steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dims", nargs="+", type=int, default=[4, 12, 24, 32, 48, 64])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(1)
    print(f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, 1 thread")
    print("| D | steps | sequential s | batched s | batched/sequential | auto picks |")
    print("|---|---|---|---|---|---|")
    tab = RK_METHODS["dopri5"]
    for d in args.dims:
        seq, steps = _time(d, "sequential", args.repeats)
        bat, _ = _time(d, "batched", args.repeats)
        y = torch.zeros(d, dtype=torch.float64)

        pick = "batched" if aca.choose_replay(SolverOptions(), tab, y, steps) else "sequential"
        print(f"| {d} | {steps} | {seq:.3f} | {bat:.3f} | {bat / seq:.2f} | {pick} |")


if __name__ == "__main__":
    main()
