#!/usr/bin/env bash
# Builds the sockmap proxy prototype (bench/proto/smproxy.c) into target/proto/smproxy.
# Needs only a C compiler and the kernel's uapi headers (linux-libc-dev): the BPF program is
# written as instructions in the C source, so neither clang nor libbpf is needed.
set -euo pipefail
cd "$(dirname "$0")/../.."
mkdir -p target/proto
command -v cc >/dev/null && [ -f /usr/include/linux/bpf.h ] || apt-get install -y gcc linux-libc-dev
cc -O2 -Wall -Wextra -o target/proto/smproxy bench/proto/smproxy.c
