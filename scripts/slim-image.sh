#!/usr/bin/env bash
# Remove from the image what ebpftool does not use at run time, in the Dockerfile's install layer (a later
# layer would not make the image smaller). Measured by scripts/test-image.sh (docs/deployment.md): 828 -> ~580 MB.
#  - The kernel headers' packages depend on the kernel's compiler (gcc-12, cpp-12, binutils' and gcc's
#    libraries, ~150 MB) and kbuild: BCC compiles with its own clang (libclang-cpp, libLLVM) and only reads
#    the header files. The files under /usr/src are kept, the packages purged, then the files put back.
#  - Other architectures' headers (BCC here includes arch/x86 only), bpfcc-tools (the BCC command-line
#    tools; ebpftool uses the python3-bpfcc module) and its netaddr/ieee-data, documentation (copyright
#    files kept), manuals, locales, apt lists.
# Not for a node: install.sh leaves a node as the README says.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
keep=$(mktemp -d)
cp -a /usr/src/linux-headers-* "$keep"/
mapfile -t purge < <(dpkg-query -W -f '${db:Status-Abbrev} ${Package}\n' 'linux-headers-*' 'linux-kbuild-*' \
                     'linux-compiler-*' bpfcc-tools 2>/dev/null | awk '$1 ~ /^.i/ {print $2}')
[ ${#purge[@]} -eq 0 ] || apt-get purge -y -qq --auto-remove "${purge[@]}" > /dev/null
cp -a "$keep"/* /usr/src/ && rm -rf "$keep"
for d in /usr/src/linux-headers-*-common/arch/*; do
  [ "$(basename "$d")" = x86 ] || rm -rf "$d"
done
find /usr/share/doc -type f ! -name copyright -delete
find /usr/share/doc -type d -empty -delete
rm -rf /usr/share/man/* /usr/share/info/* /usr/share/locale/* /var/lib/apt/lists/* /var/cache/apt/* /root/.cache
# what the entrypoint needs is still there
/opt/ebpftool/venv/bin/python -c "import bcc, ebpftool"
ls -d /usr/src/linux-headers-*-common/include/linux > /dev/null
