# ebpftool as a node agent (DaemonSet) or a privileged sidecar.
# The image installs through the same script as the README, so CI tests that path; scripts/slim-image.sh
# then removes what is not used at run time (compilers the headers' packages pull in, docs), in the same layer.
# Kernel headers: the image carries Debian's (the fallback prepare-node.sh links);
# mount the host's /lib/modules and /usr/src to use the node's own instead.
# Built and run for real by scripts/test-image.sh (docs/deployment.md). The image's software bill of materials
# (CycloneDX, scripts/sbom.py: the Python environment and the Debian packages) is /opt/ebpftool/sbom.cdx.json.
FROM debian:bookworm-slim

COPY . /opt/ebpftool/src
RUN /opt/ebpftool/src/scripts/install.sh \
 && /opt/ebpftool/src/scripts/slim-image.sh \
 && apt-get clean && rm -rf /var/lib/apt/lists/* \
 && /opt/ebpftool/venv/bin/python /opt/ebpftool/src/scripts/sbom.py --output /opt/ebpftool/sbom.cdx.json

# Capabilities it needs (or run privileged): CAP_BPF, CAP_PERFMON, CAP_SYS_ADMIN
# (tracefs attach, uprobes in other mount namespaces), CAP_SYS_RESOURCE (locked memory on old kernels),
# plus hostPID to see every process. See deploy/daemonset.yaml.
ENV PYTHONUNBUFFERED=1
ENTRYPOINT ["/opt/ebpftool/src/scripts/entrypoint.sh"]
CMD ["trace", "--no-ui"]
