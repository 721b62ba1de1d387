//! The `slipway` binary: parse the command line, hand over to `cli`.
use std::process::ExitCode;

fn main() -> ExitCode {
    slipway::cli::main()
}
