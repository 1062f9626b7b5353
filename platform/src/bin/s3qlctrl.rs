//! The `s3qlctrl` command; see `s3qlctrl --help`.

fn main() {
    s3ql_platform::commands::s3qlctrl::main()
}
