//! `machines pull IMAGE NAME` (new machine from an image) and `machines update NAME` (new image
//! for an existing machine, with rollback). Registry, cache and install are `man8s_oci`'s; this
//! module decides what to ask, what to write and in which order.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use man8s::machine::{Machine, SourceFiles, Template, Volume, VolumeSource};
use man8s::{MachineName, Paths, declaration};
use man8s_oci::cache::BlobCache;
use man8s_oci::install::{self, InstallOptions};
use man8s_oci::pull::{Policy, Puller, ResolvedImage, block_on};
use man8s_oci::registry::RegistryConfig;
use man8s_oci::{ImageRef, Platform};
use man8s_provision::{EnsureOptions, fetch_image};

use crate::bus::{Bus, UnitJob, unit_name};
use crate::cmd::info::is_real_root;
use crate::cmd::{image_ref, machine_name};
use crate::prompt::{VolumeChoice, parse_volume_arg, resolve_volumes};
use crate::updates::{Outcome, UpdateRecord};
use crate::{EXIT_OK, UsageError, render};

/// Where `machines pull` writes declarations.
pub const DECLARATION_DIR: &str = "/etc/man8s/machines";

/// A template name from the command line.
pub fn template(name: &str) -> Result<Template> {
    match name {
        "network_isolated" => Ok(Template::NetworkIsolated),
        "macvlan" => Err(UsageError(
            "--template macvlan needs a host interface ([Network] MACVLAN=); pull with the default template and edit the declaration"
                .into(),
        )
        .into()),
        other => Err(UsageError(format!("unknown template {other:?} (network_isolated)")).into()),
    }
}

/// Why `name` cannot be created: something of a machine by that name exists already.
pub fn existing_machine(paths: &Paths, name: &MachineName) -> Option<String> {
    if let Ok(Some(src)) = declaration::find(paths, name) {
        return Some(format!("it is declared in {}", src.main.display()));
    }
    let rootfs = paths.rootfs(name);
    if rootfs.symlink_metadata().is_ok() {
        return Some(format!(
            "{} exists",
            Paths::rootfs_canonical(name).display()
        ));
    }
    if paths.nspawn_etc(name).symlink_metadata().is_ok() {
        return Some(format!(
            "{}/{name}.nspawn exists (a machine of the Python mbctl? see mbctl migrate)",
            man8s::paths::NSPAWN_ETC_DIR
        ));
    }
    None
}

/// The machine a pull creates (pure): image, template, the chosen volumes.
pub fn new_machine(
    name: &MachineName,
    image: &str,
    template: Template,
    volumes: &[(String, VolumeChoice)],
) -> Machine {
    let main = Path::new(DECLARATION_DIR).join(format!("{name}{}", declaration::SUFFIX));
    let mut m = Machine::new(
        name.clone(),
        SourceFiles {
            main,
            dropins: Vec::new(),
        },
        image.to_owned(),
    );
    m.template = template;
    for (path, choice) in volumes {
        let source = match choice {
            VolumeChoice::Config => VolumeSource::Config,
            VolumeChoice::Data => VolumeSource::Data,
            VolumeChoice::Host(p) => VolumeSource::Host(p.clone()),
            VolumeChoice::Skip => continue,
        };
        m.volumes.push(Volume {
            container_path: path.clone(),
            source,
            read_only: false,
        });
    }
    m
}

/// Render `m`, check the text with the parser every other piece uses, and create the file
/// (never replacing one). Returns the file-system path written.
pub fn write_declaration(paths: &Paths, m: &Machine, header: &str) -> Result<PathBuf> {
    let text = render::render(m, header)?;
    let canonical = m.main_file().to_owned();
    declaration::parse(&m.name, &[(canonical.clone(), text.clone())]).map_err(|d| {
        anyhow::anyhow!("internal error: the declaration written would be invalid: {d}")
    })?;
    let path = paths.fs(&canonical);
    let dir = path.parent().expect("declaration path has a parent");
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("cannot write in {}", dir.display()))?;
    tmp.write_all(text.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))?;
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o644))?;
    tmp.persist_noclobber(&path).map_err(|e| {
        anyhow::Error::new(e.error).context(format!(
            "cannot create {} (does it exist already?)",
            path.display()
        ))
    })?;
    Ok(path)
}

/// Where each volume goes, in image order.
pub type VolumePlan = Vec<(String, VolumeChoice)>;

