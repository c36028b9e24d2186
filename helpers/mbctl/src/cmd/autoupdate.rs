//! `auto-update [--dry-run]`, run daily by `man8s-auto-update.timer`: every machine with
//! `AutoUpdate=registry` whose tag now names another image is updated through
//! [`crate::cmd::pull::apply_update`] (snapshot, new rootfs, restart, wait until healthy, else
//! old rootfs and volume snapshot back). Machines without `AutoUpdate=` are never touched.

use anyhow::{Context, Result};
use man8s::machine::{Machine, PullPolicy};
use man8s::{Paths, declaration};
use man8s_oci::install;
use man8s_oci::pull::{Policy, block_on};
use man8s_oci::registry::{Registry, RegistryConfig};
use man8s_provision::fetch_image;

use crate::bus::Bus;
use crate::cmd::image_ref;
use crate::cmd::info::is_real_root;
use crate::cmd::pull::apply_update;
use crate::health::notify;
use crate::output::table;
use crate::updates::Outcome;
use crate::{EXIT_OK, EXIT_RUNTIME};

/// What the registry says about one machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The tag names the installed image.
    UpToDate,
    /// The tag names another image (this digest).
    Newer(String),
    /// Not checked, and why (pinned by digest, Pull=never, not installed, registry error).
    Skipped(String),
}

/// Why a machine that asked for updates cannot get them, before asking any registry.
pub fn skip_reason(m: &Machine) -> Option<String> {
    if m.pull == PullPolicy::Never {
        return Some("Pull=never (an imported image has no registry to ask)".into());
    }
    match man8s_oci::ImageRef::parse(&m.image) {
        Ok(r) if r.digest().is_some() => Some("Image= is pinned by digest".into()),
        Ok(_) => None,
        Err(e) => Some(e.to_string()),
    }
}

/// The digest that the installed rootfs was pulled as: the index's when it came from one (the
/// tag points at the index), else the manifest's.
pub fn installed_top_digest(source: &install::Source) -> String {
    source
        .index_digest
        .clone()
        .unwrap_or_else(|| source.manifest_digest.clone())
}

/// One GET of the tag's manifest (with the pull's token auth), compared with what is installed.
fn check(paths: &Paths, config: &RegistryConfig, m: &Machine) -> (Option<String>, Verdict) {
    if let Some(why) = skip_reason(m) {
        return (None, Verdict::Skipped(why));
    }
    let Some(source) = man8s_provision::state::MachineState::new(paths, &m.name).source() else {
        return (None, Verdict::Skipped("not installed yet".into()));
    };
    let current = installed_top_digest(&source);
    let asked = (|| -> Result<String> {
        let image = image_ref(&m.image)?;
        let registry = Registry::new(&image, config)?;
        let progress = man8s_oci::progress::Silent;
        let top = block_on(registry.manifest(image.manifest_reference(), &progress))??;
        Ok(top.digest)
    })();
    let verdict = match asked {
        Ok(d) if d == current => Verdict::UpToDate,
        Ok(d) => Verdict::Newer(d),
        Err(e) => Verdict::Skipped(format!("registry: {}", crate::one_line(&e))),
    };
    (Some(current), verdict)
}

/// `mbctl auto-update [--dry-run]`. Exit status 1 when any update failed (rolled back or not)
/// or any registry could not be asked.
pub fn auto_update(dry_run: bool) -> Result<u8> {
    let paths = Paths::from_env();
    let config = RegistryConfig::load(&paths)?;
    let machines: Vec<Machine> = declaration::discover(&paths)
        .into_iter()
        .flatten()
        .filter_map(|n| declaration::load(&paths, &n).ok())
        .filter(|m| m.auto_update)
        .collect();
    let mut rows = vec![
        ["MACHINE", "IMAGE", "CURRENT", "NEW"]
            .map(String::from)
            .to_vec(),
    ];
    let mut failures = 0;
    let bus = if !dry_run && is_real_root(&paths) {
        Some(Bus::system()?)
    } else {
        None
    };
    for m in &machines {
        let (current, verdict) = check(&paths, &config, m);
        let current_text = current.clone().unwrap_or_else(|| "-".into());
        let new_text = match &verdict {
            Verdict::UpToDate => "up to date".to_owned(),
            Verdict::Newer(d) => d.clone(),
            Verdict::Skipped(why) => format!("skipped: {why}"),
        };
        if dry_run {
            rows.push(vec![
                m.name.to_string(),
                m.image.clone(),
                current_text,
                new_text,
            ]);
            continue;
        }
        match verdict {
            Verdict::UpToDate => println!("{}: up to date ({current_text})", m.name),
            Verdict::Skipped(why) => {
                println!("{}: skipped: {why}", m.name);
                if why.starts_with("registry:") {
                    failures += 1;
                }
            }
            Verdict::Newer(digest) => {
                println!("{}: {current_text} → {digest}: updating", m.name);
                notify(&format!("STATUS=updating {} to {digest}", m.name));
                let result = (|| -> Result<crate::updates::UpdateRecord> {
                    let image = image_ref(&m.image)?;
                    let resolved = fetch_image(&paths, &image, Policy::Always)
                        .with_context(|| format!("cannot pull {}", m.image))?;
                    let before =
                        man8s_provision::state::MachineState::new(&paths, &m.name).source();
                    apply_update(&paths, m, before, &resolved, bus.as_ref(), false)
                })();
                match result {
                    Ok(r) if r.outcome == Outcome::Updated => {
                        println!("{}: {}", m.name, r.summary());
                    }
                    Ok(r) => {
                        failures += 1;
                        eprintln!("mbctl: {}: {}", m.name, r.summary());
                        notify(&format!("STATUS={}: {}", m.name, r.summary()));
                    }
                    Err(e) => {
                        failures += 1;
                        eprintln!("mbctl: {}: update failed: {}", m.name, crate::one_line(&e));
                    }
                }
            }
        }
    }
    if dry_run {
        print!("{}", table(&rows, |_, c| c.to_owned()));
    } else if machines.is_empty() {
        println!("No machine has AutoUpdate=registry.");
    }
    Ok(if failures > 0 { EXIT_RUNTIME } else { EXIT_OK })
}

#[cfg(test)]
mod tests {
    use super::*;
    use man8s::MachineName;
    use man8s::machine::SourceFiles;

    fn machine(image: &str, pull: PullPolicy) -> Machine {
        let mut m = Machine::new(
            MachineName::new("web").unwrap(),
            SourceFiles::default(),
            image.into(),
        );
        m.pull = pull;
        m.auto_update = true;
        m
    }

    #[test]
    fn pinned_and_imported_images_are_not_checked() {
        assert_eq!(
            skip_reason(&machine("localhost:5000/app:1", PullPolicy::Missing)),
            None
        );
        let pinned = format!("localhost:5000/app@sha256:{}", "a".repeat(64));
        assert!(
            skip_reason(&machine(&pinned, PullPolicy::Missing))
                .unwrap()
                .contains("pinned")
        );
        assert!(
            skip_reason(&machine("localhost/app:1", PullPolicy::Never))
                .unwrap()
                .contains("Pull=never")
        );
    }
}
