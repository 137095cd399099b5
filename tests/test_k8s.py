"""The Kubernetes facts a node agent reads without the API server: Pod UIDs from cgroup paths, names
from downward-API variables, and where they land on flow points."""
from __future__ import annotations

import pytest

from ebpftool.core.k8s import node_name, pod_uid_of_cgroup
from ebpftool.export import semconv as sc
from ebpftool.tracers.net import FlowGroup, k8s_attrs
from ebpftool.tracers.zones import LOCAL_ZONE, Zone

UID = "0f1b5c7e-2c4d-4e8f-9a0b-1c2d3e4f5a6b"
CID = "4e8f9a0b" * 8


@pytest.mark.parametrize("text", [
    # cgroup v2, cgroupfs driver (Burstable)
    f"0::/kubepods/burstable/pod{UID}/{CID}\n",
    # cgroup v2, systemd driver, containerd: the UID's dashes become underscores
    f"0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID.replace('-', '_')}.slice/"
    f"cri-containerd-{CID}.scope\n",
    # Guaranteed Pods sit directly under kubepods
    f"0::/kubepods.slice/kubepods-pod{UID.replace('-', '_')}.slice/crio-{CID}.scope\n",
    # cgroup v1 hierarchies: any line that names the Pod will do
    f"12:pids:/kubepods/besteffort/pod{UID}/{CID}\n11:memory:/kubepods/besteffort/pod{UID}/{CID}\n0::/\n",
    # a kubelet that itself runs in a container (kind): the path is prefixed
    f"0::/system.slice/docker-{CID}.scope/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-burstable.slice/"
    f"kubelet-kubepods-burstable-pod{UID.replace('-', '_')}.slice/cri-containerd-{CID}.scope\n",
    # an agent in its own cgroup namespace sees other Pods' paths relative to its own
    f"0::/../../besteffort/pod{UID}/{CID}\n",
    # Pods nested in a Pod (a cluster run inside a Pod): the innermost, the process's own, wins
    f"0::/kubepods/burstable/pod11111111-2222-3333-4444-555555555555/{CID}/kubepods/besteffort/pod{UID}/{CID}\n",
    # the Pod's own cgroup (a process of the pause container's level)
    f"0::/kubepods/pod{UID}\n",
])
def test_pod_uid_from_every_cgroup_layout_the_kubelet_makes(text):
    assert pod_uid_of_cgroup(text) == UID


@pytest.mark.parametrize("text", [
    "0::/\n",
    "0::/system.slice/nginx.service\n",
    f"0::/system.slice/podman-{CID}.scope\n",                       # a container, not a Pod
    f"0::/kubepods/pod{UID.replace('-', '_', 1)}/{CID}\n",             # separators mixed
    f"0::/kubepods/xpod{UID}/{CID}\n",                                # not the kubelet's component
    f"0::/kubepods/burstable/pod{UID[:-1]}/{CID}\n",                 # not a whole UID
    "",
])
def test_no_pod_outside_kubepods(text):
    assert pod_uid_of_cgroup(text) is None


def test_node_name_from_the_first_downward_api_variable_set():
    assert node_name({"NODE_NAME": "n2", "K8S_NODE_NAME": "n1"}) == "n1"
    assert node_name({"K8S_NODE_NAME": "", "NODE_NAME": "n2"}) == "n2"
    assert node_name({}) is None


def _group(local: Zone, remote: Zone, pod_uid: str | None) -> FlowGroup:
    return FlowGroup(local, remote, None, "tcp", "ipv4", 1, "app", pod_uid)


def test_the_local_end_carries_the_node_and_the_pod():
    a, b = Zone("a"), Zone("b")
    g = _group(a, b, UID)
    assert k8s_attrs(g, True, "node-1") == {sc.SOURCE_K8S_NODE_NAME: "node-1", sc.SOURCE_K8S_POD_UID: UID}
    assert k8s_attrs(g, False, "node-1") == {sc.DESTINATION_K8S_NODE_NAME: "node-1", sc.DESTINATION_K8S_POD_UID: UID}
    assert k8s_attrs(_group(a, b, None), True, None) == {}
    # Loopback: both ends are this node (the peer's Pod is not known: host-network Pods share loopback).
    lo = k8s_attrs(_group(LOCAL_ZONE, LOCAL_ZONE, UID), True, "node-1")
    assert lo == {sc.SOURCE_K8S_NODE_NAME: "node-1", sc.DESTINATION_K8S_NODE_NAME: "node-1", sc.SOURCE_K8S_POD_UID: UID}
