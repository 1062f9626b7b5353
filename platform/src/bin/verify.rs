//! The `s3ql_verify` command; see `s3ql_verify --help`.

fn main() {
    s3ql_platform::commands::verify::main()
}
