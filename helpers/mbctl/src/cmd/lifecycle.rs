//! `machines start|stop|restart|enable|disable|logs NAME`: systemd over D-Bus, the journal
//! through journalctl.

use std::os::unix::process::CommandExt;

use anyhow::{Context, Result, bail};
use man8s::{MachineName, Paths};

use crate::EXIT_OK;
use crate::bus::{Bus, UnitJob, unit_name};
use crate::cmd::machine_name;

/// The declaration file of `name` that wins (/etc over /run over /usr/lib), if any.
pub fn declaration_file(paths: &Paths, name: &MachineName) -> Option<std::path::PathBuf> {
    paths
        .declaration_dirs()
        .into_iter()
        .map(|d| d.join(format!("{name}.machine")))
        .find(|p| p.exists())
}

/// Whether machine `name` is declared (man8@NAME can run it); a machine the Python tool made and
/// nobody migrated gets a message saying how to bring it over.
pub fn require_known(paths: &Paths, name: &MachineName) -> Result<()> {
    if declaration_file(paths, name).is_some() {
        return Ok(());
    }
    if paths.nspawn_etc(name).exists() {
        bail!(
            "machine {name} has no declaration, only {}/{name}.nspawn (made by the Python mbctl?); \
             bring it over with: mbctl migrate {name}",
            man8s::paths::NSPAWN_ETC_DIR
        );
    }
    bail!(
        "no machine {name}: no {name}.machine in {}",
        man8s::paths::DECLARATION_DIRS.join(", ")
    )
}

/// Refuse to go on while man8@NAME runs: for changes to a stopped machine's files.
pub fn refuse_running(paths: &Paths, name: &MachineName) -> Result<()> {
    let unit = unit_name(name.as_str());
    if crate::cmd::info::is_real_root(paths)
        && let Ok(bus) = Bus::system()
        && bus.unit_state(&unit).is_ok_and(|s| s.is_running())
    {
        bail!("machine {name} is running; stop it first: mbctl machines stop {name}");
    }
    Ok(())
}

/// Start, stop or restart a machine and wait for systemd's job; a machine that does not come up
/// is a failure that names the way to its log.
pub fn job(name: &str, job: UnitJob) -> Result<u8> {
    let name = machine_name(name)?;
    let paths = Paths::from_env();
    if job != UnitJob::Stop {
        require_known(&paths, &name)?;
    }
    let bus = Bus::system()?;
    let unit = unit_name(name.as_str());
    let state = bus.unit_job(job, &unit)?;
    match job {
        UnitJob::Start | UnitJob::Restart if state.active != "active" => bail!(
            "{unit} is {} ({}) instead of running; see: mbctl machines logs {name}",
            state.active,
            state.sub
        ),
        UnitJob::Stop if state.is_running() => {
            bail!("{unit} is still {} after stopping", state.active)
        }
        _ => Ok(EXIT_OK),
    }
}

/// Enable or disable a machine at boot (`EnableUnitFiles` / `DisableUnitFiles`), and with `now`
/// also start or stop it.
pub fn enable(name: &str, on: bool, now: bool) -> Result<u8> {
    let name = machine_name(name)?;
    let paths = Paths::from_env();
    if on {
        require_known(&paths, &name)?;
    }
    let bus = Bus::system()?;
    let unit = unit_name(name.as_str());
    let changes = if on {
        bus.enable(&unit)?
    } else {
        bus.disable(&unit)?
    };
    for (kind, file, dest) in changes {
        match kind.as_str() {
            "symlink" => println!("Created symlink {file} → {dest}."),
            "unlink" => println!("Removed {file}."),
            _ => println!("{kind} {file} {dest}"),
        }
    }
    drop(bus);
    if now {
        return job(
            name.as_str(),
            if on { UnitJob::Start } else { UnitJob::Stop },
        );
    }
    Ok(EXIT_OK)
}

/// The arguments journalctl gets for a machine's log.
pub fn journalctl_args(name: &MachineName, follow: bool, lines: Option<u32>) -> Vec<String> {
    let mut args = vec!["--unit".to_owned(), unit_name(name.as_str())];
    if follow {
        args.push("--follow".into());
    }
    if let Some(n) = lines {
        args.push(format!("--lines={n}"));
    }
    args
}

/// Replace this process with journalctl for the machine's unit.
pub fn logs(name: &str, follow: bool, lines: Option<u32>) -> Result<u8> {
    let name = machine_name(name)?;
    let err = std::process::Command::new("journalctl")
        .args(journalctl_args(&name, follow, lines))
        .exec();
    Err(err).context("cannot run journalctl")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_args() {
        let n = MachineName::new("web").unwrap();
        assert_eq!(
            journalctl_args(&n, false, None),
            ["--unit", "man8@web.service"]
        );
        assert_eq!(
            journalctl_args(&n, true, Some(5)),
            ["--unit", "man8@web.service", "--follow", "--lines=5"]
        );
    }

    #[test]
    fn known_machines() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::new(dir.path());
        let n = MachineName::new("web").unwrap();
        assert!(require_known(&paths, &n).is_err());
        let d = paths.fs("/run/man8s/machines");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("web.machine"), "[Machine]\nImage=x\n").unwrap();
        assert_eq!(declaration_file(&paths, &n), Some(d.join("web.machine")));
        std::fs::create_dir_all(paths.fs("/etc/man8s/machines")).unwrap();
        std::fs::write(paths.fs("/etc/man8s/machines/web.machine"), "").unwrap();
        assert_eq!(
            declaration_file(&paths, &n),
            Some(paths.fs("/etc/man8s/machines/web.machine"))
        );
    }
}
