//! The command line, as clap definitions. Parsing only: every command's work lives in its module.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// mbctl — run OCI/Docker images as systemd-nspawn machines.
#[derive(Debug, Parser)]
#[command(
    name = "mbctl",
    version,
    about = "Run OCI/Docker images as systemd-nspawn machines (man8s)",
    propagate_version = true,
    after_help = "Example:\n  mbctl machines pull docker.io/library/redis:7 redis\n  mbctl machines start redis\n  mbctl machines list"
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create, inspect, start, stop, enter and remove machines.
    #[command(
        subcommand,
        after_help = "Example:\n  mbctl machines list\n  mbctl machines shell redis"
    )]
    Machines(MachinesCommand),
    /// Yggdrasil address tools.
    #[command(
        subcommand,
        after_help = "Example:\n  mbctl address getsuffix TestBWContainer3"
    )]
    Address(AddressCommand),
    /// Check machine declarations with the generator's own parser.
    #[command(
        after_help = "Example:\n  mbctl verify                               # every declaration on this host\n  mbctl verify /etc/man8s/machines/redis.machine"
    )]
    Verify(VerifyArgs),
    /// Import a `docker save` tarball, an OCI layout (dir or tar) or a `docker export` rootfs tarball.
    #[command(
        after_help = "Example:\n  mbctl import redis.tar --reference localhost/redis:7\n  mbctl import redis.tar --reference localhost/redis:7 --machine redis"
    )]
    Import(ImportArgs),
    /// Turn a machine made by the Python mbctl into a declaration under man8@NAME.
    #[command(after_help = "Example:\n  mbctl migrate TestBWContainer3")]
    Migrate(MigrateArgs),
    /// Images in the local cache.
    #[command(subcommand, after_help = "Example:\n  mbctl images list")]
    Images(ImagesCommand),
    /// The local image/blob cache.
    #[command(subcommand, after_help = "Example:\n  mbctl cache clear")]
    Cache(CacheCommand),
    /// OCI image tools.
    #[command(
        subcommand,
        after_help = "Example:\n  mbctl oci download docker.io/library/busybox:latest ./busybox-root"
    )]
    Oci(OciCommand),
    /// Print the version of mbctl.
    #[command(after_help = "Example:\n  mbctl version")]
    Version,
    /// Update every machine with AutoUpdate=registry whose tag names a new image; roll back image
    /// and volumes of any that does not come up healthy.
    #[command(
        after_help = "Run daily by man8s-auto-update.timer. Exit status 1 when an update failed.\n\nExample:\n  mbctl auto-update --dry-run\n  mbctl auto-update"
    )]
    AutoUpdate(AutoUpdateArgs),
    /// Run health checks of machine NAME for man8@NAME.service (its ExecStartPost=).
    #[command(hide = true, after_help = "Example:\n  mbctl health-monitor web")]
    HealthMonitor(HealthMonitorArgs),
    /// Write man pages and shell completions (used by `make docs`).
    #[command(
        hide = true,
        after_help = "Example:\n  mbctl generate-docs --man-dir build/man --completions-dir build/completions"
    )]
    GenerateDocs(GenerateDocsArgs),
}

/// A machine name argument, shared by the lifecycle commands.
#[derive(Debug, Args)]
pub struct NameArg {
    /// Machine name.
    pub name: String,
}

