//! `machines remove NAME [--purge] [--force]`: refuse a running machine (unless --force, which
//! stops it first), then delete exactly the machine's own paths.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use man8s::{MachineName, Paths};

use crate::EXIT_OK;
use crate::bus::{Bus, UnitJob, unit_name};
use crate::cmd::machine_name;

/// One thing `remove` deletes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Removal {
    /// A directory tree (rootfs, config, data, drop-in dir).
    Tree(PathBuf),
    /// A file or a symlink (the link itself, never its target).
    File(PathBuf),
}

impl Removal {
    /// The path removed.
    pub fn path(&self) -> &Path {
        match self {
            Removal::Tree(p) | Removal::File(p) => p,
        }
    }
}

/// Whether a settings file in /etc/systemd/nspawn was written by the Python mbctl (its init
/// chain) rather than by the user, who may own one for a man8s machine.
fn written_by_python_tool(path: &Path) -> bool {
    fs::read_to_string(path).is_ok_and(|t| t.contains("/sbin/busybox-init.sh"))
}

/// What removing `name` deletes on this tree, existing paths only, in deletion order: the
/// declaration first (so a half-done removal leaves no machine that would start), the rootfs
/// last among the machine's parts, config and data only with `purge`.
pub fn plan(paths: &Paths, name: &MachineName, purge: bool) -> Vec<Removal> {
    let mut out = Vec::new();
    let exists = |p: &Path| p.symlink_metadata().is_ok();
    // /usr/lib is the vendor's: never removed, reported by the caller.
    for dir in [
        paths.fs("/etc/man8s/machines"),
        paths.fs("/run/man8s/machines"),
    ] {
        let file = dir.join(format!("{name}.machine"));
        if exists(&file) {
            out.push(Removal::File(file));
        }
        let dropins = dir.join(format!("{name}.machine.d"));
        if dropins.is_dir() {
            out.push(Removal::Tree(dropins));
        }
    }
    let generated = paths.nspawn_run(name);
    if exists(&generated) {
        out.push(Removal::File(generated));
    }
    let python = paths.nspawn_etc(name);
    if exists(&python) && written_by_python_tool(&python) {
        out.push(Removal::File(python));
    }
    // Kept or written by `mbctl migrate`; nothing else reads them once the machine is gone.
    let kept = paths.nspawn_etc_kept(name);
    if exists(&kept) {
        out.push(Removal::File(kept));
    }
    let compat_dropin = paths
        .unit_dropin_dir(name)
        .join(crate::cmd::migrate::COMPAT_DROPIN);
    if exists(&compat_dropin) {
        out.push(Removal::File(compat_dropin));
    }
    let link = paths.machines_link(name);
    if link
        .symlink_metadata()
        .is_ok_and(|m| m.file_type().is_symlink())
    {
        out.push(Removal::File(link));
    }
    let rootfs = paths.rootfs(name);
    for candidate in [rootfs.clone(), previous_rootfs(&rootfs)] {
        // previous_rootfs falls back to the rootfs itself: never list a path twice.
        if out.iter().any(|r| r.path() == candidate) {
            continue;
        }
        if candidate.symlink_metadata().is_ok_and(|m| m.is_dir()) {
            out.push(Removal::Tree(candidate));
        }
    }
    // The host-owned record of what the rootfs holds goes with it.
    let state = paths.state_dir(name);
    if state.symlink_metadata().is_ok_and(|m| m.is_dir()) {
        out.push(Removal::Tree(state));
    }
    if purge {
        for dir in [paths.config_dir(name), paths.storage_dir(name)] {
            if dir.symlink_metadata().is_ok_and(|m| m.is_dir()) {
                out.push(Removal::Tree(dir));
            }
        }
    }
    out
}

/// Where an update keeps the rootfs it replaced (for rollback): `man8s_oci`'s choice.
pub fn previous_rootfs(rootfs: &Path) -> PathBuf {
    man8s_oci::install::previous_path(rootfs).unwrap_or_else(|_| rootfs.to_owned())
}

