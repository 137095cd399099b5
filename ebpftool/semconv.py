"""Every metric name, attribute key and bucket boundary ebpftool exports, in one place.

Names from the OpenTelemetry semantic conventions are used where they exist
(HTTP server, generative-AI server, network attributes, process, k8s, cloud).
Where none exists (network flows, CUDA calls, the tool's own health), names
live in ebpftool's own namespace, `ebpftool.*`, so they can never collide with
a future convention.

A module of its own, outside export/: the tracers and enrichment (ebpftool/enrich) name what they record
with it, and the exporters write it; none of them depends on another for the names.
"""
from __future__ import annotations

# --- resource -----------------------------------------------------------------
SERVICE_NAME = "service.name"
HOST_NAME = "host.name"
K8S_NODE_NAME = "k8s.node.name"
K8S_POD_NAME = "k8s.pod.name"
K8S_NAMESPACE_NAME = "k8s.namespace.name"
# also on inference spans and metrics, naming the serving process's Pod and container
K8S_POD_UID = "k8s.pod.uid"
CONTAINER_ID = "container.id"
CLOUD_AVAILABILITY_ZONE = "cloud.availability_zone"
CLOUD_REGION = "cloud.region"

# --- common attributes --------------------------------------------------------
PROCESS_PID = "process.pid"
PROCESS_EXECUTABLE_NAME = "process.executable.name"
ERROR_TYPE = "error.type"
NETWORK_TRANSPORT = "network.transport"
NETWORK_TYPE = "network.type"
NETWORK_PROTOCOL_VERSION = "network.protocol.version"
NETWORK_IO_DIRECTION = "network.io.direction"
NETWORK_LOCAL_ADDRESS = "network.local.address"
NETWORK_INTERFACE_DIRECTION = "network.interface.direction"
SERVER_PORT = "server.port"
CLIENT_ADDRESS = "client.address"
SOURCE_ADDRESS = "source.address"
SOURCE_PORT = "source.port"
DESTINATION_ADDRESS = "destination.address"
DESTINATION_PORT = "destination.port"
THREAD_ID = "thread.id"

# --- HTTP server (semantic conventions, stable) -------------------------------
HTTP_SERVER_REQUEST_DURATION = "http.server.request.duration"
HTTP_REQUEST_METHOD = "http.request.method"
HTTP_RESPONSE_STATUS_CODE = "http.response.status_code"
URL_PATH = "url.path"
HTTP_DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10)

# --- RPC server (semantic conventions, release candidate: the names of v1.38+, not rpc.system /
# rpc.service / rpc.server.duration in ms of v1.37 and before) ------------------------------------------
RPC_SERVER_CALL_DURATION = "rpc.server.call.duration"
RPC_SYSTEM_NAME = "rpc.system.name"
RPC_METHOD = "rpc.method"                      # fully qualified: package.Service/Method
RPC_RESPONSE_STATUS_CODE = "rpc.response.status_code"  # gRPC: the status code's name (OK, UNAVAILABLE, ...)
RPC_SERVER_CALL_DURATION_BUCKETS = HTTP_DURATION_BUCKETS
# ebpftool's own, for server-streaming RPCs (no convention measures them): the gRPC counterpart of time to
# first token, and the messages a call answered with
EBPFTOOL_RPC_TIME_TO_FIRST_MESSAGE = "ebpftool.rpc.server.time_to_first_message"
EBPFTOOL_RPC_RESPONSES_PER_RPC = "ebpftool.rpc.server.responses_per_rpc"
RPC_RESPONSES_PER_RPC_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)
EBPFTOOL_RPC_RESPONSE_MESSAGES = "ebpftool.rpc.response_messages"        # span attribute
EBPFTOOL_HTTP2_LOST_CONNECTIONS = "ebpftool.http2.server.lost_connections"

