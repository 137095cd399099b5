"""The machinery every tracer stands on: loading BPF programs (bpf, btf, cstruct), attach plans (plan),
reading /proc (procfs), the tracer base and the run loop (tracer, runner).

Nothing here imports the export layer, the tracers or the UI: the run loop and tracers send their
records to the small Telemetry interface of core/telemetry.py.
"""
