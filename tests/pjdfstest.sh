#!/usr/bin/env bash
# POSIX conformance: runs pjdfstest 0.2.2 on a fresh s3ql-rs filesystem (mounted with
# --allow-other) and fails if too few tests pass or too many fail.
#
#   tests/pjdfstest.sh                    # local:// backend; needs root and /dev/fuse
#   S3QL_TEST_BACKEND=s3c tests/pjdfstest.sh   # s3c:// on the embedded test S3 server
#
# Linux and FreeBSD (fusefs: `kldload fusefs`; users are created with pw there).
#
# Environment:
#   PJD_MIN_PASS   least number of passed tests (default 370; ext4 passes 383 of 398 here)
#   PJD_MAX_FAIL   most failed tests allowed (default 5)
#   S3QL_TEST_BACKEND  local (default) or s3c: s3c://127.0.0.1:PORT/bucket/pjd/ served by
#                  s3ql-test-s3-server (built with the workspace bins) on a free port
#   S3QL_ADAPTER   FUSE adapter, passed to mount.s3ql as --adapter: fuser or fuse-backend-rs
#                  (default: mount.s3ql's default)
#   S3QL_BIN_DIR   where mkfs.s3ql, mount.s3ql, umount.s3ql (and s3ql-test-s3-server) are
#                  (default target/debug)
#   PJDFSTEST      the pjdfstest binary (default: `pjdfstest` on PATH, else it is installed
#                  with `cargo install pjdfstest --version 0.2.2 --locked`)
#   PJD_TIMEOUT    seconds pjdfstest may run (default 1200)
#   KEEP=1         keep the work directory (store, cache, logs, pjdfstest output)
#
# Configuration as in DESIGN.md §9 and ../shared/peers/README.md §5. pjdfstest switches to
# the users nobody/nogroup and tests/tests; the script creates the `tests` user and group if
# they are missing. The filesystem is unmounted on every exit path (trap).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN_DIR=${S3QL_BIN_DIR:-$ROOT/target/debug}
PJD_MIN_PASS=${PJD_MIN_PASS:-370}
PJD_MAX_FAIL=${PJD_MAX_FAIL:-5}
PJD_TIMEOUT=${PJD_TIMEOUT:-1200}
PJD_VERSION=0.2.2

say() { printf 'pjdfstest.sh: %s\n' "$*"; }
die() { printf 'pjdfstest.sh: error: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root (pjdfstest switches users; the mount needs /dev/fuse)"
[ -c /dev/fuse ] || die "/dev/fuse is missing (modprobe fuse, or run the container with --device /dev/fuse)"
for b in mkfs.s3ql mount.s3ql umount.s3ql; do
    [ -x "$BIN_DIR/$b" ] || die "$BIN_DIR/$b not found: run 'cargo build --workspace --bins' first (or set S3QL_BIN_DIR)"
done

# --- pjdfstest itself -------------------------------------------------------------------
PJD=${PJDFSTEST:-}
if [ -z "$PJD" ]; then
    if command -v pjdfstest >/dev/null && [ "$(pjdfstest --version 2>/dev/null)" = "pjdfstest $PJD_VERSION" ]; then
        PJD=$(command -v pjdfstest)
    else
        say "installing pjdfstest $PJD_VERSION (cargo install, takes a few minutes)"
        cargo install pjdfstest --version "$PJD_VERSION" --locked --quiet
        PJD=${CARGO_HOME:-$HOME/.cargo}/bin/pjdfstest
    fi
fi
[ -x "$PJD" ] || die "pjdfstest binary $PJD is not executable"

if ! getent group tests >/dev/null; then
    if command -v groupadd >/dev/null; then groupadd tests; else pw groupadd tests; fi # FreeBSD: pw
fi
if ! id -u tests >/dev/null 2>&1; then
    if command -v useradd >/dev/null; then
        useradd -M -N -g tests -s /usr/sbin/nologin tests
    else
        pw useradd tests -g tests -s /usr/sbin/nologin
    fi
fi
getent passwd nobody >/dev/null || die "user nobody is missing"
getent group nogroup >/dev/null || die "group nogroup is missing"

# --- a fresh filesystem ------------------------------------------------------------------
WORK=$(mktemp -d /tmp/s3ql-pjdfstest.XXXXXX)
# The unprivileged test users must be able to reach the mount point.
chmod 755 "$WORK"
STORE=$WORK/store CACHE=$WORK/cache MNT=$WORK/mnt
mkdir -p "$STORE" "$CACHE" "$MNT"
BACKEND=${S3QL_TEST_BACKEND:-local}
S3_PID=
case "$BACKEND" in
    local) URL=local://$STORE ;;
    s3c)
        [ -x "$BIN_DIR/s3ql-test-s3-server" ] || die "$BIN_DIR/s3ql-test-s3-server not found: run 'cargo build --workspace --bins' first"
        "$BIN_DIR/s3ql-test-s3-server" "$STORE" "$WORK/s3.port" bucket 2>"$WORK/s3.log" &
        S3_PID=$!
        for _ in $(seq 100); do [ -s "$WORK/s3.port" ] && break; sleep 0.1; done
        [ -s "$WORK/s3.port" ] || die "the test S3 server did not start: $(cat "$WORK/s3.log")"
        URL=s3c://127.0.0.1:$(cat "$WORK/s3.port")/bucket/pjd/
        printf '[s3]\nstorage-url: s3c://\nbackend-login: s3ql-test-key\nbackend-password: s3ql-test-secret\nbackend-options: no-ssl\n' >"$WORK/authinfo2"
        chmod 600 "$WORK/authinfo2"
        ;;
    *) die "S3QL_TEST_BACKEND=$BACKEND: expected local or s3c" ;;
