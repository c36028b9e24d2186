//! Helpers that outlive the exec: double-forked so that nspawn's stub PID 1 (not the app, which
//! is PID 2 and does not expect children) becomes their parent and reaps them.

// unsafe: fork() and signal(): the init is single-threaded (see SAFETY notes).
#![allow(unsafe_code)]

use nix::sys::wait::waitpid;
use nix::unistd::{ForkResult, fork, setsid};

/// Signals meant for the app (reload, log reopening, graceful stop): `systemctl kill` sends them
/// to every process of the unit, and the helpers must outlive them.
pub const APP_SIGNALS: [nix::sys::signal::Signal; 4] = [
    nix::sys::signal::Signal::SIGHUP,
    nix::sys::signal::Signal::SIGQUIT,
    nix::sys::signal::Signal::SIGUSR1,
    nix::sys::signal::Signal::SIGUSR2,
];

fn ignore_app_signals() {
    use nix::sys::signal::{SigHandler, signal};
    for sig in APP_SIGNALS {
        // SAFETY: SIG_IGN installs no handler code.
        let _ = unsafe { signal(sig, SigHandler::SigIgn) };
    }
}

/// Run `job` in a detached grandchild (which ignores [`APP_SIGNALS`]); returns once the intermediate child has been reaped.
///
/// The job must not return to the caller's code: the grandchild exits when `job` returns.
pub fn spawn(job: impl FnOnce()) -> nix::Result<()> {
    // SAFETY: the init is single-threaded, so the child may run arbitrary code after fork.
    match unsafe { fork() }? {
        ForkResult::Parent { child } => {
            waitpid(child, None)?;
            Ok(())
        }
        ForkResult::Child => {
            let _ = setsid();
            // SAFETY: as above, single-threaded.
            match unsafe { fork() } {
                Ok(ForkResult::Child) => {
                    ignore_app_signals();
                    job();
                    std::process::exit(0)
                }
                _ => std::process::exit(0),
            }
        }
    }
}
