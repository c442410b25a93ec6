//! `ds`, the dataserver command; everything is in `client::cli`, so the black-box tests can
//! build the same command from fresh code.

fn main() -> std::process::ExitCode {
    client::cli::main()
}
