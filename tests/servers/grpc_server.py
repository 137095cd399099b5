"""A gRPC server (grpcio, the real HTTP/2 stack of gRPC's C core) with a unary, a server-streaming and a
failing method, which logs its own view of each call.

    python -m tests.servers.grpc_server PORT CALLS.jsonl [--tls CERT KEY]

Service `ebpftool.test.Infer` (raw bytes, no generated code):
- Unary: answers with the request's bytes reversed.
- Generate: server streaming; the request is JSON {"messages": N, "gap_ms": G, "size": S}: N messages of S
  bytes, G ms apart (a token stream, as Triton's decoupled models send over ModelStreamInfer).
- Fail: aborts with the status named by the request (e.g. b"UNAVAILABLE").
For each call one JSON line: method, the server's monotonic times (seconds) of the handler's start, of each
message written and of its end, and the status it returned.
"""
from __future__ import annotations

import json
import sys
import threading
import time
from concurrent import futures

import grpc

SERVICE = "ebpftool.test.Infer"


class _Log:
    def __init__(self, path: str) -> None:
        self.f = open(path, "a", buffering=1)
        self.lock = threading.Lock()

    def write(self, record: dict) -> None:
        with self.lock:
            self.f.write(json.dumps(record) + "\n")


def _handlers(log: _Log) -> grpc.GenericRpcHandler:
    def unary(request: bytes, context) -> bytes:
        start = time.monotonic()
        answer = request[::-1]
        log.write({"method": "Unary", "start": start, "end": time.monotonic(), "status": "OK", "messages": 1})
        return answer

    def generate(request: bytes, context):
        start = time.monotonic()
        spec = json.loads(request or b"{}")
        n, gap, size = int(spec.get("messages", 5)), float(spec.get("gap_ms", 5)) / 1000, int(spec.get("size", 16))
        written = []
        for i in range(n):
            if i:
                time.sleep(gap)
            written.append(time.monotonic())
            yield (b"%06d" % i + b"x" * size)[:max(size, 6)]
        log.write({"method": "Generate", "start": start, "writes": written, "end": time.monotonic(),
                   "status": "OK", "messages": n})

    def fail(request: bytes, context) -> bytes:
        start = time.monotonic()
        code = getattr(grpc.StatusCode, request.decode() or "UNAVAILABLE")
        log.write({"method": "Fail", "start": start, "end": time.monotonic(), "status": code.name, "messages": 0})
        context.abort(code, "failing on purpose")

    return grpc.method_handlers_generic_handler(SERVICE, {
        "Unary": grpc.unary_unary_rpc_method_handler(unary),
        "Generate": grpc.unary_stream_rpc_method_handler(generate),
        "Fail": grpc.unary_unary_rpc_method_handler(fail),
    })


def main() -> None:
    port, path = int(sys.argv[1]), sys.argv[2]
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    server.add_generic_rpc_handlers((_handlers(_Log(path)),))
    if len(sys.argv) > 3 and sys.argv[3] == "--tls":
        cert, key = open(sys.argv[4], "rb").read(), open(sys.argv[5], "rb").read()
        server.add_secure_port(f"127.0.0.1:{port}", grpc.ssl_server_credentials([(key, cert)]))
    else:
        server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    print("ready", flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    main()
