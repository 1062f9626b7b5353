//! The `s3qlcp` command; see `s3qlcp --help`.

fn main() {
    s3ql_platform::commands::s3qlcp::main()
}
