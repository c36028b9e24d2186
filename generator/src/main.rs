//! `man8s-generator [NORMAL_DIR EARLY_DIR LATE_DIR]`: see man8s-generator(8).
//!
//! Exit codes: 0 (also when some declarations are bad: they are logged and skipped), 1 when an
//! output directory is unusable, 2 on a usage error.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use man8s::Paths;
use man8s_generator::{Outputs, run};

const USAGE: &str = "usage: man8s-generator [NORMAL_DIR EARLY_DIR LATE_DIR]";

/// Log lines go to /dev/kmsg at boot (stderr is not connected anywhere useful then); to stderr
/// when relocated with MAN8S_ROOT (tests) or when /dev/kmsg cannot be opened.
fn logger(relocated: bool) -> Box<dyn FnMut(&str)> {
    let kmsg =
        if relocated || std::env::var_os("MAN8S_GENERATOR_LOG").is_some_and(|v| v == "stderr") {
            None
        } else {
            std::fs::OpenOptions::new()
                .write(true)
                .open("/dev/kmsg")
                .ok()
        };
    match kmsg {
        // <3> = LOG_ERR; one write() per record, as kmsg wants.
        Some(mut k) => Box::new(move |line: &str| {
            let _ = k.write_all(format!("<3>man8s-generator: {line}\n").as_bytes());
        }),
        None => Box::new(|line: &str| eprintln!("man8s-generator: {line}")),
    }
}

fn main() -> ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let paths = Paths::from_env();
    let unit_dir = match args.len() {
        0 => paths.fs("/run/systemd/generator"),
        1 | 3 => PathBuf::from(&args[0]),
        _ => {
            eprintln!(
                "man8s-generator: expected 0, 1 or 3 arguments, got {}\n{USAGE}",
                args.len()
            );
            return ExitCode::from(2);
        }
    };
    let relocated = paths.root() != std::path::Path::new("/");
    let mut log = logger(relocated);
    match run(&paths, &Outputs::new(&paths, unit_dir), &mut *log) {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            log(&e.to_string());
            ExitCode::from(1)
        }
    }
}
