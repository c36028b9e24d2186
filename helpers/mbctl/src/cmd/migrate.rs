//! `migrate NAME`: a machine made by the Python mbctl (`/etc/systemd/nspawn/NAME.nspawn` running
//! `/sbin/busybox-init.sh`, man8env.env, binds) becomes a declaration run by `man8@NAME`. Rootfs,
//! config, data, man8env.env (and with it the Yggdrasil address) stay where they are; the old
//! settings file is renamed to `NAME.nspawn.python-mbctl` (it would win over the generated one).

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use man8s::declaration::runtime::parse_tmpfs;
use man8s::declaration::{self, parse_port, split_environment, validate_image_reference};
use man8s::machine::{Machine, SourceFiles, Template, Volume, VolumeSource};
use man8s::{MachineName, Paths};

use crate::EXIT_OK;
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

/// Keys of the Python tool's settings file that man8s's generated one sets the same way (or
/// replaces by its own init): nothing to carry over.
const SAME_IN_MAN8S: &[(&str, &str)] = &[
    ("Exec", "Boot"),
    ("Exec", "ProcessTwo"),
    ("Exec", "Parameters"),
    ("Exec", "ResolvConf"),
    ("Exec", "Timezone"),
    ("Exec", "LinkJournal"),
    ("Exec", "PrivateUsers"),
    ("Exec", "NotifyReady"),
    ("Exec", "KillSignal"),
    ("Network", "VirtualEthernet"),
    ("Files", "PrivateUsersOwnership"),
];

/// A Python-made machine as man8s sees it: the declaration, and what the declaration cannot say.
#[derive(Debug)]
pub struct Translation {
    /// The declaration.
    pub machine: Machine,
    /// One line per setting that was not carried over as it was (file:line: what, why).
    pub warnings: Vec<String>,
    /// systemd-nspawn options that keep the rest working as before (for the unit drop-in).
    pub nspawn_args: Vec<String>,
    /// Settings neither the declaration nor nspawn's command line can carry (as comments for the
    /// drop-in, each `KEY=VALUE  # why`).
    pub not_applied: Vec<String>,
    /// `Bind=SRC:/man8env.env` with a source other than the machine's config dir.
    pub custom_env_source: Option<PathBuf>,
}

/// nspawn's `--rlimit=` name for a `Limit*=` key (`LimitNOFILE` → `RLIMIT_NOFILE`).
fn rlimit_name(key: &str) -> Option<String> {
    let limit = key.strip_prefix("Limit")?;
    const KNOWN: &[&str] = &[
        "CPU",
        "FSIZE",
        "DATA",
        "STACK",
        "CORE",
        "RSS",
        "NOFILE",
        "AS",
        "NPROC",
        "MEMLOCK",
        "LOCKS",
        "SIGPENDING",
        "MSGQUEUE",
        "NICE",
        "RTPRIO",
        "RTTIME",
    ];
    KNOWN.contains(&limit).then(|| format!("RLIMIT_{limit}"))
}