/// What `machines pull` needs to answer the volume questions.
#[derive(Debug, Clone)]
pub struct VolumeAsker {
    /// `--volume` answers.
    pub answers: BTreeMap<String, VolumeChoice>,
    /// `--yes`.
    pub yes: bool,
    /// For custom host paths.
    pub paths: Paths,
}

impl VolumeAsker {
    /// Ask about the volumes of `config` on the terminal.
    pub fn ask(
        &self,
        config: &man8s_oci::manifest::ImageConfig,
    ) -> Result<Vec<(String, VolumeChoice)>> {
        let declared = config
            .config
            .as_ref()
            .map(|c| c.volumes.keys().cloned().collect())
            .unwrap_or_default();
        let volumes = normalised_volumes(declared)?;
        resolve_volumes(
            &volumes,
            &self.answers,
            self.yes,
            &self.paths,
            &mut std::io::stdin().lock(),
            &mut std::io::stdout(),
        )
    }
}

/// Progress that, when the registry has answered with manifest and config (and before any layer
/// is downloaded), reads the config from the cache and asks the volume questions; every event
/// then goes on to the usual reporter.
struct AskWhenResolved {
    inner: Box<dyn man8s_oci::progress::Progress>,
    cache: BlobCache,
    asker: VolumeAsker,
    answer: std::sync::Mutex<Option<Result<VolumePlan>>>,
}

impl AskWhenResolved {
    fn config_of(&self, manifest_digest: &str) -> Result<man8s_oci::manifest::ImageConfig> {
        use man8s_oci::manifest::{self, Manifest};
        let body = self
            .cache
            .read_small(manifest_digest, manifest::MAX_MANIFEST_BYTES)?
            .with_context(|| format!("manifest {manifest_digest} is not in the cache"))?;
        let Manifest::Image(img) = manifest::parse(&body, None).map_err(anyhow::Error::msg)? else {
            bail!("{manifest_digest} is not an image manifest");
        };
        let config = self
            .cache
            .read_small(&img.config.digest, manifest::MAX_CONFIG_BYTES)?
            .with_context(|| format!("config {} is not in the cache", img.config.digest))?;
        manifest::parse_config(&config, img.layers.len(), &Platform::host())
            .map_err(anyhow::Error::msg)
    }
}

impl man8s_oci::progress::Progress for AskWhenResolved {
    fn event(&self, event: man8s_oci::progress::Event<'_>) {
        if let man8s_oci::progress::Event::Resolved { digest, .. } = &event {
            let mut answer = self.answer.lock().unwrap_or_else(|p| p.into_inner());
            if answer.is_none() {
                *answer = Some(self.config_of(digest).and_then(|c| self.asker.ask(&c)));
            }
        }
        self.inner.event(event);
    }
}

/// [`fetch_image`], asking the volume questions as soon as the config is known. The second
/// value is `None` when the image came from the cache without asking the registry.
pub fn fetch_image_asking(
    paths: &Paths,
    image: &ImageRef,
    policy: Policy,
    asker: VolumeAsker,
) -> Result<(ResolvedImage, Option<Result<VolumePlan>>)> {
    let registry = RegistryConfig::load(paths)?;
    let cache = BlobCache::new(paths);
    let progress = AskWhenResolved {
        inner: man8s_oci::progress::auto(),
        cache: cache.clone(),
        asker,
        answer: Default::default(),
    };
    let puller = Puller {
        cache: &cache,
        config: &registry,
        progress: &progress,
        platform: Platform::host(),
    };
    let resolved = block_on(puller.pull(image, policy))??;
    let answer = progress
        .answer
        .into_inner()
        .unwrap_or_else(|p| p.into_inner());
    Ok((resolved, answer))
}

/// Rootfs, machinectl link, config dir, man8env.env and volumes of `m`, from the cache.
pub fn install_machine(paths: &Paths, m: &Machine) -> Result<man8s_provision::Outcome> {
    let registry = RegistryConfig::load(paths)?;
    let progress = man8s_oci::progress::auto();
    let opts = EnsureOptions {
        policy: Policy::Missing,
        platform: Platform::host(),
        registry: &registry,
        install: InstallOptions {
            keep_previous: false,
            protect_run_tmp: true,
            unpack: Default::default(),
        },
        progress: progress.as_ref(),
    };
    Ok(block_on(man8s_provision::ensure_machine(paths, m, &opts))??)
}

