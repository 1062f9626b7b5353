#!/usr/bin/env bash
# fsck benchmark: times fsck.s3ql --force on a filesystem of N small files (clean check,
# cached metadata; with and without --fast, which skips the check of older metadata
# generations), and after a kill -9 of the mount daemon (crash recovery of the same tree
# with DIRTY files not yet uploaded). Prints key=value lines (times in seconds).
#
#   tests/bench/fsck.sh                 # local://; needs root and /dev/fuse
#   BACKEND=s3c tests/bench/fsck.sh     # s3c:// on the test S3 server (s3s-fs, 127.0.0.1)
#
# Build with --release first (cargo build --release --workspace --bins).
#
# Environment:
#   N             number of files (default 100000), in DIRS directories (default 100)
#   DIRTY         files written (fsynced) just before the kill (default 1000)
#   BACKEND       local (default) or s3c: starts s3ql-test-s3-server (from S3QL_BIN_DIR)
#                 on a free port of 127.0.0.1 with its data in the work directory
#   URL           storage URL (default: see BACKEND); for s3c:// also AUTHFILE
#   AUTHFILE      authinfo2 file for URL (default /dev/null)
#   S3QL_BIN_DIR  where the commands are (default target/release, else target/debug)
#   KEEP=1        keep the work directory
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
if [ -z "${S3QL_BIN_DIR:-}" ]; then
    S3QL_BIN_DIR=$ROOT/target/release
    [ -x "$S3QL_BIN_DIR/fsck.s3ql" ] || S3QL_BIN_DIR=$ROOT/target/debug
fi
N=${N:-100000}
DIRS=${DIRS:-100}
DIRTY=${DIRTY:-1000}

die() { printf 'fsck.sh: error: %s\n' "$*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "must run as root (FUSE mount)"
command -v python3 >/dev/null || die "python3 is needed to create the files"
BACKEND=${BACKEND:-local}
bins=(mkfs.s3ql mount.s3ql umount.s3ql fsck.s3ql s3qlctrl)
[ "$BACKEND" = s3c ] && bins+=(s3ql-test-s3-server)
for b in "${bins[@]}"; do
    [ -x "$S3QL_BIN_DIR/$b" ] || die "$S3QL_BIN_DIR/$b not found: run 'cargo build --release --workspace --bins'"
done
export PATH=$S3QL_BIN_DIR:$PATH

WORK=$(mktemp -d /tmp/s3ql-fsck-bench.XXXXXX)
mnt=$WORK/mnt
mkdir -p "$mnt" "$WORK/store"
server_pid=
if [ "$BACKEND" = s3c ] && [ -z "${URL:-}" ]; then
    mkdir -p "$WORK/s3"
    s3ql-test-s3-server "$WORK/s3" "$WORK/s3.port" bucket >"$WORK/s3.log" 2>&1 &
    server_pid=$!
    for _ in $(seq 100); do [ -s "$WORK/s3.port" ] && break; sleep 0.1; done
    [ -s "$WORK/s3.port" ] || die "the S3 server did not start (see $WORK/s3.log)"
    URL=s3c://127.0.0.1:$(cat "$WORK/s3.port")/bucket
    AUTHFILE=$WORK/authinfo2
    printf '[s3c]\nstorage-url: s3c://\nbackend-login: s3ql-test-key\nbackend-password: s3ql-test-secret\nbackend-options: no-ssl\n' >"$AUTHFILE"
    chmod 600 "$AUTHFILE"
fi
URL=${URL:-local://$WORK/store}
common=(--cachedir "$WORK/cache" --authfile "${AUTHFILE:-/dev/null}")
cleanup() {
    if mountpoint -q "$mnt"; then
        umount.s3ql "$mnt" >/dev/null 2>&1 || fusermount3 -u -z "$mnt" 2>/dev/null || true
    fi
    [ -z "$server_pid" ] || kill "$server_pid" 2>/dev/null || true
    if [ "${KEEP:-}" = 1 ]; then echo "work_dir=$WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }
# Runs "$@" (exit codes 0 and 128 are success) and prints its duration in seconds.
timed() {
    local t0 rc=0
    t0=$(now)
    "$@" >>"$WORK/out.log" 2>&1 || rc=$?
    [ "$rc" = 0 ] || [ "$rc" = 128 ] || die "$* exited $rc (see $WORK/out.log)"
    secs "$t0" "$(now)"
}
# FILES files of 1 KiB under $mnt/$1, fsynced if $2 = sync.
create_tree() {
    python3 - "$mnt/$1" "$DIRS" "$3" "$2" <<'PY'
import os, sys
root, ndirs, nfiles, sync = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "sync"
per = -(-nfiles // ndirs)
pool = os.urandom(1024 + nfiles * 8)
os.mkdir(root)
for n in range(nfiles):
    d = os.path.join(root, f"d{n // per:04d}")
    if n % per == 0:
        os.mkdir(d)
    fd = os.open(os.path.join(d, f"f{n:06d}"), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    os.write(fd, pool[n * 8:n * 8 + 1024])
    if sync:
        os.fsync(fd)
    os.close(fd)
PY
}

mkfs.s3ql --plain "${common[@]}" "$URL" >/dev/null
mount.s3ql "${common[@]}" --log "$WORK/mount.log" "$URL" "$mnt"
echo "url_scheme=${URL%%://*}"
echo "files=$N"
echo "create_s=$(timed create_tree tree nosync "$N")"
echo "umount_s=$(timed umount.s3ql "$mnt")"
echo "fsck_clean_s=$(timed fsck.s3ql "${common[@]}" --log none --batch --force "$URL")"
echo "fsck_clean_fast_s=$(timed fsck.s3ql "${common[@]}" --log none --batch --force --fast "$URL")"

mount.s3ql "${common[@]}" --log "$WORK/mount.log" "$URL" "$mnt"
create_tree dirty sync "$DIRTY"
pid=$(pgrep -f "mount.s3ql.*$mnt" | head -1)
kill -9 "$pid"
while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
fusermount3 -u -z "$mnt"
echo "dirty_files=$DIRTY"
echo "fsck_after_crash_s=$(timed fsck.s3ql "${common[@]}" --log none --batch "$URL")"
echo "fsck_second_run_s=$(timed fsck.s3ql "${common[@]}" --log none --batch --force "$URL")"
echo "fsck_report_lines=$(grep -c . "$WORK/out.log")"