# --- generative AI, server side (semantic conventions, development) -----------
GEN_AI_SERVER_REQUEST_DURATION = "gen_ai.server.request.duration"
GEN_AI_SERVER_TIME_TO_FIRST_TOKEN = "gen_ai.server.time_to_first_token"
GEN_AI_SERVER_TIME_PER_OUTPUT_TOKEN = "gen_ai.server.time_per_output_token"
GEN_AI_OPERATION_NAME = "gen_ai.operation.name"
GEN_AI_REQUEST_MODEL = "gen_ai.request.model"
GEN_AI_RESPONSE_MODEL = "gen_ai.response.model"
GEN_AI_USAGE_INPUT_TOKENS = "gen_ai.usage.input_tokens"
GEN_AI_USAGE_OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
GEN_AI_TOKEN_TYPE = "gen_ai.token.type"
GEN_AI_REQUEST_DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)
GEN_AI_TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
GEN_AI_TPOT_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5)
# ebpftool's own: the conventions define token usage as a histogram per
# request; a plain counter of output tokens is what dashboards rate() over.
EBPFTOOL_GEN_AI_OUTPUT_TOKENS = "ebpftool.gen_ai.server.output_tokens"
EBPFTOOL_HTTP_UNPARSED_CONNECTIONS = "ebpftool.http.server.unparsed_connections"
EBPFTOOL_UNPARSED_REASON = "ebpftool.unparsed.reason"   # why: unknown_protocol, tls_without_known_library
EBPFTOOL_HTTP_CONNECTIONS = "ebpftool.http.server.connections"
EBPFTOOL_HTTP_UNTRACKED_CONNECTIONS = "ebpftool.http.server.untracked_connections"
EBPFTOOL_HTTP_METRICS_DROPPED = "ebpftool.http.server.metrics_dropped"
URL_SCHEME = "url.scheme"
CLIENT_PORT = "client.port"
# ebpftool's own span details of a streamed answer (no convention names them on a server span)
EBPFTOOL_GEN_AI_TIME_TO_FIRST_TOKEN = "ebpftool.gen_ai.time_to_first_token"
EBPFTOOL_GEN_AI_TIME_PER_OUTPUT_TOKEN = "ebpftool.gen_ai.time_per_output_token"
EBPFTOOL_GEN_AI_FIRST_TOKEN_EVENT = "ebpftool.gen_ai.first_token"
# HTTP/2: bytes of the answer's DATA not seen (each frame's past its first 512): events and a usage there are not counted
EBPFTOOL_GEN_AI_RESPONSE_UNSEEN_BYTES = "ebpftool.gen_ai.response.unseen_bytes"
EBPFTOOL_HTTP_PIPELINED = "ebpftool.http.pipelined"
# seconds from the arrival of a request's first byte (the span's start) to the server's first read of it
EBPFTOOL_HTTP_QUEUE_TIME = "ebpftool.http.server.queue_time"