/// After declarations changed: `systemctl daemon-reload` when this tree is the running system's.
pub fn reload_systemd(paths: &Paths) {
    if !is_real_root(paths) {
        return;
    }
    match Bus::system().and_then(|b| b.reload()) {
        Ok(()) => {}
        Err(e) => eprintln!(
            "mbctl: note: {}; run `systemctl daemon-reload` before starting the machine",
            crate::one_line(&e)
        ),
    }
}

/// Options of `machines pull`.
#[derive(Debug)]
pub struct PullRequest<'a> {
    /// Image reference as given.
    pub image: &'a str,
    /// Machine name as given.
    pub name: &'a str,
    /// Template name.
    pub template: &'a str,
    /// `--volume` answers.
    pub volumes: &'a [String],
    /// `--yes`.
    pub yes: bool,
    /// `--no-fetch`.
    pub no_fetch: bool,
    /// The image is in the cache already (imported): never ask a registry, now or later.
    pub cached_only: bool,
}

/// `machines pull`.
pub fn pull(req: &PullRequest<'_>) -> Result<u8> {
    // Everything the user typed is checked before anything is fetched or written.
    let name = machine_name(req.name)?;
    let template = template(req.template)?;
    let mut answers = BTreeMap::new();
    for v in req.volumes {
        let (path, choice) = parse_volume_arg(v)?;
        if answers.insert(path.clone(), choice).is_some() {
            return Err(UsageError(format!("--volume {path} is given twice")).into());
        }
    }
    declaration::validate_image_reference(req.image).map_err(UsageError)?;
    let image = image_ref(req.image)?;
    let paths = Paths::from_env();
    if let Some(why) = existing_machine(&paths, &name) {
        bail!(
            "machine {name} exists already: {why}; remove it first (mbctl machines remove {name})"
        );
    }

    // The questions come as soon as the image config is known, before the layers download
    // (the Python tool read the config first too); from the cache they come after.
    let chosen = if req.no_fetch {
        resolve_volumes(
            &[],
            &answers,
            req.yes,
            &paths,
            &mut std::io::stdin().lock(),
            &mut std::io::stdout(),
        )?
    } else {
        let policy = if req.cached_only {
            Policy::Never
        } else {
            Policy::Always
        };
        let asker = VolumeAsker {
            answers: answers.clone(),
            yes: req.yes,
            paths: paths.clone(),
        };
        let (resolved, early) = fetch_image_asking(&paths, &image, policy, asker)?;
        match early {
            Some(chosen) => chosen?,
            None => {
                let declared = resolved
                    .config
                    .config
                    .as_ref()
                    .map(|c| c.volumes.keys().cloned().collect());
                let volumes = normalised_volumes(declared.unwrap_or_default())?;
                resolve_volumes(
                    &volumes,
                    &answers,
                    req.yes,
                    &paths,
                    &mut std::io::stdin().lock(),
                    &mut std::io::stdout(),
                )?
            }
        }
    };

    let mut machine = new_machine(&name, req.image, template, &chosen);
    if req.cached_only {
        machine.pull = man8s::machine::PullPolicy::Never;
    }
    let header = format!(
        "Machine {name}, created by `mbctl machines pull {}`.",
        req.image
    );
    if paths.env_file(&name).exists() {
        // A config dir kept by an earlier `remove`: the user's edits win, as they always do.
        eprintln!(
            "Reusing the kept {}: its man8env.env stays as it is (delete it to get a fresh one for this image)",
            Paths::config_dir_canonical(&name).display()
        );
    }
    let written = write_declaration(&paths, &machine, &header)?;
    println!("Wrote {}", written.display());
    if !req.no_fetch
        && let Err(e) = install_machine(&paths, &machine)
    {
        // Leave nothing half-made that would block the next attempt: the declaration, rootfs and
        // link were made just now (existing_machine checked); config and data stay for the retry.
        let _ = fs::remove_file(&written);
        let rootfs = paths.rootfs(&name);
        if rootfs.symlink_metadata().is_ok_and(|m| m.is_dir()) {
            let _ = fs::remove_dir_all(&rootfs);
        }
        let link = paths.machines_link(&name);
        if link
            .symlink_metadata()
            .is_ok_and(|m| m.file_type().is_symlink())
        {
            let _ = fs::remove_file(&link);
        }
        return Err(e.context(format!("machine {name} not created")));
    }
    reload_systemd(&paths);
    if req.no_fetch {
        println!(
            "Machine {name} declared; its image is pulled when it first starts: mbctl machines start {name}"
        );
    } else {
        println!("Machine {name} created. Start it with: mbctl machines start {name}");
    }
    Ok(EXIT_OK)
}

