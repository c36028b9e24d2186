//! `machines list` and `machines status NAME`: declarations (through `man8s::declaration`),
//! rootfs metadata, man8env.env, and — on the real root — systemd and machined.

use std::collections::BTreeSet;
use std::path::Path;

use anyhow::{Result, bail};
use man8s::declaration::{self, LoadError};
use man8s::machine::{Machine, VolumeSource, YggdrasilAddress};
use man8s::{MachineName, Paths};
use serde::Serialize;

use crate::EXIT_OK;
use crate::bus::{Bus, UnitState, unit_name};
use crate::cmd::machine_name;
use crate::output::{colour_stdout, paint_state, table};

/// Everything mbctl shows about one machine.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct MachineInfo {
    /// Machine name.
    pub name: String,
    /// systemd `ActiveState` of man8@NAME.service, or `unknown` without systemd.
    pub state: String,
    /// systemd `SubState`, when known.
    pub sub_state: Option<String>,
    /// `UnitFileState` (`enabled`, `disabled`, …), when known.
    pub enabled: Option<String>,
    /// `Image=` of the declaration (or `MAN8S_OCI_IMAGE_URL` of a machine not yet migrated).
    pub image: Option<String>,
    /// Manifest digest of the installed rootfs.
    pub digest: Option<String>,
    /// The Yggdrasil address the machine gets (`null` when none).
    pub yggdrasil_address: Option<String>,
    /// Addresses machined reports (running machines only).
    pub addresses: Vec<String>,
    /// The declaration file (canonical path), or the Python tool's settings file.
    pub declaration: Option<String>,
    /// Where the machine came from: `declaration` or `python-mbctl` (made by the Python tool; run
    /// `mbctl migrate NAME`).
    pub kind: String,
    /// The rootfs exists.
    pub rootfs_present: bool,
    /// Volumes: `container path → host path`.
    pub volumes: Vec<VolumeInfo>,
    /// Forwarded ports (`tcp:8080:80`).
    pub ports: Vec<String>,
    /// `Label=` of the declaration (left out of JSON when there are none).
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub labels: std::collections::BTreeMap<String, String>,
    /// Problems with the declaration (`FILE:LINE: …`), one per entry.
    pub errors: Vec<String>,
    /// The host's filter: `filtered`, `unfiltered` (nftables missing or refusing: every port is
    /// open) or `unknown` (man8s-bridge has not applied it); `machines status` only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
    /// Warnings about the filter (no fleet in man8s.conf, why unfiltered).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub filter_notes: Vec<String>,
    /// Who may reach which ports, as the applied filter says; `machines status` only.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub reachable: Vec<String>,
    /// The last health check (running machines with a check only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health: Option<crate::health::State>,
    /// The last update (`machines update`, `auto-update`), when one was recorded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_update: Option<crate::updates::UpdateRecord>,
    /// How the root is stored: `layered (3 shared layers)` or `full copy (why)`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storage: Option<String>,
    /// Own and shared disk (`list` and `status`; none when no root is installed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disk: Option<crate::cmd::usage::DiskUsage>,
}

/// One volume of a machine.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct VolumeInfo {
    /// Path inside the machine.
    pub container_path: String,
    /// `config`, `data` or `host`.
    pub kind: String,
    /// Canonical host path.
    pub host_path: String,
    /// Mounted read-only.
    pub read_only: bool,
}

/// Whether this tree is the one the running systemd manages (systemd is asked only then, so a
/// relocated `MAN8S_ROOT` tree gives the same answer on every host).
pub fn is_real_root(paths: &Paths) -> bool {
    paths.root() == Path::new("/")
}

/// The system bus when `paths` is the real root and systemd answers (`None`: a relocated tree,
/// as in tests, whose units systemd does not run).
pub fn host_bus(paths: &Paths) -> Option<crate::bus::Bus> {
    is_real_root(paths)
        .then(|| crate::bus::Bus::system().ok())
        .flatten()
}

/// The manifest digest recorded in the machine's host-owned state (never the rootfs's own copy,
/// which the machine can rewrite).
pub fn installed_digest(paths: &Paths, name: &MachineName) -> Option<String> {
    man8s_provision::state::MachineState::new(paths, name)
        .source()
        .map(|s| s.manifest_digest)
}

