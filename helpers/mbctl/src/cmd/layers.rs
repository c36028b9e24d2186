//! `machines diff|reset` and the `Storage:` line of `machines status`: over
//! `man8s_provision::layered` (a machine's root as shared layers + its own writable layer).

use anyhow::{Context, Result, bail};
use man8s::{MachineName, Paths, declaration};
use man8s_oci::layers::LayerStore;
use man8s_provision::layered::{self, Root, Storage};

use crate::EXIT_OK;
use crate::cmd::machine_name;

/// `layered (3 shared layers)` or `full copy (why)`; `None` when nothing is installed (the
/// sizes are [`crate::cmd::usage`]'s `Disk:` line).
pub fn describe(paths: &Paths, name: &MachineName) -> Option<String> {
    let root = Root::new(paths, name);
    match root.storage() {
        Some(Storage::Layered { current, .. }) => Some(format!(
            "layered ({} shared layers)",
            current.chain_ids.len(),
        )),
        Some(Storage::Copy { reason }) if reason != layered::PRE_LAYERS => {
            Some(format!("full copy ({reason})"))
        }
        Some(Storage::Copy { .. }) => Some(pre_layers(name)),
        None if root.installed() => Some(pre_layers(name)),
        None => None,
    }
}

fn pre_layers(name: &MachineName) -> String {
    format!(
        "full copy ({}; `mbctl machines reset --convert {name}` makes it layered)",
        layered::PRE_LAYERS
    )
}

/// `machines diff NAME [--json]`
pub fn diff(name: &str, json: bool) -> Result<u8> {
    let name = machine_name(name)?;
    let paths = Paths::from_env();
    let root = Root::new(&paths, &name);
    let Some(Storage::Layered { current, .. }) = root.storage() else {
        bail!(
            "machine {name} is not layered ({}); its changes cannot be told from its image",
            describe(&paths, &name).unwrap_or_else(|| "not installed".into())
        );
    };
    let changes = layered::diff(&LayerStore::new(&paths), &root, &current)
        .with_context(|| format!("cannot read the writable layer of {name}"))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&changes)?);
    } else {
        for c in &changes {
            println!("{} {}", c.kind, c.path);
        }
    }
    Ok(EXIT_OK)
}

/// `machines reset NAME [--convert]`: refuses a running machine.
pub fn reset(name: &str, convert: bool) -> Result<u8> {
    let name = machine_name(name)?;
    let paths = Paths::from_env();
    crate::cmd::lifecycle::refuse_running(&paths, &name)?;
    let root = Root::new(&paths, &name);
    match (root.storage(), convert) {
        (Some(Storage::Layered { .. }), false) => {
            root.reset()
                .with_context(|| format!("cannot reset machine {name}"))?;
            println!("Machine {name}: own changes dropped; config and volumes kept.");
        }
        (_, false) => bail!(
            "machine {name} is a full copy ({}); `mbctl machines reset --convert {name}` replaces it by shared layers (its own changes are lost)",
            describe(&paths, &name).unwrap_or_else(|| "not installed".into())
        ),
        // Either way, as the host chooses now (SharedLayers=, the fallback): volumes keep the
        // same on-disk owners under both kinds, so the data stays readable and writable.
        (_, true) => {
            let machine = declaration::load(&paths, &name)?;
            root.unmount()?;
            root.forget()?;
            man8s_oci::install::remove_any(&root.rw())?;
            let rootfs = paths.rootfs(&name);
            man8s_oci::install::remove_any(&rootfs)?;
            crate::cmd::pull::install_machine(&paths, &machine)?;
            // Mounted to seed volumes; the unit mounts it again when it starts.
            root.unmount()?;
            match root.storage() {
                Some(Storage::Layered { .. }) => {
                    println!("Machine {name} is layered now; config and volumes kept.")
                }
                _ => println!(
                    "Machine {name}: {}",
                    describe(&paths, &name).unwrap_or_default()
                ),
            }
        }
    }
    Ok(EXIT_OK)
}
