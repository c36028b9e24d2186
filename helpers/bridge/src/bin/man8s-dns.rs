//! `man8s-dns`: machines' names over DNS on the bridge (see man8s-bridge(8), NAMES).

use std::process::ExitCode;

use man8s::Paths;
use man8s::hostconfig::HostConfig;
use man8s_bridge::stub::{Stub, ZoneSource};

fn log(msg: String) {
    eprintln!("man8s-dns: {msg}");
}

fn main() -> ExitCode {
    if std::env::args().len() > 1 {
        eprintln!("usage: man8s-dns (no arguments; see man8s-bridge(8))");
        return ExitCode::from(2);
    }
    let paths = Paths::from_env();
    let address = match HostConfig::load(&paths) {
        Ok(cfg) => cfg.bridge.ipv4_address.addr(),
        Err(e) => {
            log(e.to_string());
            return ExitCode::from(1);
        }
    };
    let stub = match Stub::bind(address) {
        Ok(s) => s,
        Err(e) => {
            log(format!("cannot listen on {address}:53: {e}"));
            return ExitCode::from(1);
        }
    };
    use libsystemd::daemon::{NotifyState, notify};
    let _ = notify(
        false,
        &[
            NotifyState::Ready,
            NotifyState::Status(format!("answering on {address}:53")),
        ],
    );
    match stub.serve(ZoneSource::new(paths), log) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log(format!("{address}:53: {e}"));
            ExitCode::from(1)
        }
    }
}
