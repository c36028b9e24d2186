//! The model of one declared machine, as read from `NAME.machine` (+ drop-ins) by
//! [`crate::declaration`]. Every value here has been validated; consumers (generator, fetch helper,
//! init, CLI) use it as is and never re-parse the declaration.

use std::fmt;
use std::net::Ipv6Addr;
use std::path::{Path, PathBuf};

use crate::{MachineName, Paths};

/// The files a machine was read from (canonical paths, as the running system names them).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct SourceFiles {
    /// The main `NAME.machine` file.
    pub main: PathBuf,
    /// Drop-ins `NAME.machine.d/*.conf`, in the order they were applied.
    pub dropins: Vec<PathBuf>,
}

/// One machine declaration, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Machine {
    /// The machine name (file name without `.machine`).
    pub name: MachineName,
    /// Where it was declared.
    pub source: SourceFiles,
    /// `Image=`: the OCI reference as written (syntax checked; normalising `redis` to
    /// `docker.io/library/redis:latest` is `man8s-oci`'s job).
    pub image: String,
    /// `Exec=`: a shell-style command line replacing the image's Cmd (its Entrypoint stays, as
    /// with Quadlet's `Exec=` and `docker run IMAGE ARGS…`).
    pub exec: Option<String>,
    /// `Environment=`: unquoted `(name, value)` pairs, in declaration order.
    pub environment: Vec<(String, String)>,
    /// `EnvironmentFile=`: absolute host paths, in declaration order.
    pub environment_files: Vec<PathBuf>,
    /// `EnvironmentCompat=`: how the machine's man8env.env is read (literal by default;
    /// `python-mbctl` for machines migrated from the Python tool).
    pub environment_compat: crate::envfile::Mode,
    /// `WorkingDirectory=`: absolute path inside the machine.
    pub working_directory: Option<String>,
    /// `User=`: `name`, `uid`, `name:group` or `uid:gid`, resolved inside the image.
    pub user: Option<String>,
    /// `Volume=`, in declaration order.
    pub volumes: Vec<Volume>,
    /// `Port=`, in declaration order.
    pub ports: Vec<Port>,
    /// `Template=`.
    pub template: Template,
    /// `Pull=`.
    pub pull: PullPolicy,
    /// `[Network]`.
    pub network: Network,
    /// `[Resources]`.
    pub resources: Resources,
    /// `LoadCredential=`, `LoadCredentialEncrypted=`, `SetCredential=`, `SetCredentialEncrypted=`.
    pub credentials: Vec<Credential>,
    /// `[Install]`.
    pub install: Install,
    /// How the app is started, stopped and confined (`Entrypoint=`, `StopSignal=`, …).
    pub runtime: Runtime,
    /// `Requires=`, `Wants=`, `After=`: other machines of this host.
    pub dependencies: Dependencies,
    /// `Link=NAME[:ALIAS]`: names this machine resolves (see [`crate::mesh::Link`]).
    pub links: Vec<crate::mesh::Link>,
    /// `HealthCmd=`, `HealthInterval=`… and `Notify=healthy` (see [`crate::health`]).
    pub health: crate::health::HealthSettings,
    /// `AutoUpdate=registry`: `mbctl auto-update` may update this machine.
    pub auto_update: bool,
}

/// `Requires=`, `Wants=`, `After=` of `[Machine]`: dependencies on `man8@NAME.service` of other
/// machines on this host. `Requires=` and `Wants=` imply `After=` (a machine that needs another
/// needs it up first); cycles and unknown names are found by the generator, which sees them all.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Dependencies {
    /// Started with this one; this one fails when it fails or stops.
    pub requires: Vec<MachineName>,
    /// Started with this one; its failure does not matter.
    pub wants: Vec<MachineName>,
    /// Only ordering: if both start, these first.
    pub after: Vec<MachineName>,
}

