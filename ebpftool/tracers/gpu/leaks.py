"""CUDA allocations a process never freed, for the leak report (--leak-report) and the summary."""
from __future__ import annotations

from dataclasses import dataclass, field

LEAKS_KEPT_PER_PROCESS = 1000   # allocations listed per exited process; the rest are only summed


@dataclass
class Allocation:
    pid: int
    pointer: int
    size: int
    function: str
    memory_type: str
    thread_id: int
    age_seconds: float

    def to_dict(self) -> dict:
        return {"pointer": hex(self.pointer), "size": self.size, "function": self.function,
                "memory_type": self.memory_type, "thread_id": self.thread_id,
                "age_seconds": round(self.age_seconds, 3)}


@dataclass
class ProcessLeaks:
    """Allocations a process never freed: at its exit, or still held when the tracer stops."""

    pid: int
    executable: str
    exited: bool
    allocations: list[Allocation] = field(default_factory=list)
    count: int = 0
    bytes: int = 0

    def add(self, a: Allocation) -> None:
        self.count += 1
        self.bytes += a.size
        if len(self.allocations) < LEAKS_KEPT_PER_PROCESS:
            self.allocations.append(a)

    def to_dict(self) -> dict:
        return {"pid": self.pid, "executable": self.executable, "exited": self.exited, "count": self.count,
                "bytes": self.bytes, "allocations": [a.to_dict() for a in self.allocations]}
