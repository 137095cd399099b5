"""What this node knows about Kubernetes without asking the API server.

- This node's and this agent's own names come from downward-API variables that the
  DaemonSet sets (deploy/daemonset.yaml).
- The Pod of a local process comes from its cgroup path: the kubelet puts every
  container of a Pod under a cgroup named after the Pod's UID, whatever the cgroup
  driver (cgroupfs or systemd), the runtime or the cgroup version. Names of Pods and
  namespaces are not in the cgroup path; mapping a UID to them needs the API server.

Pure functions on text, so unit tests can feed them paths.
"""
from __future__ import annotations

import os
import re
import time
from typing import Mapping

from ebpftool.export import semconv as sc

# Downward-API variables people set in Pod specs, first match wins.
NODE_NAME_ENV = ("K8S_NODE_NAME", "NODE_NAME", "KUBE_NODE_NAME")
POD_NAME_ENV = ("K8S_POD_NAME", "POD_NAME", "HOSTNAME_POD")
NAMESPACE_NAME_ENV = ("K8S_NAMESPACE_NAME", "POD_NAMESPACE", "K8S_NAMESPACE")

# A Pod's cgroup, as the kubelet names it, is one path component:
#   cgroupfs driver: .../kubepods/burstable/pod0f1b5c7e-2c4d-4e8f-9a0b-1c2d3e4f5a6b/<container>
#   systemd driver:  .../kubepods-burstable-pod0f1b5c7e_2c4d_4e8f_9a0b_1c2d3e4f5a6b.slice/cri-containerd-<id>.scope
# Guaranteed Pods sit directly under kubepods; nested set-ups such as kind prefix the path. The component is
# matched, not the kubepods prefix: an agent in its own cgroup namespace sees other Pods' paths relative to
# its own (/../../besteffort/pod<UID>/<container>), where the prefix may be gone.
_UID = r"[0-9a-f]{8}(?P<sep>[-_])[0-9a-f]{4}(?P=sep)[0-9a-f]{4}(?P=sep)[0-9a-f]{4}(?P=sep)[0-9a-f]{12}"
_POD_COMPONENT = re.compile(r"(?:.*-)?pod(?P<uid>" + _UID + r")(?:\.slice)?")


def env_value(names: tuple[str, ...], environ: Mapping[str, str] | None = None) -> str | None:
    """The first of these variables that is set and not empty."""
    env = os.environ if environ is None else environ
    for name in names:
        if env.get(name):
            return env[name]
    return None


def node_name(environ: Mapping[str, str] | None = None) -> str | None:
    return env_value(NODE_NAME_ENV, environ)


def pod_uid_of_cgroup(text: str) -> str | None:
    """The Pod UID in /proc/PID/cgroup's text (any hierarchy line), or None outside a Pod. The innermost
    Pod wins where Pods nest (a cluster run inside a Pod)."""
    for line in text.splitlines():
        for component in reversed(line.split(":", 2)[-1].split("/")):
            m = _POD_COMPONENT.fullmatch(component)
            if m:
                return m.group("uid").replace("_", "-")
    return None


# A container's cgroup, as runtimes name it: the last component holding a 64-hex-digit id, alone (cgroupfs
# driver: .../pod<UID>/<id>, /docker/<id>) or in a systemd scope (cri-containerd-<id>.scope,
# crio-<id>.scope, docker-<id>.scope, libpod-<id>.scope).
_CONTAINER_COMPONENT = re.compile(r"(?:[a-z-]*-)?(?P<id>[0-9a-f]{64})(?:\.scope)?")


def container_id_of_cgroup(text: str) -> str | None:
    """The container id in a cgroup path (or /proc/PID/cgroup's text), or None outside a container. The
    innermost container wins where containers nest (a kind node is itself a container)."""
    for line in text.splitlines():
        for component in reversed(line.split(":", 2)[-1].split("/")):
            m = _CONTAINER_COMPONENT.fullmatch(component)
            if m:
                return m.group("id")
    return None


