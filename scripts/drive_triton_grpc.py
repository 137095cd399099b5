#!/usr/bin/env python3
"""Triton's gRPC frontend driven by NVIDIA's own client (`tritonclient.grpc`), each call logged by the client.

    /opt/rw/triton/bin/python scripts/drive_triton_grpc.py --port GRPC_PORT --out DIR

The server is `scripts/real_servers.py serve triton --port P` (gRPC on P+1): `tiny_once` answers once,
`tiny` is decoupled and sends max_tokens responses, one every 10 ms. The workload, all on one connection
unless said:
- 20 unary ModelInfer calls to `tiny_once` (max_tokens 2), 2 more answered with ~8 KB (1000 words at once);
- 10 ModelStreamInfer calls to `tiny`, one request each, 5 to 40 responses (with
  enable_empty_final_response: the last message is an empty one flagged final, so the client knows the
  call's responses are all in without waiting on a clock), then the client half-closes and the server ends
  the call with its trailers;
- 3 ModelStreamInfer calls at once on the same connection (three clients whose channels share gRPC's
  subchannel), then 3 at once each on a connection of its own, 12 responses each;
- 2 ModelStreamInfer calls whose 40 and 200 responses come in a burst (delay_ms 0);
- 1 ModelStreamInfer call carrying three requests (5, 10, 15 responses) one after the other;
- 2 ModelStreamInfer calls the client cancels after 5 of 40 responses, 2 unary calls past their deadline
  (client_timeout 0.1 s for 0.5 s of work): the client ends these (its status is its own, "client_ended");
- 1 ModelStreamInfer call to an unknown model (Triton answers in the stream: one message carrying the error);
- failing unary calls, 2 each: an unknown model, an input the model does not have, ModelInfer to the
  decoupled model.
DIR/grpc_client.jsonl gets one line per call: kind, method, model, start/end/first (time.time_ns() around
the call and at the first response), responses (every message the client got, the empty final one
included), status (the gRPC status's name), error, client_ended. Exit 1 with one sentence when the server does not answer.
"""
from __future__ import annotations

import argparse
import json
import queue
import sys
import threading
import time
from pathlib import Path

