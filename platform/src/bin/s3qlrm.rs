//! The `s3qlrm` command; see `s3qlrm --help`.

fn main() {
    s3ql_platform::commands::s3qlrm::main()
}