/// `import SOURCE --reference REF [--machine NAME]`.
pub fn import(source: &Path, reference: &str, machine: Option<&str>) -> Result<u8> {
    let image = image_ref(reference)?;
    if let Some(m) = machine {
        machine_name(m)?;
    }
    let paths = Paths::from_env();
    if let Some(m) = machine
        && let Some(why) = existing_machine(&paths, &machine_name(m)?)
    {
        bail!("machine {m} exists already: {why}; remove it first (mbctl machines remove {m})");
    }
    let cache = BlobCache::new(&paths);
    let imported = crate::import::import(&cache, source, &image)
        .with_context(|| format!("cannot import {}", source.display()))?;
    println!(
        "Imported {} ({}) as {reference} → {}",
        source.display(),
        crate::import::describe(imported.kind),
        imported.digest
    );
    if imported.kind == crate::import::SourceKind::Rootfs {
        println!("note: a docker export tarball has no command; set Exec= in the declaration");
    }
    let Some(m) = machine else { return Ok(EXIT_OK) };
    pull(&PullRequest {
        image: reference,
        name: m,
        template: "network_isolated",
        volumes: &[],
        yes: true,
        no_fetch: false,
        cached_only: true,
    })
}

/// Image volume paths as volume keys; a path a declaration cannot hold is an error naming it.
fn normalised_volumes(declared: Vec<String>) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for v in declared {
        let n = crate::prompt::normalise_container_path(&v)
            .map_err(|e| anyhow::anyhow!("image volume: {e}"))?;
        if !out.contains(&n) {
            out.push(n);
        }
    }
    Ok(out)
}

/// How long a machine must stay up after an update before it counts as started.
pub const SETTLE: Duration = Duration::from_secs(3);

/// Swap `a` and `b` atomically (both exist).
fn exchange(a: &Path, b: &Path) -> Result<()> {
    nix::fcntl::renameat2(
        nix::fcntl::AT_FDCWD,
        a,
        nix::fcntl::AT_FDCWD,
        b,
        nix::fcntl::RenameFlags::RENAME_EXCHANGE,
    )
    .with_context(|| format!("cannot swap {} and {}", a.display(), b.display()))
}

/// `machines update NAME [--force]`: with `force`, a fresh rootfs of the same image too.
pub fn update(name: &str, force: bool, reset: bool) -> Result<u8> {
    let name = machine_name(name)?;
    let paths = Paths::from_env();
    let machine = declaration::load(&paths, &name)?;
    let image = image_ref(&machine.image)?;
    let state = man8s_provision::state::MachineState::new(&paths, &name);
    let before = state.source();

    // Pull=never (an imported image): what the cache now holds under the reference, e.g. after
    // `mbctl import NEW.tar --reference SAME`; otherwise ask the registry.
    let policy = match machine.pull {
        man8s::machine::PullPolicy::Never => Policy::Never,
        _ => Policy::Always,
    };
    let resolved = fetch_image(&paths, &image, policy)?;
    if !force
        && before
            .as_ref()
            .is_some_and(|s| s.manifest_digest == resolved.manifest_digest)
    {
        println!(
            "Machine {name} is up to date ({}).",
            resolved.manifest_digest
        );
        return Ok(EXIT_OK);
    }

    let bus = crate::cmd::info::host_bus(&paths);
    let record = apply_update(&paths, &machine, before, &resolved, bus.as_ref(), reset)?;
    match record.outcome {
        Outcome::Updated if bus.is_some() => {
            println!("Machine {name} runs {}.", resolved.manifest_digest);
            Ok(EXIT_OK)
        }
        Outcome::Updated => {
            eprintln!("mbctl: note: systemd not reachable; {name} updated but not started");
            Ok(EXIT_OK)
        }
        _ => bail!(
            "machine {name}: {}; see: mbctl machines logs {name}",
            record.summary()
        ),
    }
}

