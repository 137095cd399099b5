from ebpftool.cli import main

main()
