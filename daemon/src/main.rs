//! The `dataserver` binary.

fn main() -> std::process::ExitCode {
    daemon::main()
}
