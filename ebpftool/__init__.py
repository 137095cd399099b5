"""ebpftool: eBPF observability for AI-infrastructure nodes, exported as OpenTelemetry."""

__version__ = "0.1.0"
