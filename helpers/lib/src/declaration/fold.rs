//! Folding lexed assignments into a [`Machine`]: list keys accumulate, `Key=` resets, single keys
//! take the last value, and the checks that need the whole declaration (duplicates, a missing
//! `Image=`, template/network combinations) run last.

use std::net::Ipv6Addr;
use std::path::{Path, PathBuf};

use super::Diagnostics;
use super::values::{
    absolute_path, check_single_line, parse_credential, parse_port, parse_volume,
    split_environment, validate_cpu_quota, validate_ifname, validate_image_reference,
    validate_memory, validate_tasks_max, validate_unit_name, validate_user,
};
use crate::MachineName;
use crate::ini::{diag, lex};
use crate::machine::{Credential, Machine, PullPolicy, SourceFiles, Template, YggdrasilAddress};

/// The keys of `[Machine]` folded here; with the run-time keys ([`super::runtime::KEYS`]) and
/// the day-two keys ([`DAY_TWO_KEYS`]) they make the section's schema.
const MACHINE_KEYS: &[&str] = &[
    "Image",
    "Exec",
    "Environment",
    "EnvironmentFile",
    "EnvironmentCompat",
    "WorkingDirectory",
    "User",
    "Volume",
    "Port",
    "Template",
    "Pull",
    "LoadCredential",
    "LoadCredentialEncrypted",
    "SetCredential",
    "SetCredentialEncrypted",
    "Requires",
    "Wants",
    "After",
    "Link",
];

/// Day two (health, readiness, unattended updates); folded by `fold_day_two`.
const DAY_TWO_KEYS: &[&str] = &[
    "HealthCmd",
    "HealthInterval",
    "HealthTimeout",
    "HealthRetries",
    "HealthStartPeriod",
    "HealthOnFailure",
    "Notify",
    "AutoUpdate",
];

/// Every key of `[Machine]`, each list written once (the lexer takes a const table).
const ALL_MACHINE_KEYS: [&str;
    MACHINE_KEYS.len() + super::runtime::KEYS.len() + DAY_TWO_KEYS.len()] =
    concat(&[MACHINE_KEYS, super::runtime::KEYS, DAY_TWO_KEYS]);

/// The sections of a declaration, each with its keys.
const SECTIONS: &[(&str, &[&str])] = &[
    ("Machine", &ALL_MACHINE_KEYS),
    (
        "Network",
        &[
            "Bridge",
            "YggdrasilAddress",
            "MACVLAN",
            "Expose",
            "AllowFrom",
        ],
    ),
    (
        "Resources",
        &["MemoryMax", "CPUQuota", "TasksMax", "DiskMax"],
    ),
    ("Install", &["WantedBy"]),
];

