#!/usr/bin/env bash
# Footprint of heartline on a device: the stripped size of the `tail` example
# built with the `device` profile for x86_64, aarch64 and armv7, and, natively,
# the resident memory and thread count of `tail` idle on an open connection.
# Also fails if anything heavy a device does not need is linked (rustls,
# ring, tokio).
#
#   bash .ci/footprint.sh
#
# Needs the ARM cross toolchains (see the guide, heartline::guide::cross_compiling).
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== dependencies a device does not need =="
heavy=$(cargo tree --edges normal --target all --features vendored --prefix none 2>/dev/null \
  | grep -E '^(rustls|ring|tokio|aws-lc-rs|aws-lc-sys|webpki|webpki-roots|webpki-root-certs) v' | sort -u || true)
if [ -n "$heavy" ]; then
  echo "linked but not wanted:"; echo "$heavy"; exit 1
fi
echo "none (no rustls, ring, tokio, aws-lc, webpki roots; rustls-pki-types, a types-only crate, comes with ureq)"

row() { printf '%-34s %-26s %10s\n' "$@"; }
echo
echo "== stripped size of examples/tail, profile 'device' =="
row target openssl bytes
for spec in \
  "x86_64-unknown-linux-gnu:system (dynamic)" \
  "x86_64-unknown-linux-gnu:vendored (static)" \
  "aarch64-unknown-linux-gnu:vendored (static)" \
  "armv7-unknown-linux-gnueabihf:vendored (static)"; do
  target=${spec%%:*}; ssl=${spec#*:}
  features=(); dir="target/$target/device/examples"
  if [[ $ssl == vendored* ]]; then
    features=(--features vendored)
    # a separate target dir keeps the vendored and system builds apart
    export CARGO_TARGET_DIR=target/vendored
    dir="target/vendored/$target/device/examples"
  else
    unset CARGO_TARGET_DIR
  fi
  cargo build -q --profile device --target "$target" "${features[@]}" --example tail
  row "$target" "$ssl" "$(stat -c %s "$dir/tail")"
done
unset CARGO_TARGET_DIR

echo
echo "== tail idle on an open connection (native, profile 'device') =="
cargo build -q --profile device --example serve
serve_out=$(mktemp); tail_out=$(mktemp)
sleep_fifo=$(mktemp -u); mkfifo "$sleep_fifo"
exec 3<>"$sleep_fifo"
target/device/examples/serve <&3 >"$serve_out" &
serve_pid=$!
for _ in $(seq 100); do [ -s "$serve_out" ] && break; sleep 0.05; done
url=$(head -n1 "$serve_out")
target/x86_64-unknown-linux-gnu/device/examples/tail "$url" --every 30000 --for 4000 >"$tail_out" &
tail_pid=$!
for _ in $(seq 100); do grep -q '"state":"open"' "$tail_out" && break; sleep 0.05; done
sleep 1 # idle on the open connection before reading its figures
rss=$(awk '/^VmRSS/ {print $2" "$3}' "/proc/$tail_pid/status")
threads=$(awk '/^Threads/ {print $2}' "/proc/$tail_pid/status")
names=$(cat /proc/"$tail_pid"/task/*/comm | sort | tr '\n' ' ')
wait "$tail_pid"
exec 3>&-; rm -f "$sleep_fifo"; kill "$serve_pid" 2>/dev/null || true
echo "resident memory: $rss"
echo "threads: $threads ($names)"
rm -f "$serve_out" "$tail_out"
