#!/usr/bin/env bash
# Type-checks and lints the code for macOS and FreeBSD from a Linux machine:
#
#   ci/cross-check.sh              # both targets
#   ci/cross-check.sh x86_64-unknown-freebsd
#
# runs `cargo clippy --workspace --exclude s3ql-tests --all-targets -- -D warnings` for
# x86_64-apple-darwin (also with --features s3ql-fuse-backend/fuse-t) and
# x86_64-unknown-freebsd (`rustup target add` them first). Without a cross C toolchain the
# C code of the bundled SQLite, zstd, xz, bzip2 and ring cannot be compiled, so the build
# scripts get a stub C compiler that writes empty objects: `cargo check` links nothing, but
# this checks the Rust code only. The real builds run in the macos and freebsd CI jobs.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

targets=("$@")
[ "${#targets[@]}" -gt 0 ] || targets=(x86_64-apple-darwin x86_64-unknown-freebsd)

stub=$(mktemp -d /tmp/s3ql-stubcc.XXXXXX)
trap 'rm -rf "$stub"' EXIT
# Claims to be clang (cc-rs asks with -E, and tries -? for MSVC), writes empty outputs.
cat >"$stub/cc" <<'EOF'
#!/bin/sh
out=
prev=
for a; do
    case $prev in -o) out=$a ;; esac
    case $a in
        -E) echo '"clang"'; exit 0 ;;
        -\?) exit 1 ;;
        -o?*) out=${a#-o} ;;
    esac
    prev=$a
done
[ -n "$out" ] && : >"$out"
exit 0
EOF
chmod +x "$stub/cc"

failed=0
for t in "${targets[@]}"; do
    var=${t//-/_}
    variants=("")
    [ "$t" = x86_64-apple-darwin ] && variants+=("--features s3ql-fuse-backend/fuse-t")
    for v in "${variants[@]}"; do
        echo "=== $t ${v:-(default features)} ==="
        # shellcheck disable=SC2086 # $v is empty or two words
        if ! env "CC_$var=$stub/cc" "AR_$var=ar" cargo clippy --target "$t" --workspace \
            --exclude s3ql-tests --all-targets $v -- -D warnings; then
            failed=1
        fi
    done
done
exit "$failed"
