//! The record of a machine's last update (`machines update`, `auto-update`), kept host-side in
//! `/var/lib/man8s/updates/NAME.json` so that `machines status` can say what happened while
//! nobody was looking.

use std::path::PathBuf;

use anyhow::{Context, Result};
use man8s::{MachineName, Paths};
use serde::{Deserialize, Serialize};

/// How an update ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// The new image runs.
    Updated,
    /// The new image failed; the old image and the volume snapshot were put back.
    RolledBack,
    /// The new image failed and going back failed too.
    Failed,
}

/// The last update of a machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateRecord {
    /// How it ended.
    pub outcome: Outcome,
    /// Manifest digest before.
    pub from: Option<String>,
    /// Manifest digest of the new image.
    pub to: String,
    /// When it ended (RFC 3339 UTC).
    pub at: String,
    /// Why it failed.
    pub reason: Option<String>,
    /// The volume snapshot taken before it.
    pub snapshot: Option<String>,
}

impl UpdateRecord {
    /// `updated to sha256:… at 03:12`, `update to sha256:… failed at 03:12, rolled back: why`.
    pub fn summary(&self) -> String {
        let hhmm = self.at.get(11..16).unwrap_or(&self.at);
        let why = self.reason.as_deref().unwrap_or("unknown");
        match self.outcome {
            Outcome::Updated => format!("updated to {} at {hhmm} UTC", self.to),
            Outcome::RolledBack => {
                format!(
                    "update to {} failed at {hhmm} UTC, rolled back: {why}",
                    self.to
                )
            }
            Outcome::Failed => format!(
                "update to {} failed at {hhmm} UTC and could not be rolled back: {why}",
                self.to
            ),
        }
    }
}

/// Where the record of `name` is kept.
pub fn path(paths: &Paths, name: &MachineName) -> PathBuf {
    paths
        .fs("/var/lib/man8s/updates")
        .join(format!("{name}.json"))
}

/// Keep `record` as the last update of `name`.
pub fn write(paths: &Paths, name: &MachineName, record: &UpdateRecord) -> Result<()> {
    let p = path(paths, name);
    let dir = p.parent().expect("has a parent");
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let tmp = p.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(record)?)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, &p).with_context(|| format!("cannot write {}", p.display()))
}

/// The last update of `name`, if one was recorded.
pub fn read(paths: &Paths, name: &MachineName) -> Option<UpdateRecord> {
    serde_json::from_slice(&std::fs::read(path(paths, name)).ok()?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries_say_what_happened_and_when() {
        let r = UpdateRecord {
            outcome: Outcome::RolledBack,
            from: Some("sha256:a".into()),
            to: "sha256:b".into(),
            at: "2026-12-01T03:12:45Z".into(),
            reason: Some("unhealthy: HTTP 500".into()),
            snapshot: Some("20261201T031200Z".into()),
        };
        assert_eq!(
            r.summary(),
            "update to sha256:b failed at 03:12 UTC, rolled back: unhealthy: HTTP 500"
        );
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::new(dir.path());
        let n = MachineName::new("web").unwrap();
        write(&paths, &n, &r).unwrap();
        assert_eq!(read(&paths, &n), Some(r));
    }
}
