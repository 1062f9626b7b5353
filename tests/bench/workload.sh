#!/usr/bin/env bash
# The benchmark workload of DESIGN.md §10 on this project alone, over local:// or over s3c://
# on the test S3 server (s3s-fs on 127.0.0.1). Prints key=value lines (times in seconds,
# rates in MiB/s or files/s, memory in MiB); progress goes to stderr.
#
#   tests/bench/workload.sh                  # local://; needs root and /dev/fuse
#   BACKEND=s3c tests/bench/workload.sh      # s3c:// on s3ql-test-s3-server
#
# The same shapes as ../shared/bench/fsbench.sh (the peer comparison), so that figures
# compare directly: SIZE_MB of incompressible data written with dd bs=1M conv=fsync, flushed
# (s3qlctrl flushcache), read with the page cache dropped, then after unmount + remount with
# an empty cache (from the backend) and compared; NFILES files of 4 KiB with distinct
# contents in 100 directories (create + sync, lstat walk and ls -lR with caches dropped,
# delete); untar, re-tar and delete of TREE_SRC; the daemon's peak RSS and CPU time.
# Encrypted (passphrase from the authinfo2 file) with the default compression, as users get.
#
# Build with --release first (cargo build --release --workspace --bins).
#
# Environment:
#   BACKEND       local (default) or s3c
#   SIZE_MB       sequential file size (default 1024); NFILES (default 10000)
#   TREE_SRC      tree for the untar phase (default /usr/include)
#   MOUNT_OPTS    extra mount.s3ql options (default none)
#   S3QL_BIN_DIR  where the commands are (default target/release, else target/debug)
#   KEEP=1        keep the work directory
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
if [ -z "${S3QL_BIN_DIR:-}" ]; then
    S3QL_BIN_DIR=$ROOT/target/release
    [ -x "$S3QL_BIN_DIR/mount.s3ql" ] || S3QL_BIN_DIR=$ROOT/target/debug
fi
BACKEND=${BACKEND:-local}
SIZE_MB=${SIZE_MB:-1024}
NFILES=${NFILES:-10000}
TREE_SRC=${TREE_SRC:-/usr/include}
read -r -a MOUNT_OPTS <<<"${MOUNT_OPTS:-}"

die() { printf 'workload.sh: error: %s\n' "$*" >&2; exit 1; }
say() { printf '[workload %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
[ "$(id -u)" = 0 ] || die "must run as root (FUSE mount, drop_caches)"
for b in mkfs.s3ql mount.s3ql umount.s3ql s3qlctrl; do
    [ -x "$S3QL_BIN_DIR/$b" ] || die "$S3QL_BIN_DIR/$b not found: run 'cargo build --release --workspace --bins'"
done
PATH=$S3QL_BIN_DIR:$PATH

WORK=$(mktemp -d /tmp/s3ql-bench-workload.XXXXXX)
mnt=$WORK/mnt
cache=$WORK/cache
auth=$WORK/authinfo2
mkdir -p "$mnt" "$cache"
S3_PID=
cleanup() {
    if mountpoint -q "$mnt"; then
        umount.s3ql "$mnt" >/dev/null 2>&1 || fusermount3 -u -z "$mnt" 2>/dev/null || true
    fi
    [ -z "$S3_PID" ] || kill "$S3_PID" 2>/dev/null || true
    if [ "${KEEP:-}" = 1 ]; then echo "work_dir=$WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

case $BACKEND in
local)
    mkdir -p "$WORK/store"
    url=local://$WORK/store
    : >"$auth"
    ;;
s3c)
    [ -x "$S3QL_BIN_DIR/s3ql-test-s3-server" ] || die "s3ql-test-s3-server not found in $S3QL_BIN_DIR"
    mkdir -p "$WORK/s3"
    "$S3QL_BIN_DIR/s3ql-test-s3-server" "$WORK/s3" "$WORK/s3.port" bucket 2>"$WORK/s3.log" &
    S3_PID=$!
    for _ in $(seq 100); do [ -s "$WORK/s3.port" ] && break; sleep 0.1; done
    [ -s "$WORK/s3.port" ] || die "the test S3 server did not start: $(cat "$WORK/s3.log")"
    url=s3c://127.0.0.1:$(cat "$WORK/s3.port")/bucket/bench/
    printf '[s3]\nstorage-url: s3c://\nbackend-login: s3ql-test-key\nbackend-password: s3ql-test-secret\nbackend-options: no-ssl\n' >"$auth"
    ;;
*) die "BACKEND=$BACKEND: expected local or s3c" ;;
esac
printf '[fs]\nstorage-url: %s\nfs-passphrase: bench-passphrase\n' "$url" >>"$auth"
chmod 600 "$auth"
common=(--cachedir "$cache" --authfile "$auth")