def cgroup2_mount(mounts_text: str) -> str | None:
    """Where the unified (v2) cgroup hierarchy is mounted, from /proc/mounts' text."""
    for line in mounts_text.splitlines():
        fields = line.split()
        if len(fields) > 2 and fields[2] == "cgroup2":
            return fields[1]
    return None


def host_cgroup2_root() -> str | None:
    """The node's whole cgroup v2 hierarchy, as this process can reach it: through PID 1's root when that
    is the node's init (an agent container with hostPID, whose own /sys/fs/cgroup shows only its own
    cgroup), else this process's own mount; None without a v2 hierarchy."""
    for proc_root, mounts in (("/proc/1/root", "/proc/1/mounts"), ("", "/proc/self/mounts")):
        try:
            with open(mounts) as fh:
                mount = cgroup2_mount(fh.read())
        except OSError:
            continue
        if mount and os.path.isdir(proc_root + mount):
            return proc_root + mount
    return None


class CgroupPaths:
    """cgroup v2 id (what bpf_get_current_cgroup_id() returns: the inode of the cgroup's directory) ->
    path under the hierarchy (the node's: host_cgroup2_root()). The hierarchy is walked again for an id not seen, at most once per
    `rewalk_s`, so a container started since is found at the next interval without a walk per lookup.
    An agent in a container without hostPID sees only its own subtree: other ids stay unknown and get no
    attributes."""

    def __init__(self, root: str | None = None, rewalk_s: float = 5.0) -> None:
        self.root = root if root is not None else host_cgroup2_root()
        self.rewalk_s = rewalk_s
        self._paths: dict[int, str] = {}
        self._attributes: dict[int, dict[str, str]] = {}  # named once per id (a span or series asks each time)
        self._walked_at = float("-inf")

    def path(self, cgroup_id: int) -> str | None:
        if not cgroup_id or self.root is None:
            return None
        if cgroup_id not in self._paths and time.monotonic() - self._walked_at >= self.rewalk_s:
            self._walk()
        return self._paths.get(cgroup_id)

    def _walk(self) -> None:
        self._walked_at = time.monotonic()
        paths: dict[int, str] = {}
        for dirpath, _dirs, _files in os.walk(self.root):
            try:
                paths[os.stat(dirpath).st_ino] = "/" + os.path.relpath(dirpath, self.root).lstrip(".")
            except OSError:
                continue  # removed while walking
        self._paths = paths
        self._attributes = {}

    def id_of_process(self, pid: int) -> int:
        """The cgroup v2 id of a process (0 when unknown): what bpf_get_current_cgroup_id() gives in it."""
        if self.root is None:
            return 0
        try:
            with open(f"/proc/{pid}/cgroup") as fh:
                lines = [line for line in fh.read().splitlines() if line.startswith("0::")]
            return os.stat(self.root + lines[0][3:].rstrip("/")).st_ino if lines else 0
        except OSError:
            return 0

    def workload_attributes(self, cgroup_id: int) -> dict[str, str]:
        """k8s.pod.uid and container.id of the processes in this cgroup, those known."""
        attrs = self._attributes.get(cgroup_id)
        if attrs is None:
            path = self.path(cgroup_id)
            attrs = workload_attributes(path) if path else {}
            if path:
                self._attributes[cgroup_id] = attrs
        return attrs


def workload_attributes(cgroup: str) -> dict[str, str]:
    """k8s.pod.uid and container.id, those a cgroup path (or /proc/PID/cgroup's text) names."""
    attrs = {}
    pod = pod_uid_of_cgroup(cgroup)
    if pod:
        attrs[sc.K8S_POD_UID] = pod
    container = container_id_of_cgroup(cgroup)
    if container:
        attrs[sc.CONTAINER_ID] = container
    return attrs


def workload_attributes_of_process(pid: int) -> dict[str, str]:
    """k8s.pod.uid and container.id of a running process ({} outside a container, or once it is gone)."""
    try:
        with open(f"/proc/{pid}/cgroup") as fh:
            return workload_attributes(fh.read())
    except OSError:
        return {}
