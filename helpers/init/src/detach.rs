//! Helpers that outlive the exec: double-forked so that nspawn's stub PID 1 (not the app, which
//! is PID 2 and does not expect children) becomes their parent and reaps them.

use nix::sys::wait::waitpid;
use nix::unistd::{ForkResult, fork, setsid};

/// Run `job` in a detached grandchild; returns once the intermediate child has been reaped.
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
                    job();
                    std::process::exit(0)
                }
                _ => std::process::exit(0),
            }
        }
    }
}