/// `mbctl machines …`
#[derive(Debug, Subcommand)]
pub enum MachinesCommand {
    /// Pull an image and create machine NAME from it (declaration, config dir, volumes, rootfs).
    #[command(
        after_help = "Example:\n  mbctl machines pull docker.io/registry:latest Man8Registry\n  mbctl machines pull ghcr.io/example/app:1 app --volume /data=data --volume /etc/app=config --yes"
    )]
    Pull(PullArgs),
    /// Open a shell (default `/bin/sh -l`) inside the running machine.
    #[command(
        after_help = "Example:\n  mbctl machines shell Man8Registry\n  mbctl machines shell Man8Registry --command 'ip -6 addr'\n  mbctl machines shell Man8Registry --shell-command 'ls /data | wc -l'"
    )]
    Shell(ShellArgs),
    /// Remove machine NAME (rootfs, declaration, generated files); config and data stay unless --purge.
    #[command(
        after_help = "Example:\n  mbctl machines remove Man8Registry\n  mbctl machines remove Man8Registry --force --purge"
    )]
    Remove(RemoveArgs),
    /// List machines: name, state, image and digest, Yggdrasil address, IPs.
    #[command(
        after_help = "Example:\n  mbctl machines list\n  mbctl machines list --json\n  mbctl machines list --tree   # Requires=/Wants=/After= between machines"
    )]
    List(ListArgs),
    /// Show one machine in detail.
    #[command(
        after_help = "Example:\n  mbctl machines status redis\n  mbctl machines status redis --json"
    )]
    Status(StatusArgs),
    /// Start man8@NAME.service and wait for it to be up.
    #[command(after_help = "Example:\n  mbctl machines start redis")]
    Start(NameArg),
    /// Stop man8@NAME.service.
    #[command(after_help = "Example:\n  mbctl machines stop redis")]
    Stop(NameArg),
    /// Restart man8@NAME.service.
    #[command(after_help = "Example:\n  mbctl machines restart redis")]
    Restart(NameArg),
    /// Start machine NAME at boot (enables man8@NAME.service).
    #[command(
        after_help = "Example:\n  mbctl machines enable redis\n  mbctl machines enable --now redis"
    )]
    Enable(EnableArgs),
    /// Do not start machine NAME at boot.
    #[command(
        after_help = "Example:\n  mbctl machines disable redis\n  mbctl machines disable --now redis"
    )]
    Disable(EnableArgs),
    /// Show the journal of man8@NAME.service.
    #[command(after_help = "Example:\n  mbctl machines logs redis\n  mbctl machines logs redis -f")]
    Logs(LogsArgs),
    /// List the processes of a running machine, with host and machine PIDs.
    #[command(after_help = "Example:\n  mbctl machines ps redis")]
    Ps(PsArgs),
    /// Send a signal to the app of a running machine (PID 2 inside), or stop it as its unit does.
    #[command(
        after_help = "Example:\n  mbctl machines kill redis --signal HUP\n  mbctl machines kill pg --stop            # its StopSignal, 10 s, then SIGKILL"
    )]
    Kill(KillArgs),
    /// Run a program in a running machine (argv, no shell), as the image's user in its working
    /// directory with its environment, like `podman exec`; the exit status is the program's.
    #[command(
        after_help = "Exit status: the program's; 126 when it cannot be run, 127 when it is not found.\n\nExample:\n  mbctl machines exec pg -- psql -c 'select 1'\n  mbctl machines exec --user root --workdir /etc web -- ls -l\n  mbctl machines exec -e LANG=C app -- env"
    )]
    Exec(ExecArgs),
    /// CPU, memory, tasks and network bytes of running machines, once (like `podman stats --no-stream`).
    #[command(
        after_help = "CPU % is measured over one second.\n\nExample:\n  mbctl machines stats\n  mbctl machines stats pg web --json"
    )]
    Stats(StatsArgs),
    /// Pull the image again per the declaration, snapshot the volumes, swap the rootfs, restart;
    /// roll back image and volumes if it fails to start.
    #[command(
        after_help = "Example:\n  mbctl machines update redis\n  mbctl machines update --force redis   # fresh rootfs even when up to date"
    )]
    Update(UpdateArgs),
    /// Go back to the image NAME ran before its last update (kept by the update: instant for a
    /// layered machine); a running machine is restarted on it. Volumes stay unless --volumes.
    #[command(
        after_help = "Refused (exit status 1) when the last update kept no previous image or was rolled back already.\n\nExample:\n  mbctl machines rollback redis\n  mbctl machines rollback redis --volumes   # data as it was before the update, too"
    )]
    Rollback(RollbackArgs),
    /// Snapshot the state of NAME: its config and data dirs and, when layered, its writable
    /// layer (a btrfs snapshot, else reflinks, else a copy); with --prune, remove old snapshots.
    #[command(
        after_help = "A running machine is frozen (cgroup freezer) while its files are copied; --stop stops it instead.\nSnapshots live in /var/lib/man8s/snapshots/NAME/.\n\nExample:\n  mbctl machines snapshot redis\n  mbctl machines snapshot redis --only rw\n  mbctl machines snapshot redis --prune=2"
    )]
    Snapshot(SnapshotArgs),
    /// List the snapshots of NAME.
    #[command(
        after_help = "Example:\n  mbctl machines snapshots redis\n  mbctl machines snapshots redis --json"
    )]
    Snapshots(StatusArgs),
    /// Put the state of a stopped machine back as snapshot SNAP was (each part it holds); the
    /// current state is snapshotted first.
    #[command(
        after_help = "Refused (exit status 1) while NAME runs, and when SNAP's writable layer was taken on another image than NAME runs now (after an update): --only config,storage restores the rest, --keep-image puts the layer on the current image anyway.\n\nExample:\n  mbctl machines stop redis\n  mbctl machines restore redis 20261201T221500Z\n  mbctl machines start redis"
    )]
    Restore(RestoreArgs),
    /// Run the health check of NAME once now (HealthCmd= or the image's HEALTHCHECK).
    #[command(
        after_help = "Exit status 0 when healthy, 1 when not.\n\nExample:\n  mbctl machines health web\n  mbctl machines health web --check http://127.0.0.1:8080/healthz"
    )]
    Health(HealthArgs),
    /// What NAME changed against its image (a layered machine's own writable layer): A added,
    /// C changed, D deleted.
    #[command(
        after_help = "Example:\n  mbctl machines diff redis\n  mbctl machines diff redis --json"
    )]
    Diff(StatusArgs),
    /// Drop what stopped machine NAME changed in its root (its writable layer); config and
    /// volumes stay. --convert makes it again from its image, layered or a full copy as the
    /// host chooses now (SharedLayers=), dropping its own changes.
    #[command(
        after_help = "Example:\n  mbctl machines stop redis\n  mbctl machines reset redis\n  mbctl machines reset --convert redis   # a full copy made before shared layers"
    )]
    Reset(ResetArgs),
}

