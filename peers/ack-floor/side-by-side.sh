#!/usr/bin/env bash
# Rounds of the ack floor against `writebehind bench --workload pages --direct`
# (docs/benchmarks.md, "The floors"): per round the floor, then the bench's writebehind
# backend, in the current directory. Prints writes/s and the write ack's p50 and p99 of each.
# Usage: peers/ack-floor/side-by-side.sh WRITEBEHIND_BINARY [ROUNDS=3]
set -u
BIN=$1 ROUNDS=${2:-3}
FLOOR=$(dirname "$0")/target/release/ack-floor
for r in $(seq "$ROUNDS"); do
  echo "### round $r $(date -u +%H:%M:%S) load $(cut -d' ' -f1-3 /proc/loadavg)"
  "$FLOOR" . 3
  "$BIN" bench --workload pages --direct --backend writebehind --duration 3s --dir . 2>&1 |
    awk '/^pages/ {printf "bench pages --direct: %s writes/s; ack p50 %s, p99 %s\n", $3, $5, $6}'
done
