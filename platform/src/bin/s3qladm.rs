//! `s3qladm`: see `s3ql_platform::commands::s3qladm`.

fn main() {
    s3ql_platform::commands::s3qladm::main()
}