/// `machines rollback NAME [--volumes]`: back to the image NAME ran before its last update,
/// kept by that update (a layered machine's previous layer set, a full copy's
/// `.NAME.previous`); a running machine is stopped and started again. Volumes stay as they are
/// unless `volumes`: then they go back to the snapshot the update took (the current state is
/// snapshotted first, so nothing is lost either way).
pub fn rollback(name: &str, volumes: bool) -> Result<u8> {
    let name = machine_name(name)?;
    let paths = Paths::from_env();
    let state = man8s_provision::state::MachineState::new(&paths, &name);
    let last = crate::updates::read(&paths, &name);
    if let Some(r) = &last
        && r.outcome != Outcome::Updated
    {
        bail!(
            "machine {name}: nothing to roll back: its last {}",
            r.summary()
        );
    }
    let (Some(current), Some(previous)) = (state.source(), state.previous_source()) else {
        bail!("machine {name}: no previous image to roll back to (an update keeps one)");
    };
    let root = man8s_provision::layered::Root::new(&paths, &name);
    let layered = matches!(
        root.storage(),
        Some(man8s_provision::layered::Storage::Layered {
            previous: Some(_),
            ..
        })
    );
    let rootfs = paths.rootfs(&name);
    let kept = install::previous_path(&rootfs)?;
    if !layered && !kept.is_dir() {
        bail!(
            "machine {name}: no previous image to roll back to ({} is gone)",
            kept.display()
        );
    }
    let snapshot = match (volumes, last.as_ref().and_then(|r| r.snapshot.clone())) {
        (false, _) => None,
        (true, Some(id)) => Some(id),
        (true, None) => bail!("machine {name}: its last update recorded no snapshot to restore"),
    };

    let bus = crate::cmd::info::host_bus(&paths);
    let unit = unit_name(name.as_str());
    let was_running = bus
        .as_ref()
        .is_some_and(|b| b.unit_state(&unit).is_ok_and(|s| s.is_running()));
    if let (true, Some(bus)) = (was_running, &bus) {
        eprintln!("Stopping {unit}…");
        bus.unit_job(UnitJob::Stop, &unit)?;
    }
    if layered {
        man8s_provision::layered::roll_back_layers(&paths, &name)?;
    } else {
        exchange(&kept, &rootfs)?;
    }
    state.swap_previous()?;
    if let Some(id) = &snapshot {
        let before = crate::cmd::snapshot::restore_now(&paths, &name, id, &Default::default())?;
        println!(
            "Volumes of {name} restored from snapshot {id}; what they held is snapshot {}.",
            before.id
        );
    }
    let record = UpdateRecord {
        outcome: Outcome::RolledBack,
        from: Some(previous.manifest_digest.clone()),
        to: current.manifest_digest.clone(),
        at: crate::health::now_rfc3339(),
        reason: Some("by mbctl machines rollback".into()),
        snapshot: last.and_then(|r| r.snapshot),
    };
    if let Err(e) = crate::updates::write(&paths, &name, &record) {
        eprintln!("mbctl: note: {e:#}");
    }
    println!(
        "Machine {name} is back on {} (was {}).",
        previous.manifest_digest, current.manifest_digest
    );
    if let (true, Some(bus)) = (was_running, &bus) {
        let s = bus.unit_job(UnitJob::Start, &unit)?;
        if s.active != "active" {
            bail!(
                "machine {name}: {unit} is {} ({}) after the rollback; see: mbctl machines logs {name}",
                s.active,
                s.sub
            );
        }
    }
    Ok(EXIT_OK)
}