fn env_value(paths: &Paths, name: &MachineName, key: &str) -> Option<String> {
    let text = std::fs::read_to_string(paths.env_file(name)).ok()?;
    man8s::envfile::parse(&text)
        .get(key)
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
}

fn volume_info(m: &Machine) -> Vec<VolumeInfo> {
    m.volumes
        .iter()
        .map(|v| VolumeInfo {
            container_path: v.container_path.clone(),
            kind: match v.source {
                VolumeSource::Config => "config",
                VolumeSource::Data => "data",
                VolumeSource::Host(_) => "host",
                VolumeSource::Root(_) => "root",
            }
            .into(),
            host_path: v.host_path(&m.name).display().to_string(),
            read_only: v.read_only,
        })
        .collect()
}

/// What the files say about `name` (no systemd): declaration, rootfs, man8env.env.
pub fn from_files(paths: &Paths, name: &MachineName) -> Option<MachineInfo> {
    let mut info = MachineInfo {
        name: name.to_string(),
        state: "unknown".into(),
        sub_state: None,
        enabled: None,
        image: None,
        digest: installed_digest(paths, name),
        yggdrasil_address: env_value(paths, name, "MAN8S_YGGDRASIL_ADDRESS"),
        addresses: Vec::new(),
        declaration: None,
        kind: "declaration".into(),
        rootfs_present: paths.rootfs(name).is_dir(),
        storage: crate::cmd::layers::describe(paths, name),
        disk: None,
        volumes: Vec::new(),
        ports: Vec::new(),
        labels: Default::default(),
        errors: Vec::new(),
        filter: None,
        filter_notes: Vec::new(),
        reachable: Vec::new(),
        health: crate::health::read_state(&crate::health::state_path(paths, name)),
        last_update: crate::updates::read(paths, name),
    };
    match declaration::load(paths, name) {
        Ok(m) => {
            info.declaration = Some(m.main_file().display().to_string());
            info.image = Some(m.image.clone());
            // An `auto` machine already started keeps the address in its man8env.env; one never
            // started gets the address it will get, when the host's subnet is known.
            if m.network.yggdrasil != YggdrasilAddress::Auto || info.yggdrasil_address.is_none() {
                info.yggdrasil_address = m
                    .network
                    .yggdrasil
                    .resolve(name.as_str(), man8s_provision::env::yggdrasil_subnet(paths))
                    .map(|a| a.to_string());
            }
            info.volumes = volume_info(&m);
            info.ports = m.ports.iter().map(ToString::to_string).collect();
            info.labels = m.runtime.labels.iter().cloned().collect();
        }
        Err(LoadError::NotFound(_)) => {
            let legacy = paths.nspawn_etc(name);
            let text = std::fs::read_to_string(&legacy).ok()?;
            if !text.contains("/sbin/busybox-init.sh") {
                return None;
            }
            info.kind = "python-mbctl".into();
            info.declaration = Some(format!("{}/{name}.nspawn", man8s::paths::NSPAWN_ETC_DIR));
            info.image = env_value(paths, name, "MAN8S_OCI_IMAGE_URL");
        }
        Err(LoadError::Invalid(d)) => {
            info.declaration = declaration::find(paths, name)
                .ok()
                .flatten()
                .map(|s| s.main.display().to_string());
            info.errors = d.0.iter().map(ToString::to_string).collect();
        }
        Err(e @ LoadError::Io { .. }) => info.errors.push(e.to_string()),
    }
    Some(info)
}

