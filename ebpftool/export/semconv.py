"""The names moved to ebpftool/semconv.py (shared by tracers, enrichment and exporters): this module only
keeps `from ebpftool.export import semconv` working for the code that still imports it from here."""
from ebpftool.semconv import *  # noqa: F401,F403
