"""ebpftool: eBPF observability for AI-infrastructure nodes, exported as OpenTelemetry."""

import os

__version__ = "0.1.0"

# The directory this package was imported from (an environment's site-packages, or a checkout). Python
# children (`python -m` / `-c`) run there: their interpreter puts its current directory first on sys.path,
# so they import this same ebpftool, never an `ebpftool` package in the directory root started us from.
IMPORT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
