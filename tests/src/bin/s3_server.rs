//! `s3ql-test-s3-server ROOT PORT_FILE [BUCKET...]`: the embedded test S3 server
//! ([`s3ql_tests::s3server`]) as a process, for shell scripts (tests/pjdfstest.sh).
//!
//! Creates the buckets below ROOT, listens on a free port of 127.0.0.1, writes the port
//! number to PORT_FILE (written to a temporary name and renamed, so a reader never sees a
//! partial file) and serves until it is killed. Credentials: `s3ql-test-key` /
//! `s3ql-test-secret`.

use std::path::PathBuf;

use s3ql_tests::s3server::S3Server;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 2 {
        eprintln!("usage: s3ql-test-s3-server ROOT PORT_FILE [BUCKET...]");
        std::process::exit(2);
    }
    let root = PathBuf::from(&args[0]);
    let port_file = PathBuf::from(&args[1]);
    let server = S3Server::start(&root).unwrap_or_else(|e| {
        eprintln!("s3ql-test-s3-server: cannot start: {e}");
        std::process::exit(1);
    });
    for bucket in &args[2..] {
        if let Err(e) = server.create_bucket(bucket) {
            eprintln!("s3ql-test-s3-server: cannot create bucket {bucket}: {e}");
            std::process::exit(1);
        }
    }
    let tmp = port_file.with_extension("tmp");
    let written = std::fs::write(&tmp, format!("{}\n", server.port()))
        .and_then(|()| std::fs::rename(&tmp, &port_file));
    if let Err(e) = written {
        eprintln!(
            "s3ql-test-s3-server: cannot write {}: {e}",
            port_file.display()
        );
        std::process::exit(1);
    }
    loop {
        std::thread::park();
    }
}
