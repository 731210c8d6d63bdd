#!/usr/bin/env bash
# Rounds of the flood floor against `writebehind bench --workload flood` (docs/benchmarks.md,
# "The flood's floor"): per round the floor plain; two spinning threads at normal and at idle
# priority; A written behind in 1 MiB and 64 KiB pieces by a normal flusher and in 64 KiB and
# 256 KiB pieces by an idle one; then the bench's flood with the writebehind and pwrite
# backends, all in the current directory. Prints B's p50 / p99 of each, and A's writes/s.
# Usage: peers/flood-floor/side-by-side.sh WRITEBEHIND_BINARY [ROUNDS=3]
set -u
BIN=$1 ROUNDS=${2:-3}
FLOOR=$(dirname "$0")/target/release/flood-floor
for r in $(seq "$ROUNDS"); do
  echo "### round $r $(date -u +%H:%M:%S) load $(cut -d' ' -f1-3 /proc/loadavg)"
  "$FLOOR" . plain 3
  for policy in normal idle; do "$FLOOR" . spin 3 2 "$policy"; done
  for piece in 1048576 65536; do "$FLOOR" . behind 3 "$piece" normal; done
  for piece in 65536 262144; do "$FLOOR" . behind 3 "$piece" idle; done
  "$BIN" bench --workload flood --backend writebehind --backend pwrite --repeat 3 \
    --duration 3s --dir . 2>&1 | awk '/^flood +(writebehind|pwrite)/ {
      printf "bench %s: A %s writes/s; B force p50 %s, p99 %s\n", $2, $3, $9, $10}'
done
