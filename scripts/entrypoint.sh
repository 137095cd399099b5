#!/bin/sh
# Container entrypoint: the node's kernel is only known at start, so prepare it
# (headers link, tracefs), then run ebpftool with the given arguments.
set -e
/opt/ebpftool/src/scripts/prepare-node.sh
exec /usr/local/bin/ebpftool "$@"
