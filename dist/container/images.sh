#!/usr/bin/env bash
# Builds the images localhost/makler-broker, -balancer, -server, -client and localhost/makler
# (the control CLI), tagged $TAG, from statically linked binaries: one release build, then
# FROM scratch images (dist/container/Containerfile.static), so no base image and no registry
# is needed. The Containerfile at the top builds the same images from source where a registry
# is reachable.
#
# Environment: PODMAN, the podman (or docker) command with any flags it needs (default podman);
# TAG (default latest); MAKLER_TARGET_DIR, cargo's target directory for the static build
# (default target/).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
podman=${PODMAN:-podman}
tag=${TAG:-latest}
target_dir=${MAKLER_TARGET_DIR:-$root/target}

# Stripped: the images hold the programs and nothing else.
CARGO_PROFILE_RELEASE_STRIP=symbols RUSTFLAGS="-C target-feature=+crt-static" cargo build --manifest-path "$root/Cargo.toml" --quiet \
  --release --locked --target x86_64-unknown-linux-gnu --bins --target-dir "$target_dir"
bin=$target_dir/x86_64-unknown-linux-gnu/release

context=$(mktemp -d)
trap 'rm -rf "$context"' EXIT
cp "$bin/makler" "$bin/makler-broker" "$bin/makler-balancer" "$bin/makler-server" "$bin/makler-client" "$context/"
for target in broker balancer server client cli; do
  name=makler-$target
  [ "$target" = cli ] && name=makler
  $podman build --quiet --target "$target" --tag "localhost/$name:$tag" \
    --file "$root/dist/container/Containerfile.static" "$context" >/dev/null
  echo "built localhost/$name:$tag"
done
