"""The live view through the real CLI: what it reads from the kernel beside the metrics (the streams under way,
from the state of every followed connection). The figures the summary also has are checked through
--summary-json in test_trace.py and test_gpu.py."""
from __future__ import annotations

import http.client
import json
import re
import threading

import pytest

from tests.conftest import EbpftoolProcess

pytestmark = [pytest.mark.bpf, pytest.mark.timeout(120)]
STREAMS = 3


class SlowStream(threading.Thread):
    """A chat completion streaming 200 tokens 50 ms apart (10 s): `started` once its first token arrived."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port, self.started, self.done = port, threading.Event(), threading.Event()

    def run(self) -> None:
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        c.request("POST", "/v1/chat/completions", json.dumps({
            "model": "m-live", "stream": True, "max_tokens": 200, "ttft_ms": 10, "tpot_ms": 50,
            "messages": [{"role": "user", "content": "hi"}]}), {"Content-Type": "application/json"})
        r = c.getresponse()
        while not self.done.is_set():
            line = r.fp.readline()
            if not line:
                break
            if line.startswith(b"data:"):
                self.started.set()
        c.close()


def test_streams_under_way_are_counted_per_server(streaming_server, tmp_path):
    tool = EbpftoolProcess(["inference", "--port", str(streaming_server), "--interval", "1", "--ui"]).start()
    streams = [SlowStream(streaming_server) for _ in range(STREAMS)]
    try:
        for s in streams:
            s.start()
        for s in streams:
            assert s.started.wait(20), "a stream did not begin"
        assert tool.stop() == 0, tool.stderr  # the last frame: its export read the connections with 3 streams
    finally:
        for s in streams:
            s.done.set()
        if tool.proc.poll() is None:
            tool.stop()
    lines = tool.stdout.splitlines()
    header = next(line for line in lines if line.lstrip().startswith("port") and "streams" in line)
    row = next(line for line in lines if line.lstrip().startswith(str(streaming_server)))
    cells = dict(zip(re.split(r"\s{2,}", header.strip()), re.split(r"\s{2,}", row.strip())))
    assert cells["streams"] == str(STREAMS), (cells, tool.stdout)
    assert cells["req/s"] == "0.0"  # none has ended: the server is in the view for its streams alone
