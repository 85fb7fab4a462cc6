#!/usr/bin/env bash
# Usage: peer-certfleet.sh N CONC   (pebble must be up: shared/bench/pebble-up.sh [--always-valid])
# The certfleet side of the peer benchmark, in the same shape as shared/bench/peer-lego.sh:
# one `certfleet issue` process per certificate, CONC parallel workers, one ACME account per
# worker (registered untimed). Needs CERTFLEET_BIN (the built binary) and BENCH_DIR (the
# shared bench directory whose bench-lib.sh drives the run); `cargo xtask bench` sets both.
# CHALLENGE=webroot (default; needs --always-valid). Per-certificate protocol counts
# (HTTP requests, signatures, newNonce) are taken from each process's "protocol cost" line.
set -euo pipefail
: "${BENCH_DIR:?set BENCH_DIR to the shared bench directory}" "${CERTFLEET_BIN:?set CERTFLEET_BIN}"
export CERTFLEET_BIN
source "$BENCH_DIR/bench-lib.sh"

# Trust only the harness's root for Pebble's HTTPS, as lego does with LEGO_CA_CERTIFICATES
# (unless LEGO_CA_SYSTEM_CERT_POOL is set): no system store to load per process.
export CERTFLEET_CA_ROOTS_ONLY=true

certfleet_global() {  # WDIR -> global flags
  printf '%s\0' --directory "$DIRECTORY_URL" --ca-root "$CA_BUNDLE" --state-dir "$1/state" -q
}
client_setup() {  # WDIR LABEL
  local wdir="$1" g; mkdir -p "$wdir/www" "$wdir/state"
  mapfile -d '' g < <(certfleet_global "$wdir")
  "$CERTFLEET_BIN" "${g[@]}" key generate --alg es256 --out "$wdir/state/account.pem"
  "$CERTFLEET_BIN" "${g[@]}" account register --key "$wdir/state/account.pem" --agree-tos \
    --contact mailto:bench@bench.test
}
client_issue() {  # WDIR DOMAIN
  local wdir="$1" dom="$2" g
  [ "$CHALLENGE" = webroot ] || { echo "unsupported CHALLENGE=$CHALLENGE for certfleet" >&2; return 2; }
  mapfile -d '' g < <(certfleet_global "$wdir")
  # Only the per-certificate "protocol cost" line, for the request and signature counts.
  CERTFLEET_LOG="error,certfleet::commands::issue=info" exec "$CERTFLEET_BIN" "${g[@]:0:6}" issue --name "$dom" \
    --key-alg es256 --webroot "$wdir/www" --out "$wdir/certs/$dom"
}
client_cert_path() { echo "$1/certs/$2/cert.pem"; }
client_chain_path() { echo "$1/certs/$2/chain.pem"; }

run_bench certfleet "${1:-}" "${2:-}"
