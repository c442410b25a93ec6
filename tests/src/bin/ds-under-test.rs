//! The `ds` command, built as part of this package so its black-box tests always run fresh code.

fn main() -> std::process::ExitCode {
    client::cli::main()
}
