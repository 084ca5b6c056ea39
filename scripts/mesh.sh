#!/usr/bin/env bash
# Starts and stops the six Personal Agent services as background processes.
#
#   scripts/mesh.sh up       # start what is not running, wait for health, print the URL
#   scripts/mesh.sh down     # SIGTERM each (they drain in-flight runs), wait, then SIGKILL
#   scripts/mesh.sh status   # one line per service
#
# Binaries come from $CARGO_TARGET_DIR/$PA_PROFILE_DIR (default /var/tmp/pa-target/debug).
# Logs: .dev/logs/<service>.log. Pids: .dev/pids/<service>.pid. The internal secret that
# services share is generated once into .dev/internal-secret.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
DEV="$ROOT/.dev"
LOGS="$DEV/logs"
PIDS="$DEV/pids"
TARGET="${CARGO_TARGET_DIR:-/var/tmp/pa-target}/${PA_PROFILE_DIR:-debug}"
SERVICES=(svc-models svc-tools svc-memory svc-runs svc-worker svc-gateway)
GATEWAY_ADDR="${PA_GATEWAY_ADDR:-127.0.0.1:8080}"

log() { printf 'mesh: %s\n' "$*" >&2; }
die() { printf 'mesh: ERROR: %s\n' "$*" >&2; exit 1; }

pid_of() { [[ -f "$PIDS/$1.pid" ]] && tr -dc '0-9' <"$PIDS/$1.pid" || true; }
alive() { local pid; pid="$(pid_of "$1")"; [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null && ! grep -q '^State:.*Z' "/proc/$pid/status" 2>/dev/null; }

# The services' ports (50050-50055) lie inside Linux's ephemeral range: an outgoing connection
# may hold one for a minute (TIME-WAIT) although nothing listens on it.
port_hint() {
  grep -q 'Address already in use' "$1" 2>/dev/null || return 0
  printf '\n%s' "hint: if nothing listens on that port, an outgoing connection holds it (ss -tan | grep :<port>);" \
    "retry in a minute, or reserve the ports: sysctl -w net.ipv4.ip_local_reserved_ports=50050-50055,8080,8090,9464"
}

cmd_up() {
  mkdir -p "$LOGS" "$PIDS"
  [[ -f "$DEV/internal-secret" ]] || head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$DEV/internal-secret"
  eval "$("$ROOT/scripts/stack.sh" env)"
  export DATABASE_URL REDIS_URL TEMPORAL_ADDRESS
  export PA_INTERNAL_SECRET="${PA_INTERNAL_SECRET:-$(cat "$DEV/internal-secret")}"
  export PA_AUTH_MODE="${PA_AUTH_MODE:-dev}"
  export PA_GATEWAY_ADDR="$GATEWAY_ADDR"
  # The dev stack may point a provider at a local inference server (Ollama, vLLM, llama.cpp).
  export PA_MODELS_NET_ALLOW="${PA_MODELS_NET_ALLOW:-127.0.0.1,localhost,::1}"
  export PA_METRICS_ADDR="${PA_METRICS_ADDR:-127.0.0.1:9464}"
  export RUST_LOG="${RUST_LOG:-info}"
  for svc in "${SERVICES[@]}"; do
    if alive "$svc"; then log "$svc already running (pid $(pid_of "$svc"))"; continue; fi
    [[ -x "$TARGET/$svc" ]] || die "$TARGET/$svc is not built: run 'make build'"
    setsid nohup "$TARGET/$svc" >>"$LOGS/$svc.log" 2>&1 </dev/null &
    echo $! >"$PIDS/$svc.pid"
    log "$svc started (pid $!), log $LOGS/$svc.log"
  done
  local deadline=$((SECONDS + ${PA_MESH_TIMEOUT:-90}))
  until curl -fsS "http://$GATEWAY_ADDR/readyz" >/dev/null 2>&1; do
    for svc in "${SERVICES[@]}"; do
      alive "$svc" || die "$svc exited during start-up; last lines of $LOGS/$svc.log:
$(tail -n 15 "$LOGS/$svc.log")$(port_hint "$LOGS/$svc.log")"
    done
    (( SECONDS < deadline )) || die "not ready in time: $(curl -sS "http://$GATEWAY_ADDR/readyz" 2>&1)"
    sleep 0.3
  done
  log "all services healthy"
  cat <<MSG

  Personal Agent is up:  http://$GATEWAY_ADDR
  Try it:   curl -s -XPOST http://$GATEWAY_ADDR/v1/chats -H 'content-type: application/json' -d '{"title":"hi"}'
  Logs:     $LOGS/   (services, postgres, temporal)
  Metrics:  http://$PA_METRICS_ADDR/metrics   (the gateway's; each gRPC service on its port)
  Stop:     make down

MSG
}

cmd_down() {
  local svc pid
  for svc in "${SERVICES[@]}"; do
    alive "$svc" && kill -TERM "$(pid_of "$svc")" 2>/dev/null || true
  done
  for svc in "${SERVICES[@]}"; do
    pid="$(pid_of "$svc")"
    for _ in $(seq 1 300); do alive "$svc" || break; sleep 0.1; done
    if alive "$svc"; then log "$svc did not stop in 30 s: SIGKILL"; kill -KILL "$pid" 2>/dev/null || true; fi
    [[ -n "$pid" ]] && log "$svc stopped"
    rm -f "$PIDS/$svc.pid"
  done
}

cmd_status() {
  local svc
  for svc in "${SERVICES[@]}"; do
    if alive "$svc"; then echo "$svc: up (pid $(pid_of "$svc"))"; else echo "$svc: down"; fi
  done
}

case "${1:-}" in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
