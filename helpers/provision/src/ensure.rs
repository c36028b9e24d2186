//! What `man8s-fetch NAME` does on every start, and the pieces `mbctl` shares with it.

use man8s::Paths;
use man8s::machine::Machine;
use man8s_oci::cache::BlobCache;
use man8s_oci::install::{InstallOptions, Source};
use man8s_oci::progress::{Event, Progress};
use man8s_oci::pull::{Policy, Puller, ResolvedImage};
use man8s_oci::registry::RegistryConfig;
use man8s_oci::{ImageRef, Platform};

use crate::link::link_for_machinectl;
use crate::{Error, Result};

/// What [`ensure_machine`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A rootfs was (re)installed.
    Installed {
        /// Manifest digest now installed.
        digest: String,
    },
    /// The installed rootfs was kept.
    UpToDate,
}

/// Settings for [`ensure_machine`].
pub struct EnsureOptions<'a> {
    /// Pull policy (normally the declaration's `Pull=`).
    pub policy: Policy,
    /// Platform (normally the host's).
    pub platform: Platform,
    /// Registry settings.
    pub registry: &'a RegistryConfig,
    /// Install settings (`protect_run_tmp` is forced on).
    pub install: InstallOptions,
    /// Progress sink.
    pub progress: &'a dyn Progress,
}

/// What `man8s-fetch NAME` does: make the machine's rootfs exist and match its declaration.
///
/// `Pull=missing`: nothing happens when a rootfs exists; otherwise the image comes from the
/// cache when complete there, else from the registry. `Pull=always`: the registry is asked
/// what the tag points to; a rootfs of that same manifest is kept. `Pull=never`: cache only.
/// Then config dir, man8env.env and volumes are prepared and the machinectl link made.
pub async fn ensure_machine(
    paths: &Paths,
    machine: &Machine,
    opts: &EnsureOptions<'_>,
) -> Result<Outcome> {
    let image = ImageRef::parse(&machine.image)?;
    let cache = BlobCache::new(paths);
    let state = crate::state::MachineState::new(paths, &machine.name);
    state.ensure()?;
    let installed = state.source();
    let exists = crate::layered::Root::new(paths, &machine.name).installed();
    let puller = Puller {
        cache: &cache,
        config: opts.registry,
        progress: opts.progress,
        platform: opts.platform.clone(),
    };
    let outcome = if exists && opts.policy != Policy::Always {
        if let Some(src) = installed
            .as_ref()
            .filter(|s| s.reference != image.to_string())
        {
            // Image= was edited after the machine was made: say so instead of silently running the old one.
            opts.progress.event(Event::UpToDate {
                reason: &format!(
                    "warning: {}: rootfs is from {}, but the declaration says {}; \
                     `mbctl machines update {}` (or Pull=always) switches it",
                    machine.name, src.reference, image, machine.name
                ),
            });
        }
        opts.progress.event(Event::UpToDate {
            reason: &format!(
                "{}: rootfs present (Pull={}), not pulling",
                machine.name,
                policy_name(opts.policy)
            ),
        });
        None
    } else {
        let keep_installed = |e: &Error| -> Result<Outcome> {
            opts.progress.event(Event::UpToDate {
                reason: &format!(
                    "warning: {e}; starting {} with the installed rootfs",
                    machine.name
                ),
            });
            activate(paths, machine, opts.progress)?;
            link_for_machinectl(paths, &machine.name)?;
            Ok(Outcome::UpToDate)
        };
        let cached = if opts.policy == Policy::Always {
            None
        } else {
            puller.from_cache(&image)?
        };
        if cached.is_none() && opts.policy == Policy::Never {
            return Err(Error::NotCached {
                image: image.to_string(),
            });
        }
        let resolved = match cached {
            Some(r) => r,
            None => match puller.resolve_remote(&image).await {
                Ok(r) => r,
                // Pull=always at boot with the network not up yet: the machine still starts from what it has.
                Err(e @ Error::Network { .. }) if exists => return keep_installed(&e),
                Err(e) => return Err(e),
            },
        };
        if exists
            && installed
                .as_ref()
                .is_some_and(|s| s.manifest_digest == resolved.manifest_digest)
        {
            opts.progress.event(Event::UpToDate {
                reason: &format!("{}: already at {}", machine.name, resolved.manifest_digest),
            });
            Some((resolved, Outcome::UpToDate))
        } else {
            let mut install = InstallOptions {
                protect_run_tmp: true,
                ..opts.install.clone()
            };
            let limits = crate::install_options(paths, install.keep_previous, true)?;
            install.unpack.max_total_size = install
                .unpack
                .max_total_size
                .min(limits.unpack.max_total_size);
            // Blocking work on scoped threads (progress is only borrowed): layers download on one
            // while the other unpacks those already cached.
            let result = std::thread::scope(|s| {
                s.spawn(|| {
                    crate::layered::install(
                        paths,
                        &machine.name,
                        &puller,
                        &resolved,
                        &install,
                        false,
                    )
                })
                .join()
            })
            .map_err(|_| Error::Other("unpack thread panicked".into()))?;
            match result {
                Ok(_) => state.record(&resolved, install.keep_previous)?,
                Err(e @ Error::Network { .. }) if exists => return keep_installed(&e),
                Err(e) => return Err(e),
            }
            let digest = resolved.manifest_digest.clone();
            Some((resolved, Outcome::Installed { digest }))
        }
    };
    // A layered root is mounted now: volumes are seeded from what the machine will see.
    activate(paths, machine, opts.progress)?;
    link_for_machinectl(paths, &machine.name)?;
    match outcome {
        Some((resolved, outcome)) => {
            prepare_machine(paths, machine, &resolved, opts.progress)?;
            Ok(outcome)
        }
        None => {
            // Rootfs present: still make sure config dir and env file exist (image config from
            // the host-owned state, never from the rootfs).
            let resolved = resolved_from_state(&state, &image, installed);
            prepare_machine(paths, machine, &resolved, opts.progress)?;
            Ok(Outcome::UpToDate)
        }
    }
}

