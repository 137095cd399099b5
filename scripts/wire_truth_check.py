#!/usr/bin/env python3
"""How right is the wire truth of tests/test_real_servers.py? Three other witnesses of the same requests.

For each server of tests/servers/openai_apps.py: runs it with its own timing log, captures its port
(tests/wire.py) and straces the listening process (`strace -f -ttt -T` on its reads and writes), drives it
with http.client (timing the client's side), then compares per request and per token:

- tokens: content events on the wire == tokens the server logged == content chunks the client got;
- each content event's wire time against the strace'd write that carried it (matched by the chunk's id and
  token text): the wire time must fall inside the write, between its entry and its return;
- each content event's wire time against the server's log (taken just before it handed the chunk to the
  framework);
- the request's first byte on the wire against the client's send, and the server's first read of it
  (the socket queue wait that issue 20 point 8 is about);
- time to first token: wire vs the client's (send to the first content line received).

Run as root (strace, tcpdump): python3 scripts/wire_truth_check.py [fastapi aiohttp ray]
"""
from __future__ import annotations

import http.client
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests import wire  # noqa: E402
from tests.servers import openai_apps  # noqa: E402
from tests.servers.nginx import free_port  # noqa: E402

STRACE_LINE = re.compile(r"^(\d+)\s+(\d+\.\d+) (\w+)\((\d+), (.*) <(\d+\.\d+)>$")
TOKEN = re.compile(r'"id":"([^"]+)".*?"(?:content|text)":"(tok\d+) ')


def _stats(name: str, values_ms: list[float]) -> str:
    if not values_ms:
        return f"{name}: none"
    v = sorted(values_ms)
    return (f"{name}: n={len(v)} median {statistics.median(v):+.3f} ms, min {v[0]:+.3f}, max {v[-1]:+.3f}, "
            f"p99 {v[min(len(v) - 1, int(0.99 * len(v)))]:+.3f}")


def check(kind: str, port: int | None = None) -> None:
    port = port or free_port()
    work = Path(tempfile.mkdtemp(prefix=f"wire-check-{kind}-"))
    log = work / "server.jsonl"
    with openai_apps.running(kind, port, str(log)) as pid:
        strace_out = work / "strace.txt"
        st = subprocess.Popen(["strace", "-f", "-ttt", "-T", "-s", "400", "-e",
                               "trace=read,recvfrom,recvmsg,write,writev,sendto,sendmsg", "-o", str(strace_out),
                               "-p", str(pid)], stderr=subprocess.PIPE, text=True)
        st.stderr.readline()  # "strace: Process N attached ..."
        clients = []
        with wire.Capture(port, str(work)) as cap:
            for i in range(12):
                body = {"model": "m", "stream": True, "max_tokens": 6 + i % 4,
                        "messages": [{"role": "user", "content": "hi"}]}
                if i % 2:
                    body["stream_options"] = {"include_usage": True}
                path = "/v1/chat/completions" if i % 3 else "/v1/completions"
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                payload = json.dumps(body).encode()
                times = []
                t_send = time.time_ns()
                conn.request("POST", path, body=payload, headers={"Content-Type": "application/json"})
                r = conn.getresponse()
                while line := r.readline():
                    if b'"tok' in line:
                        times.append(time.time_ns())
                conn.close()
                clients.append({"path": path, "t_send": t_send, "t_tokens": times})
            cap.stop()
        st.send_signal(2)
        st.wait(20)
    exchanges = [x for x in cap.exchanges() if x.streamed]
    logged = sorted((json.loads(line) for line in log.read_text().splitlines()), key=lambda e: e["t_request"])
    assert len(exchanges) == len(clients) == len(logged) == 12, (len(exchanges), len(clients), len(logged))

    # strace: the writes carrying each token (by chunk id and token), the first read of each connection's request
    writes: dict[tuple[str, str], tuple[float, float]] = {}
    reads = []
    for line in strace_out.read_text().splitlines():
        m = STRACE_LINE.match(line)
        if not m:
            continue
        _tid, ts, call, _fd, rest, dur = m.groups()
        t0, t1 = float(ts) * 1e9, (float(ts) + float(dur)) * 1e9
        if call in ("write", "writev", "sendto", "sendmsg"):
            for cid, tok in TOKEN.findall(rest.replace('\\"', '"')):
                writes.setdefault((cid, tok), (t0, t1))
        elif "POST /v1/" in rest:
            reads.append(t1)  # the read returned the request's first bytes

    tokens_ok = 0
    in_write, wire_minus_log, wire_minus_client, read_minus_wire, first_minus_send = [], [], [], [], []
    outside = 0
    ttft_client_minus_wire = []
    for x, c, e in zip(exchanges, clients, logged):
        content = x.content_events
        if len(content) == len(c["t_tokens"]) == e["n"] == x.expected_output_tokens:
            tokens_ok += 1
        for ev, t_log, t_client in zip(content, e["t_tokens"], c["t_tokens"]):
            choice = ev.json["choices"][0]
            cid, tok = ev.json["id"], (choice.get("delta") or {}).get("content") or choice.get("text")
            w = writes.get((cid, tok.strip()))
            if w:
                in_write.append((ev.ts_ns - w[0]) / 1e6)
                if not (w[0] <= ev.ts_ns <= w[1]):
                    outside += 1
                    if outside <= 3:
                        print(f"  outside: {cid} {tok.strip()}: write entry {w[0]:.0f} return {w[1]:.0f}, "
                              f"wire {ev.ts_ns}")
            wire_minus_log.append((ev.ts_ns - t_log) / 1e6)
            wire_minus_client.append((t_client - ev.ts_ns) / 1e6)
        first_minus_send.append((x.request_first_ns - c["t_send"]) / 1e6)
        later = [r for r in reads if r >= x.request_first_ns]
        if later:
            read_minus_wire.append((min(later) - x.request_first_ns) / 1e6)
        ttft_client_minus_wire.append(((c["t_tokens"][0] - c["t_send"]) - x.ttft_ns) / 1e6)
    print(f"== {kind}: 12 streams, {sum(len(x.content_events) for x in exchanges)} tokens (capture, strace, log: {work})")
    print(f"tokens: wire == server log == client on {tokens_ok}/12 streams")
    print(_stats("content event on the wire - its write() entry (strace)", in_write),
          f"; outside the write's [entry, return]: {outside}/{len(in_write)}")
    print(_stats("content event on the wire - server log (before handing it to the framework)", wire_minus_log))
    print(_stats("client got the token - its event on the wire", wire_minus_client))
    print(_stats("request's first byte on the wire - client's send", first_minus_send))
    print(_stats("server's first read returned - request's first byte on the wire (queueing)", read_minus_wire))
    print(_stats("TTFT client - TTFT wire", ttft_client_minus_wire))


if __name__ == "__main__":
    for k in sys.argv[1:] or ["fastapi", "aiohttp"]:
        check(k)
