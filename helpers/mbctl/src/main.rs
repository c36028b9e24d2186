//! `mbctl` binary: argv in, exit code out; everything else is in the library.

fn main() -> std::process::ExitCode {
    mbctl::run(std::env::args_os())
}
