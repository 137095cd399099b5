"""A server of the tests run as its own process: started, awaited until ready, stopped."""
from __future__ import annotations

import contextlib
import subprocess

from tests.servers.nginx import wait_listening


@contextlib.contextmanager
def serving(args: list[str], port: int, ready_line: bool = False):
    """Runs args, a server for port; yields port once it is ready: once it printed "ready" (ready_line), else
    once something listens on the port. Terminates it at the end."""
    proc = subprocess.Popen(args, stdout=subprocess.PIPE if ready_line else subprocess.DEVNULL, text=True)
    try:
        if ready_line:
            assert proc.stdout.readline().strip() == "ready", args
        wait_listening(port)
        yield port
    finally:
        proc.terminate()
        proc.wait(10)