/// The declaration equivalent of a Python-made machine (pure): `settings` is the text of its
/// `.nspawn` file (at `settings_path`, for messages), `env` its man8env.env, `host_bridge` the
/// bridge this host's man8s.conf names.
pub fn translate(
    name: &MachineName,
    settings: &str,
    settings_path: &str,
    env: &str,
    host_bridge: &str,
) -> Result<Translation> {
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
    // The old loader's meaning of man8env.env, and the old init's user (it never switched to the
    // image's User).
    m.environment_compat = man8s::envfile::Mode::PythonMbctl;
    match env.get("MAN8S_CONTAINER_TEMPLATE") {
        None | Some("") | Some("network_isolated") => m.template = Template::NetworkIsolated,
        Some(other) => {
            bail!("man8env.env: MAN8S_CONTAINER_TEMPLATE={other} has no man8s equivalent")
        }
    }
    let mut t = Translation {
        machine: m,
        warnings: Vec::new(),
        nspawn_args: Vec::new(),
        not_applied: Vec::new(),
        custom_env_source: None,
    };
    let m = &mut t.machine;
    let config_dir = Paths::config_dir_canonical(name);
    let storage_dir = Paths::storage_dir_canonical(name);
    // Network settings other than the bridge: nspawn takes a [Network] section from the command
    // line as a whole, so all of the old one goes there.
    let special_network = lines.iter().any(|(s, k, _, _)| {
        s == "Network"
            && matches!(
                k.as_str(),
                "Private" | "Zone" | "MACVLAN" | "IPVLAN" | "Interface"
            )
    });
    for (section, key, value, line) in &lines {
        let here = at(*line);
        let mut warn = |why: String| t.warnings.push(format!("{here}: {key}={value}: {why}"));
        let to_nspawn = |args: &mut Vec<String>, arg: String, warn: &mut dyn FnMut(String)| {
            warn(format!(
                "not a declaration key; kept as systemd-nspawn {arg} in the unit drop-in"
            ));
            args.push(arg);
        };
        match (section.as_str(), key.as_str()) {
            (s, k) if SAME_IN_MAN8S.contains(&(s, k)) => {}
            ("Exec", "Environment") => {
                // PATH, TERM, HOME, LANG: what the machine had stays (Environment= wins).
                for (k, v) in split_environment(value)
                    .map_err(|e| anyhow::anyhow!("{here}: Environment=: {e}"))?
                {
                    m.environment.push((k, v));
                }
            }
            ("Exec", "WorkingDirectory") if !value.is_empty() => {
                m.working_directory = Some(value.clone())
            }
            ("Exec", "User") if !value.is_empty() => m.user = Some(value.clone()),
            ("Exec", "Hostname") if !value.is_empty() => m.runtime.hostname = Some(value.clone()),
            ("Exec", k @ ("Capability" | "DropCapability")) => {
                let list = if k == "Capability" {
                    &mut m.runtime.add_capabilities
                } else {
                    &mut m.runtime.drop_capabilities
                };
                list.extend(value.split([' ', ',']).filter(|c| !c.is_empty()).map(|c| {
                    let c = c.to_ascii_uppercase();
                    if c.starts_with("CAP_") || c == "ALL" {
                        c
                    } else {
                        format!("CAP_{c}")
                    }
                }));
            }
            ("Exec", k) if rlimit_name(k).is_some() => {
                let limit = rlimit_name(k).unwrap_or_default();
                to_nspawn(
                    &mut t.nspawn_args,
                    format!("--rlimit={limit}={value}"),
                    &mut warn,
                )
            }
            ("Network", "Bridge") if special_network => to_nspawn(
                &mut t.nspawn_args,
                format!("--network-bridge={value}"),
                &mut warn,
            ),
            ("Network", "Private") => {
                if matches!(value.as_str(), "yes" | "true" | "1" | "on") {
                    to_nspawn(&mut t.nspawn_args, "--private-network".into(), &mut warn)
                }
            }
            ("Network", "Zone") => to_nspawn(
                &mut t.nspawn_args,
                format!("--network-zone={value}"),
                &mut warn,
            ),
            ("Network", k @ ("MACVLAN" | "IPVLAN" | "Interface")) => {
                let opt = match k {
                    "MACVLAN" => "--network-macvlan",
                    "IPVLAN" => "--network-ipvlan",
                    _ => "--network-interface",
                };
                for ifname in value.split_whitespace() {
                    to_nspawn(&mut t.nspawn_args, format!("{opt}={ifname}"), &mut warn);
                }
            }
            // The Python tool's template named the bridge of its day; what matters is whether
            // it is this host's bridge (then the declaration leaves it to man8s.conf).
            ("Network", "Bridge") if !value.is_empty() && value != host_bridge => {
                m.network.bridge = Some(value.clone())
            }
            ("Network", "Bridge") => {}
            ("Network", "Port") => {
                m.ports
                    .push(parse_port(value).map_err(|e| anyhow::anyhow!("{here}: Port=: {e}"))?);
            }
            ("Files", k @ ("Bind" | "BindReadOnly")) => {
                if value.contains('\\') {
                    bail!(
                        "{here}: {k}={value}: escaped ':' in binds is not supported; convert this bind by hand"
                    );
                }
                let mut parts = value.split(':');
                let raw_src = parts.next().unwrap_or_default();
                // Without a destination, nspawn binds at the source path (minus a `+`).
                let dst = parts
                    .next()
                    .filter(|d| !d.is_empty())
                    .unwrap_or(raw_src.trim_start_matches('+'));
                let options: Vec<&str> = parts.flat_map(|o| o.split(',')).collect();
                let src = raw_src;
                if dst == man8s::paths::ENV_FILE_IN_MACHINE {
                    let canonical = config_dir.join(man8s::paths::ENV_FILE_NAME);
                    if Path::new(src) != canonical {
                        warn(format!(
                            "man8s always binds {} as /man8env.env",
                            canonical.display()
                        ));
                        t.custom_env_source = Some(PathBuf::from(src));
                    }
                    continue; // the generator binds man8env.env itself
                }
                let unusual: Vec<&str> = options
                    .iter()
                    .copied()
                    .filter(|o| !o.is_empty() && !matches!(*o, "idmap" | "ro" | "rw"))
                    .collect();
                if !unusual.is_empty() {
                    warn(format!(
                        "carried as an idmapped, recursive Volume=; the bind option(s) {} are not",
                        unusual.join(",")
                    ));
                    t.not_applied.push(format!(
                        "{k}={value}  # carried as Volume= without {}",
                        unusual.join(",")
                    ));
                }
                let host = Path::new(src);
                let relative = dst.trim_start_matches('/');
                let source = if src.starts_with('+') {
                    // nspawn's `+`: relative to the machine's root; the same in a declaration.
                    match declaration::parse_volume(&format!("{dst}:{src}")) {
                        Ok(v) => {
                            warn(
                                "carried as Volume= with a source in the machine's root (+); it \
                                 is part of the rootfs, so `mbctl machines update` replaces its \
                                 content"
                                    .into(),
                            );
                            v.source
                        }
                        Err(e) => {
                            warn(format!("cannot be a Volume= ({e}); not applied"));
                            t.not_applied
                                .push(format!("{k}={value}  # a bind man8s cannot declare"));
                            continue;
                        }
                    }
                } else if host == config_dir.join(relative) {
                    VolumeSource::Config
                } else if host == storage_dir.join(relative) {
                    VolumeSource::Data
                } else {
                    VolumeSource::Host(PathBuf::from(src))
                };
                m.volumes.push(Volume {
                    container_path: dst.to_owned(),
                    source,
                    read_only: k == "BindReadOnly" || options.contains(&"ro"),
                });
            }
            // The same syntax and meaning: the generator writes Tmpfs= back as this.
            ("Files", "TemporaryFileSystem") => match parse_tmpfs(value) {
                Ok(tmpfs) => {
                    m.runtime.tmpfs.retain(|x| x.path != tmpfs.path);
                    m.runtime.tmpfs.push(tmpfs);
                }
                Err(e) => {
                    warn(format!("cannot be a Tmpfs= ({e}); not applied"));
                    t.not_applied.push(format!(
                        "TemporaryFileSystem={value}  # needs a hand-made mount"
                    ));
                }
            },
            _ => {
                warn("no man8s equivalent; not applied".into());
                t.not_applied
                    .push(format!("[{section}] {key}={value}  # no man8s equivalent"));
            }
        }
    }
    // The old init never switched users: the app ran as root. Keep that across updates.
    if m.user.is_none() {
        m.user = Some("0".into());
    }
    // Nor did it narrow nspawn's capability set to Docker's, as man8s does by default.
    let rt = &mut m.runtime;
    rt.add_capabilities.extend(
        man8s::machine::NSPAWN_EXTRA_CAPABILITIES
            .iter()
            .map(|c| (*c).to_owned()),
    );
    let dropped = rt.drop_capabilities.clone();
    rt.add_capabilities.retain(|c| !dropped.contains(c));
    rt.add_capabilities.sort();
    rt.add_capabilities.dedup();
    rt.drop_capabilities.sort();
    rt.drop_capabilities.dedup();
    if let Some(args) = env
        .get("MAN8S_APPLICATION_ARGS")
        .filter(|a| !a.trim().is_empty())
    {
        t.warnings.push(format!(
            "man8env.env: MAN8S_APPLICATION_ARGS={args} is the command of the image as it was \
             pulled; it stays the app's command after `mbctl machines update` (the init logs it \
             as coming from MAN8S_APPLICATION_ARGS). Remove the line to follow the image's own."
        ));
    }
    // What the parser would refuse is better said now, naming the old file.
    let text = crate::render::render(&t.machine, "")?;
    if let Err(d) = declaration::parse(name, &[(t.machine.main_file().to_owned(), text)]) {
        bail!("{settings_path} cannot be expressed as a declaration: {d}");
    }
    Ok(t)
}

