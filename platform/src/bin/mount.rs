//! The `mount.s3ql` command; see `mount.s3ql --help`.

fn main() {
    s3ql_platform::commands::mount::main()
}