/// `machines reset`
#[derive(Debug, Args)]
pub struct ResetArgs {
    /// Machine name.
    pub name: String,
    /// Make the root again from the image: shared layers, or a full copy where SharedLayers=no
    /// or layers cannot work.
    #[arg(long)]
    pub convert: bool,
}

/// `machines health`
#[derive(Debug, Args)]
pub struct HealthArgs {
    /// Machine name.
    pub name: String,
    /// Run this check instead of the machine's (a HealthCmd= value).
    #[arg(long, value_name = "HEALTHCMD")]
    pub check: Option<String>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// Check in the namespaces of this PID instead of asking machined for the leader (tests).
    #[arg(long, hide = true)]
    pub leader_pid: Option<i32>,
}

/// `auto-update`
#[derive(Debug, Args)]
pub struct AutoUpdateArgs {
    /// Only list machine, current digest and new digest; change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// `health-monitor` (run by man8@.service)
#[derive(Debug, Args)]
pub struct HealthMonitorArgs {
    /// Machine name.
    pub name: String,
    /// Run this check instead of the machine's (a HealthCmd= value).
    #[arg(long, value_name = "HEALTHCMD")]
    pub check: Option<String>,
    /// Check in the namespaces of this PID instead of asking machined for the leader (tests).
    #[arg(long)]
    pub leader_pid: Option<i32>,
    /// Run no check: after the machine stopped (its ExecStopPost=), say again in STATUS= why
    /// this run of the unit turned unhealthy (nspawn's own last STATUS= would hide it).
    #[arg(long, conflicts_with_all = ["check", "leader_pid"])]
    pub after_stop: bool,
}

/// `machines snapshot`
#[derive(Debug, Args)]
pub struct SnapshotArgs {
    /// Machine name.
    pub name: String,
    /// Stop a running machine while copying (and start it again) instead of freezing it.
    #[arg(long)]
    pub stop: bool,
    /// Take no snapshot; remove all but the newest KEEP (default 3).
    #[arg(long, value_name = "KEEP", num_args = 0..=1, default_missing_value = "3")]
    pub prune: Option<usize>,
    /// Only these parts: config, storage (data volumes), rw (a layered machine's writable layer).
    #[arg(long, value_name = "PART,…", value_delimiter = ',', value_parser = crate::cmd::snapshot::PART_NAMES)]
    pub only: Vec<String>,
}

/// `machines restore`
#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// Machine name.
    pub name: String,
    /// Snapshot ID (see `mbctl machines snapshots NAME`).
    pub snapshot: String,
    /// Only these parts of the snapshot: config, storage, rw.
    #[arg(long, value_name = "PART,…", value_delimiter = ',', value_parser = crate::cmd::snapshot::PART_NAMES)]
    pub only: Vec<String>,
    /// Put the writable layer back even though it was taken on another image than NAME runs now.
    #[arg(long)]
    pub keep_image: bool,
}