now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }
rate() { awk -v mb="$1" -v s="$2" 'BEGIN { printf "%.1f", (s > 0 ? mb / s : 0) }'; }
# Runs "$@" with its output on stderr and prints its duration.
timed() { local t0; t0=$(now); "$@" >&2; secs "$t0" "$(now)"; }
drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches; }
daemon_pid() { pgrep -f -n "mount.s3ql .*$mnt" || true; }
# Peak RSS (MiB) and CPU seconds of the daemons so far: the first mount's and the current one.
peak_rss=0
cpu_total=0
account_daemon() {
    local pid=$1 hwm cpu
    [ -n "$pid" ] && [ -r "/proc/$pid/status" ] || return 0
    hwm=$(awk '/VmHWM/ { print int($2 / 1024) }' "/proc/$pid/status")
    cpu=$(awk -v t="$(getconf CLK_TCK)" '{ printf "%.2f", ($14 + $15) / t }' "/proc/$pid/stat")
    [ "$hwm" -le "$peak_rss" ] || peak_rss=$hwm
    cpu_total=$(awk -v a="$cpu_total" -v b="$cpu" 'BEGIN { printf "%.2f", a + b }')
}
do_mount() { mount.s3ql "${common[@]}" "${MOUNT_OPTS[@]}" --log "$WORK/mount.log" "$url" "$mnt" >&2; }

T0=$(now)
echo "backend=$BACKEND"
echo "size_mb=$SIZE_MB"
echo "nfiles=$NFILES"
printf 'bench-passphrase\nbench-passphrase\n' | mkfs.s3ql "${common[@]}" "$url" >&2
echo "mount_s=$(timed do_mount)"

say "sequential write of $SIZE_MB MiB"
head -c "$((SIZE_MB << 20))" /dev/urandom >"$WORK/random.bin"
cat "$WORK/random.bin" >/dev/null
t=$(timed dd if="$WORK/random.bin" of="$mnt/big" bs=1M conv=fsync status=none)
echo "seq_write_s=$t"
echo "seq_write_MBps=$(rate "$SIZE_MB" "$t")"
echo "flush_s=$(timed s3qlctrl flushcache "$mnt")"
drop_caches
t=$(timed sh -c "cat '$mnt/big' >/dev/null")
echo "seq_read_MBps=$(rate "$SIZE_MB" "$t")"
account_daemon "$(daemon_pid)"
echo "umount_s=$(timed umount.s3ql "$mnt")"
echo "cache_after_umount_MB=$(du -sm "$cache" | cut -f1)"
drop_caches
echo "remount_s=$(timed do_mount)"
t=$(timed sh -c "cat '$mnt/big' >/dev/null")
echo "seq_read_remount_MBps=$(rate "$SIZE_MB" "$t")"
cmp -s "$WORK/random.bin" "$mnt/big" || die "the file read back after remount differs"
echo "seq_verify=ok"
rm -f "$mnt/big" "$WORK/random.bin"

say "$NFILES small files"
small_create() {
    python3 - "$mnt/small" "$NFILES" <<'EOF'
import os, sys
root, n = sys.argv[1], int(sys.argv[2])
pool = os.urandom(4096 + n * 8)
os.mkdir(root)
for i in range(n):
    d = os.path.join(root, f"d{i % 100:03d}")
    if i < 100:
        os.mkdir(d)
    with open(os.path.join(d, f"f{i:06d}"), "wb") as f:
        f.write(pool[i * 8:i * 8 + 4096])
EOF
    sync
}
t=$(timed small_create)
echo "small_create_s=$t"
echo "small_files_per_s=$(awk -v n="$NFILES" -v s="$t" 'BEGIN { printf "%.0f", n / s }')"
drop_caches
echo "small_stat_s=$(timed sh -c "find '$mnt/small' -printf '%s\\n' >/dev/null")"
drop_caches
echo "ls_lR_s=$(timed sh -c "ls -lR '$mnt/small' >/dev/null")"
echo "small_delete_s=$(timed sh -c "rm -rf '$mnt/small' && sync")"

say "untar of $TREE_SRC"
tar -cf "$WORK/tree.tar" -C "$(dirname "$TREE_SRC")" "$(basename "$TREE_SRC")"
echo "untar_s=$(timed sh -c "tar -xf '$WORK/tree.tar' -C '$mnt' && sync")"
echo "untar_entries=$(find "$mnt/$(basename "$TREE_SRC")" | wc -l)"
drop_caches
echo "retar_s=$(timed sh -c "tar -cf - -C '$mnt' '$(basename "$TREE_SRC")' | cat >/dev/null")"
echo "untar_rm_s=$(timed sh -c "rm -rf '$mnt/$(basename "$TREE_SRC")' && sync")"

account_daemon "$(daemon_pid)"
echo "final_umount_s=$(timed umount.s3ql "$mnt")"
echo "daemon_peak_rss_MB=$peak_rss"
echo "daemon_cpu_s=$cpu_total"
echo "bench_s=$(secs "$T0" "$(now)")"