# --- network flows (no accepted convention: ebpftool's namespace) -------------
EBPFTOOL_NETWORK_FLOW_IO = "ebpftool.network.flow.io"
EBPFTOOL_NETWORK_CROSS_ZONE_COST = "ebpftool.network.cross_zone.cost"
EBPFTOOL_NETWORK_TCP_RETRANSMITS = "ebpftool.network.tcp.retransmits"
EBPFTOOL_NETWORK_TCP_RTT = "ebpftool.network.tcp.rtt"
EBPFTOOL_NETWORK_TCP_CONNECTIONS = "ebpftool.network.tcp.connections"
EBPFTOOL_NETWORK_TCP_SEGMENTS = "ebpftool.network.tcp.segments"
SOURCE_CLOUD_AVAILABILITY_ZONE = "source.cloud.availability_zone"
DESTINATION_CLOUD_AVAILABILITY_ZONE = "destination.cloud.availability_zone"
SOURCE_CLOUD_REGION = "source.cloud.region"
DESTINATION_CLOUD_REGION = "destination.cloud.region"
NETWORK_FLOW_INTER_ZONE = "network.flow.inter_zone"
# The flow proposal's per-end Kubernetes attributes that a node agent knows without the API server
SOURCE_K8S_NODE_NAME = "source.k8s.node.name"
DESTINATION_K8S_NODE_NAME = "destination.k8s.node.name"
SOURCE_K8S_POD_UID = "source.k8s.pod.uid"
DESTINATION_K8S_POD_UID = "destination.k8s.pod.uid"
K8S_NODE_NAME_OF = {"source": SOURCE_K8S_NODE_NAME, "destination": DESTINATION_K8S_NODE_NAME}
K8S_POD_UID_OF = {"source": SOURCE_K8S_POD_UID, "destination": DESTINATION_K8S_POD_UID}
TCP_RTT_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
EBPFTOOL_NETWORK_CONNECTION_IO = "ebpftool.network.connection.io"
EBPFTOOL_NETWORK_FLOW_IO_LOST = "ebpftool.network.flow.io.lost"
EBPFTOOL_NETWORK_MAP_FULL = "ebpftool.network.map.full"
EBPFTOOL_NETWORK_CONNECTION_SENT_BYTES = "ebpftool.network.connection.sent_bytes"
EBPFTOOL_NETWORK_CONNECTION_RECEIVED_BYTES = "ebpftool.network.connection.received_bytes"
EBPFTOOL_NETWORK_CONNECTION_RETRANSMITS = "ebpftool.network.connection.retransmits"
EBPFTOOL_NETWORK_CONNECTION_SENT_SEGMENTS = "ebpftool.network.connection.sent_segments"
EBPFTOOL_NETWORK_CONNECTION_RECEIVED_SEGMENTS = "ebpftool.network.connection.received_segments"
EBPFTOOL_NETWORK_TCP_SRTT = "ebpftool.network.tcp.srtt"
NETWORK_LOCAL_PORT = "network.local.port"
NETWORK_PEER_ADDRESS = "network.peer.address"
NETWORK_PEER_PORT = "network.peer.port"

# --- CUDA runtime / driver calls (no convention: ebpftool's namespace) --------
EBPFTOOL_GPU_CALL_DURATION = "ebpftool.gpu.cuda.call.duration"
EBPFTOOL_GPU_CALLS = "ebpftool.gpu.cuda.calls"
EBPFTOOL_GPU_MEMCPY_BYTES = "ebpftool.gpu.cuda.memcpy.bytes"
EBPFTOOL_GPU_KERNEL_LAUNCHES = "ebpftool.gpu.cuda.kernel.launches"
EBPFTOOL_GPU_MEMORY_OUTSTANDING = "ebpftool.gpu.cuda.memory.outstanding"
EBPFTOOL_GPU_IOCTL_DURATION = "ebpftool.gpu.driver.ioctl.duration"
GPU_CALL_DURATION_BUCKETS = (0.000001, 0.000005, 0.00001, 0.00005, 0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0)
EBPFTOOL_GPU_MEMORY_REQUESTED = "ebpftool.gpu.cuda.memory.requested"
EBPFTOOL_GPU_IOCTLS = "ebpftool.gpu.driver.ioctls"
EBPFTOOL_GPU_FUNCTION = "ebpftool.gpu.cuda.function"
EBPFTOOL_GPU_LIBRARY = "ebpftool.gpu.cuda.library"
EBPFTOOL_GPU_NESTED = "ebpftool.gpu.cuda.nested"
EBPFTOOL_GPU_MEMCPY_DIRECTION = "ebpftool.gpu.cuda.memcpy.direction"
EBPFTOOL_GPU_MEMORY_TYPE = "ebpftool.gpu.cuda.memory.type"
EBPFTOOL_GPU_KERNEL_NAME = "ebpftool.gpu.cuda.kernel.name"
EBPFTOOL_GPU_STREAM = "ebpftool.gpu.cuda.stream"
EBPFTOOL_GPU_BYTES = "ebpftool.gpu.cuda.bytes"
EBPFTOOL_GPU_POINTER = "ebpftool.gpu.cuda.pointer"
EBPFTOOL_GPU_DEVICE = "ebpftool.gpu.driver.device"
EBPFTOOL_GPU_IOCTL_REQUEST = "ebpftool.gpu.driver.ioctl.request"

