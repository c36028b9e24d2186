//! `machines snapshot|snapshots|restore NAME`: a machine's state at points in time (its config
//! and data directories and, for a layered machine, its writable layer), kept by
//! `man8s_oci::snapshot` under `/var/lib/man8s/snapshots/NAME/`. This module decides what a
//! snapshot holds, how to hold the machine still while copying (freeze or stop), when a restore
//! is refused, and what to print.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use man8s::{MachineName, Paths};
use man8s_oci::layers::LayerSet;
use man8s_oci::progress::human;
use man8s_oci::snapshot::{LAYER_PART, Snapshot, Store};
use man8s_provision::layered::{Root, Storage};

use crate::EXIT_OK;
use crate::bus::{UnitJob, unit_name};
use crate::cmd::lifecycle::require_known;
use crate::cmd::machine_name;
use crate::output::table;

/// How many snapshots `--prune` keeps when given no number.
pub const DEFAULT_KEEP: usize = 3;

/// The snapshot store of machine `name`.
pub fn store(paths: &Paths, name: &MachineName) -> Store {
    Store::new(paths.snapshot_dir(name))
}

/// The names of the parts a snapshot can hold, for `--only`.
pub const PART_NAMES: [&str; 3] = ["config", "storage", LAYER_PART];

/// What a snapshot of `name` holds: its config dir (man8env.env, config volumes), its data dir
/// (data volumes) and, when it is layered, its writable layer (`rw`: what it changed in its
/// root). Host-path volumes are the user's own directories and are not included; neither is a
/// full copy's root (kept whole by updates for their rollback). `only` picks some of them.
pub fn parts(paths: &Paths, name: &MachineName, only: &[String]) -> Vec<(&'static str, PathBuf)> {
    let root = Root::new(paths, name);
    let mut out = vec![
        ("config", paths.config_dir(name)),
        ("storage", paths.storage_dir(name)),
    ];
    if let Some(Storage::Layered { .. }) = root.storage() {
        out.push((LAYER_PART, root.rw()));
    }
    out.retain(|(p, _)| only.is_empty() || only.iter().any(|o| o == p));
    out
}

/// The layer set a layered machine runs now.
fn current_layers(paths: &Paths, name: &MachineName) -> Option<LayerSet> {
    match Root::new(paths, name).storage() {
        Some(Storage::Layered { current, .. }) => Some(current),
        _ => None,
    }
}

/// Take a snapshot of a machine that is not running (or that the caller holds still).
pub fn take_now(paths: &Paths, name: &MachineName, reason: &str) -> Result<Snapshot> {
    take_parts(paths, name, reason, &[])
}

fn take_parts(
    paths: &Paths,
    name: &MachineName,
    reason: &str,
    only: &[String],
) -> Result<Snapshot> {
    let parts = parts(paths, name, only);
    let refs: Vec<(&str, &std::path::Path)> =
        parts.iter().map(|(p, d)| (*p, d.as_path())).collect();
    store(paths, name)
        .take_on(&refs, reason, current_layers(paths, name).as_ref())
        .with_context(|| format!("cannot snapshot machine {name}"))
}

/// One line about a snapshot: `ID: config, storage; 3.0 MiB in 12 files by reflink`, or
/// `ID: config, storage; by btrfs-snapshot`.
pub fn describe(s: &Snapshot) -> String {
    let files = s.stats.cloned + s.stats.copied;
    let parts = if s.parts.is_empty() {
        "nothing (no config or data dir)".to_owned()
    } else {
        s.parts.join(", ")
    };
    let mut line = if s.stats.snapshots > 0 && files == 0 {
        // Nothing was walked: the kernel copied each part whole.
        format!("{}: {parts}; by {}", s.id, s.method.as_str())
    } else {
        format!(
            "{}: {parts}; {} in {files} file{} by {}",
            s.id,
            human(s.stats.bytes),
            if files == 1 { "" } else { "s" },
            s.method.as_str()
        )
    };
    if s.stats.snapshots > 0 && files > 0 {
        line.push_str(&format!(
            " ({} part(s) by btrfs-snapshot)",
            s.stats.snapshots
        ));
    }
    if s.stats.skipped > 0 {
        line.push_str(&format!(
            " ({} socket(s)/device node(s) left out)",
            s.stats.skipped
        ));
    }
    line
}

