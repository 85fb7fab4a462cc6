#!/usr/bin/env bash
# Usage: peer-certfleet-batch.sh N CONC   (pebble must be up: shared/bench/pebble-up.sh --always-valid)
# certfleet issuing the whole batch in ONE process (`certfleet batch run`) with CONC orders in
# flight, through the shared harness's `client_batch` hook: CPU and peak RSS are that one
# process's. The account is registered untimed. Needs CERTFLEET_BIN and BENCH_DIR (set by
# `cargo xtask bench batch`). CHALLENGE=webroot (default; with --always-valid nothing is
# fetched, the files are only written).
set -euo pipefail
: "${BENCH_DIR:?set BENCH_DIR to the shared bench directory}" "${CERTFLEET_BIN:?set CERTFLEET_BIN}"
export CERTFLEET_BIN
source "$BENCH_DIR/bench-lib.sh"

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
client_batch() {  # WDIR DOMAINS_FILE CONC
  local wdir="$1" g
  [ "$CHALLENGE" = webroot ] || { echo "unsupported CHALLENGE=$CHALLENGE for certfleet batch" >&2; return 2; }
  mapfile -d '' g < <(certfleet_global "$wdir")
  CERTFLEET_LOG="warn,certfleet::commands::batch=info" "$CERTFLEET_BIN" "${g[@]:0:6}" batch run "$2" \
    --concurrency "$3" --rate-limits none --webroot "$wdir/www" --report "$wdir/report.json"
}
client_cert_path() { echo "$1/state/certs/$2/cert.pem"; }
client_chain_path() { echo "$1/state/certs/$2/chain.pem"; }

run_bench certfleet-batch "${1:-}" "${2:-}"
