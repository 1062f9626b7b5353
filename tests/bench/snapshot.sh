#!/usr/bin/env bash
# Snapshot benchmark: on one tree of N files in a fresh s3ql-rs filesystem (local:// backend),
# times s3qlcp against cp -a and s3qlrm against rm -rf, and measures how much the storage
# grows through the snapshot. Prints key=value lines (times in seconds, sizes in bytes).
#
#   tests/bench/snapshot.sh              # needs root and /dev/fuse; build with --release first
#
# Environment:
#   N             number of files (default 100000), in DIRS directories (default 100)
#   FILE_SIZE     bytes per file, random and distinct (default 4096)
#   COMPARE=0     skip cp -a and rm -rf (the slow part for large N)
#   S3QL_BIN_DIR  where the commands are (default target/release, else target/debug)
#   KEEP=1        keep the work directory
#
# Storage growth is measured after flushing the cache and uploading the metadata, before and
# after the snapshot: data_growth_bytes counts the data objects (a snapshot stores no data),
# store_growth_bytes everything in the bucket (the metadata grows by the copied rows).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
if [ -z "${S3QL_BIN_DIR:-}" ]; then
    S3QL_BIN_DIR=$ROOT/target/release
    [ -x "$S3QL_BIN_DIR/s3qlcp" ] || S3QL_BIN_DIR=$ROOT/target/debug
fi
N=${N:-100000}
DIRS=${DIRS:-100}
FILE_SIZE=${FILE_SIZE:-4096}

die() { printf 'snapshot.sh: error: %s\n' "$*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "must run as root (FUSE mount)"
command -v python3 >/dev/null || die "python3 is needed to create the files"
for b in mkfs.s3ql mount.s3ql umount.s3ql s3qlcp s3qlrm s3qlctrl s3qlstat; do
    [ -x "$S3QL_BIN_DIR/$b" ] || die "$S3QL_BIN_DIR/$b not found: run 'cargo build --release --workspace --bins'"
done
PATH=$S3QL_BIN_DIR:$PATH

WORK=$(mktemp -d /tmp/s3ql-bench-snapshot.XXXXXX)
store=$WORK/store
mnt=$WORK/mnt
mkdir -p "$store" "$WORK/cache" "$mnt"
common=(--cachedir "$WORK/cache" --authfile /dev/null)
cleanup() {
    if mountpoint -q "$mnt"; then
        umount.s3ql "$mnt" >/dev/null 2>&1 || fusermount3 -u -z "$mnt" 2>/dev/null || true
    fi
    if [ "${KEEP:-}" = 1 ]; then
        echo "work_dir=$WORK"
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT

now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }
# Runs "$@" and prints its duration in seconds.
timed() { local t0; t0=$(now); "$@"; secs "$t0" "$(now)"; }
data_bytes() { find "$store" -type f -name 's3ql_data_*' -printf '%s\n' | awk '{ s += $1 } END { print s + 0 }'; }
store_bytes() { find "$store" -type f -printf '%s\n' | awk '{ s += $1 } END { print s + 0 }'; }
settle() { sync -f "$mnt"; s3qlctrl flushcache "$mnt"; s3qlctrl backup-metadata "$mnt"; }
db_bytes() { s3qlstat --json "$mnt" | sed -n 's/.*"db_bytes": *\([0-9]*\).*/\1/p'; }

mkfs.s3ql --plain "${common[@]}" "local://$store" >/dev/null
mount.s3ql "${common[@]}" --log "$WORK/mount.log" "local://$store" "$mnt"

# N files of FILE_SIZE incompressible bytes, each distinct (windows of one random pool, as
# ../shared/bench/fsbench.sh does), so that neither compression nor de-duplication hides
# the data.
create_tree() {
    python3 - "$mnt/src" "$DIRS" "$N" "$FILE_SIZE" <<'EOF'
import os, sys
root, ndirs, nfiles, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
per = -(-nfiles // ndirs)
pool = os.urandom(size + nfiles * 8)
os.mkdir(root)
for n in range(nfiles):
    d = os.path.join(root, f"d{n // per:04d}")
    if n % per == 0:
        os.mkdir(d)
    fd = os.open(os.path.join(d, f"f{n:06d}"), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    os.write(fd, pool[n * 8:n * 8 + size])
    os.close(fd)
EOF
}
echo "files=$N"
echo "dirs=$DIRS"
echo "file_size=$FILE_SIZE"
echo "create_s=$(timed create_tree)"
echo "flush_s=$(timed settle)"
data_before=$(data_bytes)
store_before=$(store_bytes)
db_before=$(db_bytes)

echo "s3qlcp_s=$(timed s3qlcp "$mnt/src" "$mnt/snap")"
settle
data_after=$(data_bytes)
store_after=$(store_bytes)
db_after=$(db_bytes)
echo "data_bytes_before=$data_before"
echo "data_bytes_after_snapshot=$data_after"
echo "data_growth_bytes=$((data_after - data_before))"
echo "store_bytes_before=$store_before"
echo "store_bytes_after_snapshot=$store_after"
echo "store_growth_bytes=$((store_after - store_before))"
echo "store_growth_pct=$(awk -v a="$store_before" -v b="$store_after" 'BEGIN { printf "%.3f", (b - a) * 100 / a }')"
echo "db_bytes_before=$db_before"
echo "db_bytes_after_snapshot=$db_after"
echo "db_growth_bytes_per_file=$(( (db_after - db_before) / N ))"
[ "$(find "$mnt/snap" -type f | wc -l)" = "$N" ] || die "the snapshot does not hold $N files"

if [ "${COMPARE:-1}" != 0 ]; then
    echo "cp_a_s=$(timed cp -a "$mnt/src" "$mnt/copy")"
    # The copy's data is uploaded first, so that both removals run on a quiet filesystem.
    echo "flush_after_cp_s=$(timed settle)"
fi
echo "s3qlrm_s=$(timed s3qlrm "$mnt/snap")"
if [ "${COMPARE:-1}" != 0 ]; then
    echo "rm_rf_s=$(timed rm -rf "$mnt/copy")"
fi
[ ! -e "$mnt/snap" ] || die "the snapshot is still there after s3qlrm"
s3qlstat --raw "$mnt" | sed -n 's/^\(Directory entries\|Inodes\|Data objects\): *\([0-9]*\).*/\L\1\E=\2/p' | tr ' ' '_'
