module ebpftool/scripts/go_tls_echo

go 1.19