/// The unit drop-in that keeps what the declaration cannot say (`None` when there is nothing).
pub fn render_dropin(t: &Translation, settings_kept: &str) -> Option<String> {
    if t.nspawn_args.is_empty() && t.not_applied.is_empty() {
        return None;
    }
    let mut o = format!(
        "# Written by `mbctl migrate {0}`: settings of {settings_kept} that a declaration cannot\n\
         # say. Yours to edit; `mbctl machines remove {0}` removes it.\n\n[Service]\n",
        t.machine.name
    );
    if !t.nspawn_args.is_empty() {
        // man8@.service expands the variable unquoted: one word per option.
        o.push_str(&format!(
            "Environment={}\n",
            man8s::words::systemd::quote_unit_value(&format!(
                "{NSPAWN_EXTRA_ARGS_VAR}={}",
                t.nspawn_args.join(" ")
            ))
        ));
    }
    for n in &t.not_applied {
        o.push_str(&format!("# not applied: {n}\n"));
    }
    Some(o)
}

/// File name of the unit drop-in `migrate` writes.
pub const COMPAT_DROPIN: &str = "60-python-mbctl.conf";

/// The source of the settings file's `Bind=SRC:/man8env.env`, if any.
fn env_bind_source(settings: &str) -> Option<String> {
    settings_lines(settings)
        .into_iter()
        .filter(|(s, k, _, _)| s == "Files" && (k == "Bind" || k == "BindReadOnly"))
        .find_map(|(_, _, v, _)| {
            let mut parts = v.split(':');
            let src = parts.next()?.to_owned();
            (parts.next() == Some(man8s::paths::ENV_FILE_IN_MACHINE)).then_some(src)
        })
}

