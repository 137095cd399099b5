"""A real nginx (Debian's nginx-light) on a loopback port, from a temporary config, as a subprocess."""
from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
PAGE = b"<html><body>hello from nginx</body></html>\n"

CONFIG = """
daemon off;
master_process on;
worker_processes {workers};
user root;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    keepalive_requests 1000000;
    server {{
        listen 127.0.0.1:{port}{tls};
        root {dir}/www;
        location / {{ }}
        location = /nginx_status {{ stub_status; }}
    }}
}}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port}")


MASTERS: dict[int, int] = {}  # port -> pid of the nginx master serving it (this process's servers only)


def master_pid(port: int) -> int:
    """The master process of the nginx that nginx_server() runs on this port (not another test run's nginx)."""
    return MASTERS[port]


@contextmanager
def nginx_server(port: int | None = None, workers: int = 1, tls: tuple[str, str] | None = None, http2: bool = False):
    """Yields the port of a running nginx serving /index.html (200) and nothing else (404); with tls (a
    certificate and its key, PEM files), over TLS only; with http2, HTTP/2 (in clear text: prior knowledge
    only; over TLS: ALPN h2)."""
    port = port or free_port()
    with tempfile.TemporaryDirectory(prefix="ebpftool-nginx-") as d:
        www = Path(d) / "www"
        www.mkdir()
        (www / "index.html").write_bytes(PAGE)
        conf = Path(d) / "nginx.conf"
        conf.write_text(CONFIG.format(dir=d, port=port, workers=workers,
                                       tls=(" http2" if http2 else "") +
                                       (f" ssl; ssl_certificate {tls[0]}; ssl_certificate_key {tls[1]}" if tls else "")))
        proc = subprocess.Popen([NGINX, "-c", str(conf), "-p", d], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        MASTERS[port] = proc.pid  # daemon off, master_process on: the process started is the master
        try:
            wait_listening(port)
            yield port
        finally:
            MASTERS.pop(port, None)
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
