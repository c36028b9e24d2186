//! One module per command group; [`dispatch`] maps the parsed command line onto them.

pub mod address;
pub mod autoupdate;
pub mod health;
pub mod images;
pub mod info;
pub mod layers;
pub mod lifecycle;
pub mod migrate;
pub mod process;
pub mod pull;
pub mod remove;
pub mod shell;
pub mod snapshot;
pub mod stats;
pub mod usage;
pub mod verify;

use anyhow::Result;

use crate::cli::{
    AddressCommand, CacheCommand, Command, ImagesCommand, MachinesCommand, OciCommand,
};
use crate::{EXIT_OK, UsageError};

/// Run one command; returns the exit code for success paths that are not 0 (e.g. a shell's).
pub fn dispatch(command: Command) -> Result<u8> {
    match command {
        Command::Version => {
            println!("mbctl {}", env!("CARGO_PKG_VERSION"));
            Ok(EXIT_OK)
        }
        Command::Address(AddressCommand::Getsuffix(a)) => {
            let address = address::getsuffix(&a.name, a.prefix.as_deref())?;
            if a.labelled {
                println!("{}", address::labelled(&a.name, &address));
            } else {
                println!("{address}");
            }
            Ok(EXIT_OK)
        }
        Command::GenerateDocs(a) => {
            for f in crate::docs::generate(&a.man_dir, &a.completions_dir)? {
                println!("{f}");
            }
            Ok(EXIT_OK)
        }
        Command::Machines(m) => machines(m),
        Command::AutoUpdate(a) => autoupdate::auto_update(a.dry_run),
        Command::HealthMonitor(a) if a.after_stop => health::after_stop(&a.name),
        Command::HealthMonitor(a) => health::monitor(&a.name, a.check.as_deref(), a.leader_pid),
        Command::Verify(a) => verify::verify(&a.files),
        Command::Images(ImagesCommand::List(a)) => images::list(a.json),
        Command::Images(ImagesCommand::Prune) => images::prune(),
        Command::Cache(CacheCommand::Clear) => images::clear(),
        Command::Oci(OciCommand::Download(a)) => {
            images::download(&a.image, a.dir.as_deref(), a.keep_special)
        }
        Command::Migrate(a) => migrate::migrate(&a.name),
        Command::Import(a) => pull::import(&a.source, &a.reference, a.machine.as_deref()),
    }
}

fn machines(command: MachinesCommand) -> Result<u8> {
    use crate::bus::UnitJob;
    match command {
        MachinesCommand::Start(n) => lifecycle::job(&n.name, UnitJob::Start),
        MachinesCommand::Stop(n) => lifecycle::job(&n.name, UnitJob::Stop),
        MachinesCommand::Restart(n) => lifecycle::job(&n.name, UnitJob::Restart),
        MachinesCommand::Enable(a) => lifecycle::enable(&a.name, true, a.now),
        MachinesCommand::Disable(a) => lifecycle::enable(&a.name, false, a.now),
        MachinesCommand::Logs(a) => lifecycle::logs(&a.name, a.follow, a.lines),
        MachinesCommand::Shell(a) => {
            use crate::nsenter::Run;
            let what = match (a.command.as_deref(), a.shell_command.as_deref()) {
                (Some(c), _) => Run::Words(c),
                (None, Some(s)) => Run::ShellString(s),
                (None, None) => Run::LoginShell,
            };
            shell::shell(&a.name, what, a.leader_pid)
        }
        MachinesCommand::Exec(a) => shell::exec(&a),
        MachinesCommand::Stats(a) => stats::stats(&a.names, a.json),
        MachinesCommand::Remove(a) => remove::remove(&a.name, a.purge, a.force),
        MachinesCommand::List(a) if a.tree => info::tree(),
        MachinesCommand::List(a) => info::list(a.json),
        MachinesCommand::Status(a) => info::status(&a.name, a.json),
        MachinesCommand::Pull(a) => pull::pull(&pull::PullRequest {
            image: &a.image,
            name: &a.name,
            template: &a.template,
            volumes: &a.volumes,
            yes: a.yes,
            no_fetch: a.no_fetch,
            cached_only: false,
        }),
        MachinesCommand::Update(a) => pull::update(&a.name, a.force, a.reset),
        MachinesCommand::Rollback(a) => pull::rollback(&a.name, a.volumes),
        MachinesCommand::Diff(a) => layers::diff(&a.name, a.json),
        MachinesCommand::Reset(a) => layers::reset(&a.name, a.convert),
        MachinesCommand::Snapshot(a) => match a.prune {
            Some(keep) => snapshot::prune(&a.name, keep),
            None => snapshot::take(&a.name, a.stop, &a.only),
        },
        MachinesCommand::Snapshots(a) => snapshot::list(&a.name, a.json),
        MachinesCommand::Restore(a) => snapshot::restore(
            &a.name,
            &a.snapshot,
            &snapshot::RestoreOptions {
                only: a.only.clone(),
                keep_image: a.keep_image,
            },
        ),
        MachinesCommand::Ps(a) => process::ps(&a.name, a.json),
        MachinesCommand::Kill(a) => process::kill(&a),
        MachinesCommand::Health(a) => {
            health::health_now(&a.name, a.check.as_deref(), a.leader_pid, a.json)
        }
    }
}

/// A machine name from the command line, or a usage error naming why it is refused.
pub fn machine_name(name: &str) -> Result<man8s::MachineName> {
    man8s::MachineName::new(name).map_err(|e| UsageError(e.to_string()).into())
}

/// Parse an image reference; a bad one is a usage error.
pub fn image_ref(image: &str) -> Result<man8s_oci::ImageRef> {
    man8s_oci::ImageRef::parse(image).map_err(|e| UsageError(format!("{image:?}: {e}")).into())
}