/// `machines ps`
#[derive(Debug, Args)]
pub struct PsArgs {
    /// Machine name.
    pub name: String,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `machines kill`
#[derive(Debug, Args)]
pub struct KillArgs {
    /// Machine name.
    pub name: String,
    /// Signal: a name (`HUP`, `SIGINT`), a number, or `SIGRTMIN+N`. Default SIGTERM; with --stop,
    /// the declaration's StopSignal=, else the image's, else SIGTERM. Empty means the default.
    #[arg(long, short = 's', default_value = "")]
    pub signal: String,
    /// Stop the app as `systemctl stop` does: the stop signal, wait --timeout, then SIGKILL.
    #[arg(long)]
    pub stop: bool,
    /// With --stop: seconds to wait for the app to exit before SIGKILL (default 10, Docker's).
    /// Empty means the default.
    #[arg(long, default_value = "")]
    pub timeout: String,
    /// The unit's main process (nspawn), as ExecStop= passes `$MAINPID`; default: ask machined.
    #[arg(long, hide = true, default_value = "")]
    pub main_pid: String,
}

/// `machines exec`
#[derive(Debug, Args)]
pub struct ExecArgs {
    /// Machine name.
    pub name: String,
    /// User (`NAME`, `UID`, `NAME:GROUP`, `UID:GID`, resolved in the machine's /etc/passwd);
    /// default: the declaration's User=, else the image's, else root.
    #[arg(long, short = 'u')]
    pub user: Option<String>,
    /// Working directory inside the machine; default: the declaration's WorkingDirectory=, else
    /// the image's WorkingDir, else /.
    #[arg(long, short = 'w')]
    pub workdir: Option<String>,
    /// Set a variable for the program (repeatable), over the image's Env and Environment=.
    #[arg(long = "env", short = 'e', value_name = "NAME=VALUE")]
    pub env: Vec<String>,
    /// The program and its arguments (after `--`); a name without `/` is looked up in PATH.
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
    /// Enter the namespaces of this PID instead of asking machined for the leader (tests).
    #[arg(long, hide = true)]
    pub leader_pid: Option<i32>,
}

/// `machines stats`
#[derive(Debug, Args)]
pub struct StatsArgs {
    /// Machine names; default: every running machine.
    pub names: Vec<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `machines update`
#[derive(Debug, Args)]
pub struct UpdateArgs {
    /// Machine name.
    pub name: String,
    /// Reinstall the rootfs from the image and restart even when the registry has nothing newer.
    #[arg(long)]
    pub force: bool,
    /// Layered machine: drop its own writable layer with the old image (default: keep it).
    #[arg(long)]
    pub reset: bool,
}

/// `machines rollback`
#[derive(Debug, Args)]
pub struct RollbackArgs {
    /// Machine name.
    pub name: String,
    /// Put the config and data volumes back as the update's snapshot holds them too (what they
    /// hold now is snapshotted first).
    #[arg(long)]
    pub volumes: bool,
}

/// `machines enable|disable`
#[derive(Debug, Args)]
pub struct EnableArgs {
    /// Machine name.
    pub name: String,
    /// Also start (enable) or stop (disable) it now, like `systemctl enable --now`.
    #[arg(long)]
    pub now: bool,
}

/// `--json`
#[derive(Debug, Args)]
pub struct JsonArg {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `machines list`
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Print JSON instead of a table.
    #[arg(long, conflicts_with = "tree")]
    pub json: bool,
    /// Show the dependency graph (Requires=, Wants=, After=) instead of the table.
    #[arg(long)]
    pub tree: bool,
}

/// `machines status`
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Machine name.
    pub name: String,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// `machines pull`
#[derive(Debug, Args)]
pub struct PullArgs {
    /// Image reference (`redis`, `docker.io/library/redis:7`, `host:port/repo@sha256:…`).
    pub image: String,
    /// Name of the new machine.
    pub name: String,
    /// Network template of the machine.
    #[arg(long, default_value = "network_isolated")]
    pub template: String,
    /// Answer for one image volume: `PATH=config`, `PATH=data`, `PATH=skip` or `PATH=/host/path`.
    #[arg(long = "volume", value_name = "PATH=WHERE")]
    pub volumes: Vec<String>,
    /// Do not ask: volumes without a --volume answer become `data` volumes.
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Write the declaration and config dir only; do not pull the image now.
    #[arg(long)]
    pub no_fetch: bool,
}

/// `machines shell`
#[derive(Debug, Args)]
pub struct ShellArgs {
    /// Machine name.
    pub name: String,
    /// Run this command instead of a login shell: split at white space and run directly, without
    /// a shell (as the Python mbctl did); a program name is looked up in the default PATH.
    #[arg(long, short = 'c', conflicts_with = "shell_command")]
    pub command: Option<String>,
    /// Run this string with `/bin/sh -c` (quotes, pipes, `$VAR`…) instead of a login shell.
    #[arg(long, value_name = "STRING")]
    pub shell_command: Option<String>,
    /// Enter the namespaces of this PID instead of asking machined for the leader (tests).
    #[arg(long, hide = true)]
    pub leader_pid: Option<i32>,
}

/// `machines remove`
#[derive(Debug, Args)]
pub struct RemoveArgs {
    /// Machine name.
    pub name: String,
    /// Also delete the config dir and the data dir.
    #[arg(long)]
    pub purge: bool,
    /// Stop the machine first if it is running.
    #[arg(long)]
    pub force: bool,
}

/// `machines logs`
#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Machine name.
    pub name: String,
    /// Keep printing new entries.
    #[arg(long, short = 'f')]
    pub follow: bool,
    /// Number of most recent lines to show.
    #[arg(long, short = 'n')]
    pub lines: Option<u32>,
}

/// `mbctl address …`
#[derive(Debug, Subcommand)]
pub enum AddressCommand {
    /// Print the Yggdrasil suffix of a machine name (`::1d44:bc13:a177:c4d`), or its full address with --prefix.
    #[command(
        after_help = "Example:\n  mbctl address getsuffix TestBWContainer3\n  mbctl address getsuffix TestBWContainer3 --prefix 300:2e98:a4b0:1789::/64\n  mbctl address getsuffix TestBWContainer3 --labelled"
    )]
    Getsuffix(GetsuffixArgs),
}