/// Install `resolved` for `machine` and judge it, with a way back: stop the unit, snapshot the
/// config and data dirs, swap in the new rootfs (keeping the old one), start, wait until the
/// machine is good ([`wait_until_good`]); when it is not, put the old rootfs and the volume
/// snapshot back and start that. The outcome is recorded for `machines status`. A layered
/// machine keeps its writable layer over the new layers (unless `reset`), and its rollback is
/// a swap of two records.
pub fn apply_update(
    paths: &Paths,
    machine: &Machine,
    before: Option<install::Source>,
    resolved: &ResolvedImage,
    bus: Option<&Bus>,
    reset: bool,
) -> Result<UpdateRecord> {
    let name = &machine.name;
    let rootfs = paths.rootfs(name);
    let unit = unit_name(name.as_str());
    let was_running = bus.filter(|bus| bus.unit_state(&unit).is_ok_and(|s| s.is_running()));
    if let Some(bus) = was_running {
        eprintln!("Stopping {unit}…");
        bus.unit_job(UnitJob::Stop, &unit)?;
    }
    // The unit is stopped: the volumes hold still. The new image may change them (a database
    // migration); a rollback puts them back as they are now.
    let snapshot = crate::cmd::snapshot::take_now(
        paths,
        name,
        &format!("before update to {}", resolved.manifest_digest),
    )?;
    println!("Snapshot {}", crate::cmd::snapshot::describe(&snapshot));
    let cache = BlobCache::new(paths);
    let progress = man8s_oci::progress::auto();
    let opts = man8s_provision::install_options(paths, true, true)?;
    let registry = RegistryConfig::load(paths)?;
    let puller = Puller {
        cache: &cache,
        config: &registry,
        progress: progress.as_ref(),
        platform: Platform::host(),
    };
    use man8s_provision::layered::{self, Replaced};
    let replaced = match layered::install(paths, name, &puller, resolved, &opts, reset) {
        Ok(replaced) => replaced,
        Err(e) => {
            // Nothing was swapped in: the machine goes on with the image it ran.
            if let Some(bus) = was_running {
                eprintln!("Starting {unit} again on its old image…");
                if let Err(start) = bus.unit_job(UnitJob::Start, &unit) {
                    eprintln!(
                        "mbctl: note: {unit} did not start: {}",
                        crate::one_line(&start)
                    );
                }
            }
            return Err(e.into());
        }
    };
    let layers = matches!(replaced, Replaced::Layers);
    let previous = match replaced {
        Replaced::Copy(p) => Some(p),
        _ => None,
    };
    let state = man8s_provision::state::MachineState::new(paths, name);
    state.record(resolved, previous.is_some() || layers)?;
    man8s_provision::link::link_for_machinectl(paths, name)?;
    // New volumes are seeded from what the machine will see: a layered root is mounted for that.
    layered::activate(paths, name)?;
    let prepared = man8s_provision::prepare_machine(paths, machine, resolved, progress.as_ref());
    layered::Root::new(paths, name).unmount()?;
    prepared?;
    let old = before.map(|s| s.manifest_digest);
    println!(
        "Installed {} (was {}).",
        resolved.manifest_digest,
        old.as_deref().unwrap_or("an unrecorded image")
    );
    let mut record = UpdateRecord {
        outcome: Outcome::Updated,
        from: old,
        to: resolved.manifest_digest.clone(),
        at: String::new(),
        reason: None,
        snapshot: Some(snapshot.id.clone()),
    };
    let finish = |mut r: UpdateRecord| -> Result<UpdateRecord> {
        r.at = crate::health::now_rfc3339();
        if let Err(e) = crate::updates::write(paths, name, &r) {
            eprintln!("mbctl: note: {e:#}");
        }
        Ok(r)
    };
    let Some(bus) = bus else {
        return finish(record);
    };
    let Err(why) = wait_until_good(paths, name, bus) else {
        return finish(record);
    };
    let why = crate::one_line(&why);
    record.reason = Some(why.clone());
    if previous.is_none() && !layers {
        record.outcome = Outcome::Failed;
        record.reason = Some(format!("{why}; there is no previous rootfs to go back to"));
        return finish(record);
    }
    eprintln!("mbctl: {name} is not good on the new image ({why}); rolling back");
    let _ = bus.unit_job(UnitJob::Stop, &unit);
    if let Some(previous) = &previous {
        exchange(previous, &rootfs)?;
    } else {
        layered::roll_back_layers(paths, name)?;
    }
    state.swap_previous()?;
    // The old layers are back, so the writable layer of the snapshot fits them again.
    let failed = crate::cmd::snapshot::restore_now(paths, name, &snapshot.id, &Default::default())?;
    eprintln!(
        "mbctl: volumes of {name} restored from snapshot {}; what the new image left is snapshot {}",
        snapshot.id, failed.id
    );
    // `previous` now holds the image that failed; it is of no further use.
    if let Some(previous) = &previous
        && let Err(e) = fs::remove_dir_all(previous)
    {
        eprintln!("mbctl: note: cannot remove {}: {e}", previous.display());
    }
    record.outcome = Outcome::RolledBack;
    let back = bus.unit_job(UnitJob::Start, &unit);
    match back {
        Ok(s) if s.active == "active" => {}
        Ok(s) => {
            record.reason = Some(format!(
                "{why}; the old image is {} after the rollback",
                s.active
            ))
        }
        Err(e) => {
            record.reason = Some(format!(
                "{why}; the old image did not start: {}",
                crate::one_line(&e)
            ))
        }
    }
    finish(record)
}

