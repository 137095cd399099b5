"""The inference tracer: requests an inference server answers over HTTP/1.x, HTTP/2 or gRPC (see tracer.py).

plans: how it hooks in; tracer: start, housekeeping; spans and metrics: what it exports;
parsers: the captured bytes; sockets: /proc's TCP tables; figures: what the terminal shows.
"""
from ebpftool.tracers.inference.plans import (ARRIVAL_RAW_TRACEPOINT, PLANS, SEND_BTF_TRACEPOINT,
                                              SOCKET_RAW_TRACEPOINTS, recv_hook_btf_defines, send_hook_btf_defines)
from ebpftool.tracers.inference.sockets import parse_proc_net_tcp
from ebpftool.tracers.inference.tracer import (DEFAULT_CAPTURE_BYTES, DEFAULT_MAX_CONNECTIONS, InferenceOptions,
                                               InferenceTracer)

__all__ = ["ARRIVAL_RAW_TRACEPOINT", "DEFAULT_CAPTURE_BYTES", "DEFAULT_MAX_CONNECTIONS", "InferenceOptions",
           "InferenceTracer", "PLANS", "SEND_BTF_TRACEPOINT", "SOCKET_RAW_TRACEPOINTS", "parse_proc_net_tcp",
           "recv_hook_btf_defines", "send_hook_btf_defines"]
