//! The `hajobs` binary, built inside the tests' package: the chaos suite runs
//! real daemons and CLI commands from it (`CARGO_BIN_EXE_hajobs-under-test`).

fn main() -> std::process::ExitCode {
    hajobs::main()
}