/// The variable of `man8@.service` whose words are appended to nspawn's command line.
pub const NSPAWN_EXTRA_ARGS_VAR: &str = "MAN8S_NSPAWN_EXTRA_ARGS";

/// The `container_host_*` variables nspawn gives its payload (systemd's container interface):
/// the ID fields of the host's os-release, lower-cased.
fn nspawn_host_vars(os_release: &str) -> Vec<(String, String)> {
    const FIELDS: &[&str] = &["ID", "VERSION_ID", "BUILD_ID", "VARIANT_ID"];
    os_release
        .lines()
        .filter_map(|l| l.split_once('='))
        .filter(|(k, _)| FIELDS.contains(k))
        .map(|(k, v)| {
            let v = v.trim();
            let v = v
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .or_else(|| v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
                .unwrap_or(v);
            (
                format!("container_host_{}", k.to_ascii_lowercase()),
                v.to_owned(),
            )
        })
        .filter(|(_, v)| !v.is_empty())
        .collect()
}

/// The man8env.env lines whose meaning differs between the two modes, as printable lines.
pub fn env_mode_report(
    env_display: &str,
    env_text: &str,
    outer: &[(String, String)],
) -> Vec<String> {
    let lookup = |k: &str| {
        outer
            .iter()
            .rev()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
    };
    man8s::envfile::mode_differences(env_text, &lookup)
        .into_iter()
        .map(|d| {
            format!(
                "{env_display}:{}: literal mode: {}; python-mbctl mode: {}",
                d.line, d.literal, d.python_mbctl
            )
        })
        .collect()
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
    if !paths.rootfs(&name).is_dir() {
        bail!(
            "{} does not exist; there is no machine to migrate",
            Paths::rootfs_canonical(&name).display()
        );
    }
    // The man8env.env the old machine really read (a user may have bound another file).
    let env_path = paths.env_file(&name);
    let env_canonical = Paths::config_dir_canonical(&name).join(man8s::paths::ENV_FILE_NAME);
    let custom = env_bind_source(&settings).filter(|s| Path::new(s) != env_canonical);
    let env = match &custom {
        Some(src) => {
            let text = fs::read_to_string(paths.fs(src))
                .with_context(|| format!("cannot read {src} (the machine's man8env.env)"))?;
            if env_path.symlink_metadata().is_err() {
                fs::write(&env_path, &text)
                    .with_context(|| format!("cannot write {}", env_path.display()))?;
                println!(
                    "Copied {src} to {} (man8s binds that file as /man8env.env).",
                    env_canonical.display()
                );
            } else if fs::read_to_string(&env_path).ok().as_deref() != Some(text.as_str()) {
                eprintln!(
                    "mbctl: warning: the machine read {src}, but man8s binds {} (a different \
                     file) as /man8env.env; copy it over if the old one is what you want",
                    env_canonical.display()
                );
            }
            text
        }
        None => fs::read_to_string(&env_path)
            .with_context(|| format!("cannot read {}", env_path.display()))?,
    };
    let host_bridge = man8s::hostconfig::HostConfig::load(&paths)
        .map(|c| c.bridge.name)
        .unwrap_or_else(|e| {
            eprintln!("mbctl: warning: {e}; comparing Bridge= with the default bridge");
            man8s::hostconfig::DEFAULT_BRIDGE.to_owned()
        });
    let translation = translate(&name, &settings, &settings_canonical, &env, &host_bridge)?;
    for w in &translation.warnings {
        eprintln!("mbctl: warning: {w}");
    }
    // What the old loader made of the file, where the literal reading would differ.
    let os_release = ["/etc/os-release", "/usr/lib/os-release"]
        .iter()
        .find_map(|p| fs::read_to_string(paths.fs(p)).ok())
        .unwrap_or_default();
    let outer: Vec<(String, String)> = translation
        .machine
        .environment
        .iter()
        .cloned()
        .chain([("container".to_owned(), "systemd-nspawn".to_owned())])
        .chain(nspawn_host_vars(&os_release))
        .collect();
    let env_display = env_canonical.display().to_string();
    let report = env_mode_report(&env_display, &env, &outer);
    if !report.is_empty() {
        eprintln!(
            "mbctl: {name} keeps the Python tool's reading of man8env.env \
             (EnvironmentCompat=python-mbctl); these lines mean something else when read literally:"
        );
        for r in &report {
            eprintln!("  {r}");
        }
    }
    let mut machine = translation.machine.clone();

    // A machine enabled the machinectl way stays enabled, now through the declaration.
    let bus = crate::cmd::info::host_bus(&paths);
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
    let kept_canonical = format!("{settings_canonical}{KEPT_SUFFIX}");
    let dropin = render_dropin(&translation, &kept_canonical);
    let dropin_path = paths.unit_dropin_dir(&name).join(COMPAT_DROPIN);
    if let Some(text) = &dropin
        && let Err(e) = fs::create_dir_all(paths.unit_dropin_dir(&name))
            .and_then(|()| fs::write(&dropin_path, text))
    {
        let _ = fs::remove_file(&written);
        return Err(e).with_context(|| format!("cannot write {}", dropin_path.display()));
    }
    if let Err(e) = fs::rename(&settings_path, &kept) {
        let _ = fs::remove_file(&written);
        if dropin.is_some() {
            let _ = fs::remove_file(&dropin_path);
        }
        return Err(e).with_context(|| format!("cannot move {} aside", settings_path.display()));
    }
    println!("Wrote {}", written.display());
    if dropin.is_some() {
        println!(
            "Wrote {} (settings a declaration cannot say)",
            dropin_path.display()
        );
    }
    println!("Kept the old settings as {}", kept.display());
    println!(
        "Note: man8s filters who may reach machines; the Python mbctl let the whole mesh in. To keep that, add \
         AllowFrom={} to [Network] of {} (or list your own hosts in [Mesh] AllowFrom= of /etc/man8s/man8s.conf; \
         see man8s.machine(5))",
        man8s::mesh::WHOLE_MESH,
        written.display()
    );
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
        let t = translate(&name, README_NSPAWN, "x.nspawn", env, "srvgrp0").unwrap();
        assert_eq!(
            crate::render::render(&t.machine, "h").unwrap(),
            "# h\n[Machine]\nImage=ghcr.io/bitwarden/self-host:latest\nWorkingDirectory=/app\n\
             User=0\n\
             Environment=\"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\"\n\
             Environment=\"TERM=xterm\"\nEnvironment=\"HOME=/root\"\nEnvironmentCompat=python-mbctl\n\
             AddCapability=CAP_AUDIT_CONTROL CAP_DAC_READ_SEARCH CAP_IPC_OWNER CAP_LEASE CAP_LINUX_IMMUTABLE CAP_NET_BROADCAST CAP_SYS_ADMIN CAP_SYS_BOOT CAP_SYS_NICE CAP_SYS_PTRACE CAP_SYS_RESOURCE CAP_SYS_TTY_CONFIG\n\
             Volume=/etc/bitwarden:config\n"
        );
        // Everything in the README's settings file is either carried or what man8s does anyway.
        assert!(t.warnings.is_empty(), "{:?}", t.warnings);
        assert!(render_dropin(&t, "x").is_none());
        // Another bridge than this host's is kept.
        let t = translate(&name, README_NSPAWN, "x.nspawn", env, "br-lan").unwrap();
        assert_eq!(t.machine.network.bridge.as_deref(), Some("srvgrp0"));
    }

    #[test]
    fn nothing_is_dropped_silently() {
        let name = MachineName::new("m").unwrap();
        let s = "[Exec]\nParameters=/sbin/busybox-init.sh\nCapability=CAP_NET_ADMIN\n\
                 DropCapability=CAP_SYS_CHROOT\nHostname=old-host\nLimitNOFILE=65536\n\
                 User=www\nPersonality=x86\n\
                 [Network]\nMACVLAN=eth0\nBridge=srvgrp0\n\
                 [Files]\nTemporaryFileSystem=/cache\nBind=+/inside:/elsewhere\n\
                 Bind=/srv/a:/a:norbind,noidmap\nBind=/etc/other.env:/man8env.env\n\
                 TemporaryFileSystem=/run/app:mode=0700,size=10m\nTemporaryFileSystem=/bad:x;y\n\
                 BindReadOnly=+/opt/share\n";
        let env = "MAN8S_OCI_IMAGE_URL=redis\nMAN8S_APPLICATION_ARGS=/entrypoint.sh\n";
        let t = translate(&name, s, "m.nspawn", env, "srvgrp0").unwrap();
        assert_eq!(
            t.nspawn_args,
            [
                "--rlimit=RLIMIT_NOFILE=65536",
                "--network-macvlan=eth0",
                "--network-bridge=srvgrp0"
            ]
        );
        assert_eq!(
            t.machine.user.as_deref(),
            Some("www"),
            "the machine's own User= stays"
        );
        let v: Vec<_> = t
            .machine
            .volumes
            .iter()
            .map(|v| (v.container_path.as_str(), v.source.clone(), v.read_only))
            .collect();
        assert_eq!(
            v,
            [
                ("/elsewhere", VolumeSource::Root("/inside".into()), false),
                ("/a", VolumeSource::Host("/srv/a".into()), false),
                ("/opt/share", VolumeSource::Root("/opt/share".into()), true),
            ]
        );
        let tmpfs: Vec<_> = t
            .machine
            .runtime
            .tmpfs
            .iter()
            .map(|t| (t.path.as_str(), t.options.as_str()))
            .collect();
        assert_eq!(tmpfs, [("/cache", ""), ("/run/app", "mode=0700,size=10m")]);
        assert_eq!(
            t.custom_env_source.as_deref(),
            Some(Path::new("/etc/other.env"))
        );
        let w = t.warnings.join("\n");
        for line in [6, 8, 10, 11, 14, 15, 16, 18, 19] {
            assert!(
                w.contains(&format!("m.nspawn:{line}: ")),
                "line {line}:\n{w}"
            );
        }
        assert!(w.contains("norbind,noidmap are not"), "{w}");
        assert!(
            render_dropin(&t, "x").unwrap().contains(
                "# not applied: Bind=/srv/a:/a:norbind,noidmap  # carried as Volume= without norbind,noidmap"
            ),
            "{:?}",
            render_dropin(&t, "x")
        );
        assert!(w.contains("MAN8S_APPLICATION_ARGS=/entrypoint.sh"), "{w}");
        let dropin = render_dropin(&t, "/etc/systemd/nspawn/m.nspawn.python-mbctl").unwrap();
        assert!(
            dropin.contains(
                "Environment=\"MAN8S_NSPAWN_EXTRA_ARGS=--rlimit=RLIMIT_NOFILE=65536 --network-macvlan=eth0 \
                 --network-bridge=srvgrp0\"\n"
            ),
            "{dropin}"
        );
        assert!(
            dropin.contains("# not applied: [Exec] Personality=x86"),
            "{dropin}"
        );
        assert!(
            dropin.contains("# not applied: TemporaryFileSystem=/bad:x;y"),
            "{dropin}"
        );
        assert!(
            !dropin.contains("/cache") && !dropin.contains("+/inside"),
            "{dropin}"
        );
        assert!(
            w.contains("m.nspawn:14: Bind=+/inside:/elsewhere: carried as Volume="),
            "{w}"
        );
        // And the declaration says it all, as the parser reads it back.
        let text = crate::render::render(&t.machine, "").unwrap();
        assert!(text.contains("Volume=/elsewhere:+/inside\n"), "{text}");
        assert!(
            text.contains("Volume=/opt/share:+/opt/share:ro\n"),
            "{text}"
        );
        assert!(
            text.contains("Tmpfs=/run/app:mode=0700,size=10m\n"),
            "{text}"
        );
    }

    #[test]
    fn nspawn_host_variables_from_os_release() {
        let v = nspawn_host_vars(
            "PRETTY_NAME=\"Debian GNU/Linux 13\"\nID=debian\nVERSION_ID=\"13\"\nVARIANT_ID='srv'\nBUILD_ID=\n",
        );
        assert_eq!(
            v,
            [
                ("container_host_id".to_owned(), "debian".to_owned()),
                ("container_host_version_id".to_owned(), "13".to_owned()),
                ("container_host_variant_id".to_owned(), "srv".to_owned()),
            ]
        );
    }

    #[test]
    fn env_mode_differences_are_reported_with_file_and_line() {
        let outer = vec![("HOME".to_owned(), "/root".to_owned())];
        let r = env_mode_report("/x/man8env.env", "A=1\nB=$HOME/b\n", &outer);
        assert_eq!(
            r,
            [r#"/x/man8env.env:2: literal mode: B="$HOME/b"; python-mbctl mode: B="/root/b""#]
        );
    }

    #[test]
    fn binds_of_every_kind() {
        let name = MachineName::new("m").unwrap();
        let s = "[Exec]\nParameters=/sbin/busybox-init.sh\n[Files]\n\
                 Bind=/var/lib/man8machine_storage/m/data:/data:idmap\n\
                 BindReadOnly=/srv/shared:/shared\nBind=/opt/x\n[Network]\nPort=tcp:8080:80\n";
        let t = translate(
            &name,
            s,
            "m.nspawn",
            "MAN8S_OCI_IMAGE_URL=redis\n",
            "srvgrp0",
        )
        .unwrap();
        let m = &t.machine;
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
            "srvgrp0",
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("not a machine of the Python mbctl"),
            "{e}"
        );
        let e = translate(&name, README_NSPAWN, "m.nspawn", "A=1\n", "srvgrp0").unwrap_err();
        assert!(e.to_string().contains("no MAN8S_OCI_IMAGE_URL"), "{e}");
        let bad = format!("{README_NSPAWN}[Network]\nPort=nonsense\n");
        let e = translate(
            &name,
            &bad,
            "m.nspawn",
            "MAN8S_OCI_IMAGE_URL=redis\n",
            "srvgrp0",
        )
        .unwrap_err();
        assert!(e.to_string().starts_with("m.nspawn:23: Port=: "), "{e}");
    }
}
