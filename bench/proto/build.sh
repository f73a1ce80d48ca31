#!/usr/bin/env bash
# Builds the two prototype proxies of issue 22 (PERFORMANCE.md, section `uring`) into bench/proto/bin/.
# proto-uring needs liburing's headers: apt-get install -y liburing-dev (Debian 12: liburing 2.3).
set -euo pipefail
cd "$(dirname "$0")"
mkdir -p bin
gcc -O2 -Wall -Wextra -o bin/proto-epoll proto-epoll.c -lpthread
gcc -O2 -Wall -Wextra -o bin/proto-uring proto-uring.c -luring -lpthread