/// The key lists `parts`, one after the other, at compile time (`N` is their total length).
const fn concat<const N: usize>(parts: &[&[&'static str]]) -> [&'static str; N] {
    let mut out = [""; N];
    let (mut i, mut n) = (0, 0);
    while i < parts.len() {
        let mut j = 0;
        while j < parts[i].len() {
            out[n] = parts[i][j];
            n += 1;
            j += 1;
        }
        i += 1;
    }
    assert!(n == N, "N is the total length of the parts");
    out
}

/// Parse the declaration of `name` from its files (main file first, then drop-ins in order), each
/// given as (canonical path, text). Pure: no file-system access.
pub fn parse(name: &MachineName, files: &[(PathBuf, String)]) -> Result<Machine, Diagnostics> {
    let mut errs = Vec::new();
    let mut assignments = Vec::new();
    for (path, text) in files {
        lex(
            path,
            text,
            SECTIONS,
            "[Machine]",
            &mut assignments,
            &mut errs,
        );
    }
    let main = files.first().map(|(p, _)| p.clone()).unwrap_or_default();
    let source = SourceFiles {
        main: main.clone(),
        dropins: files.iter().skip(1).map(|(p, _)| p.clone()).collect(),
    };
    let mut m = Machine::new(name.clone(), source, String::new());
    let mut image_at: Option<(PathBuf, usize)> = None;
    let mut template_at: Option<(PathBuf, usize)> = None;
    let mut macvlan_at: Option<(PathBuf, usize)> = None;
    let mut port_at: Vec<(PathBuf, usize)> = Vec::new();
    let mut volume_at: Vec<(PathBuf, usize)> = Vec::new();
    let mut credentials: Vec<(Credential, (PathBuf, usize))> = Vec::new();

    for a in &assignments {
        let v = a.value.as_str();
        let empty = v.is_empty();
        let here = || (a.file.to_owned(), a.line);
        let result: Result<(), String> = (|| {
            match (a.section, a.key) {
                ("Machine", "Image") => {
                    if empty {
                        m.image.clear();
                        image_at = None;
                    } else {
                        validate_image_reference(v)?;
                        m.image = v.to_owned();
                        image_at = Some(here());
                    }
                }
                ("Machine", "Exec") => {
                    check_single_line(v)?;
                    m.exec = (!empty).then(|| v.to_owned());
                }
                ("Machine", "Environment") => {
                    if empty {
                        m.environment.clear();
                    } else {
                        let vars = split_environment(v)?;
                        for (_, val) in &vars {
                            check_single_line(val).map_err(|e| format!("value: {e}"))?;
                        }
                        m.environment.extend(vars);
                    }
                }
                ("Machine", "EnvironmentFile") => {
                    if empty {
                        m.environment_files.clear();
                    } else {
                        if v.starts_with('-') {
                            return Err("optional environment files ('-' prefix) are not supported; the file must exist".into());
                        }
                        m.environment_files.push(PathBuf::from(absolute_path(v)?));
                    }
                }
                ("Machine", "EnvironmentCompat") => {
                    m.environment_compat = match v {
                        "" | "no" | "literal" => crate::envfile::Mode::Literal,
                        crate::envfile::python_mbctl::KEY_VALUE => {
                            crate::envfile::Mode::PythonMbctl
                        }
                        other => {
                            return Err(format!(
                                "{other:?} is not python-mbctl (the Python tool's man8env.env \
                                 semantics) or literal (the default)"
                            ));
                        }
                    };
                }
                ("Machine", "WorkingDirectory") => {
                    m.working_directory = if empty { None } else { Some(absolute_path(v)?) };
                }
                ("Machine", "User") => {
                    if empty {
                        m.user = None;
                    } else {
                        validate_user(v)?;
                        m.user = Some(v.to_owned());
                    }
                }
                ("Machine", "Volume") => {
                    if empty {
                        m.volumes.clear();
                        volume_at.clear();
                    } else {
                        let vol = parse_volume(v)?;
                        if let Some(i) = m
                            .volumes
                            .iter()
                            .position(|x| x.container_path == vol.container_path)
                        {
                            let (f, l) = &volume_at[i];
                            return Err(format!(
                                "{} is already a volume (at {}:{l})",
                                vol.container_path,
                                f.display()
                            ));
                        }
                        m.volumes.push(vol);
                        volume_at.push(here());
                    }
                }
                ("Machine", "Port") => {
                    if empty {
                        m.ports.clear();
                        port_at.clear();
                    } else {
                        let port = parse_port(v)?;
                        if let Some(i) = m
                            .ports
                            .iter()
                            .position(|p| p.protocol == port.protocol && p.host == port.host)
                        {
                            let (f, l) = &port_at[i];
                            return Err(format!(
                                "host port {}:{} is already forwarded (at {}:{l})",
                                port.protocol,
                                port.host,
                                f.display()
                            ));
                        }
                        m.ports.push(port);
                        port_at.push(here());
                    }
                }
                ("Machine", "Template") => {
                    m.template = match v {
                        "" | "network_isolated" => Template::NetworkIsolated,
                        "macvlan" => Template::Macvlan,
                        other => {
                            return Err(format!(
                                "unknown template {other:?} (network_isolated or macvlan)"
                            ));
                        }
                    };
                    template_at = Some(here());
                }
                ("Machine", "Pull") => {
                    m.pull = match v {
                        "" | "missing" => PullPolicy::Missing,
                        "always" => PullPolicy::Always,
                        "never" => PullPolicy::Never,
                        other => return Err(format!("{other:?} is not missing, always or never")),
                    };
                }
                (
                    "Machine",
                    key @ ("LoadCredential"
                    | "LoadCredentialEncrypted"
                    | "SetCredential"
                    | "SetCredentialEncrypted"),
                ) => {
                    if empty {
                        // Resets only the credentials of this one kind, like systemd.
                        credentials.retain(|(c, _)| c.unit_key() != key);
                    } else {
                        let c = parse_credential(key, v)?;
                        if let Some((_, (f, l))) =
                            credentials.iter().find(|(x, _)| x.id() == c.id())
                        {
                            return Err(format!(
                                "credential {:?} is already defined (at {}:{l})",
                                c.id(),
                                f.display()
                            ));
                        }
                        credentials.push((c, here()));
                    }
                }
                ("Machine", key) if super::runtime::KEYS.contains(&key) => {
                    super::runtime::fold(key, v, &mut m.runtime)?;
                }
                ("Machine", key) if DAY_TWO_KEYS.contains(&key) => fold_day_two(&mut m, key, v)?,
                ("Network", "Bridge") => {
                    if empty {
                        m.network.bridge = None;
                    } else {
                        validate_ifname(v)?;
                        m.network.bridge = Some(v.to_owned());
                    }
                }
                ("Network", "YggdrasilAddress") => {
                    m.network.yggdrasil = match v {
                        "" | "auto" => YggdrasilAddress::Auto,
                        "no" => YggdrasilAddress::No,
                        addr => {
                            let ip: Ipv6Addr = addr.parse().map_err(|_| {
                                format!("{addr:?} is not auto, no or an IPv6 address")
                            })?;
                            if ip.octets()[0] & 0xfe != 0x02 {
                                return Err(format!("{ip} is not a Yggdrasil address (200::/7)"));
                            }
                            YggdrasilAddress::Fixed(ip)
                        }
                    };
                }
                ("Network", "MACVLAN") => {
                    if empty {
                        m.network.macvlan = None;
                        macvlan_at = None;
                    } else {
                        validate_ifname(v)?;
                        m.network.macvlan = Some(v.to_owned());
                        macvlan_at = Some(here());
                    }
                }
                ("Network", "Expose") => {
                    if empty {
                        m.network.expose.clear();
                    } else {
                        for item in v.split_whitespace() {
                            let e: crate::mesh::Exposed = item.parse()?;
                            if !m.network.expose.contains(&e) {
                                m.network.expose.push(e);
                            }
                        }
                    }
                }
                ("Network", "AllowFrom") => {
                    if empty {
                        m.network.allow_from.clear();
                    } else {
                        for item in v.split_whitespace() {
                            let a: crate::mesh::AllowSource = item.parse()?;
                            if let crate::mesh::AllowSource::Net(ipnet::IpNet::V4(_)) = a {
                                return Err(format!(
                                    "{item}: machines' IPv4 addresses are DHCP leases behind NAT; allow IPv4 peers host-wide ([Mesh] AllowFrom= in /etc/man8s/man8s.conf)"
                                ));
                            }
                            if !m.network.allow_from.contains(&a) {
                                m.network.allow_from.push(a);
                            }
                        }
                    }
                }
                ("Machine", key @ ("Requires" | "Wants" | "After")) => {
                    let list = match key {
                        "Requires" => &mut m.dependencies.requires,
                        "Wants" => &mut m.dependencies.wants,
                        _ => &mut m.dependencies.after,
                    };
                    if empty {
                        list.clear();
                    } else {
                        for item in v.split_whitespace() {
                            let other =
                                MachineName::new(item).map_err(|e| format!("{item:?}: {e}"))?;
                            if &other == name {
                                return Err(format!("a machine cannot depend on itself ({item})"));
                            }
                            if !list.contains(&other) {
                                list.push(other);
                            }
                        }
                    }
                }
                ("Machine", "Link") => {
                    if empty {
                        m.links.clear();
                    } else {
                        for item in v.split_whitespace() {
                            let link: crate::mesh::Link = item.parse()?;
                            if !m.links.contains(&link) {
                                m.links.push(link);
                            }
                        }
                    }
                }
                ("Resources", "MemoryMax") => {
                    if !empty {
                        validate_memory(v)?;
                    }
                    m.resources.memory_max = (!empty).then(|| v.to_owned());
                }
                ("Resources", "CPUQuota") => {
                    if !empty {
                        validate_cpu_quota(v)?;
                    }
                    m.resources.cpu_quota = (!empty).then(|| v.to_owned());
                }
                ("Resources", "TasksMax") => {
                    if !empty {
                        validate_tasks_max(v)?;
                    }
                    m.resources.tasks_max = (!empty).then(|| v.to_owned());
                }
                ("Resources", "DiskMax") => {
                    m.resources.disk_max = if empty {
                        None
                    } else {
                        let bytes = super::runtime::parse_size(v)?;
                        Some(bytes.parse().map_err(|_| format!("{v:?} is too big"))?)
                    };
                }
                ("Install", "WantedBy") => {
                    if empty {
                        m.install.wanted_by.clear();
                    } else {
                        for unit in v.split_whitespace() {
                            validate_unit_name(unit)?;
                            if !m.install.wanted_by.iter().any(|u| u == unit) {
                                m.install.wanted_by.push(unit.to_owned());
                            }
                        }
                    }
                }
                (s, k) => return Err(format!("internal: unhandled [{s}] {k}=")),
            }
            Ok(())
        })();
        if let Err(message) = result {
            errs.push(diag(a.file, a.line, Some(a.key), message));
        }
    }

    m.credentials = credentials.into_iter().map(|(c, _)| c).collect();
    // Not "missing" when it was there but invalid, or misspelt (those already have an error).
    let image_mentioned = assignments
        .iter()
        .any(|a| a.key == "Image" && !a.value.is_empty())
        || errs.iter().any(|d| d.hint.as_deref() == Some("Image="));
    if m.image.is_empty() && image_at.is_none() && !image_mentioned {
        errs.push(diag(
            &main,
            0,
            Some("Image"),
            "missing: [Machine] Image= is required",
        ));
    }
    match m.template {
        Template::Macvlan if m.network.macvlan.is_none() => {
            let (f, l) = template_at.clone().unwrap_or((main.clone(), 0));
            errs.push(diag(
                &f,
                l,
                Some("Template"),
                "Template=macvlan needs [Network] MACVLAN=HOST_INTERFACE",
            ));
        }
        Template::NetworkIsolated if m.network.macvlan.is_some() => {
            let (f, l) = macvlan_at.clone().unwrap_or((main.clone(), 0));
            errs.push(diag(
                &f,
                l,
                Some("MACVLAN"),
                "MACVLAN= is only used with [Machine] Template=macvlan",
            ));
        }
        _ => {}
    }
    if m.template == Template::Macvlan
        && let Some((f, l)) = port_at.first()
    {
        errs.push(diag(f, *l, Some("Port"), "Port= forwarding needs Template=network_isolated (a macvlan machine is reachable at its own address)"));
    }
    // Report in reading order: file by file, line by line; whole-file problems last.
    let file_index = |f: &Path| files.iter().position(|(p, _)| p == f).unwrap_or(usize::MAX);
    errs.sort_by_key(|d| (d.line == 0, file_index(&d.file), d.line));
    if errs.is_empty() {
        Ok(m)
    } else {
        Err(Diagnostics(errs))
    }
}

/// The health and update keys, as Quadlet's `.container` keys of the same names. An empty value
/// resets the key to "not set" (the image's check, the defaults).
fn fold_day_two(m: &mut Machine, key: &str, v: &str) -> Result<(), String> {
    use crate::health::{self, OnFailure};
    let h = &mut m.health;
    let set = !v.is_empty();
    match key {
        "HealthCmd" => h.cmd = set.then(|| health::parse_health_cmd(v)).transpose()?,
        "HealthInterval" => h.interval = set.then(|| health::parse_interval(v)).transpose()?,
        "HealthTimeout" => h.timeout = set.then(|| health::positive(v)).transpose()?,
        "HealthStartPeriod" => {
            h.start_period = set.then(|| health::parse_duration(v)).transpose()?
        }
        "HealthRetries" => {
            h.retries = set
                .then(|| match v.parse::<u32>() {
                    Ok(n) if n > 0 => Ok(n),
                    _ => Err(format!("{v:?} is not a positive number of checks")),
                })
                .transpose()?
        }
        "HealthOnFailure" => h.on_failure = set.then(|| OnFailure::parse(v)).transpose()?,
        "Notify" => {
            h.notify_healthy = match v {
                "healthy" => true,
                "" | "false" | "no" => false,
                "true" | "yes" => {
                    return Err("Notify=true (the app notifies systemd itself) is not supported; use Notify=healthy to wait for the health check".into());
                }
                other => return Err(format!("{other:?} is not healthy or false")),
            }
        }
        "AutoUpdate" => {
            m.auto_update = match v {
                "registry" => true,
                "" => false,
                "local" => {
                    return Err("AutoUpdate=local is not supported; use AutoUpdate=registry".into());
                }
                other => return Err(format!("{other:?} is not registry")),
            }
        }
        _ => return Err(format!("internal: unhandled [Machine] {key}=")),
    }
    Ok(())
}
