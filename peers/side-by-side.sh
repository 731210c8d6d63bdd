#!/usr/bin/env bash
# Side-by-side rounds of the issue-13 comparison (docs/benchmarks.md, "Extents"): per round,
# fio 1 MiB QD4 write, `writebehind bench --workload seq --direct` of NEW and OLD, the
# glommio peer (if built), fio 4 KiB randwrite QD32, and `pages --direct` of NEW and OLD,
# all in the current directory.
# Usage: peers/side-by-side.sh NEW_BINARY OLD_BINARY [ROUNDS]   (run from the scratch dir)
set -u
NEW=$1 OLD=$2 ROUNDS=${3:-3}
GL=$(dirname "$0")/glommio-seq/target/release/glommio-seq
for r in $(seq "$ROUNDS"); do
  echo "### round $r $(date -u +%H:%M:%S) load $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "fio-seq: $(fio --name=s --filename=fio.dat --size=1g --time_based --runtime=4 --ioengine=io_uring --direct=1 --rw=write --bs=1m --iodepth=4 2>&1 | grep -oE 'BW=[^ ]+ \([^)]+\)')"; rm -f fio.dat
  echo "new-seq: $("$NEW" bench --workload seq --direct --backend writebehind --dir . 2>&1 | grep '^seq')"
  echo "old-seq: $("$OLD" bench --workload seq --direct --backend writebehind --dir . 2>&1 | grep '^seq')"
  [ -x "$GL" ] && echo "glommio: $("$GL" . 2 2>&1 | tail -1)"
  echo "fio-rand: $(fio --name=r --filename=fio.dat --size=1g --time_based --runtime=4 --ioengine=io_uring --direct=1 --rw=randwrite --bs=4k --iodepth=32 2>&1 | grep -oE 'IOPS=[^,]+')"; rm -f fio.dat
  echo "new-pages: $("$NEW" bench --workload pages --direct --backend writebehind --dir . 2>&1 | grep '^pages')"
  echo "old-pages: $("$OLD" bench --workload pages --direct --backend writebehind --dir . 2>&1 | grep '^pages')"
done
