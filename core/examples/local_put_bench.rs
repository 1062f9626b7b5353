//! Objects per second of `put` to a `local://` store: many small and some large objects,
//! written with a fixed number of concurrent puts. Prints `key=value` lines.
//!
//! `cargo run --release -p s3ql-core --example local_put_bench -- DIR [concurrency]`
//! (DIR must not exist; it is created and removed).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use futures::StreamExt;
use s3ql_core::storage::{ObjectStore, OpendalStore};

async fn run(store: Arc<OpendalStore>, tag: &str, count: usize, size: usize, concurrency: usize) {
    let data = Bytes::from(vec![0x5a_u8; size]);
    let start = Instant::now();
    let results: Vec<_> = futures::stream::iter(0..count)
        .map(|i| {
            let store = Arc::clone(&store);
            let data = data.clone();
            async move { store.put(&format!("s3ql_data_{tag}_{i}"), data).await }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let secs = start.elapsed().as_secs_f64();
    let failed = results.iter().filter(|r| r.is_err()).count();
    println!(
        "objects={count} size={size} concurrency={concurrency} secs={secs:.3} objects_per_s={:.0} mb_per_s={:.1} failed={failed}",
        count as f64 / secs,
        (count * size) as f64 / secs / 1e6
    );
}

fn main() {
    let mut args = std::env::args().skip(1);
    let Some(dir) = args.next().map(PathBuf::from) else {
        eprintln!("usage: local_put_bench DIR [concurrency]");
        std::process::exit(2);
    };
    let concurrency: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(32);
    if let Err(e) = std::fs::create_dir(&dir) {
        eprintln!("{}: {e}", dir.display());
        std::process::exit(1);
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("runtime: {e}");
            std::process::exit(1);
        }
    };
    runtime.block_on(async {
        let store = match OpendalStore::local(&dir) {
            Ok(s) => Arc::new(s),
            Err(e) => {
                eprintln!("store: {e}");
                std::process::exit(1);
            }
        };
        run(Arc::clone(&store), "small", 2000, 4096, concurrency).await;
        run(store, "large", 200, 1 << 20, concurrency).await;
    });
    let _ = std::fs::remove_dir_all(&dir);
}
