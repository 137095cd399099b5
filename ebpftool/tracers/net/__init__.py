"""The net tracer: bytes per zone pair and per process, cross-zone cost, retransmits and RTT (see tracer.py).

plans: how it hooks in; tracer: start and reading the maps; flows: the export's keys and attributes;
zones: addresses to zones and prices; figures: what the terminal shows.
"""
from ebpftool.tracers.net.flows import FlowGroup, ProcessIdentity, Totals, address_from_bytes, group_of, k8s_attrs
from ebpftool.tracers.net.plans import IO_TRACEPOINTS, KPROBE_FUNCTIONS, OPTIONAL_TRACEPOINTS, PLANS
from ebpftool.tracers.net.tracer import NetOptions, NetTracer, net_program

__all__ = ["FlowGroup", "IO_TRACEPOINTS", "KPROBE_FUNCTIONS", "NetOptions", "NetTracer", "OPTIONAL_TRACEPOINTS",
           "PLANS", "ProcessIdentity", "Totals", "address_from_bytes", "group_of", "k8s_attrs", "net_program"]
