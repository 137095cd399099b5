"""What people see: the tracers' figures drawn as rich tables (the live view) and as the exit summary's rows.

The tracers hand typed figures (ebpftool.tracers.<name>.figures); nothing here reads the kernel.
"""
from ebpftool.ui.units import human_bytes
from ebpftool.ui.views import live_view, summary_rows

__all__ = ["human_bytes", "live_view", "summary_rows"]
