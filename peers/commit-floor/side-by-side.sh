#!/usr/bin/env bash
# Rounds of the floor against `writebehind bench --workload log` (docs/benchmarks.md, "The
# floor of an 8-committer commit"): per round the floor, then the bench's log workload with
# the writebehind and pwrite backends, in the current directory. Prints per round: the
# floor's CPU per commit and rate, writebehind's, and writebehind's ratio to pwrite.
# Usage: peers/commit-floor/side-by-side.sh WRITEBEHIND_BINARY [ROUNDS=3] [THREADS=8]
set -u
BIN=$1 ROUNDS=${2:-3} T=${3:-8}
FLOOR=$(dirname "$0")/target/release/commit-floor
for r in $(seq "$ROUNDS"); do
  floor=$("$FLOOR" . "$T" 3)
  bench=$("$BIN" bench --workload log --threads "$T" --backend writebehind --backend pwrite \
    --repeat 3 --duration 3s --dir . 2>&1 | grep '^log')
  { echo "floor $floor"; echo "$bench"; } | awk -v r="$r" -v t="$(date -u +%H:%M:%S)" '
    /^floor/ {f = $(NF-2); fr = $4}
    /writebehind/ {gsub(",", "", $3); w = $3; c = $(NF-1)}
    /pwrite/ {gsub(",", "", $3); p = $3}
    END {printf "round %d %s  floor %6.2f us CPU/commit %6d commits/s (%.2fx pwrite)  writebehind %6.2f us CPU/commit %6d commits/s (%.2fx pwrite)\n", r, t, f, fr, fr / p, c * 512 / 1000, w, w / p}'
done
