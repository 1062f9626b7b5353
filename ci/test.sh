#!/usr/bin/env bash
# The project's test command (README quick start, second command; .ci/run runs it too):
#
#   ci/test.sh
#
# 1. cargo fmt --all --check
# 2. cargo clippy --workspace --all-targets -- -D warnings
# 3. cargo build --workspace --bins          (the integration tests drive these binaries)
# 4. cargo test --workspace --no-fail-fast   (unit, property and real-mount tests)
#    and the crash tests at every failpoint (core's `failpoints` feature, ~30 s)
# 5. tests/pjdfstest.sh                      (POSIX conformance over a real mount, local://)
# 6. S3QL_TEST_BACKEND=s3c tests/pjdfstest.sh (the same over s3c:// on the embedded S3 server)
# 7. S3QL_ADAPTER=fuse-backend-rs tests/pjdfstest.sh (the same through the fuse-backend-rs adapter)
#
# On macOS and FreeBSD (the other jobs of .github/workflows/ci.yml, see ci/README.md) the
# same script runs steps 1-4 without the Linux-only integration-test crate (tests/), then
# ci/smoke.sh (mount, write, umount, remount with an empty cache, compare) and, on FreeBSD,
# tests/pjdfstest.sh over fusefs. $S3QL_CARGO_FEATURES is added to the cargo commands (the
# macOS job sets `--features s3ql-fuse-backend/fuse-t`).
#
# Every step runs even if an earlier one failed (except after a failed build), and the
# script exits non-zero if any failed. The real-mount steps need root and /dev/fuse: without
# them they are skipped with a message, unless CI=true, where a skip is a failure.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [ -z "${CARGO:-}" ] && ! command -v cargo >/dev/null && [ -f "$HOME/.cargo/env" ]; then
    # shellcheck disable=SC1091
    . "$HOME/.cargo/env"
fi
command -v cargo >/dev/null || { echo "ci/test.sh: cargo not found (install Rust >= 1.85)" >&2; exit 1; }

os=$(uname -s)
# shellcheck disable=SC2206 # split on purpose; ${features[@]+...} keeps bash 3.2 (macOS) happy
features=(${S3QL_CARGO_FEATURES:-})
if [ "$os" = Linux ]; then
    crates=(--workspace)
else
    # tests/ drives Linux mounts (/proc/mounts, fusermount3); off Linux ci/smoke.sh mounts.
    crates=(--workspace --exclude s3ql-tests)
fi

can_mount=1
why_not=""
case "$os" in
    Darwin)
        # FUSE-T (NFS-based, no root needed) or macFUSE.
        if [ ! -x /usr/local/bin/go-nfsv4 ] && [ ! -d /Library/Filesystems/macfuse.fs ]; then
            can_mount=0; why_not="neither FUSE-T nor macFUSE is installed"
        fi
        ;;
    *)
        if [ "$(id -u)" != 0 ]; then can_mount=0; why_not="not root"; fi
        if [ ! -c /dev/fuse ]; then can_mount=0; why_not="${why_not:+$why_not, }no /dev/fuse"; fi
        ;;
esac
if [ "${CI:-}" = true ]; then
    # In CI, real-mount tests must run, never be skipped.
    export S3QL_TESTS_REQUIRE_FUSE=1
    # A one-off build gains nothing from incremental artifacts (several GB of disk).
    export CARGO_INCREMENTAL=${CARGO_INCREMENTAL:-0}
fi

failed=()
results=()
step() {
    local name=$1; shift
    echo
    echo "=== $name: $* ==="
    local start rc=0
    start=$(date +%s)
    # `||` keeps errexit from ending the script inside the step (even if the step sets -e).
    "$@" || rc=$?
    local secs=$(( $(date +%s) - start ))
    if [ "$rc" = 0 ]; then
        results+=("ok      $name (${secs} s)")
    else
        results+=("FAILED  $name (exit $rc, ${secs} s)")
        failed+=("$name")
        # Disk exhaustion shows up as unrelated errors: say how full the disks are.
        df -h . /tmp 2>/dev/null || true
    fi
    return 0
}

run_tests() {
    local log
    log=$(mktemp /tmp/s3ql-cargo-test.XXXXXX)
    local rc=0
    timeout 1800 cargo test "${crates[@]}" ${features[@]+"${features[@]}"} --no-fail-fast 2>&1 | tee "$log" || rc=${PIPESTATUS[0]}
    echo
    echo "--- cargo test summary ---"
    grep -E '^\s+Running |^\s+Doc-tests |^test result:|^(SKIPPED|MEASURED|WATCHDOG) |panicked at' "$log" || true
    rm -f "$log"
    return "$rc"
}

step fmt cargo fmt --all --check
step clippy cargo clippy "${crates[@]}" ${features[@]+"${features[@]}"} --all-targets -- -D warnings
step build cargo build "${crates[@]}" ${features[@]+"${features[@]}"} --bins
if [[ " ${failed[*]} " == *" build "* ]]; then
    printf '%s\n' "" "=== results ===" "${results[@]}"
    exit 1
fi
step test run_tests
step failpoints cargo test -p s3ql-core --features failpoints --test failpoints
if [ "$can_mount" = 1 ] && [ "$os" = Linux ]; then
    step pjdfstest tests/pjdfstest.sh
    step pjdfstest-s3c env S3QL_TEST_BACKEND=s3c tests/pjdfstest.sh
    step pjdfstest-fuse-backend-rs env S3QL_ADAPTER=fuse-backend-rs tests/pjdfstest.sh
elif [ "$can_mount" = 1 ]; then
    step smoke ci/smoke.sh
    if [ "$os" = FreeBSD ]; then
        step pjdfstest tests/pjdfstest.sh
    fi
elif [ "${CI:-}" = true ]; then
    echo "ci/test.sh: pjdfstest cannot run ($why_not) and CI=true" >&2
    results+=("FAILED  pjdfstest (cannot run: $why_not)")
    failed+=(pjdfstest)
else
    echo
    echo "SKIPPED pjdfstest: $why_not"
    results+=("skipped pjdfstest ($why_not)")
fi

printf '%s\n' "" "=== results ===" "${results[@]}"
if [ "${#failed[@]}" -gt 0 ]; then
    echo "ci/test.sh: FAILED: ${failed[*]}"
    exit 1
fi
echo "ci/test.sh: all steps passed"
