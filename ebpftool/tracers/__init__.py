"""The tracers, one package each: inference/, net/, gpu/ (their C in bpf/).

Each package holds its attach plans (plans.py, walked by start() and by `ebpftool doctor`), its
tracer (tracer.py, on ebpftool.core.tracer.Tracer through base.BpfTracer) and its figures for
people (figures.py, drawn by ebpftool.ui). A tracer hands spans and metric points to the export
layer and never draws anything itself.
"""
