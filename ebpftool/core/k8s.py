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
from typing import Mapping

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
