//! `machines shell NAME [--command CMD | --shell-command STRING]`: leader PID from machined, then
//! [`crate::nsenter`].

use anyhow::{Result, bail};

use crate::bus::Bus;
use crate::cmd::machine_name;

/// Run a shell or a command in the running machine; returns its exit code.
pub fn shell(name: &str, what: crate::nsenter::Run<'_>, leader_pid: Option<i32>) -> Result<u8> {
    let name = machine_name(name)?;
    if !nix::unistd::geteuid().is_root() {
        bail!(
            "entering machine {name} needs root (its namespaces belong to root); run mbctl with sudo"
        );
    }
    let leader = match leader_pid {
        Some(pid) => pid,
        None => {
            // The bus (and its runtime) must be gone before setns: the process has to be
            // single-threaded to enter a user namespace.
            let leader = {
                let bus = Bus::system()?;
                bus.machine_leader(name.as_str())?
            };
            match leader {
                Some(pid) => i32::try_from(pid)?,
                None => bail!(
                    "machine {name} is not running; start it with: mbctl machines start {name}"
                ),
            }
        }
    };
    crate::nsenter::run_in_machine(name.as_str(), leader, what)
}
