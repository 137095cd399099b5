#!/usr/bin/env bash
# Build the image (Dockerfile) and run it as deploy/ says, for real, with podman:
#   agent    as deploy/daemonset.yaml: privileged, host PID and network, the DaemonSet's host mounts, env and
#            args, tracing a streaming server on the host and exporting OTLP to a receiver on the host;
#   sidecar  as deploy/sidecar.yaml: a server container (the same image, its entrypoint replaced by the
#            test streaming server) and the ebpftool container in its PID and network namespaces;
#            the spans must carry the server container's container.id;
#   leastpriv the agent again with the manifests' capabilities (--cap-add) instead of --privileged;
#            `ebpftool doctor` is run that way too, to say what is missing if it fails.
# Each run is checked by scripts/image_check.py, which decodes what its OTLP receiver got.
#
#   sudo scripts/test-image.sh [STEP...]     # STEPs: build agent sidecar leastpriv (default: all); ~5 min
#
# Results: $EBPFTOOL_IMAGE_LOG (default /tmp/ebpftool-test-image): build.log, *.json, *.log, summary.txt,
# sbom.cdx.json (the image's software bill of materials, copied out of it).
# Facts of these machines (../shared/notes/real-world.md): podman's default runtime crun refuses here, so
# runc; rlimits are given, not raised; no registry: the base is made with mmdebstrap and tagged as the
# Dockerfile's FROM; pip reaches PyPI through a TLS proxy whose CA the build gets where the host has one.
# The flags given to the ebpftool container are in scripts/image-flags.sh (tests/test_deploy.py checks
# them against the manifests). Run by .ci/run after the test suite (needs root, podman and ~1 GB of disk).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
LOG=${EBPFTOOL_IMAGE_LOG:-/tmp/ebpftool-test-image}
IMAGE=${EBPFTOOL_IMAGE:-localhost/ebpftool:test}
BASE=docker.io/library/debian:bookworm-slim          # the Dockerfile's FROM debian:bookworm-slim
PY=${EBPFTOOL_PYTHON:-/opt/ebpftool/venv/bin/python}  # has grpcio + opentelemetry-proto (pip install -e .[test])
# The DaemonSet's compile cache (hostPath /var/cache/ebpftool); a scratch folder by default, so that this
# run neither uses nor changes the host's own cache. EBPFTOOL_IMAGE_CACHE=/var/cache/ebpftool to share it.
CACHE=${EBPFTOOL_IMAGE_CACHE:-$LOG/cache}
PODMAN=(podman --runtime runc)
LIMITS=(--ulimit nofile=1024:1024 --ulimit nproc=1000:1000)
source "$ROOT/scripts/image-flags.sh"
# another capability set for the least-privilege step, to find which are needed (e.g. "BPF PERFMON")
[ -z "${EBPFTOOL_IMAGE_CAPS+x}" ] || read -ra CAPS <<< "$EBPFTOOL_IMAGE_CAPS"
# more `podman run` flags for that step (e.g. "--security-opt seccomp=unconfined")
read -ra LEASTPRIV_OPTS <<< "${EBPFTOOL_IMAGE_LEASTPRIV_OPTS:-}"
mkdir -p "$LOG" "$CACHE"
: > "$LOG/summary.txt"
STEPS=("$@"); [ ${#STEPS[@]} -gt 0 ] || STEPS=(build agent sidecar leastpriv)
say() { printf '\033[1m==> %s\033[0m\n' "$*"; }
summary() { echo "$*" | tee -a "$LOG/summary.txt"; }
containers=()
cleanup() { for c in "${containers[@]}"; do "${PODMAN[@]}" rm -f -t 5 "$c" >/dev/null 2>&1 || true; done; }
trap cleanup EXIT
brief() { "$PY" -c "import json, sys; r = json.load(open(sys.argv[1]))
print(r['spans'], 'spans, the first', r.get('first_span_after_s'), 's after start,', len(r['metrics']), 'metrics')" "$LOG/$1.json"; }
want() { local s; for s in "${STEPS[@]}"; do [ "$s" = "$1" ] && return 0; done; return 1; }

# -v flags from "host:container[:ro]" entries; the cache's host side is $CACHE
mounts_of() {
  local m; for m in "$@"; do
    [ "${m%%:*}" = /var/cache/ebpftool ] && m="$CACHE:${m#*:}"
    printf -- '-v\n%s\n' "$m"
  done
}

# ---- base and build -------------------------------------------------------------------------------------
if want build; then
  if ! "${PODMAN[@]}" image exists "$BASE"; then
    if "${PODMAN[@]}" image exists localhost/ebpftool-fresh-base:bookworm; then   # scripts/fresh-node-check.sh's
      "${PODMAN[@]}" tag localhost/ebpftool-fresh-base:bookworm "$BASE"
    else
      say "making the base $BASE: Debian 12 minbase (mmdebstrap)"
      mmdebstrap --variant=minbase bookworm "$LOG/rootfs.tar" > "$LOG/mmdebstrap.log" 2>&1
      "${PODMAN[@]}" import "$LOG/rootfs.tar" "$BASE" > /dev/null
      rm -f "$LOG/rootfs.tar"
    fi
  fi
  # The site's TLS proxy CA for pip, where the host has one. Not at the image's own bundle path: the
  # image's ca-certificates package rewrites that file (a bind mount there fails its postinst); a pip.conf
  # naming the mounted copy instead. A build without these mounts is a normal user's build.
  build_mounts=()
  if [ -e /etc/pip.conf ]; then
    if [ -e /etc/ssl/certs/ca-certificates.crt ]; then
      grep -v '^[[:space:]]*cert[[:space:]]*=' /etc/pip.conf > "$LOG/pip.conf" || true
      grep -q '^\[global\]' "$LOG/pip.conf" || printf '[global]\n' >> "$LOG/pip.conf"
      sed -i 's|^\[global\]$|[global]\ncert = /run/site-ca.pem|' "$LOG/pip.conf"
      build_mounts+=(-v /etc/ssl/certs/ca-certificates.crt:/run/site-ca.pem:ro)
    else
      cp /etc/pip.conf "$LOG/pip.conf"
    fi
    build_mounts+=(-v "$LOG/pip.conf:/etc/pip.conf:ro")
  fi
  say "building $IMAGE (log: $LOG/build.log)"
  t0=$(date +%s)
  read -ra build_opts <<< "${EBPFTOOL_IMAGE_BUILD_OPTS:-}"   # e.g. --no-cache, to time a whole build
  "${PODMAN[@]}" build "${build_opts[@]}" "${build_mounts[@]}" "${LIMITS[@]}" -t "$IMAGE" "$ROOT" > "$LOG/build.log" 2>&1 \
    || { tail -20 "$LOG/build.log"; echo "test-image: the build failed" >&2; exit 1; }
  t1=$(date +%s)
  size=$("${PODMAN[@]}" image inspect "$IMAGE" --format '{{.Size}}')
  summary "build: $((t1 - t0)) s, image $((size / 1000000)) MB ($IMAGE)"
  # The SBOM the image ships, beside the image (and checked: BCC, the OpenTelemetry SDK, ebpftool, versioned)
  "${PODMAN[@]}" run --rm "${LIMITS[@]}" --entrypoint cat "$IMAGE" /opt/ebpftool/sbom.cdx.json > "$LOG/sbom.cdx.json"
  "$PY" "$ROOT/scripts/sbom_check.py" "$LOG/sbom.cdx.json" | tee -a "$LOG/summary.txt"
fi

# ---- the agent, as deploy/daemonset.yaml -----------------------------------------------------------------
# The DaemonSet's ConfigMap's zones.yaml, mounted where its args read it
"$PY" - "$ROOT/deploy/daemonset.yaml" "$LOG/zones" <<'EOF'
import pathlib, sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
(cm,) = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "ebpftool-zones"]
out = pathlib.Path(sys.argv[2]); out.mkdir(parents=True, exist_ok=True)
for name, text in cm["data"].items():
    (out / name).write_text(text)
EOF
NODE=$(hostname)
# values the downward API would give (the OTLP endpoint is the receiver image_check.py starts: {otlp})
agent_env=(K8S_NODE_NAME="$NODE" K8S_POD_NAME=ebpftool-test K8S_NAMESPACE_NAME=ebpftool EBPFTOOL_ZONE=us-east-1a
           EBPFTOOL_REGION=us-east-1 NODE_IP=127.0.0.1 OTEL_EXPORTER_OTLP_ENDPOINT='{otlp}'
           OTEL_RESOURCE_ATTRIBUTES=k8s.cluster.name=image-test)
same_names() {  # LIST_NAME, then NAME=VALUE...: the names must be the list's (scripts/image-flags.sh's)
  local -n want_names=$1; shift
  local got; got=$(printf '%s\n' "${@%%=*}" | sort | tr '\n' ' ')
  [ "$got" = "$(printf '%s\n' "${want_names[@]}" | sort | tr '\n' ' ')" ] \
    || { echo "test-image: env names '$got' are not $1's" >&2; exit 2; }
}
same_names AGENT_ENV "${agent_env[@]}"
env_flags() { local e; for e in "$@"; do printf -- '-e\n%s\n' "$e"; done; }
mapfile -t AGENT_V < <(mounts_of "${AGENT_MOUNTS[@]}")
mapfile -t AGENT_E < <(env_flags "${agent_env[@]}")
# The DaemonSet's args (its Prometheus endpoint on a free port of the host's loopback), plus the test
# server's port, and no GPU tracer (no GPU here; `ebpftool demo` covers it). -i 2: an export every 2 s.
PROM_PORT=$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
agent_args=(trace --no-ui --zones /etc/ebpftool/zones.yaml --prometheus-port "$PROM_PORT" --prometheus-address 127.0.0.1
            --port '{port}' --no-gpu -i 2)

run_agent() {  # NAME, then the privilege flags
  local name=$1; shift
  containers+=("$name")
  (cd "$ROOT" && "$PY" scripts/image_check.py --host-server --out "$LOG/$name.json" --log "$LOG/$name.log" -- \
    "${PODMAN[@]}" run --rm --name "$name" "$@" --pid=host --network=host "${LIMITS[@]}" \
    "${AGENT_V[@]}" -v "$LOG/zones:/etc/ebpftool:ro" "${AGENT_E[@]}" "$IMAGE" "${agent_args[@]}")
}

if want agent; then
  say "agent: privileged, host PID and network (log: $LOG/ebpftool-agent.log)"
  if run_agent ebpftool-agent --privileged; then summary "agent: ok, $(brief ebpftool-agent)"
  else summary "agent: FAILED (see $LOG/ebpftool-agent.json)"; fi
fi

# ---- the sidecar, as deploy/sidecar.yaml -----------------------------------------------------------------
if want sidecar; then
  say "sidecar: a server container and ebpftool in its PID and network namespaces"
  server=ebpftool-test-server
  containers+=("$server")
  "${PODMAN[@]}" rm -f "$server" >/dev/null 2>&1 || true
  "${PODMAN[@]}" run -d --name "$server" "${LIMITS[@]}" --entrypoint python3 -w /opt/ebpftool/src "$IMAGE" \
    -m tests.servers.streaming_server 8000 /tmp/timings.jsonl 0.0.0.0 > /dev/null
  sid=$("${PODMAN[@]}" inspect "$server" --format '{{.Id}}')
  sip=$("${PODMAN[@]}" inspect "$server" --format '{{.NetworkSettings.IPAddress}}')
  gw=$("${PODMAN[@]}" inspect "$server" --format '{{.NetworkSettings.Gateway}}')
  mapfile -t SIDE_V < <(mounts_of "${SIDECAR_MOUNTS[@]}")
  side_env=(K8S_NODE_NAME="$NODE" K8S_POD_NAME=server-with-ebpftool K8S_NAMESPACE_NAME=default
            EBPFTOOL_ZONE=us-east-1a OTEL_SERVICE_NAME=server-ebpftool OTEL_EXPORTER_OTLP_ENDPOINT='{otlp}')
  same_names SIDECAR_ENV "${side_env[@]}"
  mapfile -t SIDE_E < <(env_flags "${side_env[@]}")
  containers+=(ebpftool-sidecar)
  # the sidecar's args: deploy/sidecar.yaml's, with an export every 2 s
  if (cd "$ROOT" && "$PY" scripts/image_check.py --server-addr "$sip:8000" --otlp-bind "$gw" --otlp-host "$gw" \
        --expect-container-id "$sid" --out "$LOG/ebpftool-sidecar.json" --log "$LOG/ebpftool-sidecar.log" -- \
        "${PODMAN[@]}" run --rm --name ebpftool-sidecar --privileged --pid "container:$server" --network "container:$server" \
        "${LIMITS[@]}" "${SIDE_V[@]}" "${SIDE_E[@]}" "$IMAGE" trace --no-ui --port 8000 --no-net --no-gpu -i 2); then
    summary "sidecar: ok, $(brief ebpftool-sidecar), container.id ${sid:0:12} on the spans"
  else summary "sidecar: FAILED (see $LOG/ebpftool-sidecar.json)"; fi
  "${PODMAN[@]}" rm -f -t 0 "$server" > /dev/null 2>&1  # python as PID 1 ignores SIGTERM
fi

# ---- least privilege: the manifests' capabilities instead of --privileged --------------------------------
if want leastpriv; then
  cap_flags=(); for c in "${CAPS[@]}"; do cap_flags+=(--cap-add "$c"); done
  cap_flags+=("${LEASTPRIV_OPTS[@]}")
  say "least privilege: ${cap_flags[*]}"
  containers+=(ebpftool-doctor)
  "${PODMAN[@]}" run --rm --name ebpftool-doctor "${cap_flags[@]}" --pid=host --network=host "${LIMITS[@]}" \
    "${AGENT_V[@]}" "$IMAGE" doctor > "$LOG/leastpriv-doctor.log" 2>&1 || true
  if run_agent ebpftool-leastpriv "${cap_flags[@]}"; then summary "least privilege (${cap_flags[*]}): ok, $(brief ebpftool-leastpriv)"
  else summary "least privilege (${cap_flags[*]}): FAILED (doctor: $LOG/leastpriv-doctor.log)"; fi
fi
! grep -q FAILED "$LOG/summary.txt"
