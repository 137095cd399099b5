module ebpftool/tests/go_llm

go 1.19