impl Dependencies {
    /// Every machine this one is ordered after (the union of the three lists, sorted, unique).
    pub fn ordered_after(&self) -> Vec<&MachineName> {
        let mut all: Vec<&MachineName> = self
            .requires
            .iter()
            .chain(&self.wants)
            .chain(&self.after)
            .collect();
        all.sort();
        all.dedup();
        all
    }
}

/// The run-time keys of `[Machine]` (Quadlet's names and meanings).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Runtime {
    /// `Entrypoint=`: replaces the image's Entrypoint (and, as in Docker, drops its Cmd unless
    /// `Exec=` gives one); `Some(empty)` clears it.
    pub entrypoint: Option<Vec<String>>,
    /// `StopSignal=`: what `systemctl stop` sends the app (default: the image's StopSignal, else
    /// SIGTERM).
    pub stop_signal: Option<crate::signal::Signal>,
    /// `StopTimeout=`: seconds the app gets after its stop signal before SIGKILL.
    pub stop_timeout: Option<u64>,
    /// `ReloadSignal=`: what `systemctl reload` sends the app (default SIGHUP).
    pub reload_signal: Option<crate::signal::Signal>,
    /// `AddCapability=`: capabilities added to [`DEFAULT_CAPABILITIES`] (`CAP_…` names, sorted).
    pub add_capabilities: Vec<String>,
    /// `DropCapability=`: capabilities removed from it (`CAP_…` names, sorted; `ALL` drops all).
    pub drop_capabilities: Vec<String>,
    /// `NoNewPrivileges=`.
    pub no_new_privileges: bool,
    /// `SystemCallFilter=`: systemd syntax, one entry per assignment, in order.
    pub system_call_filter: Vec<String>,
    /// `ReadOnly=`: the root file system is mounted read-only (volumes stay as declared).
    pub read_only: bool,
    /// `Tmpfs=PATH[:OPTIONS]`, in order.
    pub tmpfs: Vec<Tmpfs>,
    /// `ShmSize=`: size of `/dev/shm` (systemd size syntax, e.g. `256M`).
    pub shm_size: Option<String>,
    /// `Ulimit=TYPE=SOFT[:HARD]`: (nspawn `Limit…=` key, value), in the order of [`ULIMITS`].
    pub ulimits: Vec<(String, String)>,
    /// `Sysctl=NAME=VALUE` (network namespace ones: `net.…`), in order.
    pub sysctls: Vec<(String, String)>,
    /// `Hostname=`.
    pub hostname: Option<String>,
    /// `Timezone=`: `local` (the host's) or a zone name such as `Europe/Berlin`.
    pub timezone: Option<String>,
    /// `AddDevice=HOST[:CONTAINER][:PERMISSIONS]`, in order.
    pub devices: Vec<Device>,
    /// `Label=KEY=VALUE…`: the machine's labels (metadata for people and tools; `mbctl machines
    /// status` and `list --json` show them), in the order first given.
    pub labels: Vec<(String, String)>,
}

/// `Tmpfs=PATH[:OPTIONS]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tmpfs {
    /// Absolute path inside the machine.
    pub path: String,
    /// Mount options (`size=64m,mode=1777`), empty for nspawn's defaults.
    pub options: String,
}

/// `AddDevice=HOST[:CONTAINER][:PERMISSIONS]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Device {
    /// The device node on the host (`/dev/fuse`).
    pub host: String,
    /// Where it appears in the machine (default: the same path).
    pub container: String,
    /// `r`, `w`, `m` as in `DeviceAllow=` (default `rwm`).
    pub permissions: String,
}

