#!/usr/bin/env bash
# Quick start: installs what s3ql-rs needs (Debian/Ubuntu packages), builds it from source
# (`cargo build --release`), installs the commands, creates a filesystem on local storage and
# mounts it. Safe to run again: an existing filesystem is reused, a mounted one left alone.
#
#   ./quickstart.sh
#
# Settings (environment):
#   S3QL_STORE   backend directory        (default /var/lib/s3ql-rs/store)
#   S3QL_MNT     mount point              (default /mnt/s3ql)
#   PREFIX       install prefix           (default /usr/local; commands go to $PREFIX/bin)
#
# Needs root (apt-get, /dev/fuse, installing to /usr/local) and a Rust toolchain >= 1.85
# (https://rustup.rs). Nothing here downloads prebuilt binaries: cargo builds everything
# from crates.io sources. The filesystem is created unencrypted (--plain) so that this runs
# without prompts; see README.md for encrypted filesystems.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

STORE=${S3QL_STORE:-/var/lib/s3ql-rs/store}
MNT=${S3QL_MNT:-/mnt/s3ql}
PREFIX=${PREFIX:-/usr/local}
URL=local://$STORE

say() { printf '\033[1mquickstart:\033[0m %s\n' "$*"; }
die() { printf 'quickstart: error: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root (sudo ./quickstart.sh): it installs packages and mounts a filesystem"

# 1. System packages: a C compiler for the bundled SQLite/zstd/xz/bzip2 sources, fuse3 for
#    fusermount3 (unmounting).
need=()
for pkg in build-essential pkg-config fuse3; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || need+=("$pkg")
done
if [ "${#need[@]}" -gt 0 ]; then
    command -v apt-get >/dev/null || die "please install: ${need[*]}"
    say "installing ${need[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
[ -c /dev/fuse ] || modprobe fuse 2>/dev/null || true
[ -c /dev/fuse ] || die "/dev/fuse is missing (load the fuse module; in a container, pass --device /dev/fuse)"

# 2. Build.
if ! command -v cargo >/dev/null && [ -f "$HOME/.cargo/env" ]; then
    # shellcheck disable=SC1091
    . "$HOME/.cargo/env"
fi
command -v cargo >/dev/null || die "cargo not found: install Rust >= 1.85 (https://rustup.rs), then run this again"
say "building (cargo build --release; the first build takes a few minutes)"
cargo build --release --workspace --bins

# 3. Install the commands under their S3QL names (target/release has them as symlinks to
#    the cargo binaries; install copies the files they point to).
install -d "$PREFIX/bin"
installed=()
for c in mkfs.s3ql mount.s3ql umount.s3ql fsck.s3ql s3qladm s3qlcp s3qlctrl s3qllock \
    s3qlrm s3qlstat s3ql_verify; do
    if [ -e "target/release/$c" ]; then
        install -m 755 "target/release/$c" "$PREFIX/bin/$c"
        installed+=("$c")
    fi
done
say "installed ${installed[*]} into $PREFIX/bin"
BIN=$PREFIX/bin

# 4. Filesystem.
mkdir -p "$STORE"
if [ -e "$STORE/s3ql_params" ] || [ -n "$(ls -A "$STORE" 2>/dev/null)" ]; then
    say "using the existing filesystem in $STORE"
else
    say "creating a filesystem: mkfs.s3ql --plain $URL"
    "$BIN/mkfs.s3ql" --plain "$URL"
fi

# 5. Mount.
if grep -qs " $MNT fuse" /proc/mounts; then
    say "already mounted at $MNT"
else
    mkdir -p "$MNT"
    say "mounting: mount.s3ql $URL $MNT"
    rc=0
    "$BIN/mount.s3ql" "$URL" "$MNT" || rc=$?
    case $rc in
        0) ;;
        30|31) die "mount.s3ql exited $rc: the filesystem was not unmounted cleanly (run fsck.s3ql $URL once it exists)" ;;
        *) die "mount.s3ql exited $rc (log: ~/.s3ql/mount.log)" ;;
    esac
fi

cat <<EOF

s3ql-rs is mounted at $MNT (data in $STORE, cache and metadata in ~/.s3ql).

  cp -a /usr/share/doc $MNT/          # use it like any directory
  df -h $MNT; ls -l $MNT

  umount.s3ql $MNT                    # unmount: returns once everything is in $STORE
  mount.s3ql $URL $MNT   # mount again

Log: ~/.s3ql/mount.log. More in README.md.
EOF
