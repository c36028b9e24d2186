//! `migrate NAME`: a machine made by the Python mbctl (`/etc/systemd/nspawn/NAME.nspawn` running
//! `/sbin/busybox-init.sh`, man8env.env, binds) becomes a declaration run by `man8@NAME`. Rootfs,
//! config, data, man8env.env (and with it the Yggdrasil address) stay where they are; the old
//! settings file is renamed to `NAME.nspawn.python-mbctl` (it would win over the generated one).

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use man8s::declaration::{self, parse_port, split_environment, validate_image_reference};
use man8s::machine::{Machine, SourceFiles, Template, Volume, VolumeSource};
use man8s::{MachineName, Paths};

use crate::EXIT_OK;
use crate::bus::Bus;
use crate::cmd::info::is_real_root;
use crate::cmd::machine_name;
use crate::cmd::pull::{DECLARATION_DIR, reload_systemd, write_declaration};

/// The init the Python tool put in every machine.
pub const PYTHON_INIT: &str = "/sbin/busybox-init.sh";
/// Suffix the old settings file is renamed with.
pub const KEPT_SUFFIX: &str = man8s::paths::PYTHON_SETTINGS_KEPT_SUFFIX;

/// `(section, key, value, line)` of an nspawn settings file; comments and blank lines skipped.
fn settings_lines(text: &str) -> Vec<(String, String, String, usize)> {
    let mut section = String::new();
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(s) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = s.trim().to_owned();
        } else if let Some((k, v)) = line.split_once('=') {
            out.push((
                section.clone(),
                k.trim().to_owned(),
                v.trim().to_owned(),
                i + 1,
            ));
        }
    }
    out
}

/// The declaration equivalent of a Python-made machine (pure): `settings` is the text of its
/// `.nspawn` file (at `settings_path`, for messages), `env` its man8env.env.
pub fn translate(
    name: &MachineName,
    settings: &str,
    settings_path: &str,
    env: &str,
) -> Result<Machine> {
    let lines = settings_lines(settings);
    let at = |line: usize| format!("{settings_path}:{line}");
    if !lines.iter().any(|(s, k, v, _)| {
        s == "Exec" && k == "Parameters" && v.split_whitespace().next() == Some(PYTHON_INIT)
    }) {
        bail!("{settings_path}: not a machine of the Python mbctl (no Parameters={PYTHON_INIT})");
    }
    let env = man8s::envfile::parse(env);
    let Some(image) = env.get("MAN8S_OCI_IMAGE_URL").filter(|i| !i.is_empty()) else {
        bail!(
            "its man8env.env has no MAN8S_OCI_IMAGE_URL, so the image is unknown; add it and run migrate again"
        );
    };
    validate_image_reference(image)
        .map_err(|e| anyhow::anyhow!("man8env.env: MAN8S_OCI_IMAGE_URL: {e}"))?;
    let main = Path::new(DECLARATION_DIR).join(format!("{name}{}", declaration::SUFFIX));
    let mut m = Machine::new(
        name.clone(),
        SourceFiles {
            main,
            dropins: Vec::new(),
        },
        image.to_owned(),
    );
    match env.get("MAN8S_CONTAINER_TEMPLATE") {
        None | Some("") | Some("network_isolated") => m.template = Template::NetworkIsolated,
        Some(other) => {
            bail!("man8env.env: MAN8S_CONTAINER_TEMPLATE={other} has no man8s equivalent")
        }
    }
    let config_dir = Paths::config_dir_canonical(name);
    let storage_dir = Paths::storage_dir_canonical(name);
    for (section, key, value, line) in &lines {
        match (section.as_str(), key.as_str()) {
            ("Exec", "Environment") => {
                for (k, v) in split_environment(value)
                    .map_err(|e| anyhow::anyhow!("{}: Environment=: {e}", at(*line)))?
                {
                    // nspawn sets TERM from the console; everything else the app saw is kept.
                    if k != "TERM" {
                        m.environment.push((k, v));
                    }
                }
            }
            ("Exec", "WorkingDirectory") if !value.is_empty() => {
                m.working_directory = Some(value.clone())
            }
            ("Exec", "User") if !value.is_empty() => m.user = Some(value.clone()),
            // The Python tool's template always named srvgrp0: that is the host's bridge, not a choice.
            ("Network", "Bridge")
                if !value.is_empty() && value != man8s::hostconfig::DEFAULT_BRIDGE =>
            {
                m.network.bridge = Some(value.clone())
            }
            ("Network", "Port") => {
                m.ports.push(
                    parse_port(value).map_err(|e| anyhow::anyhow!("{}: Port=: {e}", at(*line)))?,
                );
            }
            ("Files", k @ ("Bind" | "BindReadOnly")) => {
                if value.contains('\\') {
                    bail!(
                        "{}: {k}={value}: escaped ':' in binds is not supported; convert this bind by hand",
                        at(*line)
                    );
                }
                let mut parts = value.split(':');
                let src = parts.next().unwrap_or_default().trim_start_matches('+');
                let dst = parts.next().filter(|d| !d.is_empty()).unwrap_or(src);
                if dst == man8s::paths::ENV_FILE_IN_MACHINE {
                    continue; // the generator binds man8env.env itself
                }
                let host = Path::new(src);
                let relative = dst.trim_start_matches('/');
                let source = if host == config_dir.join(relative) {
                    VolumeSource::Config
                } else if host == storage_dir.join(relative) {
                    VolumeSource::Data
                } else {
                    VolumeSource::Host(PathBuf::from(src))
                };
                m.volumes.push(Volume {
                    container_path: dst.to_owned(),
                    source,
                    read_only: k == "BindReadOnly",
                });
            }
            _ => {}
        }
    }
    // What the parser would refuse is better said now, naming the old file.
    let text = crate::render::render(&m, "")?;
    if let Err(d) = declaration::parse(name, &[(m.main_file().to_owned(), text)]) {
        bail!("{settings_path} cannot be expressed as a declaration: {d}");
    }
    Ok(m)
}

