#!/usr/bin/env bash
# The whole system in containers, on this host's network: a broker, two services (echo and
# upper), a balancer registered as `web` with three http backends, and the client calling each;
# the control CLI lists what the broker holds. Every container it made is removed at the end,
# however it ends (a failed `podman run` too: podman may have created the container before the
# run failed, e.g. when the runtime cannot start it; the script creates no networks or volumes).
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
# Every container's name starts with it (PREFIX overrides it, for tests).
prefix=${PREFIX:-makler-scenario-$$}
containers=()
runs=0

# Every container named with the prefix, whether its run succeeded or not (a container is
# listed before its `podman run`, and the prefix catches any other).
cleanup() {
  status=$?
  trap - EXIT INT TERM
  local c all
  all=$($podman ps --all --filter "name=^$prefix-" --format '{{.Names}}' 2>/dev/null || true)
  for c in $(printf '%s\n' "${containers[@]}" $all | sort -u); do
    if [ "$status" -ne 0 ] && [[ $c != *-once-* ]]; then
      echo "--- logs of $c" >&2
      $podman logs "$c" >&2 || true
    fi
    $podman rm -f "$c" >/dev/null 2>&1 || true
  done
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Starts a container in the background: a name, the image, the program's flags.
start() {
  local name=$prefix-$1 image=localhost/${2}:$tag
  shift 2
  containers+=("$name")
  $podman run --detach --name "$name" --network host "$image" "$@" >/dev/null
}

# Runs a program's container to its end (named, so that cleanup finds it if `--rm` did not
# remove it; BASHPID keeps names apart when it runs in a command substitution's subshell).
once() {
  runs=$((runs + 1))
  local name=$prefix-once-$BASHPID-$runs image=localhost/$1:$tag
  shift
  containers+=("$name")
  $podman run --rm --name "$name" --network host "$image" "$@"
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
