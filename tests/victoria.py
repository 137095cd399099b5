"""A real VictoriaMetrics (Debian's package) scraping a Prometheus endpoint, queried over its HTTP API."""
from __future__ import annotations

import json
import socket
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class VictoriaMetrics:
    def __init__(self, scrape_port: int, scrape_interval: str = "1s") -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="ebpftool-vm-"))
        self.port = free_port()
        (self.dir / "scrape.yml").write_text(
            "scrape_configs:\n"
            "  - job_name: ebpftool\n"
            f"    scrape_interval: {scrape_interval}\n"
            f"    static_configs: [{{targets: ['127.0.0.1:{scrape_port}']}}]\n"
        )
        self.proc = subprocess.Popen(
            ["victoria-metrics", f"-storageDataPath={self.dir / 'data'}", f"-httpListenAddr=127.0.0.1:{self.port}",
             f"-promscrape.config={self.dir / 'scrape.yml'}", "-search.latencyOffset=0s", "-loggerLevel=ERROR"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=1)
                return
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError("victoria-metrics did not start")

    def query(self, promql: str) -> list[dict]:
        url = f"http://127.0.0.1:{self.port}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        with urllib.request.urlopen(url, timeout=5) as r:
            body = json.load(r)
        assert body["status"] == "success", body
        return body["data"]["result"]

    def wait_query(self, promql: str, predicate, timeout: float = 30) -> list[dict]:
        deadline = time.monotonic() + timeout
        result: list[dict] = []
        while time.monotonic() < deadline:
            result = self.query(promql)
            if predicate(result):
                return result
            time.sleep(0.5)
        return result

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        subprocess.run(["rm", "-rf", str(self.dir)], check=False)
