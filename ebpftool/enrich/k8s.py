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

from ebpftool import semconv as sc

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
    path under the hierarchy (the node's: host_cgroup2_root()).

    An id not seen yet makes the hierarchy be walked again, at most once per `rewalk_s`, so a container
    started since is named at the next interval; an id that a walk begun after it was first asked for
    did not find is not looked for again (an agent in a container without hostPID sees only its own
    subtree). A named id stays named until forget(): a container's series keep their attributes after
    it is gone, until the tracer retires them (is_gone())."""

    def __init__(self, root: str | None = None, rewalk_s: float = 5.0) -> None:
        self.root = root if root is not None else host_cgroup2_root()
        self.rewalk_s = rewalk_s
        self._paths: dict[int, str] = {}
        self._attributes: dict[int, dict[str, str]] = {}  # named once per id (a span or series asks each time)
        self._asked: dict[int, float] = {}                 # ids not found yet -> when first asked for
        self._unknown: set[int] = set()                    # ids a later walk did not find either
        self._walked_at = float("-inf")

    def path(self, cgroup_id: int) -> str | None:
        if not cgroup_id or self.root is None or cgroup_id in self._unknown:
            return None
        found = self._paths.get(cgroup_id)
        if found is not None:
            return found
        now = time.monotonic()
        asked = self._asked.setdefault(cgroup_id, now)
        if now - self._walked_at >= self.rewalk_s:
            self._walk()
            found = self._paths.get(cgroup_id)
        if found is None and self._walked_at > asked:
            self._unknown.add(cgroup_id)  # the walk began after it was asked for: it is not to be seen here
            del self._asked[cgroup_id]
        return found

    def _walk(self) -> None:
        """Adds every directory of the hierarchy (scandir's inode numbers: no stat per directory)."""
        self._walked_at = time.monotonic()
        try:
            self._paths.setdefault(os.stat(self.root).st_ino, "/")
        except OSError:
            return
        pending = [(self.root, "")]
        while pending:
            directory, rel = pending.pop()
            try:
                with os.scandir(directory) as entries:
                    for entry in entries:
                        if entry.is_dir(follow_symlinks=False):
                            path = f"{rel}/{entry.name}"
                            self._paths.setdefault(entry.inode(), path)
                            pending.append((entry.path, path))
            except OSError:
                continue  # removed while walking
        for cgroup_id in [i for i in self._asked if i in self._paths]:
            del self._asked[cgroup_id]

    def is_gone(self, cgroup_id: int) -> bool:
        """A named cgroup whose directory no longer exists (its processes are gone for good)."""
        path = self._paths.get(cgroup_id)
        return path is not None and not os.path.isdir(self.root + path)

    def forget(self, cgroup_id: int) -> None:
        self._paths.pop(cgroup_id, None)
        self._attributes.pop(cgroup_id, None)

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
    except (OSError, ValueError):  # gone, or a name that is not UTF-8
        return {}
