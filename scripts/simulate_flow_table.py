#!/usr/bin/env python3
"""How many sockets an open-addressed table with linear probing refuses (bpf/net/flow_table.bpf.h,
bpf/inference/conn_table.bpf.h): N sockets open, then one closes and another opens, CHURN times; each new
one takes the first free of PROBES slots from a random home slot (the hash of its address), or is refused.

    python3 scripts/simulate_flow_table.py [--slots 65536] [--probes 8] [--churn 200000]
"""
from __future__ import annotations

import argparse
import random


def refused_share(n_open: int, slots: int, probes: int, churn: int, seed: int = 1) -> float:
    rnd = random.Random(seed)
    table = [False] * slots
    live: list[int] = []

    def insert() -> int | None:
        home = rnd.randrange(slots)
        for i in range(probes):
            slot = (home + i) % slots
            if not table[slot]:
                table[slot] = True
                return slot
        return None

    while len(live) < n_open:
        slot = insert()
        if slot is not None:
            live.append(slot)
    refused = 0
    for _ in range(churn):
        j = rnd.randrange(len(live))
        table[live[j]] = False
        live[j] = live[-1]
        live.pop()
        slot = insert()
        if slot is None:
            refused += 1
        else:
            live.append(slot)
    return refused / churn


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--slots", type=int, default=65536)
    ap.add_argument("--probes", type=int, default=8)
    ap.add_argument("--churn", type=int, default=200_000)
    opts = ap.parse_args()
    for fill in (0.25, 0.375, 0.5, 0.75):
        n = int(opts.slots * fill)
        print(f"{n:>7} open ({fill:.1%} of {opts.slots} slots): {refused_share(n, opts.slots, opts.probes, opts.churn):.2%} "
              f"of new sockets refused")


if __name__ == "__main__":
    main()