/// Capabilities the app's root has by default: Docker's default set, which images are built
/// for, plus `CAP_NET_ADMIN`, which nspawn grants with a private network. nspawn's own default
/// adds CAP_AUDIT_CONTROL, CAP_DAC_READ_SEARCH, CAP_IPC_OWNER, CAP_LEASE, CAP_LINUX_IMMUTABLE,
/// CAP_NET_BROADCAST, CAP_SYS_ADMIN, CAP_SYS_BOOT, CAP_SYS_NICE, CAP_SYS_PTRACE,
/// CAP_SYS_RESOURCE and CAP_SYS_TTY_CONFIG: the init keeps them for its own set-up (READY=1 on
/// the stub's behalf needs CAP_SYS_ADMIN) and drops them from the bounding set right before it
/// executes the app, unless `AddCapability=` names them.
pub const DEFAULT_CAPABILITIES: &[&str] = &[
    "CAP_AUDIT_WRITE",
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_MKNOD",
    "CAP_NET_ADMIN",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_RAW",
    "CAP_SETFCAP",
    "CAP_SETGID",
    "CAP_SETPCAP",
    "CAP_SETUID",
    "CAP_SYS_CHROOT",
];

/// Linux capabilities and their numbers (capabilities(7), linux/capability.h).
pub const CAPABILITIES: &[(&str, u8)] = &[
    ("CAP_CHOWN", 0),
    ("CAP_DAC_OVERRIDE", 1),
    ("CAP_DAC_READ_SEARCH", 2),
    ("CAP_FOWNER", 3),
    ("CAP_FSETID", 4),
    ("CAP_KILL", 5),
    ("CAP_SETGID", 6),
    ("CAP_SETUID", 7),
    ("CAP_SETPCAP", 8),
    ("CAP_LINUX_IMMUTABLE", 9),
    ("CAP_NET_BIND_SERVICE", 10),
    ("CAP_NET_BROADCAST", 11),
    ("CAP_NET_ADMIN", 12),
    ("CAP_NET_RAW", 13),
    ("CAP_IPC_LOCK", 14),
    ("CAP_IPC_OWNER", 15),
    ("CAP_SYS_MODULE", 16),
    ("CAP_SYS_RAWIO", 17),
    ("CAP_SYS_CHROOT", 18),
    ("CAP_SYS_PTRACE", 19),
    ("CAP_SYS_PACCT", 20),
    ("CAP_SYS_ADMIN", 21),
    ("CAP_SYS_BOOT", 22),
    ("CAP_SYS_NICE", 23),
    ("CAP_SYS_RESOURCE", 24),
    ("CAP_SYS_TIME", 25),
    ("CAP_SYS_TTY_CONFIG", 26),
    ("CAP_MKNOD", 27),
    ("CAP_LEASE", 28),
    ("CAP_AUDIT_WRITE", 29),
    ("CAP_AUDIT_CONTROL", 30),
    ("CAP_SETFCAP", 31),
    ("CAP_MAC_OVERRIDE", 32),
    ("CAP_MAC_ADMIN", 33),
    ("CAP_SYSLOG", 34),
    ("CAP_WAKE_ALARM", 35),
    ("CAP_BLOCK_SUSPEND", 36),
    ("CAP_AUDIT_READ", 37),
    ("CAP_PERFMON", 38),
    ("CAP_BPF", 39),
    ("CAP_CHECKPOINT_RESTORE", 40),
];

/// What nspawn grants beyond [`DEFAULT_CAPABILITIES`] (see there), dropped by default.
pub const NSPAWN_EXTRA_CAPABILITIES: &[&str] = &[
    "CAP_AUDIT_CONTROL",
    "CAP_DAC_READ_SEARCH",
    "CAP_IPC_OWNER",
    "CAP_LEASE",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BROADCAST",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_PTRACE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TTY_CONFIG",
];

