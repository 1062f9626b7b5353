#!/usr/bin/env bash
# Object pipeline throughput (compression + encryption + checksums) in MB/s of plaintext,
# one core and all cores, for zstd-1, zstd-3, lzma-6, zlib-6 and none, with and without
# encryption, on incompressible and on text data. Prints key=value lines.
#   tests/bench/pipeline.sh [MiB per run, default 32]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
cargo run --quiet --release -p s3ql-core --example pipeline_bench -- "${1:-32}"