/// The filter man8s-bridge applied (its status file), and what it lets reach `info`'s machine:
/// read from the policy file the generator wrote, so it shows what is in force.
fn add_filter(paths: &Paths, info: &mut MachineInfo) {
    use man8s_bridge::firewall::{self, FilterState, FilterStatus};
    let unfiltered = match FilterStatus::read(paths) {
        Some(st) => {
            info.filter = Some(match st.state {
                FilterState::Filtered => "filtered".into(),
                FilterState::Unfiltered => "unfiltered".into(),
            });
            info.filter_notes.extend(st.reason);
            if st.state == FilterState::Filtered && st.fleet.is_empty() {
                info.filter_notes.push(firewall::no_fleet_warning());
            }
            st.state == FilterState::Unfiltered
        }
        None => {
            info.filter = Some("unknown".into());
            info.filter_notes.push(
                "man8s-bridge has not applied the filter (systemctl status man8s-bridge)".into(),
            );
            false
        }
    };
    let Ok(cfg) = man8s::hostconfig::HostConfig::load(paths) else {
        return;
    };
    let subnet = man8s_provision::env::yggdrasil_subnet(paths);
    let (spec, _) = firewall::current_spec(paths, &cfg, subnet);
    info.reachable = if unfiltered {
        vec!["from everywhere: every port (UNFILTERED)".into()]
    } else {
        man8s_bridge::filter::describe(&spec, &info.name)
    };
    if !info.ports.is_empty() {
        info.reachable.push(format!(
            "from everyone who reaches this host: Port= {} (published like podman's PublishPort=)",
            info.ports.join(" ")
        ));
    }
}

fn add_live_state(info: &mut MachineInfo, bus: &Bus) {
    let unit = unit_name(&info.name);
    if let Ok(UnitState {
        active, sub, file, ..
    }) = bus.unit_state(&unit)
    {
        // The runner's last word is about this run only.
        if active != "active" {
            info.health = None;
        }
        info.state = active;
        info.sub_state = Some(sub);
        info.enabled = (!file.is_empty()).then_some(file);
    }
    if let Ok(addrs) = bus.machine_addresses(&info.name) {
        info.addresses = addrs.iter().map(ToString::to_string).collect();
    }
}

fn connect(paths: &Paths) -> Option<Bus> {
    if !is_real_root(paths) {
        return None;
    }
    match Bus::system() {
        Ok(b) => Some(b),
        Err(e) => {
            eprintln!("mbctl: note: {}; states are unknown", crate::one_line(&e));
            None
        }
    }
}

/// Every machine on this tree: declared ones and ones the Python tool made, sorted by name.
pub fn collect(paths: &Paths, bus: Option<&Bus>) -> (Vec<MachineInfo>, Vec<String>) {
    let mut names = std::collections::BTreeSet::new();
    let mut problems = Vec::new();
    for d in declaration::discover(paths) {
        match d {
            Ok(n) => {
                names.insert(n);
            }
            Err(e) => problems.push(e.to_string()),
        }
    }
    if let Ok(dir) = std::fs::read_dir(paths.fs(man8s::paths::NSPAWN_ETC_DIR)) {
        for e in dir.flatten() {
            let f = e.file_name();
            let Some(stem) = f.to_str().and_then(|f| f.strip_suffix(".nspawn")) else {
                continue;
            };
            if let Ok(n) = MachineName::new(stem) {
                names.insert(n);
            }
        }
    }
    let mut out = Vec::new();
    let mut census = crate::cmd::usage::Census::load(paths);
    for n in &names {
        if let Some(mut info) = from_files(paths, n) {
            if let Some(bus) = bus {
                add_live_state(&mut info, bus);
            }
            info.disk = census.usage(paths, n);
            out.push(info);
        }
    }
    (out, problems)
}

fn short_digest(d: &str) -> String {
    let hex = d.split_once(':').map_or(d, |(_, h)| h);
    hex.chars().take(12).collect()
}

/// The `machines list` table.
pub fn list_table(machines: &[MachineInfo], colour: bool) -> String {
    let mut rows = vec![
        [
            "NAME",
            "STATE",
            "IMAGE",
            "DIGEST",
            "OWN",
            "SHARED",
            "YGGDRASIL",
            "ADDRESSES",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for m in machines {
        let state = if m.errors.is_empty() {
            m.state.clone()
        } else {
            "invalid".into()
        };
        let state = match &m.health {
            Some(h) => format!("{state} ({})", h.status.as_str()),
            None => state,
        };
        let state = if m.kind == "python-mbctl" {
            format!("{state} (not migrated)")
        } else {
            state
        };
        rows.push(vec![
            m.name.clone(),
            state,
            m.image.clone().unwrap_or_else(|| "-".into()),
            m.digest
                .as_deref()
                .map(short_digest)
                .unwrap_or_else(|| "-".into()),
            crate::cmd::usage::own_cell(m.disk.as_ref()),
            crate::cmd::usage::shared_cell(m.disk.as_ref()),
            m.yggdrasil_address.clone().unwrap_or_else(|| "-".into()),
            if m.addresses.is_empty() {
                "-".into()
            } else {
                m.addresses.join(",")
            },
        ]);
    }
    table(&rows, |col, cell| {
        if col == 1 {
            paint_state(cell, colour)
        } else {
            cell.to_owned()
        }
    })
}

/// `machines list [--json]`
pub fn list(json: bool) -> Result<u8> {
    let paths = Paths::from_env();
    let bus = connect(&paths);
    let (machines, problems) = collect(&paths, bus.as_ref());
    for p in &problems {
        eprintln!("mbctl: {p}");
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&machines)?);
    } else {
        print!("{}", list_table(&machines, colour_stdout()));
    }
    Ok(EXIT_OK)
}