/// `Ulimit=` types (Docker's and Podman's names) and the nspawn setting each becomes.
pub const ULIMITS: &[(&str, &str)] = &[
    ("as", "LimitAS"),
    ("core", "LimitCORE"),
    ("cpu", "LimitCPU"),
    ("data", "LimitDATA"),
    ("fsize", "LimitFSIZE"),
    ("locks", "LimitLOCKS"),
    ("memlock", "LimitMEMLOCK"),
    ("msgqueue", "LimitMSGQUEUE"),
    ("nice", "LimitNICE"),
    ("nofile", "LimitNOFILE"),
    ("nproc", "LimitNPROC"),
    ("rss", "LimitRSS"),
    ("rtprio", "LimitRTPRIO"),
    ("rttime", "LimitRTTIME"),
    ("sigpending", "LimitSIGPENDING"),
    ("stack", "LimitSTACK"),
];

/// The capabilities the app's bounding set keeps: [`DEFAULT_CAPABILITIES`] plus `add`, minus
/// `drop` (`ALL` in `drop` removes everything). Pure: capability numbers, sorted.
pub fn app_capabilities(add: &[&str], drop: &[&str]) -> Vec<u8> {
    let all = drop.iter().any(|d| d.eq_ignore_ascii_case("ALL"));
    let mut keep: Vec<u8> = CAPABILITIES
        .iter()
        .filter(|(name, _)| DEFAULT_CAPABILITIES.contains(name) || add.contains(name))
        .filter(|(name, _)| !all && !drop.contains(name))
        .map(|(_, n)| *n)
        .collect();
    keep.sort_unstable();
    keep
}

/// Seconds an app gets between its stop signal and SIGKILL when nothing says otherwise (Docker's
/// default).
pub const DEFAULT_STOP_TIMEOUT: u64 = 10;

/// Where a volume's host side lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VolumeSource {
    /// `config`: under `/var/lib/man8machine_configs/NAME/`.
    Config,
    /// `data`: under `/var/lib/man8machine_storage/NAME/`.
    Data,
    /// An absolute host path.
    Host(PathBuf),
    /// `+/PATH`: a directory of the machine's own root file system (nspawn's `+` bind source,
    /// which `mbctl migrate` carries over), resolved inside the root without following symlinks.
    /// It belongs to the rootfs: `machines update` replaces it with the new image's.
    Root(String),
}

/// `Volume=CONTAINER_PATH:config|data|/host/path|+/path/in/root[:ro]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Volume {
    /// Absolute path inside the machine (normalised: no trailing or doubled `/`).
    pub container_path: String,
    /// Host side.
    pub source: VolumeSource,
    /// `:ro` was given.
    pub read_only: bool,
}

impl Volume {
    /// The canonical host path bound at [`Self::container_path`]: `config` →
    /// `/var/lib/man8machine_configs/NAME/<container path>`, `data` →
    /// `/var/lib/man8machine_storage/NAME/<container path>`, a host path as is.
    pub fn host_path(&self, name: &MachineName) -> PathBuf {
        let relative = self.container_path.trim_start_matches('/');
        match &self.source {
            VolumeSource::Config => Paths::config_dir_canonical(name).join(relative),
            VolumeSource::Data => Paths::storage_dir_canonical(name).join(relative),
            VolumeSource::Host(p) => p.clone(),
            VolumeSource::Root(p) => Paths::rootfs_canonical(name).join(p.trim_start_matches('/')),
        }
    }
}

/// Transport protocol of a forwarded port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    /// TCP (the default).
    Tcp,
    /// UDP.
    Udp,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        })
    }
}

/// `Port=[tcp:|udp:]HOSTPORT:CONTAINERPORT`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Port {
    /// Protocol.
    pub protocol: Protocol,
    /// Port on the host (1–65535).
    pub host: u16,
    /// Port in the machine (1–65535).
    pub container: u16,
}

impl fmt::Display for Port {
    /// nspawn's `Port=` syntax: `tcp:8080:80`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.protocol, self.host, self.container)
    }
}

/// `Template=`: how the machine is wired to the network.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Template {
    /// A veth on the Yggdrasil bridge (`[Network] Bridge=`), as the Python tool's template.
    #[default]
    NetworkIsolated,
    /// A MACVLAN interface on a host interface (`[Network] MACVLAN=IFACE`).
    Macvlan,
}

