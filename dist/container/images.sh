#!/usr/bin/env bash
# Builds the images localhost/makler-broker, -balancer, -server, -client and localhost/makler
# (the control CLI), tagged $TAG, from statically linked binaries: one release build, then
# FROM scratch images (dist/container/Containerfile.static), so no base image and no registry
# is needed. The Containerfile at the top builds the same images from source where a registry
# is reachable.
#
# Environment: PODMAN, the podman (or docker) command with any flags it needs (default podman);
# TAG (default latest); MAKLER_TARGET_DIR, cargo's target directory for the static build
# (default target/); ARCH, the images' architecture, amd64 or arm64 (a Raspberry Pi's; default
# this machine's). For arm64 on an x86-64 machine it cross-builds: it needs
# `rustup target add aarch64-unknown-linux-gnu` and a cross linker (Debian:
# `apt-get install gcc-aarch64-linux-gnu libc6-dev-arm64-cross`), and builds the images with
# `--platform linux/arm64` (no emulation needed to build FROM scratch images; running them on
# this machine would need qemu-user-static).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
podman=${PODMAN:-podman}
tag=${TAG:-latest}
target_dir=${MAKLER_TARGET_DIR:-$root/target}
case $(uname -m) in aarch64 | arm64) host=arm64 ;; *) host=amd64 ;; esac
arch=${ARCH:-$host}

# The Rust target and, across architectures, the linker of each architecture.
case $arch in
amd64) rust_target=x86_64-unknown-linux-gnu linker=x86_64-linux-gnu-gcc ;;
arm64) rust_target=aarch64-unknown-linux-gnu linker=aarch64-linux-gnu-gcc ;;
*) echo "ARCH=$arch: amd64 or arm64" >&2; exit 2 ;;
esac
if [ "$arch" != "$host" ]; then
  command -v "$linker" >/dev/null || { echo "no $linker: apt-get install gcc-${linker%-gcc} (and libc6-dev-$arch-cross)" | sed 's/gcc-x86_64/gcc-x86-64/' >&2; exit 1; }
  rustup target list --installed 2>/dev/null | grep -qx "$rust_target" ||
    { echo "the Rust target $rust_target is not installed: rustup target add $rust_target" >&2; exit 1; }
  export "CARGO_TARGET_$(echo "$rust_target" | tr 'a-z-' 'A-Z_')_LINKER=$linker"
fi

# Stripped: the images hold the programs and nothing else.
CARGO_PROFILE_RELEASE_STRIP=symbols RUSTFLAGS="-C target-feature=+crt-static" cargo build --manifest-path "$root/Cargo.toml" --quiet \
  --release --locked --target "$rust_target" --bins --target-dir "$target_dir"
bin=$target_dir/$rust_target/release

# The binaries go under a directory named as the architecture: Containerfile.static copies
# from ${TARGETARCH}/, which `--platform linux/ARCH` sets.
context=$(mktemp -d)
trap 'rm -rf "$context"' EXIT
mkdir "$context/$arch"
cp "$bin/makler" "$bin/makler-broker" "$bin/makler-balancer" "$bin/makler-server" "$bin/makler-client" "$context/$arch/"
for target in broker balancer server client cli; do
  name=makler-$target
  [ "$target" = cli ] && name=makler
  $podman build --quiet --platform "linux/$arch" --build-arg "TARGETARCH=$arch" --target "$target" --tag "localhost/$name:$tag" \
    --file "$root/dist/container/Containerfile.static" "$context" >/dev/null
  echo "built localhost/$name:$tag"
done
