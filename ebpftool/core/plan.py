"""Attach plans: the ways a tracer can hook into a kernel, in order of preference.

Each tracer declares its plans once (ebpftool.tracers.<name>.plans.PLANS); its start() takes the
first one the running kernel allows and `ebpftool doctor` walks the same list to say which that is.
A plan names the tracepoints it needs, the kernel features it needs (names of doctor's checks, such
as "tp_btf") and the compile-time defines that select it in the tracer's C program.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping


@dataclass(frozen=True)
class Plan:
    name: str                                   # the tracer's short name for it (shown in its summary)
    description: str                            # what doctor prints as the attach method
    tracepoints: tuple[str, ...]                # "category:event", all needed
    features: tuple[str, ...] = ()              # kernel features needed (doctor's names)
    optional: tuple[str, ...] = ()              # tracepoints used where present
    defines: Mapping[str, int] = field(default_factory=dict)  # what selects it in the C program

    def missing(self, features: Mapping[str, bool], tracepoint_exists: Callable[[str], bool],
                unknown_ok: bool = False) -> list[str]:
        """What the kernel lacks for this plan ([] when it can be used). A feature absent from
        `features` counts as present when unknown_ok (not probed: the load will tell)."""
        out = [tp for tp in self.tracepoints if not tracepoint_exists(tp)]
        out += [f"feature {f}" for f in self.features if not features.get(f, unknown_ok)]
        return out

    def present(self, tracepoint_exists: Callable[[str], bool]) -> list[str]:
        """The tracepoints it would attach: the needed ones and the optional ones the kernel has."""
        return [*self.tracepoints, *(tp for tp in self.optional if tracepoint_exists(tp))]


def usable(plans: Iterable[Plan], features: Mapping[str, bool], tracepoint_exists: Callable[[str], bool],
           unknown_ok: bool = False) -> tuple[list[Plan], list[str]]:
    """The plans this kernel allows, in order, and why each other one is not (one line per plan)."""
    ok, why_not = [], []
    for plan in plans:
        missing = plan.missing(features, tracepoint_exists, unknown_ok)
        if missing:
            why_not.append(f"{plan.description}: missing {', '.join(missing)}")
        else:
            ok.append(plan)
    return ok, why_not