impl Template {
    /// The name used in declarations and in `MAN8S_CONTAINER_TEMPLATE`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Template::NetworkIsolated => "network_isolated",
            Template::Macvlan => "macvlan",
        }
    }
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `Pull=`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum PullPolicy {
    /// Pull only when no rootfs exists (default).
    #[default]
    Missing,
    /// Check the registry on every start.
    Always,
    /// Never contact a registry; fail if the rootfs is missing.
    Never,
}

impl PullPolicy {
    /// The name used in declarations.
    pub fn as_str(&self) -> &'static str {
        match self {
            PullPolicy::Missing => "missing",
            PullPolicy::Always => "always",
            PullPolicy::Never => "never",
        }
    }
}

/// `[Network] YggdrasilAddress=`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum YggdrasilAddress {
    /// Derived from the host's Yggdrasil subnet and the machine name (default).
    #[default]
    Auto,
    /// No Yggdrasil address.
    No,
    /// This address.
    Fixed(Ipv6Addr),
}

impl YggdrasilAddress {
    /// The address machine `name` gets: derived from the host's `subnet` (when known) for
    /// `Auto`, the given one for `Fixed`, none for `No`. The one place this choice is made.
    pub fn resolve(self, name: &str, subnet: Option<ipnet::Ipv6Net>) -> Option<Ipv6Addr> {
        match self {
            Self::Auto => subnet.map(|s| crate::address::machine_address(s, name)),
            Self::Fixed(a) => Some(a),
            Self::No => None,
        }
    }
}

/// `[Network]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Network {
    /// `Bridge=`, used by `Template=network_isolated`; `None` means the host's bridge
    /// (`[Bridge] Name=` in man8s.conf, `srvgrp0` by default: see [`Network::bridge_or`]).
    pub bridge: Option<String>,
    /// `YggdrasilAddress=`.
    pub yggdrasil: YggdrasilAddress,
    /// `MACVLAN=`: host interface, required by `Template=macvlan`.
    pub macvlan: Option<String>,
    /// `Expose=`: ports open to everyone (see [`crate::mesh`]).
    pub expose: Vec<crate::mesh::Exposed>,
    /// `AllowFrom=`: peers that reach every port (IPv6 and `@HOST` only).
    pub allow_from: Vec<crate::mesh::AllowSource>,
}

impl Network {
    /// The bridge to attach to: `Bridge=` when given, else `host_bridge` (man8s.conf's).
    pub fn bridge_or<'a>(&'a self, host_bridge: &'a str) -> &'a str {
        self.bridge.as_deref().unwrap_or(host_bridge)
    }
}

impl Default for Network {
    fn default() -> Self {
        Self {
            bridge: None,
            yggdrasil: YggdrasilAddress::Auto,
            macvlan: None,
            expose: Vec::new(),
            allow_from: Vec::new(),
        }
    }
}

/// `[Resources]`: values are validated and kept in systemd's syntax, applied to `man8@NAME.service`
/// (but `DiskMax=`, which man8s applies itself).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Resources {
    /// `MemoryMax=` (bytes with K/M/G/T/P/E suffix, a percentage, or `infinity`).
    pub memory_max: Option<String>,
    /// `CPUQuota=` (a percentage, may exceed 100%).
    pub cpu_quota: Option<String>,
    /// `TasksMax=` (a number, a percentage, or `infinity`).
    pub tasks_max: Option<String>,
    /// `DiskMax=`: bytes the machine's writable layer may hold (man8s's own key, not the unit's:
    /// man8s-fetch sets a btrfs qgroup limit before each start).
    pub disk_max: Option<u64>,
}

