#!/usr/bin/env bash
# The whole system in containers, on this host's network: a broker, two services (echo and
# upper), a balancer registered as `web` with three http backends, and the client calling each;
# the control CLI lists what the broker holds. Every container is removed at the end.
#
# Build the images first (dist/container/images.sh). Environment: PODMAN (default podman),
# TAG (default latest), BASE_PORT (default 17000; the broker listens on 127.0.0.1:BASE_PORT, the
# balancer on BASE_PORT+1 for clients and BASE_PORT+2 for backends). Traffic stays on loopback.
set -euo pipefail
podman=${PODMAN:-podman}
tag=${TAG:-latest}
base=${BASE_PORT:-17000}
broker=127.0.0.1:$base
front=127.0.0.1:$((base + 1))
control=127.0.0.1:$((base + 2))
prefix=makler-scenario-$$
containers=()

cleanup() {
  status=$?
  for c in "${containers[@]}"; do
    if [ "$status" -ne 0 ]; then
      echo "--- logs of $c" >&2
      $podman logs "$c" >&2 || true
    fi
    $podman rm -f "$c" >/dev/null 2>&1 || true
  done
}
trap cleanup EXIT

# Starts a container in the background: a name, the image, the program's flags.
start() {
  local name=$prefix-$1 image=localhost/$2:$tag
  shift 2
  $podman run --detach --name "$name" --network host "$image" "$@" >/dev/null
  containers+=("$name")
}

# Runs a program's container to its end.
once() {
  local image=localhost/$1:$tag
  shift
  $podman run --rm --network host "$image" "$@"
}

# No health checks from the broker: each would be a connection to the balancer, which sends it on
# to a backend, and a turn of the rotation taken between the three requests below would leave a
# backend out of them (what made one run in ten or so see two backends).
start broker makler-broker --listen "$broker" --no-multicast --quiet --probe-interval 0
start echo makler-server --service echo --listen 127.0.0.1:0 --broker "$broker" --no-multicast --quiet
start upper makler-server --service upper --listen 127.0.0.1:0 --broker "$broker" --no-multicast --quiet
start balancer makler-balancer --service web --listen "$front" --control "$control" --broker "$broker" --no-multicast --quiet
for n in 1 2 3; do
  start "web-$n" makler-server --service http --listen 127.0.0.1:0 --broker "$control" --no-multicast --quiet
done

# Wait until the balancer has its three backends up (registered and in its rotation), 60 s at
# most (each look starts a container); if they never are, stop here and say what it had, rather
# than go on and fail later on a rotation of two.
deadline=$((SECONDS + 60))
until seen=$(once makler --broker "$control" --no-multicast stats 2>&1) && [ "$(grep -Ec '^backend [^ ]+ up ' <<<"$seen")" -eq 3 ]; do
  if [ "$SECONDS" -ge "$deadline" ]; then
    echo "the balancer at $control never had 3 backends up within 60 s; its last stats:" >&2
    echo "$seen" >&2
    exit 1
  fi
  sleep 0.2
done

once makler-client --broker "$broker" --no-multicast --wait 10 echo hello from a container
once makler-client --broker "$broker" --no-multicast --wait 10 upper hello from a container
for _ in 1 2 3; do
  once makler-client --broker "$broker" --no-multicast --wait 10 --http / web
done
once makler --broker "$broker" --no-multicast list
# What the balancer did, backend by backend: how many connections each took, failures.
echo "--- balancer stats"
once makler --broker "$control" --no-multicast stats
