# The `podman run` flags scripts/test-image.sh gives the ebpftool container, written once here, in the
# form tests/test_deploy.py reads (it sources this file with bash): they must say what deploy/daemonset.yaml
# and deploy/sidecar.yaml say (hostPath mounts, capabilities, env names), so what was run is what ships.
# host:container[:ro] mounts
AGENT_MOUNTS=(
  /sys/kernel/tracing:/sys/kernel/tracing
  /sys/kernel/debug:/sys/kernel/debug
  /sys/fs/bpf:/sys/fs/bpf
  /lib/modules:/lib/modules:ro
  /usr/src:/usr/src:ro
  /var/cache/ebpftool:/var/cache/ebpftool
)
SIDECAR_MOUNTS=(
  /sys/kernel/tracing:/sys/kernel/tracing
  /lib/modules:/lib/modules:ro
  /usr/src:/usr/src:ro
)
# securityContext.capabilities.add (the least-privilege run uses these instead of --privileged)
CAPS=(BPF PERFMON SYS_ADMIN SYS_RESOURCE)
# env names set on the ebpftool container (values: the script's, standing in for the downward API's)
AGENT_ENV=(K8S_NODE_NAME K8S_POD_NAME K8S_NAMESPACE_NAME EBPFTOOL_ZONE EBPFTOOL_REGION NODE_IP OTEL_EXPORTER_OTLP_ENDPOINT OTEL_RESOURCE_ATTRIBUTES)
SIDECAR_ENV=(K8S_NODE_NAME K8S_POD_NAME K8S_NAMESPACE_NAME EBPFTOOL_ZONE OTEL_SERVICE_NAME OTEL_EXPORTER_OTLP_ENDPOINT)
