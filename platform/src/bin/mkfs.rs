//! The `mkfs.s3ql` command; see `mkfs.s3ql --help`.

fn main() {
    s3ql_platform::commands::mkfs::main()
}
