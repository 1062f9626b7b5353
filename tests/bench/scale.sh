#!/usr/bin/env bash
# Scale benchmark: a filesystem of N files (many small ones, a few large ones), created
# through a real mount by PARALLEL writers. Reports metadata size per inode, unmount time,
# mount time with a warm cache, statfs (df) time, `find | wc -l` time with cold kernel
# caches, and the daemon's RSS after each phase (it must stay flat as the file count
# grows). key=value lines.
#
#   tests/bench/scale.sh                   # N=1000000 on local://; needs root and /dev/fuse
#   N=200000 tests/bench/scale.sh
#
# Environment:
#   N             files (default 1000000): N - LARGE files of 0-4 KiB, LARGE files of 8 MiB
#   LARGE         large files (default 8)
#   PARALLEL      concurrent writer processes (default 4)
#   S3QL_BIN_DIR  where the commands are (default target/release, else target/debug)
#   KEEP=1        keep the work directory
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
if [ -z "${S3QL_BIN_DIR:-}" ]; then
    S3QL_BIN_DIR=$ROOT/target/release
    [ -x "$S3QL_BIN_DIR/mount.s3ql" ] || S3QL_BIN_DIR=$ROOT/target/debug
fi
N=${N:-1000000}
LARGE=${LARGE:-8}
PARALLEL=${PARALLEL:-4}

die() { printf 'scale.sh: error: %s\n' "$*" >&2; exit 1; }
say() { printf '[scale %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
[ "$(id -u)" = 0 ] || die "must run as root (FUSE mount, drop_caches)"
for b in mkfs.s3ql mount.s3ql umount.s3ql s3qlctrl s3qlstat; do
    [ -x "$S3QL_BIN_DIR/$b" ] || die "$S3QL_BIN_DIR/$b not found: run 'cargo build --release --workspace --bins'"
done
PATH=$S3QL_BIN_DIR:$PATH

WORK=$(mktemp -d /tmp/s3ql-bench-scale.XXXXXX)
mnt=$WORK/mnt
mkdir -p "$WORK/store" "$WORK/cache" "$mnt"
common=(--cachedir "$WORK/cache" --authfile /dev/null)
url=local://$WORK/store
cleanup() {
    if mountpoint -q "$mnt"; then
        umount.s3ql "$mnt" >/dev/null 2>&1 || fusermount3 -u -z "$mnt" 2>/dev/null || true
    fi
    if [ "${KEEP:-}" = 1 ]; then echo "work_dir=$WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }
timed() { local t0; t0=$(now); "$@" >&2; secs "$t0" "$(now)"; }
rss_mb() { awk '/VmRSS/ { print int($2 / 1024) }' "/proc/$(pgrep -f -n "mount.s3ql .*$mnt")/status"; }
db_bytes() { s3qlstat --json "$mnt" | sed -n 's/.*"db_bytes": *\([0-9]*\).*/\1/p'; }

mkfs.s3ql --plain "${common[@]}" "$url" >&2
mount.s3ql "${common[@]}" --log "$WORK/mount.log" "$url" "$mnt" >&2
echo "files=$N"
echo "rss_empty_MB=$(rss_mb)"

# Writer w creates files w, w + PARALLEL, ... in directories of 1000 files.
create() {
    python3 - "$mnt" "$N" "$LARGE" "$PARALLEL" "$1" <<'EOF'
import os, sys
root, n, large, parallel, w = sys.argv[1], *map(int, sys.argv[2:])
blob = os.urandom(8 << 20)
for i in range(w, n, parallel):
    d = os.path.join(root, f"d{i // 1000:04d}")
    os.makedirs(d, exist_ok=True)
    size = (8 << 20) if i < large else (i * 37) % 4097
    start = (i * 61) % ((8 << 20) - size + 1)
    with open(os.path.join(d, f"f{i:07d}"), "wb") as f:
        f.write(blob[start:start + size])
EOF
}
create_all() {
    local pids=() w
    for w in $(seq 0 $((PARALLEL - 1))); do create "$w" & pids+=($!); done
    for p in "${pids[@]}"; do wait "$p" || return 1; done
    sync -f "$mnt"
}
say "creating $N files with $PARALLEL writers"
t=$(timed create_all)
echo "create_s=$t"
echo "create_files_per_s=$(awk -v n="$N" -v s="$t" 'BEGIN { printf "%.0f", n / s }')"
echo "rss_after_create_MB=$(rss_mb)"
echo "flush_s=$(timed s3qlctrl flushcache "$mnt")"
db=$(db_bytes)
echo "db_bytes=$db"
echo "db_bytes_per_inode=$((db / N))"
echo "umount_s=$(timed umount.s3ql "$mnt")"
echo "metadata_stored_bytes=$(find "$WORK/store" -name 's3ql_metadata*' -printf '%s\n' | awk '{ s += $1 } END { print s + 0 }')"
sync; echo 3 >/proc/sys/vm/drop_caches
echo "mount_warm_s=$(timed mount.s3ql "${common[@]}" --log "$WORK/mount.log" "$url" "$mnt")"
echo "rss_after_mount_MB=$(rss_mb)"
# statfs (df): the first call on the freshly mounted filesystem, then the slowest of 5.
echo "statfs_first_s=$(timed stat -f "$mnt")"
slowest=0
for _ in 1 2 3 4 5; do slowest=$(awk -v a="$slowest" -v b="$(timed stat -f "$mnt")" 'BEGIN { print (b > a ? b : a) }'); done
echo "statfs_s=$slowest"
sync; echo 3 >/proc/sys/vm/drop_caches
t0=$(now)
count=$(find "$mnt" | wc -l)
echo "find_wc_s=$(secs "$t0" "$(now)")"
echo "find_entries=$count"
[ "$count" -gt "$N" ] || die "find saw $count entries, expected more than $N"
echo "rss_after_find_MB=$(rss_mb)"
echo "final_umount_s=$(timed umount.s3ql "$mnt")"