/// `machines snapshot NAME [--stop]`: freeze the running unit (or, with `stop`, stop it and
/// start it again) while copying, so the snapshot is of one moment.
pub fn take(name: &str, stop: bool, only: &[String]) -> Result<u8> {
    let name = machine_name(name)?;
    let paths = Paths::from_env();
    require_known(&paths, &name)?;
    let unit = unit_name(name.as_str());
    let bus = crate::cmd::info::host_bus(&paths);
    let running = bus
        .as_ref()
        .is_some_and(|b| b.unit_state(&unit).is_ok_and(|s| s.is_running()));
    let (snapshot, how) = match (&bus, running) {
        (Some(bus), true) if stop => {
            bus.unit_job(UnitJob::Stop, &unit)?;
            let s = take_parts(&paths, &name, "manual", only);
            let started = bus.unit_job(UnitJob::Start, &unit);
            let s = s?;
            started.with_context(|| {
                format!("snapshot {} taken, but {unit} did not start again", s.id)
            })?;
            (s, " (stopped while copying)")
        }
        (Some(bus), true) => {
            bus.freeze(&unit).with_context(|| {
                format!("cannot hold {unit} still for a consistent snapshot; use --stop to stop it while copying")
            })?;
            let s = take_parts(&paths, &name, "manual", only);
            let thawed = bus.thaw(&unit);
            let s = s?;
            thawed?;
            (s, " (frozen while copying)")
        }
        _ => (take_parts(&paths, &name, "manual", only)?, ""),
    };
    println!("Snapshot {}{how}", describe(&snapshot));
    Ok(EXIT_OK)
}

/// `machines snapshots NAME [--json]`.
pub fn list(name: &str, json: bool) -> Result<u8> {
    let name = machine_name(name)?;
    let paths = Paths::from_env();
    let all = store(&paths, &name).list()?;
    if json {
        println!("{}", serde_json::to_string_pretty(&all)?);
        return Ok(EXIT_OK);
    }
    if all.is_empty() {
        println!("Machine {name} has no snapshots.");
        return Ok(EXIT_OK);
    }
    let mut rows = vec![vec![
        "ID".to_owned(),
        "PARTS".into(),
        "CREATED".into(),
        "METHOD".into(),
        "SIZE".into(),
        "REASON".into(),
    ]];
    for s in &all {
        rows.push(vec![
            s.id.clone(),
            if s.parts.is_empty() {
                "-".into()
            } else {
                s.parts.join(",")
            },
            s.created.clone(),
            s.method.as_str().into(),
            // A btrfs snapshot reads nothing, so there is no count of what it holds.
            if s.method == man8s_oci::snapshot::Method::BtrfsSnapshot {
                "-".into()
            } else {
                human(s.stats.bytes)
            },
            s.reason.clone(),
        ]);
    }
    print!("{}", table(&rows, |_, c| c.to_owned()));
    Ok(EXIT_OK)
}

/// What `machines restore` puts back.
#[derive(Debug, Clone, Default)]
pub struct RestoreOptions {
    /// Only these parts (all the snapshot holds when empty).
    pub only: Vec<String>,
    /// Put the writable layer back even when the machine now runs other layers.
    pub keep_image: bool,
}

/// Why snapshot `s` cannot go back onto machine `name` with `opts`, if it cannot: its writable
/// layer was taken on other layers than the machine runs now. Over other layers its copied-up
/// files would shadow the new image's and its whiteouts hide the new image's files; an
/// update's rollback puts the old layers back first, so they match again.
fn layer_mismatch(
    name: &MachineName,
    s: &Snapshot,
    now: Option<&LayerSet>,
    opts: &RestoreOptions,
) -> Option<String> {
    let restores_rw = s.parts.iter().any(|p| p == LAYER_PART)
        && (opts.only.is_empty() || opts.only.iter().any(|p| p == LAYER_PART));
    if !restores_rw || opts.keep_image {
        return None;
    }
    let then = s.layers.as_ref();
    if then.is_some() && then == now {
        return None;
    }
    let image = |l: Option<&LayerSet>| {
        l.map_or("no layered image".to_owned(), |l| l.manifest_digest.clone())
    };
    let others: Vec<&str> = s
        .parts
        .iter()
        .map(String::as_str)
        .filter(|p| *p != LAYER_PART)
        .collect();
    Some(format!(
        "snapshot {} of machine {name} holds a writable layer taken on image {}, but {name} now runs {}; \
         restore only {} (--only {}) or put the layer on the current image anyway (--keep-image)",
        s.id,
        image(then),
        image(now),
        if others.is_empty() {
            "nothing else"
        } else {
            "the rest"
        },
        if others.is_empty() {
            "config,storage".to_owned()
        } else {
            others.join(",")
        },
    ))
}

