"""Two ranks of :mod:`physnode.distributed` alone, launched by hand (no torchrun agent to
clean up): rank 1 ``hang``s (alive and silent) or ``die``s before the final gather, as the
first argument says; rank 0 prints what the gather gave and exits 3 on DistributedError."""

from __future__ import annotations

import os
import sys
import time

from physnode.distributed import DistributedError, all_gather, process_group, world_from_env

if __name__ == "__main__":
    mode = sys.argv[1]
    world = world_from_env()
    with process_group(world):
        if world.rank == 1 and mode == "hang":
            time.sleep(120)
        if world.rank == 1 and mode == "die":
            os._exit(1)
        try:
            print("gathered", all_gather(world.rank, world), flush=True)
        except DistributedError as exc:
            print(f"DistributedError: {exc}", flush=True)
            sys.exit(3)