SERVICE = "inference.GRPCInferenceService"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--port", type=int, required=True, help="Triton's gRPC port")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--ready-timeout", type=float, default=60)
    ap.add_argument("--tls-ca", type=Path, help="TLS (the server's certificate's CA, a PEM file): the calls over TLS")
    a = ap.parse_args()
    try:
        import numpy as np
        import tritonclient.grpc as grpcclient
        from tritonclient.utils import InferenceServerException
    except ImportError as e:
        sys.exit(f"drive_triton_grpc: {e.name} is not installed here: run it with the triton venv's python "
                 f"(/opt/rw/triton/bin/python, `scripts/real_servers.py setup triton`)")
    a.out.mkdir(parents=True, exist_ok=True)
    log = (a.out / "grpc_client.jsonl").open("w")
    lock = threading.Lock()

    def write(rec: dict) -> None:
        with lock:
            log.write(json.dumps(rec) + "\n")
            log.flush()

    def inputs(n: int, name: str = "text_input", delay_ms: float | None = None):
        text = grpcclient.InferInput(name, [1], "BYTES")
        text.set_data_from_numpy(np.array([b"Tell me about free software."], dtype=object))
        mt = grpcclient.InferInput("max_tokens", [1], "INT32")
        mt.set_data_from_numpy(np.array([n], dtype=np.int32))
        if delay_ms is None:
            return [text, mt]
        delay = grpcclient.InferInput("delay_ms", [1], "FP32")
        delay.set_data_from_numpy(np.array([delay_ms], dtype=np.float32))
        return [text, mt, delay]

    def status_of(e: InferenceServerException) -> str:
        return (e.status() or "UNKNOWN").replace("StatusCode.", "")

    url = "localhost:%d" % a.port if a.tls_ca else f"127.0.0.1:{a.port}"
    tls = {"ssl": True, "root_certificates": str(a.tls_ca)} if a.tls_ca else {}
    client = grpcclient.InferenceServerClient(url, **tls)
    # Readiness on the traced connection: a logged call of its own (ServerReady), polled until true.
    deadline = time.monotonic() + a.ready_timeout
    while True:
        start = time.time_ns()
        try:
            ok, status = client.is_server_ready(), "OK"
        except InferenceServerException as e:
            ok, status = False, status_of(e)
        write({"kind": "ready", "method": f"{SERVICE}/ServerReady", "model": None, "start": start,
               "end": time.time_ns(), "first": None, "responses": 1 if status == "OK" else 0, "status": status})
        if ok:
            break
        if time.monotonic() > deadline:
            sys.exit(f"drive_triton_grpc: Triton's gRPC port {a.port} was not ready within {a.ready_timeout:.0f} s")
        time.sleep(0.2)

    def unary(kind: str, model: str, ins, timeout: float | None = None) -> None:
        start = time.time_ns()
        status, error = "OK", None
        try:
            client.infer(model, ins, client_timeout=timeout)
        except InferenceServerException as e:
            status, error = status_of(e), e.message()
        end = time.time_ns()
        write({"kind": kind, "method": f"{SERVICE}/ModelInfer", "model": model, "start": start, "end": end,
               "first": end if status == "OK" else None, "responses": 1 if status == "OK" else 0,
               "status": status, "error": error, "client_ended": timeout is not None})

    def stream(c, kind: str, model: str, *ns: int, delay_ms: float | None = None, cancel_after: int = 0) -> None:
        """One ModelStreamInfer call carrying a request per n in ns, each sent once the last one's final
        response is in; with cancel_after, the client cancels the call after that many responses."""
        got: queue.Queue = queue.Queue()

        def callback(result, error):
            got.put((time.time_ns(), result, error))

        start = time.time_ns()
        c.start_stream(callback=callback)
        first, responses, errors = None, 0, []
        for n in ns:
            c.async_stream_infer(model, inputs(n, delay_ms=delay_ms), enable_empty_final_response=True)
            final = False
            while not final and not (cancel_after and responses >= cancel_after):
                t, result, error = got.get(timeout=60)
                first = first or t
                responses += 1
                if error is not None:
                    errors.append(error.message())
                    final = True   # an in-band error ends this request's responses
                else:
                    final = result.get_response().parameters["triton_final_response"].bool_param
        # Half-close: the server ends the call (trailers) once the request side is done; or cancel (RST_STREAM).
        c.stop_stream(cancel_requests=bool(cancel_after))
        end = time.time_ns()
        write({"kind": kind, "method": f"{SERVICE}/ModelStreamInfer", "model": model, "start": start, "end": end,
               "first": first, "responses": responses, "requested": list(ns),
               "status": "CANCELLED" if cancel_after else "OK", "error": errors[0] if errors else None,
               "client_ended": bool(cancel_after)})

    for i in range(20):
        unary("unary", "tiny_once", inputs(2))
    for i in range(2):   # an answer of ~8 KB: one message longer than the 512 bytes of DATA the kernel sends on
        unary("unary_large", "tiny_once", inputs(1000, delay_ms=0))
    for i in range(10):
        stream(client, "stream", "tiny", 5 + round(i * 35 / 9))
    # Channels to one target with the same arguments share gRPC's subchannel, so one connection: three streams
    # at once on it; then three with a subchannel pool of their own each, so three connections more.
    for kind, args in (("concurrent_one_connection", None),
                       ("concurrent_own_connection", [("grpc.use_local_subchannel_pool", 1)])):
        others = [grpcclient.InferenceServerClient(url, channel_args=args, **tls) for _ in range(3)]
        threads = [threading.Thread(target=stream, args=(c, kind, "tiny", 12)) for c in others]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for c in others:
            c.close()
    # Responses with no gap between them (would gRPC pack many messages into one DATA frame?).
    for n in (40, 200):
        stream(client, "burst", "tiny", n, delay_ms=0)
    stream(client, "three_requests", "tiny", 5, 10, 15)   # one call, three requests one after the other
    for i in range(2):
        stream(client, "cancelled", "tiny", 40, cancel_after=5)
        unary("deadline", "tiny_once", inputs(50), timeout=0.1)   # 500 ms of work, 100 ms allowed
    stream(client, "stream_unknown_model", "no_such_model", 1)
    for i in range(2):
        unary("unknown_model", "no_such_model", inputs(1))
        unary("bad_input", "tiny_once", inputs(1, name="no_such_input"))
        unary("unary_to_decoupled", "tiny", inputs(1))
    client.close()
    log.close()
    print(f"drive_triton_grpc: done -> {a.out / 'grpc_client.jsonl'}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
