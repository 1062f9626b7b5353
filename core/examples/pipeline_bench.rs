//! Throughput of the object pipeline (compress + encrypt + checksum, and the reverse) in MB/s
//! of plaintext, for several algorithms, with and without encryption, on incompressible and
//! on text data, on one core and on all cores. Prints `key=value` lines.
//!
//! `cargo run --release -p s3ql-core --example pipeline_bench [MiB per run]`

use std::time::Instant;

use bytes::Bytes;

use s3ql_core::crypto::MasterKey;
use s3ql_core::format::{Codec, Compression};

const BLOCK: usize = 1 << 20;

fn incompressible(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn text(len: usize) -> Vec<u8> {
    let words = [
        "the",
        "filesystem",
        "stores",
        "blocks",
        "in",
        "object",
        "storage",
        "and",
        "metadata",
        "locally",
    ];
    let mut out = Vec::with_capacity(len + 16);
    let mut i = 0usize;
    while out.len() < len {
        out.extend_from_slice(words[(i * 7 + i / 3) % words.len()].as_bytes());
        out.push(if i % 13 == 12 { b'\n' } else { b' ' });
        i += 1;
    }
    out.truncate(len);
    out
}

/// MB/s of plaintext for encoding then decoding `blocks` on `threads` threads.
fn run(
    codec: &Codec,
    compression: Compression,
    data: &[u8],
    total_mib: usize,
    threads: usize,
) -> (f64, f64) {
    let per_thread = total_mib.div_ceil(threads);
    let start = Instant::now();
    let encoded: Vec<Vec<Vec<u8>>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    (0..per_thread)
                        .map(|_| codec.encode("s3ql_data_1", data, compression))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect()
    });
    let enc_s = start.elapsed().as_secs_f64();
    let start = Instant::now();
    std::thread::scope(|s| {
        for objs in encoded {
            s.spawn(move || {
                for o in objs {
                    let plain = codec.decode("s3ql_data_1", Bytes::from(o)).expect("decode");
                    assert_eq!(plain.len(), data.len());
                }
            });
        }
    });
    let dec_s = start.elapsed().as_secs_f64();
    let mb = (per_thread * threads * data.len()) as f64 / 1e6;
    (mb / enc_s, mb / dec_s)
}

fn main() {
    let total_mib: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(32);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let datasets = [
        ("incompressible", incompressible(BLOCK)),
        ("text", text(BLOCK)),
    ];
    let algos = [
        Compression::Zstd(1),
        Compression::Zstd(3),
        Compression::Lzma(6),
        Compression::Zlib(6),
        Compression::None,
    ];
    let codecs = [
        ("plain", Codec::plain()),
        ("aes", Codec::encrypted(MasterKey::generate())),
    ];
    println!("cores={cores} mib_per_run={total_mib}");
    for (dname, data) in &datasets {
        for algo in algos {
            // lzma is slow: fewer MiB so the run stays short.
            let mib = if matches!(algo, Compression::Lzma(_)) {
                total_mib.min(8)
            } else {
                total_mib
            };
            for (cname, codec) in &codecs {
                for threads in [1, cores] {
                    let (enc, dec) = run(codec, algo, data, mib, threads);
                    println!(
                        "data={dname} compress={algo} crypt={cname} threads={threads} encode_MBps={enc:.1} decode_MBps={dec:.1}"
                    );
                }
            }
        }
    }
}
