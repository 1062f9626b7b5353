//! The `s3qlstat` command; see `s3qlstat --help`.

fn main() {
    s3ql_platform::commands::s3qlstat::main()
}
