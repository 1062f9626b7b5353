//! The `s3qllock` command; see `s3qllock --help`.

fn main() {
    s3ql_platform::commands::s3qllock::main()
}