/// Start the unit and judge it: with a health check, wait until the runner reports healthy
/// (unhealthy, or no verdict in time, is a failure); without one, the unit must stay active
/// for [`SETTLE`].
pub fn wait_until_good(paths: &Paths, name: &MachineName, bus: &Bus) -> Result<()> {
    let unit = unit_name(name.as_str());
    let state_file = crate::health::state_path(paths, name);
    let _ = fs::remove_file(&state_file);
    let s = bus.unit_job(UnitJob::Start, &unit)?;
    if s.active != "active" {
        bail!("{unit} is {} ({})", s.active, s.sub);
    }
    let check = crate::cmd::health::plan(paths, name, None)
        .ok()
        .and_then(|p| p.check);
    let Some(check) = check else {
        std::thread::sleep(SETTLE);
        let s = bus.unit_state(&unit)?;
        if s.active != "active" {
            bail!(
                "{unit} stopped within {} s: {} ({})",
                SETTLE.as_secs(),
                s.active,
                s.sub
            );
        }
        return Ok(());
    };
    // Long enough for the start period and every retry, each at its full timeout.
    let per_check = check.timeout + Duration::from_secs(1);
    let limit = check.start_period
        + per_check * (check.retries + 2)
        + check
            .interval
            .unwrap_or_default()
            .min(Duration::from_secs(60));
    let deadline = std::time::Instant::now() + limit.min(Duration::from_secs(900));
    loop {
        if let Some(h) = crate::health::read_state(&state_file) {
            match h.status {
                crate::health::Status::Healthy => return Ok(()),
                crate::health::Status::Unhealthy => bail!("unhealthy: {}", h.last_output),
                crate::health::Status::Starting => {}
            }
        }
        let s = bus.unit_state(&unit)?;
        if s.active != "active" {
            bail!("{unit} is {} ({}) before it was healthy", s.active, s.sub);
        }
        if std::time::Instant::now() > deadline {
            bail!(
                "not healthy within {} s (check {})",
                limit.as_secs(),
                check.test
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_machine_declaration() {
        let name = MachineName::new("Man8Registry").unwrap();
        let vols = vec![
            ("/var/lib/registry".to_owned(), VolumeChoice::Data),
            ("/etc/docker/registry".to_owned(), VolumeChoice::Config),
            ("/tmp/x".to_owned(), VolumeChoice::Skip),
            (
                "/srv".to_owned(),
                VolumeChoice::Host("/srv/registry".into()),
            ),
        ];
        let m = new_machine(
            &name,
            "docker.io/registry:latest",
            Template::NetworkIsolated,
            &vols,
        );
        assert_eq!(
            render::render(&m, "h").unwrap(),
            "# h\n[Machine]\nImage=docker.io/registry:latest\nVolume=/var/lib/registry:data\n\
             Volume=/etc/docker/registry:config\nVolume=/srv:/srv/registry\n"
        );
    }

    #[test]
    fn declaration_never_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::new(dir.path());
        let name = MachineName::new("web").unwrap();
        let m = new_machine(&name, "redis", Template::NetworkIsolated, &[]);
        assert_eq!(existing_machine(&paths, &name), None);
        let p = write_declaration(&paths, &m, "x").unwrap();
        assert_eq!(p, dir.path().join("etc/man8s/machines/web.machine"));
        assert!(
            existing_machine(&paths, &name)
                .unwrap()
                .contains("declared in /etc/man8s/machines/web.machine")
        );
        fs::write(&p, "# the user's edit\n").unwrap();
        assert!(write_declaration(&paths, &m, "x").is_err());
        assert_eq!(fs::read_to_string(&p).unwrap(), "# the user's edit\n");
    }

    #[test]
    fn templates() {
        assert_eq!(
            template("network_isolated").unwrap(),
            Template::NetworkIsolated
        );
        assert!(template("macvlan").is_err());
        assert!(template("bogus").is_err());
    }
}
