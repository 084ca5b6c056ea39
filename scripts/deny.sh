#!/usr/bin/env bash
# cargo deny: licenses, bans (wildcards, duplicate majors) and sources always; advisories against
# RustSec's database when it can be fetched (GitHub), or from PA_ADVISORY_DB (a local clone).
set -euo pipefail
cd "$(dirname "$0")/.."
CARGO="${CARGO:-cargo}"
if ! "$CARGO" deny --version >/dev/null 2>&1; then
  echo "deny: installing cargo-deny (once)" >&2
  "$CARGO" install --locked cargo-deny
fi
"$CARGO" deny --log-level error check bans licenses sources
if [ -n "${PA_ADVISORY_DB:-}" ]; then
  "$CARGO" deny --log-level error check --disable-fetch advisories \
    --config <(sed "s|^\[advisories\]|[advisories]\ndb-path = \"$PA_ADVISORY_DB\"|" deny.toml)
elif timeout 10 git ls-remote https://github.com/rustsec/advisory-db HEAD >/dev/null 2>&1; then
  "$CARGO" deny --log-level error check advisories
else
  echo "deny: advisories NOT checked: RustSec's database (github.com/rustsec/advisory-db) is" \
       "unreachable from here; set PA_ADVISORY_DB to a clone of it to check offline" >&2
  [ "${PA_REQUIRE_ADVISORIES:-0}" = 1 ] && exit 1
fi
echo "deny: ok"