/// `address getsuffix`
#[derive(Debug, Args)]
pub struct GetsuffixArgs {
    /// Machine name (any string; hashed as UTF-8).
    pub name: String,
    /// Subnet (`300:…::/64`): print the machine's full address in it.
    #[arg(long, value_name = "PREFIX/LEN")]
    pub prefix: Option<String>,
    /// Print the Python mbctl's two labelled lines (container name, IPv6 suffix address), which
    /// its users' scripts parse, instead of the address alone.
    #[arg(long)]
    pub labelled: bool,
}

/// `verify`
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Declaration files; default: every declaration in the search directories.
    pub files: Vec<PathBuf>,
}

/// `import`
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// `docker save` tarball, OCI layout directory or tarball, or `docker export` rootfs tarball.
    pub source: PathBuf,
    /// Reference to record the image under (`localhost/NAME:TAG`).
    #[arg(long)]
    pub reference: String,
    /// Also create machine NAME from the imported image.
    #[arg(long, value_name = "NAME")]
    pub machine: Option<String>,
}

/// `migrate`
#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// Name of the machine made by the Python mbctl.
    pub name: String,
}

/// `mbctl images …`
#[derive(Debug, Subcommand)]
pub enum ImagesCommand {
    /// List cached images.
    #[command(after_help = "Example:\n  mbctl images list\n  mbctl images list --json")]
    List(JsonArg),
    /// Delete cached images and blobs no machine uses.
    #[command(after_help = "Example:\n  mbctl images prune")]
    Prune,
}

/// `mbctl cache …`
#[derive(Debug, Subcommand)]
pub enum CacheCommand {
    /// Empty the image/blob cache (machines keep their rootfs).
    #[command(after_help = "Example:\n  mbctl cache clear")]
    Clear,
}

/// `mbctl oci …`
#[derive(Debug, Subcommand)]
pub enum OciCommand {
    /// Download an image's rootfs into DIR (plus its config as DIR/.man8s/image.json).
    #[command(
        after_help = "Example:\n  mbctl oci download docker.io/registry:latest ./registry-root\n  mbctl oci download docker.io/registry:latest          # into ./registry"
    )]
    Download(DownloadArgs),
}

/// `oci download`
#[derive(Debug, Args)]
pub struct DownloadArgs {
    /// Image reference.
    pub image: String,
    /// Target directory (created; must be empty if it exists). Default: the image's name in the
    /// current directory (`./registry` for `docker.io/registry:latest`), as the Python tool's README shows.
    pub dir: Option<PathBuf>,
    /// Keep setuid/setgid bits and device nodes' permissions as the image has them; DIR is then
    /// made mode 0700, so that no other user of the host reaches them. Without it they are
    /// stripped (setuid/setgid bits removed, device nodes owner-only), and mbctl says how many.
    #[arg(long)]
    pub keep_special: bool,
}

/// `generate-docs`
#[derive(Debug, Args)]
pub struct GenerateDocsArgs {
    /// Where to write `mbctl.1` and one page per subcommand.
    #[arg(long)]
    pub man_dir: PathBuf,
    /// Where to write `mbctl.bash`, `_mbctl` and `mbctl.fish`.
    #[arg(long)]
    pub completions_dir: PathBuf,
}
