//! Shared vs own disk of machines, for `machines list` and `machines status`: a layered
//! machine owns its writable layer and volumes and shares the store's layers with every machine
//! running one of them; a full copy owns its copy and volumes. Sizes are [`crate::disk`]'s.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use man8s::{MachineName, Paths};
use man8s_oci::layers::{LayerSet, LayerStore};
use man8s_provision::layered::{Root, Storage};
use serde::Serialize;

use crate::disk::{Usage, Walker, human};

/// The disk of one machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DiskUsage {
    /// `layered` or `copy`.
    pub kind: &'static str,
    /// What only this machine holds: `root` + `volumes`.
    pub own: Usage,
    /// Its writable layer (layered) or its copy of the image.
    pub root: Usage,
    /// Its config and data dirs (host-path volumes are not its own).
    pub volumes: Usage,
    /// Layered: the store's layers it runs on, each counted once.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shared: Option<Usage>,
    /// Layered: how many layer directories (the image's layers and its top layer).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shared_layers: Option<usize>,
    /// Layered: how many other machines run on at least one of those layers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shared_with: Option<usize>,
}

/// Every layered machine's current layer set, and the sizes of layers measured so far (a
/// layer is walked once however many machines use it).
pub struct Census {
    store: LayerStore,
    sets: BTreeMap<MachineName, LayerSet>,
    layer_sizes: HashMap<PathBuf, Usage>,
}

impl Census {
    /// Reads the storage record of every machine with host-owned state.
    pub fn load(paths: &Paths) -> Self {
        let mut sets = BTreeMap::new();
        let dir = paths.fs(man8s::paths::MACHINE_STATE_DIR);
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let Ok(name) = MachineName::new(&e.file_name().to_string_lossy()) else {
                continue;
            };
            if let Some(Storage::Layered { current, .. }) = Root::new(paths, &name).storage() {
                sets.insert(name, current);
            }
        }
        Census {
            store: LayerStore::new(paths),
            sets,
            layer_sizes: HashMap::new(),
        }
    }

    /// The disk of `name`; `None` when no root is installed.
    pub fn usage(&mut self, paths: &Paths, name: &MachineName) -> Option<DiskUsage> {
        let root = Root::new(paths, name);
        let mut w = Walker::new();
        let volumes = w.tree(&paths.config_dir(name)) + w.tree(&paths.storage_dir(name));
        if let Some(set) = self.sets.get(name).cloned() {
            // Not the rootfs path: that is the mounted overlay, layers included.
            let own_root = w.tree(&root.rw());
            let lowers = self.store.lowers(&set).unwrap_or_default();
            let shared = lowers
                .iter()
                .map(|d| {
                    *self
                        .layer_sizes
                        .entry(d.clone())
                        .or_insert_with(|| Walker::new().tree(d))
                })
                .sum();
            let shared_with = self
                .sets
                .iter()
                .filter(|(n, s)| {
                    *n != name
                        && (s.manifest_digest == set.manifest_digest
                            || s.chain_ids.iter().any(|c| set.chain_ids.contains(c)))
                })
                .count();
            return Some(DiskUsage {
                kind: "layered",
                own: own_root + volumes,
                root: own_root,
                volumes,
                shared: Some(shared),
                shared_layers: Some(lowers.len()),
                shared_with: Some(shared_with),
            });
        }
        if !root.installed() {
            return None;
        }
        let copy = w.tree(&paths.rootfs(name));
        Some(DiskUsage {
            kind: "copy",
            own: copy + volumes,
            root: copy,
            volumes,
            shared: None,
            shared_layers: None,
            shared_with: None,
        })
    }
}

/// `machines list`'s OWN cell.
pub fn own_cell(d: Option<&DiskUsage>) -> String {
    d.map_or_else(|| "-".into(), |d| human(d.own))
}

/// `machines list`'s SHARED cell: `201.0 MiB ×10` (the layers, and how many machines use them,
/// this one included); `-` for a full copy.
pub fn shared_cell(d: Option<&DiskUsage>) -> String {
    match d {
        Some(DiskUsage {
            shared: Some(s),
            shared_with: Some(n),
            ..
        }) => format!("{} ×{}", human(*s), n + 1),
        _ => "-".into(),
    }
}

