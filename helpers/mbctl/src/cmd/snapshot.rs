//! `machines snapshot|snapshots|restore NAME`: a machine's config and data directories at points
//! in time, kept by `man8s_oci::snapshot` under `/var/lib/man8s/snapshots/NAME/`. This module
//! decides how to hold the machine still while copying (freeze or stop) and what to print.

use std::path::PathBuf;

use anyhow::{Context, Result};
use man8s::{MachineName, Paths};
use man8s_oci::progress::human;
use man8s_oci::snapshot::{Snapshot, Store};

use crate::EXIT_OK;
use crate::bus::{Bus, UnitJob, unit_name};
use crate::cmd::info::is_real_root;
use crate::cmd::lifecycle::require_known;
use crate::cmd::machine_name;
use crate::output::table;

/// How many snapshots `--prune` keeps when given no number.
pub const DEFAULT_KEEP: usize = 3;

/// The snapshot store of machine `name`.
pub fn store(paths: &Paths, name: &MachineName) -> Store {
    Store::new(paths.snapshot_dir(name))
}

/// What a snapshot of `name` holds: its config dir (man8env.env, config volumes) and its data
/// dir (data volumes). Host-path volumes are the user's own directories and are not included.
pub fn parts(paths: &Paths, name: &MachineName) -> [(&'static str, PathBuf); 2] {
    [
        ("config", paths.config_dir(name)),
        ("storage", paths.storage_dir(name)),
    ]
}

/// Take a snapshot of a machine that is not running (or that the caller holds still).
pub fn take_now(paths: &Paths, name: &MachineName, reason: &str) -> Result<Snapshot> {
    let parts = parts(paths, name);
    let refs: Vec<(&str, &std::path::Path)> =
        parts.iter().map(|(p, d)| (*p, d.as_path())).collect();
    store(paths, name)
        .take(&refs, reason)
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
pub fn take(name: &str, stop: bool) -> Result<u8> {
    let name = machine_name(name)?;
    let paths = Paths::from_env();
    require_known(&paths, &name)?;
    let unit = unit_name(name.as_str());
    let bus = if is_real_root(&paths) {
        Bus::system().ok()
    } else {
        None
    };
    let running = bus
        .as_ref()
        .is_some_and(|b| b.unit_state(&unit).is_ok_and(|s| s.is_running()));
    let (snapshot, how) = match (&bus, running) {
        (Some(bus), true) if stop => {
            bus.unit_job(UnitJob::Stop, &unit)?;
            let s = take_now(&paths, &name, "manual");
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
            let s = take_now(&paths, &name, "manual");
            let thawed = bus.thaw(&unit);
            let s = s?;
            thawed?;
            (s, " (frozen while copying)")
        }
        _ => (take_now(&paths, &name, "manual")?, ""),
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
        "CREATED".into(),
        "METHOD".into(),
        "SIZE".into(),
        "REASON".into(),
    ]];
    for s in &all {
        rows.push(vec![
            s.id.clone(),
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

/// Restore snapshot `id` of a stopped machine, first taking a snapshot of the current state;
/// returns that snapshot (where the replaced content now is).
pub fn restore_now(paths: &Paths, name: &MachineName, id: &str) -> Result<Snapshot> {
    let store = store(paths, name);
    store.get(id)?;
    let before = take_now(paths, name, &format!("before restore of {id}"))?;
    let parts = parts(paths, name);
    let refs: Vec<(&str, &std::path::Path)> =
        parts.iter().map(|(p, d)| (*p, d.as_path())).collect();
    store
        .restore(id, &refs)
        .with_context(|| format!("cannot restore snapshot {id} of machine {name}"))?;
    Ok(before)
}

/// `machines restore NAME SNAP`: refuses a running machine.
pub fn restore(name: &str, id: &str) -> Result<u8> {
    let name = machine_name(name)?;
    let paths = Paths::from_env();
    crate::cmd::lifecycle::refuse_running(&paths, &name)?;
    let before = restore_now(&paths, &name, id)?;
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