/// The machine's `DiskMax=` limit, then its layered root mounted.
fn activate(paths: &Paths, machine: &Machine, progress: &dyn Progress) -> Result<()> {
    let applied = crate::quota::apply(paths, machine)?;
    if let Some(line) = crate::quota::describe(&machine.name, &applied) {
        progress.event(Event::UpToDate { reason: &line });
    }
    crate::layered::activate(paths, &machine.name)
}

fn policy_name(p: Policy) -> &'static str {
    match p {
        Policy::Missing => "missing",
        Policy::Always => "always",
        Policy::Never => "never",
    }
}

/// Rebuild enough of a [`ResolvedImage`] from the machine's recorded state for
/// [`prepare_machine`].
///
/// A machine with no record (made by the Python tool, or before records moved out of the
/// rootfs) gets an empty image config, which still lets man8env.env get its missing Yggdrasil
/// address and volumes get created; its init reads the rootfs's own copy.
fn resolved_from_state(
    state: &crate::state::MachineState,
    image: &ImageRef,
    source: Option<Source>,
) -> ResolvedImage {
    let config_json = state.image_config().unwrap_or_default();
    let config: man8s_oci::manifest::ImageConfig =
        serde_json::from_slice(&config_json).unwrap_or_default();
    ResolvedImage {
        reference: image.clone(),
        manifest_digest: source
            .as_ref()
            .map(|s| s.manifest_digest.clone())
            .unwrap_or_default(),
        index_digest: source.and_then(|s| s.index_digest),
        manifest: man8s_oci::manifest::ImageManifest {
            config: man8s_oci::manifest::Descriptor {
                media_type: String::new(),
                digest: String::new(),
                size: 0,
                platform: None,
            },
            layers: Vec::new(),
        },
        config_json,
        config,
        from_network: false,
    }
}

/// Config dir, man8env.env and volumes of `machine`, for the image `image` that is installed.
pub fn prepare_machine(
    paths: &Paths,
    machine: &Machine,
    image: &ResolvedImage,
    progress: &dyn Progress,
) -> Result<()> {
    crate::env::ensure_env_file(paths, machine, &image.config, progress)?;
    crate::volumes::ensure_volumes(paths, machine, &paths.rootfs(&machine.name))
}

/// Pull `image` into the cache (every blob) per `policy`, for this host's platform.
pub fn fetch_image(paths: &Paths, image: &ImageRef, policy: Policy) -> Result<ResolvedImage> {
    let registry = RegistryConfig::load(paths)?;
    let cache = BlobCache::new(paths);
    let progress = man8s_oci::progress::auto();
    let puller = Puller {
        cache: &cache,
        config: &registry,
        progress: progress.as_ref(),
        platform: Platform::host(),
    };
    man8s_oci::pull::block_on(puller.pull(image, policy))?
}