/// Mount points (from `mountinfo` text) at or below `dir`: a tree with mounts inside belongs to
/// a running machine (or to something else entirely) and is never deleted.
pub fn mounts_below(mountinfo: &str, dir: &Path) -> Vec<PathBuf> {
    mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        // mountinfo escapes space, tab, newline and backslash as octal.
        .map(|m| {
            PathBuf::from(
                m.replace("\\040", " ")
                    .replace("\\011", "\t")
                    .replace("\\012", "\n")
                    .replace("\\134", "\\"),
            )
        })
        .filter(|m| m.starts_with(dir))
        .collect()
}

/// Delete everything in `plan`; every failure is collected, not just the first.
pub fn execute(plan: &[Removal]) -> Result<()> {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    for r in plan {
        if let Removal::Tree(dir) = r
            && let Some(m) = mounts_below(&mountinfo, dir).first()
        {
            bail!(
                "{} has a mount at {} (is the machine still running?); nothing removed",
                dir.display(),
                m.display()
            );
        }
    }
    let mut errors = Vec::new();
    for r in plan {
        let res = match r {
            Removal::Tree(p) => fs::remove_dir_all(p),
            Removal::File(p) => fs::remove_file(p),
        };
        match res {
            Ok(()) => println!("Removed {}", r.path().display()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => errors.push(format!("{}: {e}", r.path().display())),
        }
    }
    if !errors.is_empty() {
        bail!("could not remove {}", errors.join("; "));
    }
    Ok(())
}

/// The command.
pub fn remove(name: &str, purge: bool, force: bool) -> Result<u8> {
    let name = machine_name(name)?;
    let paths = Paths::from_env();
    let plan = plan(&paths, &name, purge);
    let vendor = paths
        .fs("/usr/lib/man8s/machines")
        .join(format!("{name}.machine"));
    if plan.is_empty() {
        if vendor.exists() {
            bail!(
                "machine {name} is declared by the vendor in {}; mask it instead of removing it",
                vendor.display()
            );
        }
        bail!("no machine {name} to remove (no declaration, rootfs or settings file)");
    }
    // Running check: through systemd and machined; a host without systemd cannot run man8@.
    // A relocated tree (MAN8S_ROOT) is not the running system's: systemd is not asked then.
    let bus = if crate::cmd::info::is_real_root(&paths) {
        Bus::system()
    } else {
        Err(anyhow::anyhow!(
            "{} is not the running system",
            paths.root().display()
        ))
    };
    match bus {
        Ok(bus) => {
            let unit = unit_name(name.as_str());
            let running = bus
                .unit_state(&unit)
                .map(|s| s.is_running())
                .unwrap_or(false)
                || bus.machine_leader(name.as_str()).ok().flatten().is_some();
            if running {
                if !force {
                    bail!(
                        "machine {name} is running; stop it first (mbctl machines stop {name}) or use --force"
                    );
                }
                eprintln!("Stopping {unit}…");
                let state = bus.unit_job(UnitJob::Stop, &unit)?;
                // Started some other way (machinectl, a manual systemd-nspawn): machined stops it.
                if bus.machine_leader(name.as_str()).ok().flatten().is_some() {
                    eprintln!("Terminating machine {name} through machined…");
                    bus.terminate_machine(name.as_str(), std::time::Duration::from_secs(60))?;
                }
                if state.is_running() || bus.machine_leader(name.as_str()).ok().flatten().is_some()
                {
                    bail!("machine {name} is still running after stopping {unit}; not removing it");
                }
            }
            // Leave no enablement symlink pointing at a machine that is gone.
            let _ = bus.disable(&unit);
            execute(&plan)?;
            bus.reload().context("machine removed, but")?;
        }
        Err(e) => {
            eprintln!(
                "mbctl: note: {} — not checking whether {name} is running",
                crate::one_line(&e)
            );
            execute(&plan)?;
        }
    }
    if vendor.exists() {
        eprintln!(
            "mbctl: note: {} (vendor) still declares {name}",
            vendor.display()
        );
    }
    if !purge {
        for dir in [paths.config_dir(&name), paths.storage_dir(&name)] {
            if dir.exists() {
                eprintln!("Kept {} (use --purge to delete it)", dir.display());
            }
        }
    }
    Ok(EXIT_OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(p: &Path) {
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, "x").unwrap();
    }

    #[test]
    fn plan_keeps_others_and_user_files() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::new(dir.path());
        let n = MachineName::new("web").unwrap();
        let other = MachineName::new("web2").unwrap();
        touch(&paths.fs("/etc/man8s/machines/web.machine"));
        touch(&paths.fs("/etc/man8s/machines/web.machine.d/a.conf"));
        touch(&paths.fs("/etc/man8s/machines/web2.machine"));
        touch(&paths.rootfs(&n).join("bin/sh"));
        touch(&paths.fs("/var/lib/man8machines/.web.previous/bin/sh"));
        touch(&paths.rootfs(&other).join("bin/sh"));
        touch(&paths.env_file(&n));
        touch(&paths.storage_dir(&n).join("db"));
        touch(&paths.nspawn_run(&n));
        touch(&paths.nspawn_etc_kept(&n));
        // A user's own settings file stays; the Python tool's goes, and so does the one
        // `mbctl migrate` kept.
        touch(&paths.nspawn_etc(&n));
        fs::create_dir_all(paths.fs("/var/lib/machines")).unwrap();
        std::os::unix::fs::symlink("/var/lib/man8machines/web", paths.machines_link(&n)).unwrap();

        let p = plan(&paths, &n, false);
        let removed: Vec<_> = p
            .iter()
            .map(|r| r.path().strip_prefix(dir.path()).unwrap().to_owned())
            .collect();
        assert_eq!(
            removed,
            [
                "etc/man8s/machines/web.machine",
                "etc/man8s/machines/web.machine.d",
                "run/systemd/nspawn/web.nspawn",
                "etc/systemd/nspawn/web.nspawn.python-mbctl",
                "var/lib/machines/web",
                "var/lib/man8machines/web",
                "var/lib/man8machines/.web.previous"
            ]
            .map(PathBuf::from)
        );
        execute(&p).unwrap();
        assert!(paths.fs("/etc/man8s/machines/web2.machine").exists());
        assert!(paths.rootfs(&other).join("bin/sh").exists());
        assert!(paths.env_file(&n).exists());
        assert!(paths.storage_dir(&n).join("db").exists());
        assert!(paths.nspawn_etc(&n).exists());

        fs::write(
            paths.nspawn_etc(&n),
            "[Exec]\nParameters=/sbin/busybox-init.sh\n",
        )
        .unwrap();
        let p = plan(&paths, &n, true);
        assert_eq!(p.len(), 3, "{p:?}");
        execute(&p).unwrap();
        assert!(!paths.config_dir(&n).exists());
        assert!(!paths.storage_dir(&n).exists());
        assert!(
            fs::read_dir(paths.fs("/var/lib/man8machine_storage"))
                .unwrap()
                .next()
                .is_none()
        );
    }

    #[test]
    fn mounts_inside_a_tree_are_found() {
        let info = "36 35 98:0 / / rw - ext4 /dev/root rw\n\
                    37 36 0:5 / /var/lib/man8machines/web/proc rw - proc proc rw\n\
                    38 36 0:6 / /var/lib/man8machines/web2 rw - tmpfs t rw\n\
                    39 36 0:7 / /srv/with\\040space rw - tmpfs t rw\n";
        assert_eq!(
            mounts_below(info, Path::new("/var/lib/man8machines/web")),
            [PathBuf::from("/var/lib/man8machines/web/proc")]
        );
        assert!(mounts_below(info, Path::new("/var/lib/man8machines/other")).is_empty());
        assert_eq!(
            mounts_below(info, Path::new("/srv/with space")),
            [PathBuf::from("/srv/with space")]
        );
    }

    #[test]
    fn link_target_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::new(dir.path());
        let n = MachineName::new("web").unwrap();
        // The link points at something precious outside our paths: only the link goes.
        let precious = dir.path().join("precious");
        touch(&precious.join("f"));
        fs::create_dir_all(paths.fs("/var/lib/machines")).unwrap();
        std::os::unix::fs::symlink(&precious, paths.machines_link(&n)).unwrap();
        execute(&plan(&paths, &n, true)).unwrap();
        assert!(precious.join("f").exists());
        assert!(paths.machines_link(&n).symlink_metadata().is_err());
    }
}