/// A secret handed to the machine as a systemd credential (the app finds it in
/// `$CREDENTIALS_DIRECTORY/ID`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Credential {
    /// `LoadCredential=ID:PATH`.
    Load {
        /// Credential name.
        id: String,
        /// Absolute host path (or an `AF_UNIX` socket), read by the service manager.
        path: PathBuf,
    },
    /// `LoadCredentialEncrypted=ID:PATH` (made with `systemd-creds encrypt`).
    LoadEncrypted {
        /// Credential name.
        id: String,
        /// Absolute host path.
        path: PathBuf,
    },
    /// `SetCredential=ID:VALUE`.
    Set {
        /// Credential name.
        id: String,
        /// The literal value.
        value: String,
    },
    /// `SetCredentialEncrypted=ID:BASE64`.
    SetEncrypted {
        /// Credential name.
        id: String,
        /// Encrypted, base64-encoded value.
        value: String,
    },
}

impl Credential {
    /// The credential name.
    pub fn id(&self) -> &str {
        match self {
            Credential::Load { id, .. }
            | Credential::LoadEncrypted { id, .. }
            | Credential::Set { id, .. }
            | Credential::SetEncrypted { id, .. } => id,
        }
    }
    /// The systemd unit setting this credential becomes (same name as in the declaration).
    pub fn unit_key(&self) -> &'static str {
        match self {
            Credential::Load { .. } => "LoadCredential",
            Credential::LoadEncrypted { .. } => "LoadCredentialEncrypted",
            Credential::Set { .. } => "SetCredential",
            Credential::SetEncrypted { .. } => "SetCredentialEncrypted",
        }
    }
    /// The part after `ID:` in the unit setting.
    pub fn unit_value(&self) -> String {
        match self {
            Credential::Load { path, .. } | Credential::LoadEncrypted { path, .. } => {
                path.display().to_string()
            }
            Credential::Set { value, .. } | Credential::SetEncrypted { value, .. } => value.clone(),
        }
    }
}

/// `[Install]`.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Install {
    /// `WantedBy=`: unit names (e.g. `machines.target`), deduplicated, in declaration order.
    pub wanted_by: Vec<String>,
}

impl Machine {
    /// A machine with only a name, a source and an image; everything else default.
    pub fn new(name: MachineName, source: SourceFiles, image: String) -> Self {
        Self {
            name,
            source,
            image,
            exec: None,
            environment: Vec::new(),
            environment_files: Vec::new(),
            environment_compat: crate::envfile::Mode::Literal,
            working_directory: None,
            user: None,
            volumes: Vec::new(),
            ports: Vec::new(),
            template: Template::default(),
            pull: PullPolicy::default(),
            network: Network::default(),
            resources: Resources::default(),
            credentials: Vec::new(),
            install: Install::default(),
            runtime: Runtime::default(),
            dependencies: Dependencies::default(),
            links: Vec::new(),
            health: Default::default(),
            auto_update: false,
        }
    }

    /// Canonical rootfs path.
    pub fn rootfs(&self) -> PathBuf {
        Paths::rootfs_canonical(&self.name)
    }

    /// The main declaration file (canonical path).
    pub fn main_file(&self) -> &Path {
        &self.source.main
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yggdrasil_address_resolution() {
        let subnet: ipnet::Ipv6Net = "300:2e98:a4b0:1789::/64".parse().unwrap();
        let fixed: Ipv6Addr = "300::42".parse().unwrap();
        let derived = "300:2e98:a4b0:1789:1d44:bc13:a177:c4d".parse().ok();
        let name = "TestBWContainer3";
        assert_eq!(YggdrasilAddress::Auto.resolve(name, Some(subnet)), derived);
        assert_eq!(YggdrasilAddress::Auto.resolve(name, None), None);
        let f = YggdrasilAddress::Fixed(fixed);
        assert_eq!(f.resolve(name, Some(subnet)), Some(fixed));
        assert_eq!(f.resolve(name, None), Some(fixed));
        assert_eq!(YggdrasilAddress::No.resolve(name, Some(subnet)), None);
    }
}