/// Restore snapshot `id` of a stopped machine, first taking a snapshot of the current state
/// (all of it); returns that snapshot (where the replaced content now is).
pub fn restore_now(
    paths: &Paths,
    name: &MachineName,
    id: &str,
    opts: &RestoreOptions,
) -> Result<Snapshot> {
    let store = store(paths, name);
    let snapshot = store.get(id)?;
    if let Some(why) = layer_mismatch(name, &snapshot, current_layers(paths, name).as_ref(), opts) {
        bail!(why);
    }
    let before = take_now(paths, name, &format!("before restore of {id}"))?;
    let parts = parts(paths, name, &opts.only);
    if parts.iter().any(|(p, _)| *p == LAYER_PART) {
        // A writable layer is swapped only with no overlay on it (one left by a crash).
        Root::new(paths, name).unmount()?;
    }
    let refs: Vec<(&str, &std::path::Path)> =
        parts.iter().map(|(p, d)| (*p, d.as_path())).collect();
    store
        .restore(id, &refs)
        .with_context(|| format!("cannot restore snapshot {id} of machine {name}"))?;
    Ok(before)
}

/// `machines restore NAME SNAP`: refuses a running machine, and a writable layer taken on
/// other layers (unless `keep_image`).
pub fn restore(name: &str, id: &str, opts: &RestoreOptions) -> Result<u8> {
    let name = machine_name(name)?;
    let paths = Paths::from_env();
    crate::cmd::lifecycle::refuse_running(&paths, &name)?;
    let before = restore_now(&paths, &name, id, opts)?;
    println!(
        "The state before the restore is snapshot {}",
        describe(&before)
    );
    println!("Restored machine {name} to snapshot {id}.");
    Ok(EXIT_OK)
}

/// `machines snapshot NAME --prune[=KEEP]`: remove all but the newest `keep`.
pub fn prune(name: &str, keep: usize) -> Result<u8> {
    let name = machine_name(name)?;
    let paths = Paths::from_env();
    let removed = store(&paths, &name).prune(keep)?;
    for id in &removed {
        println!("Removed snapshot {id}.");
    }
    println!(
        "Machine {name} keeps its newest {keep} snapshot{}.",
        if keep == 1 { "" } else { "s" }
    );
    Ok(EXIT_OK)
}

#[cfg(test)]
mod tests {
    use super::*;
    use man8s_oci::snapshot::{CopyStats, Method};

    fn set(digest: &str) -> LayerSet {
        LayerSet {
            manifest_digest: digest.into(),
            chain_ids: vec![format!("{digest}-layer")],
        }
    }

    fn snap(parts: &[&str], layers: Option<LayerSet>) -> Snapshot {
        Snapshot {
            id: "20261202T040000Z".into(),
            created: String::new(),
            reason: "manual".into(),
            parts: parts.iter().map(|p| (*p).to_owned()).collect(),
            method: Method::Copy,
            stats: CopyStats::default(),
            layers,
        }
    }

    #[test]
    fn a_writable_layer_goes_back_only_onto_the_layers_it_was_taken_on() {
        let name = MachineName::new("web").unwrap();
        let all = RestoreOptions::default();
        let s = snap(&["config", "storage", "rw"], Some(set("sha256:old")));
        assert_eq!(
            layer_mismatch(&name, &s, Some(&set("sha256:old")), &all),
            None
        );
        let why = layer_mismatch(&name, &s, Some(&set("sha256:new")), &all).unwrap();
        assert_eq!(
            why,
            "snapshot 20261202T040000Z of machine web holds a writable layer taken on image \
             sha256:old, but web now runs sha256:new; restore only the rest (--only \
             config,storage) or put the layer on the current image anyway (--keep-image)"
        );
        // The user picks: the rest only, or the layer anyway.
        let rest = RestoreOptions {
            only: vec!["config".into(), "storage".into()],
            keep_image: false,
        };
        assert_eq!(
            layer_mismatch(&name, &s, Some(&set("sha256:new")), &rest),
            None
        );
        let anyway = RestoreOptions {
            keep_image: true,
            ..Default::default()
        };
        assert_eq!(
            layer_mismatch(&name, &s, Some(&set("sha256:new")), &anyway),
            None
        );
        // A machine that is not layered (any more) cannot take the layer.
        let why = layer_mismatch(&name, &s, None, &all).unwrap();
        assert!(why.contains("now runs no layered image"), "{why}");
        // Volume snapshots (no rw part) go back anywhere.
        let volumes = snap(&["config", "storage"], None);
        assert_eq!(
            layer_mismatch(&name, &volumes, Some(&set("sha256:new")), &all),
            None
        );
    }
}
