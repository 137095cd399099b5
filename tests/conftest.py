"""Shared fixtures: a real OTLP receiver, and ebpftool run as a real process."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from tests.otlp_receiver import GrpcReceiver, HttpReceiver

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def grpc_receiver():
    r = GrpcReceiver()
    yield r
    r.stop()


@pytest.fixture
def http_receiver():
    r = HttpReceiver()
    yield r
    r.stop()


@pytest.fixture
def streaming_server(tmp_path):
    """tests/servers/streaming_server.py on a free port: the port."""
    from tests.servers.nginx import free_port

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "tests.servers.streaming_server", str(port), str(tmp_path / "t.jsonl")],
                            cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    yield port
    proc.terminate()
    proc.wait(10)


@pytest.fixture
def pod_cgroups():
    """A maker of made-up Pods: each call makes one Pod with one container and returns (Pod UID,
    container id, the container's cgroup directory), cgroup v2 directories named as the kubelet's
    systemd driver and containerd name them (the UID with underscores), under a root of the test's own
    (never the node's real kubepods.slice), for processes the test starts there. Removed at the end."""
    mounts = [line.split() for line in Path("/proc/mounts").read_text().splitlines()]
    roots = [m[1] for m in mounts if m[2] == "cgroup2"]
    if not roots:
        pytest.skip("no cgroup v2 hierarchy mounted to make a Pod's cgroup in")
    top = Path(roots[0], f"ebpftool-test-{os.getpid()}.slice")
    made: list[Path] = []

    def make() -> tuple[str, str, str]:
        uid, container_id = str(uuid.uuid4()), uuid.uuid4().hex * 2
        container = (top / "kubepods.slice" / "kubepods-besteffort.slice" /
                     f"kubepods-besteffort-pod{uid.replace('-', '_')}.slice" / f"cri-containerd-{container_id}.scope")
        container.mkdir(parents=True)
        made.append(container)
        return uid, container_id, str(container)

    yield make
    for container in made:
        for d in [container, *container.parents]:  # the directories made above, innermost first
            try:
                d.rmdir()
            except OSError:
                pass  # still in use by a process that has not exited yet, or shared with another Pod
            if d == top:
                break


IS_ROOT = os.geteuid() == 0
NEEDS_ROOT = {
    "bpf": "needs root: loads real BPF programs (run the suite as root, see README)",
    "root": "needs root: runs ebpftool past its privilege check, or uses setpriv, raw capture or /proc files only root reads",
}


def pytest_collection_modifyitems(config, items):
    """Tests marked `bpf` or `root` (pyproject.toml) are skipped with the reason when not root, so that the rest
    (parsers, config, zones, k8s, export, pipeline, the CLI's declarations) runs as any user in seconds."""
    if IS_ROOT:
        return
    for item in items:
        for name, reason in NEEDS_ROOT.items():
            if item.get_closest_marker(name):
                item.add_marker(pytest.mark.skip(reason=reason))
                break


# --- what this kernel offers, probed here (not taken from ebpftool), so that tests assert the plan it should get --
TRACEFS_DIRS = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")
# The inference tracer's socket hooks (--hooks socket / socket-raw) need these; Linux 6.3 added the first two.
SOCKET_HOOK_TRACEPOINTS = ("sock:sock_recv_length", "sock:sock_send_length", "sock:inet_sock_set_state")


def tracefs() -> str | None:
    """The tracefs directory, mounted if absent (as ebpftool does: a fresh machine may not have it)."""
    for d in TRACEFS_DIRS:
        if os.path.isdir(os.path.join(d, "events")):
            return d
    if IS_ROOT:
        subprocess.run(["mount", "-t", "tracefs", "nodev", TRACEFS_DIRS[0]], capture_output=True)
        if os.path.isdir(os.path.join(TRACEFS_DIRS[0], "events")):
            return TRACEFS_DIRS[0]
    return None


def kernel_has_tracepoint(tp: str) -> bool:
    category, event = tp.split(":", 1)
    d = tracefs()
    return d is not None and os.path.isdir(os.path.join(d, "events", category, event))


def kernel_has_kprobes() -> bool:
    """Built with CONFIG_KPROBES: tracefs then lists kprobe_events."""
    d = tracefs()
    return d is not None and os.path.exists(os.path.join(d, "kprobe_events"))


def kernel_has_btf() -> bool:
    return os.path.exists("/sys/kernel/btf/vmlinux")


def skip_unless_kernel_offers(args: list[str]) -> None:
    """Skip (with the reason) a run of `ebpftool ARGS` that asks for a way in this kernel lacks."""
    if "--hooks" in args and args[args.index("--hooks") + 1] in ("socket", "socket-raw"):
        missing = [tp for tp in SOCKET_HOOK_TRACEPOINTS if not kernel_has_tracepoint(tp)]
        if missing:
            pytest.skip(f"--hooks {args[args.index('--hooks') + 1]} needs the tracepoint(s) {', '.join(missing)} "
                        f"(Linux 6.3+), which this kernel lacks")


def skip_unless_kernel_notes_arrivals() -> None:
    """Skip a test of requests starting at their bytes' arrival where the kernel has no sock:sk_data_ready
    (before Linux 6.7): requests start at their read there, as the README says."""
    if not kernel_has_tracepoint("sock:sk_data_ready"):
        pytest.skip("a request's arrival needs the sock:sk_data_ready tracepoint (Linux 6.7+), which this kernel lacks")


@pytest.fixture(scope="session")
def doctor_report():
    """`ebpftool doctor`'s probe of this kernel, in process (loads its small programs once per session)."""
    from ebpftool.doctor import probe_kernel

    return probe_kernel()


SUMMARY_COMMANDS = ("inference", "net", "gpu", "trace")   # the commands with --summary-json


class EbpftoolProcess:
    """`python -m ebpftool ARGS` in the background; ready once its probes are attached."""

    def __init__(self, args: list[str], env: dict | None = None, ready_marker: str = "probes attached",
                 ready_count: int = 1) -> None:
        self._summary_path: str | None = None
        self._summary: dict | None = None
        if args and args[0] in SUMMARY_COMMANDS and "--summary-json" not in args:
            fd, self._summary_path = tempfile.mkstemp(prefix="ebpftool-summary-", suffix=".json")
            os.close(fd)
            os.unlink(self._summary_path)   # ebpftool refuses to overwrite a file it did not make
            args = [*args, "--summary-json", self._summary_path]
        self.args = args
        self.env = {**os.environ, "COLUMNS": "200", **(env or {})}
        self.ready_marker = ready_marker
        self.ready_count = ready_count
        self.proc: subprocess.Popen | None = None
        self.stdout = ""
        self.stderr = ""
        self._err_lines: list[str] = []

    def start(self, timeout: float = 60.0) -> "EbpftoolProcess":
        skip_unless_kernel_offers(self.args)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ebpftool", *self.args], cwd=ROOT, env=self.env,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        deadline = time.monotonic() + timeout
        seen = 0
        while time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            if not line:
                if self.proc.poll() is not None:
                    break
                continue
            self._err_lines.append(line)
            if self.ready_marker in line:
                seen += 1
                if seen >= self.ready_count:
                    return self
        self.stop()
        raise AssertionError(f"ebpftool did not get ready: rc={self.proc.returncode}\n{self.stderr}\n{self.stdout}")

    def summary(self) -> dict:
        """The run's --summary-json (after stop() or wait()): the figures, as scripts read them."""
        assert self._summary_path, "no --summary-json for this command"
        with open(self._summary_path) as f:
            data = json.load(f)
        os.unlink(self._summary_path)
        self._summary_path = None
        self._summary = data
        return data

    def figures(self, tracer: str) -> dict:
        """One tracer's figures from the summary JSON (read once)."""
        if self._summary is None:
            self.summary()
        return self._summary["tracers"][tracer]

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.wait(timeout)

    def wait(self, timeout: float = 60.0) -> int:
        try:
            out, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, err = self.proc.communicate()
        self.stdout = out or ""
        self.stderr = "".join(self._err_lines) + (err or "")
        return self.proc.returncode

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        if self.proc and self.proc.poll() is None:
            self.stop()


def run_ebpftool(args: list[str], timeout: float = 120.0, env: dict | None = None) -> subprocess.CompletedProcess:
    skip_unless_kernel_offers(args)
    return subprocess.run([sys.executable, "-m", "ebpftool", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "COLUMNS": "200", **(env or {})})


def assert_started_at_arrival(spans, waits_ns: list[int], delay_s: float) -> None:
    """Spans of requests a server read delay_s late (tests.servers.split_relay.late_reader; its first request's
    first 24 bytes at once), in order, against what the client waited for each: each starts at its bytes'
    arrival, so it lasts about as long as the client waited (not the few ms from the late read to the answer),
    and the later ones say how long their bytes waited."""
    from ebpftool import semconv as sc
    assert len(spans) == len(waits_ns), [(s.name, s.attributes) for s in spans]
    for span, waited in zip(spans, waits_ns):
        measured = span.end_ns - span.start_ns
        assert waited // 2 <= measured <= waited + max(1_000_000, waited // 50), (measured, waited)
    for span in spans[1:]:
        assert span.attributes[sc.EBPFTOOL_HTTP_QUEUE_TIME] >= delay_s * 0.95, span.attributes


def inference_args(port: int, receiver, hooks: str) -> list[str]:
    """`ebpftool inference` on port with these --hooks, exporting to a test receiver over gRPC each second."""
    return ["inference", "--port", str(port), "--otlp-endpoint", receiver.endpoint, "--otlp-protocol", "grpc",
            "--interval", "1", "--no-ui", "--hooks", hooks]