# --- the tool's own health -----------------------------------------------------
EBPFTOOL_EVENTS_LOST = "ebpftool.events.lost"
EBPFTOOL_SPANS_UNSAMPLED = "ebpftool.spans.unsampled"
EBPFTOOL_SPANS_DROPPED = "ebpftool.spans.dropped"
EBPFTOOL_EXPORT_BYTES = "ebpftool.export.bytes"
EBPFTOOL_EXPORT_FAILURES = "ebpftool.export.failures"
EBPFTOOL_TRACER = "ebpftool.tracer"
EBPFTOOL_MAP = "ebpftool.map"
EBPFTOOL_SIGNAL = "ebpftool.signal"

# --- generative AI, client side: the calls agents make (issue 27) ----------------------------------------
# Read 2026-12-06 from open-telemetry/semantic-conventions-genai (status Development): docs/gen-ai/
# gen-ai-metrics.md and mcp.md. One block, kept together: the agents tracer (ebpftool/tracers/agents)
# exports these; docs/agents.md lists each with its unit, buckets and attributes.
GEN_AI_CLIENT_OPERATION_DURATION = "gen_ai.client.operation.duration"                  # histogram, s
GEN_AI_CLIENT_TOKEN_USAGE = "gen_ai.client.token.usage"                                # histogram, {token}
GEN_AI_CLIENT_TIME_TO_FIRST_CHUNK = "gen_ai.client.operation.time_to_first_chunk"      # histogram, s; streams only
GEN_AI_CLIENT_TIME_PER_OUTPUT_CHUNK = "gen_ai.client.operation.time_per_output_chunk"  # histogram, s; streams only
# The conventions give all three time metrics the same doubling boundaries (the server's request duration's).
GEN_AI_CLIENT_DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96,
                                  81.92)
GEN_AI_CLIENT_CHUNK_BUCKETS = GEN_AI_CLIENT_DURATION_BUCKETS
GEN_AI_TOKEN_USAGE_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216,
                              67108864)
GEN_AI_PROVIDER_NAME = "gen_ai.provider.name"
GEN_AI_RESPONSE_FINISH_REASONS = "gen_ai.response.finish_reasons"
GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS = "gen_ai.usage.cache_read.input_tokens"
GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS = "gen_ai.usage.cache_creation.input_tokens"
GEN_AI_TOOL_NAME = "gen_ai.tool.name"
SERVER_ADDRESS = "server.address"
# MCP over streamable HTTP (docs/gen-ai/mcp.md)
MCP_CLIENT_OPERATION_DURATION = "mcp.client.operation.duration"                        # histogram, s
MCP_CLIENT_OPERATION_DURATION_BUCKETS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30, 60, 120, 300)
MCP_METHOD_NAME = "mcp.method.name"
# The JSON-RPC error code of an MCP answer; named apart from any rpc.* block of the RPC tracers.
MCP_RPC_RESPONSE_STATUS_CODE = "rpc.response.status_code"
# ebpftool's own: no convention prices a call. A counter of the estimated USD, by process, Pod, provider
# and model, from the price table (ebpftool/tracers/agents/prices.yaml).
EBPFTOOL_GEN_AI_CLIENT_COST = "ebpftool.gen_ai.client.cost"                            # counter, unit {USD}
# ebpftool's own span attributes of a client call (no convention names them on a span) and a counter of
# the calls whose answer gave no usage (compressed, cut, or a stream without a usage event).
EBPFTOOL_GEN_AI_CLIENT_TIME_TO_FIRST_CHUNK = "ebpftool.gen_ai.client.time_to_first_chunk"   # span, s
EBPFTOOL_GEN_AI_CLIENT_CHUNKS = "ebpftool.gen_ai.client.chunks"                             # span, content chunks
EBPFTOOL_GEN_AI_USAGE_COST = "ebpftool.gen_ai.usage.cost"                                   # span, USD
EBPFTOOL_GEN_AI_CLIENT_CALLS_WITHOUT_USAGE = "ebpftool.gen_ai.client.calls_without_usage"   # counter, {call}
