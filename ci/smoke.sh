#!/usr/bin/env bash
# Mount smoke test for the systems where the integration-test crate (tests/, Linux only)
# does not run: macOS (fuse-backend-rs over FUSE-T or macFUSE) and FreeBSD (fuser over
# fusefs). ci/test.sh runs it there.
#
#   ci/smoke.sh
#
# mkfs.s3ql --plain on local://, mount.s3ql, write a 3 MB random file, a directory and a
# symlink, umount.s3ql (which must return only after the daemon exited), mount again with
# an empty cache directory (so everything comes from the store), compare, umount.s3ql.
#
# Environment: S3QL_BIN_DIR (default target/debug), S3QL_ADAPTER (--adapter; default the
# platform's), KEEP=1 keeps the work directory.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN_DIR=${S3QL_BIN_DIR:-$ROOT/target/debug}
say() { printf 'smoke.sh: %s\n' "$*"; }
die() { printf 'smoke.sh: error: %s\n' "$*" >&2; exit 1; }

for b in mkfs.s3ql mount.s3ql umount.s3ql; do
    [ -x "$BIN_DIR/$b" ] || die "$BIN_DIR/$b not found: run 'cargo build --bins' first"
done

WORK=$(mktemp -d /tmp/s3ql-smoke.XXXXXX)
STORE=$WORK/store MNT=$WORK/mnt
mkdir -p "$STORE" "$WORK/cache1" "$WORK/cache2" "$MNT"
URL=local://$STORE
MOUNTED=0

is_mounted() { mount | grep -q " on $MNT "; }

cleanup() {
    local rc=$?
    if [ "$MOUNTED" = 1 ] && is_mounted; then
        say "cleanup: unmounting $MNT"
        "$BIN_DIR/umount.s3ql" "$MNT" || "$BIN_DIR/umount.s3ql" --lazy "$MNT" || umount -f "$MNT" || true
    fi
    if [ "$rc" != 0 ]; then
        say "last lines of the mount log:"
        tail -n 40 "$WORK/mount.log" 2>/dev/null | sed 's/^/    /' || true
    fi
    if [ "${KEEP:-0}" = 1 ] || [ "$rc" != 0 ]; then
        say "work directory kept: $WORK"
    else
        rm -rf "$WORK"
    fi
    exit "$rc"
}
trap cleanup EXIT

mount_fs() {
    "$BIN_DIR/mount.s3ql" --cachedir "$1" --log "$WORK/mount.log" \
        ${S3QL_ADAPTER:+--adapter "$S3QL_ADAPTER"} "$URL" "$MNT" || die "mount.s3ql failed"
    MOUNTED=1
    is_mounted || die "mount.s3ql returned 0 but $MNT is not mounted"
    say "mounted: $(mount | grep " on $MNT ")"
}

umount_fs() {
    "$BIN_DIR/umount.s3ql" "$MNT" || die "umount.s3ql failed"
    MOUNTED=0
    ! is_mounted || die "umount.s3ql returned 0 but $MNT is still mounted"
}

"$BIN_DIR/mkfs.s3ql" --plain --cachedir "$WORK/cache1" "$URL" >"$WORK/mkfs.out" 2>&1 ||
    { cat "$WORK/mkfs.out"; die "mkfs.s3ql failed"; }

mount_fs "$WORK/cache1"
head -c 3000000 /dev/urandom >"$WORK/data"
cp "$WORK/data" "$MNT/data"
mkdir "$MNT/dir"
echo hello >"$MNT/dir/hello"
ln -s dir/hello "$MNT/link"
umount_fs

mount_fs "$WORK/cache2"
cmp "$WORK/data" "$MNT/data" || die "data differs after remount"
[ "$(cat "$MNT/link")" = hello ] || die "symlink or small file differs after remount"
umount_fs
say "OK"
