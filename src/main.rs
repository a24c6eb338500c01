//! Entry point: parse the command line and hand over to `cli`.

fn main() -> std::process::ExitCode {
    o365_fixbot::cli::main()
}
