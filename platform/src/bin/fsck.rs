//! The `fsck.s3ql` command; see `fsck.s3ql --help`.

fn main() {
    s3ql_platform::commands::fsck::main()
}