/// `machines status`'s `Disk:` line.
pub fn status_line(d: &DiskUsage) -> String {
    match (d.shared, d.shared_layers, d.shared_with) {
        (Some(s), Some(layers), Some(others)) => format!(
            "own {} (writable layer {}, volumes {}); shared {} ({layers} layer dirs, also used by {others} other machine{})",
            human(d.own),
            human(d.root),
            human(d.volumes),
            human(s),
            if others == 1 { "" } else { "s" }
        ),
        _ => format!(
            "own {} (full copy {}, volumes {})",
            human(d.own),
            human(d.root),
            human(d.volumes)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u(bytes: u64) -> Usage {
        Usage {
            bytes,
            partial: false,
        }
    }

    fn layered(others: usize) -> DiskUsage {
        DiskUsage {
            kind: "layered",
            own: u(36 << 10),
            root: u(32 << 10),
            volumes: u(4 << 10),
            shared: Some(u(201 << 20)),
            shared_layers: Some(2),
            shared_with: Some(others),
        }
    }

    #[test]
    fn layered_cells_and_status_line() {
        let d = layered(9);
        assert_eq!(own_cell(Some(&d)), "36 KiB");
        assert_eq!(shared_cell(Some(&d)), "201.0 MiB ×10");
        assert_eq!(
            status_line(&d),
            "own 36 KiB (writable layer 32 KiB, volumes 4 KiB); shared 201.0 MiB (2 layer dirs, also used by 9 other machines)"
        );
        assert!(status_line(&layered(1)).ends_with("by 1 other machine)"));
        assert_eq!(shared_cell(Some(&layered(0))), "201.0 MiB ×1");
    }

    fn write_mib(path: &std::path::Path, mib: usize) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let block: Vec<u8> = (0..1 << 20).map(|i| (i % 251) as u8 + 1).collect();
        std::fs::write(path, block.repeat(mib)).unwrap();
    }

    fn record(paths: &Paths, name: &str, manifest: char, chains: &[char]) -> MachineName {
        let name = MachineName::new(name).unwrap();
        std::fs::create_dir_all(paths.state_dir(&name)).unwrap();
        let set = LayerSet {
            manifest_digest: format!("sha256:{}", manifest.to_string().repeat(64)),
            chain_ids: chains
                .iter()
                .map(|c| format!("sha256:{}", c.to_string().repeat(64)))
                .collect(),
        };
        Root::new(paths, &name)
            .record(&Storage::Layered {
                uid_base: 0x7000_0000,
                current: set,
                previous: None,
            })
            .unwrap();
        name
    }

    /// Real files on a real file system: own follows what the machine wrote, shared is the
    /// store's layers, counted once and attributed to each machine using them.
    #[test]
    fn census_measures_own_and_shared_on_disk() {
        let t = tempfile::tempdir().unwrap();
        let paths = Paths::new(t.path());
        let a = record(&paths, "a", 'f', &['1', '2']);
        let b = record(&paths, "b", 'e', &['1', '2']);
        let c = record(&paths, "c", 'd', &['3']);
        let store = LayerStore::new(&paths);
        write_mib(
            &store
                .layer_dir(&format!("sha256:{}", "1".repeat(64)))
                .unwrap()
                .join("x"),
            3,
        );
        write_mib(
            &store
                .layer_dir(&format!("sha256:{}", "2".repeat(64)))
                .unwrap()
                .join("y"),
            2,
        );
        write_mib(&paths.state_dir(&a).join("rw/data/ten"), 10);
        write_mib(&paths.storage_dir(&a).join("db/f"), 1);
        let mut census = Census::load(&paths);
        let ua = census.usage(&paths, &a).unwrap();
        let ub = census.usage(&paths, &b).unwrap();
        let uc = census.usage(&paths, &c).unwrap();
        let mib = |u: Usage| u.bytes >> 20;
        assert_eq!(
            (ua.kind, mib(ua.root), mib(ua.volumes), mib(ua.own)),
            ("layered", 10, 1, 11)
        );
        assert_eq!(
            (mib(ua.shared.unwrap()), ua.shared_layers, ua.shared_with),
            (5, Some(3), Some(1))
        );
        assert_eq!(
            (mib(ub.own), mib(ub.shared.unwrap()), ub.shared_with),
            (0, 5, Some(1))
        );
        assert_eq!((mib(uc.shared.unwrap()), uc.shared_with), (0, Some(0)));
        // A machine with no record but a rootfs is a full copy, measured in full.
        let d = MachineName::new("d").unwrap();
        write_mib(&paths.rootfs(&d).join("bin/app"), 4);
        let ud = census.usage(&paths, &d).unwrap();
        assert_eq!((ud.kind, mib(ud.root), ud.shared), ("copy", 4, None));
        assert!(
            census
                .usage(&paths, &MachineName::new("none").unwrap())
                .is_none()
        );
    }

    #[test]
    fn copy_cells_and_status_line() {
        let d = DiskUsage {
            kind: "copy",
            own: u((201 << 20) + (4 << 10)),
            root: u(201 << 20),
            volumes: Usage {
                bytes: 4 << 10,
                partial: true,
            },
            shared: None,
            shared_layers: None,
            shared_with: None,
        };
        assert_eq!(own_cell(Some(&d)), "201.0 MiB");
        assert_eq!(shared_cell(Some(&d)), "-");
        assert_eq!(
            status_line(&d),
            "own 201.0 MiB (full copy 201.0 MiB, volumes ≥4 KiB)"
        );
        assert_eq!(own_cell(None), "-");
        assert_eq!(shared_cell(None), "-");
    }
}