/// The command.
pub fn migrate(name: &str) -> Result<u8> {
    let name = machine_name(name)?;
    let paths = Paths::from_env();
    if let Ok(Some(src)) = declaration::find(&paths, &name) {
        bail!(
            "machine {name} is declared already ({}); nothing to migrate",
            src.main.display()
        );
    }
    let settings_path = paths.nspawn_etc(&name);
    let settings_canonical = format!("{}/{name}.nspawn", man8s::paths::NSPAWN_ETC_DIR);
    let settings = fs::read_to_string(&settings_path).with_context(|| {
        format!("cannot read {settings_canonical} (is {name} a machine of the Python mbctl?)")
    })?;
    let env_path = paths.env_file(&name);
    let env = fs::read_to_string(&env_path)
        .with_context(|| format!("cannot read {}", env_path.display()))?;
    if !paths.rootfs(&name).is_dir() {
        bail!(
            "{} does not exist; there is no machine to migrate",
            Paths::rootfs_canonical(&name).display()
        );
    }
    let mut machine = translate(&name, &settings, &settings_canonical, &env)?;

    // A machine enabled the machinectl way stays enabled, now through the declaration.
    let bus = if is_real_root(&paths) {
        Bus::system().ok()
    } else {
        None
    };
    let old_unit = format!("systemd-nspawn@{name}.service");
    let was_enabled = bus
        .as_ref()
        .and_then(|b| b.unit_state(&old_unit).ok())
        .is_some_and(|s| s.file == "enabled");
    if was_enabled {
        machine.install.wanted_by.push("machines.target".into());
    }

    let header = format!(
        "Machine {name}, migrated by `mbctl migrate {name}` from {settings_canonical} (Python mbctl),\n\
         now kept as {settings_canonical}{KEPT_SUFFIX}. Rootfs, config, data and man8env.env are unchanged."
    );
    let written = write_declaration(&paths, &machine, &header)?;
    let kept = paths.nspawn_etc_kept(&name);
    if let Err(e) = fs::rename(&settings_path, &kept) {
        let _ = fs::remove_file(&written);
        return Err(e).with_context(|| format!("cannot move {} aside", settings_path.display()));
    }
    println!("Wrote {}", written.display());
    println!("Kept the old settings as {}", kept.display());
    if was_enabled && let Some(b) = &bus {
        b.disable(&old_unit)?;
        println!("Disabled {old_unit}; man8@{name}.service starts at boot instead.");
    }
    reload_systemd(&paths);
    let running = bus
        .as_ref()
        .and_then(|b| b.machine_leader(name.as_str()).ok().flatten())
        .is_some();
    if running {
        println!(
            "{name} is still running the old way; switch with: machinectl stop {name} && mbctl machines start {name}"
        );
    } else {
        println!("Start it with: mbctl machines start {name}");
    }
    Ok(EXIT_OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    const README_NSPAWN: &str = "[Exec]\nBoot=no\nProcessTwo=yes\nParameters=/sbin/busybox-init.sh\nResolvConf=copy-stub\n\
        Timezone=copy\nLinkJournal=no\nPrivateUsers=pick\n\
        Environment=\"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\"\n\
        Environment=\"TERM=xterm\"\nEnvironment=\"HOME=/root\"\nWorkingDirectory=/app\n\n\
        [Network]\nVirtualEthernet=yes\nBridge=srvgrp0\n\n[Files]\nPrivateUsersOwnership=map\n\
        Bind=/var/lib/man8machine_configs/TestBWContainer3/man8env.env:/man8env.env:idmap\n\
        Bind=/var/lib/man8machine_configs/TestBWContainer3/etc/bitwarden:/etc/bitwarden:idmap\n";

    #[test]
    fn readme_machine() {
        let name = MachineName::new("TestBWContainer3").unwrap();
        let env = "MAN8S_CONTAINER_NAME=TestBWContainer3\nMAN8S_CONTAINER_TEMPLATE=network_isolated\n\
                   MAN8S_OCI_IMAGE_URL=ghcr.io/bitwarden/self-host:latest\n";
        let m = translate(&name, README_NSPAWN, "x.nspawn", env).unwrap();
        assert_eq!(
            crate::render::render(&m, "h").unwrap(),
            "# h\n[Machine]\nImage=ghcr.io/bitwarden/self-host:latest\nWorkingDirectory=/app\n\
             Environment=\"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\"\n\
             Environment=\"HOME=/root\"\nVolume=/etc/bitwarden:config\n"
        );
    }

    #[test]
    fn binds_of_every_kind() {
        let name = MachineName::new("m").unwrap();
        let s = "[Exec]\nParameters=/sbin/busybox-init.sh\n[Files]\n\
                 Bind=/var/lib/man8machine_storage/m/data:/data:idmap\n\
                 BindReadOnly=/srv/shared:/shared\nBind=/opt/x\n[Network]\nPort=tcp:8080:80\n";
        let m = translate(&name, s, "m.nspawn", "MAN8S_OCI_IMAGE_URL=redis\n").unwrap();
        let v: Vec<_> = m
            .volumes
            .iter()
            .map(|v| (v.container_path.as_str(), v.source.clone(), v.read_only))
            .collect();
        assert_eq!(
            v,
            [
                ("/data", VolumeSource::Data, false),
                ("/shared", VolumeSource::Host("/srv/shared".into()), true),
                ("/opt/x", VolumeSource::Host("/opt/x".into()), false)
            ]
        );
        assert_eq!(m.ports.len(), 1);
    }

    #[test]
    fn refusals_name_the_reason() {
        let name = MachineName::new("m").unwrap();
        let e = translate(
            &name,
            "[Exec]\nBoot=yes\n",
            "m.nspawn",
            "MAN8S_OCI_IMAGE_URL=redis\n",
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("not a machine of the Python mbctl"),
            "{e}"
        );
        let e = translate(&name, README_NSPAWN, "m.nspawn", "A=1\n").unwrap_err();
        assert!(e.to_string().contains("no MAN8S_OCI_IMAGE_URL"), "{e}");
        let bad = format!("{README_NSPAWN}[Network]\nPort=nonsense\n");
        let e = translate(&name, &bad, "m.nspawn", "MAN8S_OCI_IMAGE_URL=redis\n").unwrap_err();
        assert!(e.to_string().starts_with("m.nspawn:23: Port=: "), "{e}");
    }
}
