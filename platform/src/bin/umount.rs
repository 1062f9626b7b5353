//! The `umount.s3ql` command; see `umount.s3ql --help`.

fn main() {
    s3ql_platform::commands::umount::main()
}