esac
say "backend: $URL"
COMMON=(--cachedir "$CACHE" --authfile "$WORK/authinfo2")
MOUNTED=0

# A FUSE mount at $MNT (mount(8)'s listing: "... on MNT type fuse.s3ql (...)" on Linux,
# "... on MNT (fusefs.s3ql, ...)" on FreeBSD).
fuse_mounted() { mount | grep " on $MNT " | grep -q fuse; }

cleanup() {
    local rc=$?
    if [ "$MOUNTED" = 1 ] || fuse_mounted; then
        say "cleanup: unmounting $MNT"
        if ! timeout 300 "$BIN_DIR/umount.s3ql" "$MNT"; then
            say "cleanup: umount.s3ql failed; unmounting lazily"
            fusermount3 -u -z "$MNT" 2>/dev/null || umount -l "$MNT" 2>/dev/null ||
                umount -f "$MNT" 2>/dev/null || true
            rc=1
        fi
    fi
    if [ -n "$S3_PID" ]; then
        kill "$S3_PID" 2>/dev/null || true
        wait "$S3_PID" 2>/dev/null || true
    fi
    if [ "${KEEP:-0}" = 1 ] || [ "$rc" != 0 ]; then
        say "work directory kept: $WORK"
    else
        rm -rf "$WORK"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

show_log() {
    say "last lines of the mount log:"
    tail -n 40 "$WORK/mount.log" 2>/dev/null | sed 's/^/    /' || true
}

timeout 120 "$BIN_DIR/mkfs.s3ql" --plain "${COMMON[@]}" "$URL" >"$WORK/mkfs.out" 2>&1 ||
    { cat "$WORK/mkfs.out"; die "mkfs.s3ql failed"; }
if ! timeout 120 "$BIN_DIR/mount.s3ql" "${COMMON[@]}" ${S3QL_ADAPTER:+--adapter "$S3QL_ADAPTER"} --log "$WORK/mount.log" --allow-other "$URL" "$MNT"; then
    show_log
    die "mount.s3ql failed"
fi
MOUNTED=1
fuse_mounted || { show_log; die "mount.s3ql returned 0 but $MNT is not a FUSE mount"; }

cat >"$WORK/pjd.toml" <<'EOF'
[features]
posix_fallocate = {}
utime_now = {}
utimensat = {}
rename_ctime = {}

[settings]
naptime = 0.01
allow_remount = false

[dummy_auth]
entries = [ ["nobody", "nogroup"], ["tests", "tests"] ]
EOF

mkdir -m 777 "$MNT/pjd"
say "running $("$PJD" --version) in $MNT/pjd"
start=$(date +%s)
set +e
(cd "$MNT/pjd" && RUST_BACKTRACE=0 RUST_LIB_BACKTRACE=0 timeout "$PJD_TIMEOUT" "$PJD" -c "$WORK/pjd.toml" -p "$MNT/pjd") \
    >"$WORK/pjdfstest.out" 2>&1
pjd_rc=$?
set -e
say "pjdfstest exited with $pjd_rc after $(( $(date +%s) - start )) s"

# Failures: "<test name>   FAILED", then a tab-indented message (assertions add "  left:" and
# " right:" lines). One line per failure: the name and up to 3 message lines, each cut at 300.
failures=$(awk '
    function flush() { if (out != "") print out; out = "" }
    / FAILED$/ { flush(); out = "  " $1 ":"; n = 0; next }
    out != "" && n < 3 && /^(\t|  left:| right:)/ {
        line = $0; sub(/^[ \t]+/, "", line); out = out " " substr(line, 1, 300); n++; next
    }
    { flush() }
    END { flush() }' "$WORK/pjdfstest.out" | sort -u)
summary=$(grep -m1 '^Summary:' "$WORK/pjdfstest.out" || true)
if [ -z "$summary" ]; then
    say "no Summary line (pjdfstest crashed or timed out); last output:"
    tail -n 30 "$WORK/pjdfstest.out" | sed 's/^/    /'
    show_log
    exit 1
fi
if [ -n "$failures" ]; then
    say "failed tests:"
    printf '%s\n' "$failures"
fi
echo "$summary"

# Summary: N failed, N skipped, N passed, N expected failures, N total
failed=$(sed -E 's/.* ([0-9]+) failed.*/\1/' <<<"$summary")
passed=$(sed -E 's/.* ([0-9]+) passed.*/\1/' <<<"$summary")

# Unmount explicitly: umount.s3ql must succeed (everything uploaded) for the run to count.
trap - EXIT
MOUNTED=0
if ! timeout 300 "$BIN_DIR/umount.s3ql" "$MNT"; then
    show_log
    fusermount3 -u -z "$MNT" 2>/dev/null || umount -f "$MNT" 2>/dev/null || true
    say "work directory kept: $WORK"
    die "umount.s3ql failed after pjdfstest"
fi
trap cleanup EXIT

rc=0
if [ "$passed" -lt "$PJD_MIN_PASS" ]; then
    say "FAIL: $passed passed < PJD_MIN_PASS=$PJD_MIN_PASS"
    rc=1
fi
if [ "$failed" -gt "$PJD_MAX_FAIL" ]; then
    say "FAIL: $failed failed > PJD_MAX_FAIL=$PJD_MAX_FAIL"
    rc=1
fi
[ "$rc" = 0 ] && say "OK: $passed passed (>= $PJD_MIN_PASS), $failed failed (<= $PJD_MAX_FAIL)"
exit "$rc"