/// `machines list --tree`: every machine that nothing depends on, with what it depends on
/// below it (`requires`, `wants`, `after`), recursively; a machine already shown on the path is
/// marked instead of repeated (a cycle, which the generator refuses).
pub fn tree() -> Result<u8> {
    let paths = Paths::from_env();
    let mut machines = std::collections::BTreeMap::new();
    for name in declaration::discover(&paths).into_iter().flatten() {
        match declaration::load(&paths, &name) {
            Ok(m) => {
                machines.insert(name, Some(m.dependencies));
            }
            Err(_) => {
                machines.insert(name, None);
            }
        }
    }
    print!("{}", render_tree(&machines));
    Ok(EXIT_OK)
}

/// The text of `machines list --tree` (`None`: a declaration that does not load).
pub fn render_tree(
    machines: &std::collections::BTreeMap<MachineName, Option<man8s::machine::Dependencies>>,
) -> String {
    fn edges(d: &man8s::machine::Dependencies) -> Vec<(&'static str, &MachineName)> {
        let mut out: Vec<(&'static str, &MachineName)> = Vec::new();
        for (kind, list) in [
            ("requires", &d.requires),
            ("wants", &d.wants),
            ("after", &d.after),
        ] {
            for n in list {
                if !out.iter().any(|(_, x)| *x == n) {
                    out.push((kind, n));
                }
            }
        }
        out
    }
    fn walk(
        out: &mut String,
        machines: &std::collections::BTreeMap<MachineName, Option<man8s::machine::Dependencies>>,
        name: &MachineName,
        prefix: &str,
        path: &mut Vec<MachineName>,
        seen: &mut BTreeSet<MachineName>,
    ) {
        seen.insert(name.clone());
        let Some(Some(d)) = machines.get(name) else {
            return;
        };
        let list = edges(d);
        for (i, (kind, dep)) in list.iter().enumerate() {
            let last = i + 1 == list.len();
            let (branch, more) = if last {
                ("└─", "   ")
            } else {
                ("├─", "│  ")
            };
            let note = match machines.get(*dep) {
                None => " (not declared)",
                Some(None) => " (invalid declaration)",
                Some(Some(_)) if path.contains(dep) => " (cycle)",
                Some(Some(_)) => "",
            };
            out.push_str(&format!("{prefix}{branch} {kind} {dep}{note}\n"));
            if note.is_empty() {
                path.push((*dep).clone());
                walk(out, machines, dep, &format!("{prefix}{more}"), path, seen);
                path.pop();
            }
        }
    }
    let depended_on: BTreeSet<&MachineName> = machines
        .values()
        .flatten()
        .flat_map(|d| d.requires.iter().chain(&d.wants).chain(&d.after))
        .collect();
    let mut out = String::new();
    let mut seen = BTreeSet::new();
    // Roots first; then whatever only a cycle reaches.
    let roots = machines.keys().filter(|n| !depended_on.contains(n));
    let rest = machines.keys().filter(|n| depended_on.contains(n));
    for name in roots.chain(rest) {
        if seen.contains(name) {
            continue;
        }
        let invalid = matches!(machines.get(name), Some(None));
        out.push_str(&format!(
            "{name}{}\n",
            if invalid {
                " (invalid declaration)"
            } else {
                ""
            }
        ));
        walk(
            &mut out,
            machines,
            name,
            "",
            &mut vec![name.clone()],
            &mut seen,
        );
    }
    out
}

/// The `machines status` text.
pub fn status_text(m: &MachineInfo, colour: bool) -> String {
    let mut rows: Vec<Vec<String>> = Vec::new();
    let mut row = |k: &str, v: String| rows.push(vec![format!("{k}:"), v]);
    let state = match &m.sub_state {
        Some(sub) => format!("{} ({sub})", paint_state(&m.state, colour)),
        None => paint_state(&m.state, colour),
    };
    row("State", state);
    if let Some(e) = &m.enabled {
        row("Enabled", e.clone());
    }
    row(
        "Declaration",
        m.declaration.clone().unwrap_or_else(|| "-".into()),
    );
    if m.kind == "python-mbctl" {
        row(
            "Note",
            format!("made by the Python mbctl; run: mbctl migrate {}", m.name),
        );
    }
    row("Image", m.image.clone().unwrap_or_else(|| "-".into()));
    row("Digest", m.digest.clone().unwrap_or_else(|| "-".into()));
    let rootfs =
        Paths::rootfs_canonical(&MachineName::new(&m.name).expect("listed names are valid"));
    row(
        "Rootfs",
        format!(
            "{}{}",
            rootfs.display(),
            if m.rootfs_present {
                ""
            } else {
                " (not installed)"
            }
        ),
    );
    if let Some(s) = &m.storage {
        row("Storage", s.clone());
    }
    if let Some(d) = &m.disk {
        row("Disk", crate::cmd::usage::status_line(d));
    }
    row(
        "Yggdrasil",
        m.yggdrasil_address.clone().unwrap_or_else(|| "-".into()),
    );
    for (i, a) in m.addresses.iter().enumerate() {
        row(if i == 0 { "Addresses" } else { "" }, a.clone());
    }
    for (i, v) in m.volumes.iter().enumerate() {
        let ro = if v.read_only { ", read-only" } else { "" };
        row(
            if i == 0 { "Volumes" } else { "" },
            format!("{} → {} ({}{ro})", v.container_path, v.host_path, v.kind),
        );
    }
    if !m.ports.is_empty() {
        row("Ports", m.ports.join(" "));
    }
    for (i, (k, v)) in m.labels.iter().enumerate() {
        row(if i == 0 { "Labels" } else { "" }, format!("{k}={v}"));
    }
    if let Some(f) = &m.filter {
        row("Filter", f.clone());
    }
    for n in &m.filter_notes {
        row("", n.clone());
    }
    for (i, r) in m.reachable.iter().enumerate() {
        row(if i == 0 { "Reachable" } else { "" }, r.clone());
    }
    if let Some(h) = &m.health {
        row(
            "Health",
            format!(
                "{} ({}; checked {}; {})",
                h.status.as_str(),
                h.last_output,
                h.last_check,
                h.check
            ),
        );
    }
    if let Some(u) = &m.last_update {
        row("Last update", u.summary());
    }
    for (i, e) in m.errors.iter().enumerate() {
        row(if i == 0 { "Errors" } else { "" }, e.clone());
    }
    // Right-align the keys like systemctl status.
    let width = rows.iter().map(|r| r[0].chars().count()).max().unwrap_or(0);
    let mut out = format!("{} - man8@{}.service\n", m.name, m.name);
    for r in rows {
        let key = if r[0] == ":" {
            String::new()
        } else {
            r[0].clone()
        };
        out.push_str(&format!("{key:>width$} {}\n", r[1]));
    }
    out
}

/// `machines status NAME [--json]`
pub fn status(name: &str, json: bool) -> Result<u8> {
    let name = machine_name(name)?;
    let paths = Paths::from_env();
    let Some(mut info) = from_files(&paths, &name) else {
        bail!(
            "no machine {name}: no {name}.machine in {}",
            man8s::paths::DECLARATION_DIRS.join(", ")
        );
    };
    if let Some(bus) = connect(&paths) {
        add_live_state(&mut info, &bus);
    }
    info.disk = crate::cmd::usage::Census::load(&paths).usage(&paths, &name);
    add_filter(&paths, &mut info);
    if json {
        println!("{}", serde_json::to_string_pretty(&info)?);
    } else {
        print!("{}", status_text(&info, colour_stdout()));
    }
    Ok(EXIT_OK)
}

#[cfg(test)]
mod tree_tests {
    use super::*;
    use man8s::machine::Dependencies;

    fn n(s: &str) -> MachineName {
        MachineName::new(s).unwrap()
    }

    fn deps(requires: &[&str], wants: &[&str], after: &[&str]) -> Option<Dependencies> {
        let v = |l: &[&str]| l.iter().map(|s| n(s)).collect();
        Some(Dependencies {
            requires: v(requires),
            wants: v(wants),
            after: v(after),
        })
    }

    #[test]
    fn tree_shows_roots_kinds_cycles_and_unknown_names() {
        let mut m = std::collections::BTreeMap::new();
        m.insert(n("web"), deps(&["db"], &["cache", "db"], &["ghost"]));
        m.insert(n("db"), deps(&[], &[], &[]));
        m.insert(n("cache"), deps(&[], &[], &["db"]));
        m.insert(n("ping"), deps(&[], &[], &["pong"]));
        m.insert(n("pong"), deps(&[], &["ping"], &[]));
        m.insert(n("broken"), None);
        assert_eq!(
            render_tree(&m),
            "broken (invalid declaration)\n\
             web\n\
             ├─ requires db\n\
             ├─ wants cache\n\
             │  └─ after db\n\
             └─ after ghost (not declared)\n\
             ping\n\
             └─ after pong\n\
             \x20  └─ wants ping (cycle)\n"
        );
    }
}

#[cfg(test)]
mod disk_tests {
    use super::*;
    use crate::cmd::usage::DiskUsage;
    use crate::disk::Usage;

    fn info(name: &str, disk: Option<DiskUsage>) -> MachineInfo {
        MachineInfo {
            name: name.into(),
            state: "active".into(),
            sub_state: None,
            enabled: None,
            image: Some("reg/app:1".into()),
            digest: None,
            yggdrasil_address: None,
            addresses: Vec::new(),
            declaration: None,
            kind: "declaration".into(),
            rootfs_present: true,
            volumes: Vec::new(),
            ports: Vec::new(),
            labels: Default::default(),
            errors: Vec::new(),
            filter: None,
            filter_notes: Vec::new(),
            reachable: Vec::new(),
            health: None,
            last_update: None,
            storage: None,
            disk,
        }
    }

    fn u(bytes: u64) -> Usage {
        Usage {
            bytes,
            partial: false,
        }
    }

    fn cols(l: &str) -> Vec<&str> {
        l.split("  ")
            .filter(|c| !c.is_empty())
            .map(str::trim)
            .collect()
    }

    #[test]
    fn list_and_status_show_own_and_shared() {
        let layered = DiskUsage {
            kind: "layered",
            own: u(12 << 20),
            root: u(10 << 20),
            volumes: u(2 << 20),
            shared: Some(u(200 << 20)),
            shared_layers: Some(2),
            shared_with: Some(1),
        };
        let copy = DiskUsage {
            kind: "copy",
            own: u(201 << 20),
            root: u(200 << 20),
            volumes: u(1 << 20),
            shared: None,
            shared_layers: None,
            shared_with: None,
        };
        let table = list_table(
            &[
                info("a", Some(layered.clone())),
                info("b", Some(copy)),
                info("c", None),
            ],
            false,
        );
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(
            cols(lines[0]),
            [
                "NAME",
                "STATE",
                "IMAGE",
                "DIGEST",
                "OWN",
                "SHARED",
                "YGGDRASIL",
                "ADDRESSES"
            ]
        );
        assert_eq!(
            cols(lines[1]),
            [
                "a",
                "active",
                "reg/app:1",
                "-",
                "12.0 MiB",
                "200.0 MiB ×2",
                "-",
                "-"
            ]
        );
        assert_eq!(
            cols(lines[2]),
            ["b", "active", "reg/app:1", "-", "201.0 MiB", "-", "-", "-"]
        );
        assert_eq!(
            cols(lines[3]),
            ["c", "active", "reg/app:1", "-", "-", "-", "-", "-"]
        );
        let status = status_text(&info("a", Some(layered)), false);
        assert!(
            status.contains(
                "Disk: own 12.0 MiB (writable layer 10.0 MiB, volumes 2.0 MiB); shared 200.0 MiB (2 layer dirs, also used by 1 other machine)"
            ),
            "{status}"
        );
        assert!(!status_text(&info("c", None), false).contains("Disk:"));
    }
}
