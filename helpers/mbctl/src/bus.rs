//! systemd and machined over the system bus (zbus), behind a small blocking API.
//!
//! Only the calls mbctl needs: start/stop/restart a unit and wait for its job, enable/disable unit
//! files, reload the manager, read a unit's state, and ask machined for a machine's leader PID
//! and addresses. The runtime is a current-thread tokio runtime owned by [`Bus`]; dropping the
//! [`Bus`] leaves the process single-threaded again (needed before `setns`).

use std::net::IpAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use zbus::proxy::CacheProperties;
use zbus::{Connection, OwnedObjectPath};

use proxies::{MachineManagerProxy, MachineProxy, ServiceProxy, SystemdManagerProxy, UnitProxy};

/// The D-Bus interfaces mbctl calls, as typed proxies (zbus derives names and signatures).
mod proxies {
    use zbus::OwnedObjectPath;

    /// A change `EnableUnitFiles`/`DisableUnitFiles` made: (type, file, destination).
    pub type Change = (String, String, String);

    #[zbus::proxy(
        interface = "org.freedesktop.systemd1.Manager",
        default_service = "org.freedesktop.systemd1",
        default_path = "/org/freedesktop/systemd1"
    )]
    pub trait SystemdManager {
        fn load_unit(&self, name: &str) -> zbus::Result<OwnedObjectPath>;
        fn start_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;
        fn stop_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;
        fn restart_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;
        fn freeze_unit(&self, name: &str) -> zbus::Result<()>;
        fn thaw_unit(&self, name: &str) -> zbus::Result<()>;
        fn enable_unit_files(
            &self,
            files: &[&str],
            runtime: bool,
            force: bool,
        ) -> zbus::Result<(bool, Vec<Change>)>;
        fn disable_unit_files(&self, files: &[&str], runtime: bool) -> zbus::Result<Vec<Change>>;
        fn reload(&self) -> zbus::Result<()>;
    }

    #[zbus::proxy(
        interface = "org.freedesktop.systemd1.Unit",
        default_service = "org.freedesktop.systemd1"
    )]
    pub trait Unit {
        #[zbus(property)]
        fn load_state(&self) -> zbus::Result<String>;
        #[zbus(property)]
        fn active_state(&self) -> zbus::Result<String>;
        #[zbus(property)]
        fn sub_state(&self) -> zbus::Result<String>;
        #[zbus(property)]
        fn unit_file_state(&self) -> zbus::Result<String>;
        /// (job id, job path); id 0 when no job is pending.
        #[zbus(property)]
        fn job(&self) -> zbus::Result<(u32, OwnedObjectPath)>;
    }

    #[zbus::proxy(
        interface = "org.freedesktop.systemd1.Service",
        default_service = "org.freedesktop.systemd1"
    )]
    pub trait Service {
        #[zbus(property)]
        fn control_group(&self) -> zbus::Result<String>;
    }

    #[zbus::proxy(
        interface = "org.freedesktop.machine1.Manager",
        default_service = "org.freedesktop.machine1",
        default_path = "/org/freedesktop/machine1"
    )]
    pub trait MachineManager {
        fn get_machine(&self, name: &str) -> zbus::Result<OwnedObjectPath>;
        fn terminate_machine(&self, name: &str) -> zbus::Result<()>;
        /// (address family, address bytes).
        fn get_machine_addresses(&self, name: &str) -> zbus::Result<Vec<(i32, Vec<u8>)>>;
    }

    #[zbus::proxy(
        interface = "org.freedesktop.machine1.Machine",
        default_service = "org.freedesktop.machine1"
    )]
    pub trait Machine {
        #[zbus(property)]
        fn leader(&self) -> zbus::Result<u32>;
    }
}

/// How long [`Bus::wait_for_job`] waits for systemd to finish a start/stop job.
pub const JOB_TIMEOUT: Duration = Duration::from_secs(300);

/// The unit of machine `name`.
pub fn unit_name(name: &str) -> String {
    format!("man8@{name}.service")
}

/// A unit's state as systemd reports it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct UnitState {
    /// `LoadState` (`loaded`, `not-found`, `error`, …).
    pub load: String,
    /// `ActiveState` (`active`, `inactive`, `failed`, `activating`, …).
    pub active: String,
    /// `SubState` (`running`, `dead`, …).
    pub sub: String,
    /// `UnitFileState` (`enabled`, `disabled`, `generated`, …).
    pub file: String,
}

impl UnitState {
    /// Running or on its way there.
    pub fn is_running(&self) -> bool {
        matches!(
            self.active.as_str(),
            "active" | "activating" | "reloading" | "deactivating" | "refreshing"
        )
    }
}

/// A connection to the system bus.
pub struct Bus {
    rt: tokio::runtime::Runtime,
    conn: Connection,
}

impl Bus {
    /// Connect to the system bus (`$DBUS_SYSTEM_BUS_ADDRESS` or the default socket).
    pub fn system() -> Result<Self> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start the D-Bus runtime")?;
        let conn = rt
            .block_on(Connection::system())
            .context("cannot reach systemd on the system bus (is systemd running?)")?;
        Ok(Self { rt, conn })
    }

    /// One call on systemd's manager.
    fn systemd<R>(
        &self,
        call: impl AsyncFnOnce(&SystemdManagerProxy<'static>) -> zbus::Result<R>,
    ) -> zbus::Result<R> {
        self.rt.block_on(async {
            let proxy = SystemdManagerProxy::new(&self.conn).await?;
            call(&proxy).await
        })
    }

    /// One call on machined's manager.
    fn machined<R>(
        &self,
        call: impl AsyncFnOnce(&MachineManagerProxy<'static>) -> zbus::Result<R>,
    ) -> zbus::Result<R> {
        self.rt.block_on(async {
            let proxy = MachineManagerProxy::new(&self.conn).await?;
            call(&proxy).await
        })
    }

    /// Read from the object at `path` through proxy `P`. Properties are asked for every time
    /// (no cache: a job's state changes between reads).
    fn object<'p, P, R>(
        &self,
        path: &'p OwnedObjectPath,
        read: impl AsyncFnOnce(&P) -> zbus::Result<R>,
    ) -> zbus::Result<R>
    where
        P: From<zbus::Proxy<'p>> + zbus::proxy::Defaults,
    {
        self.rt.block_on(async {
            let proxy = zbus::proxy::Builder::<P>::new(&self.conn)
                .path(path)
                .cache_properties(CacheProperties::No)
                .build()
                .await?;
            read(&proxy).await
        })
    }

    /// Read from the unit object at `path`.
    fn unit<R>(
        &self,
        path: &OwnedObjectPath,
        read: impl AsyncFnOnce(&UnitProxy<'_>) -> zbus::Result<R>,
    ) -> zbus::Result<R> {
        self.object::<UnitProxy, R>(path, read)
    }

    /// The object path of a unit, loading it if needed.
    fn unit_path(&self, unit: &str) -> Result<OwnedObjectPath> {
        self.systemd(async |m| m.load_unit(unit).await)
            .with_context(|| format!("systemd cannot load {unit}"))
    }

    /// The state of `unit`.
    pub fn unit_state(&self, unit: &str) -> Result<UnitState> {
        let path = self.unit_path(unit)?;
        let cannot = |p: &str| format!("cannot read org.freedesktop.systemd1.Unit.{p}");
        Ok(UnitState {
            load: self
                .unit(&path, async |u| u.load_state().await)
                .with_context(|| cannot("LoadState"))?,
            active: self
                .unit(&path, async |u| u.active_state().await)
                .with_context(|| cannot("ActiveState"))?,
            sub: self
                .unit(&path, async |u| u.sub_state().await)
                .with_context(|| cannot("SubState"))?,
            file: self
                .unit(&path, async |u| u.unit_file_state().await)
                .with_context(|| cannot("UnitFileState"))?,
        })
    }

    /// The cgroup of a running `unit` (`/machine.slice/man8@NAME.service`), empty when it has none.
    pub fn unit_control_group(&self, unit: &str) -> Result<String> {
        let path = self.unit_path(unit)?;
        self.object::<ServiceProxy, _>(&path, async |s| s.control_group().await)
            .context("cannot read org.freedesktop.systemd1.Service.ControlGroup")
    }

    /// Start (`StartUnit`), stop or restart `unit` (mode `replace`) and wait for the job to finish.
    /// Returns the unit's state afterwards.
    pub fn unit_job(&self, method: UnitJob, unit: &str) -> Result<UnitState> {
        let _job = self
            .systemd(async |m| match method {
                UnitJob::Start => m.start_unit(unit, "replace").await,
                UnitJob::Stop => m.stop_unit(unit, "replace").await,
                UnitJob::Restart => m.restart_unit(unit, "replace").await,
            })
            .with_context(|| format!("systemd refused to {} {unit}", method.verb()))?;
        self.wait_for_job(unit, JOB_TIMEOUT)?;
        self.unit_state(unit)
    }

    /// Freeze every process of `unit` (`FreezeUnit`: cgroup v2 `cgroup.freeze`), so its files
    /// hold still while they are copied. [`Bus::thaw`] undoes it.
    pub fn freeze(&self, unit: &str) -> Result<()> {
        self.systemd(async |m| m.freeze_unit(unit).await)
            .with_context(|| format!("systemd cannot freeze {unit}"))
    }

    /// Let the processes of a frozen `unit` run again (`ThawUnit`).
    pub fn thaw(&self, unit: &str) -> Result<()> {
        self.systemd(async |m| m.thaw_unit(unit).await)
            .with_context(|| format!("systemd cannot thaw {unit}"))
    }

    /// Wait until `unit` has no pending job.
    pub fn wait_for_job(&self, unit: &str, timeout: Duration) -> Result<()> {
        let path = self.unit_path(unit)?;
        let start = Instant::now();
        loop {
            let (id, _) = self
                .unit(&path, async |u| u.job().await)
                .context("cannot read the unit's job")?;
            if id == 0 {
                return Ok(());
            }
            if start.elapsed() > timeout {
                bail!(
                    "{unit}: job {id} still running after {} s",
                    timeout.as_secs()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Enable `unit` (`EnableUnitFiles`, persistent, not forced); returns the changes as
    /// `(type, file, destination)`.
    pub fn enable(&self, unit: &str) -> Result<Vec<(String, String, String)>> {
        let (_carries, changes) = self
            .systemd(async |m| m.enable_unit_files(&[unit], false, false).await)
            .with_context(|| format!("systemd cannot enable {unit}"))?;
        Ok(changes)
    }

    /// Disable `unit` (`DisableUnitFiles`, persistent).
    pub fn disable(&self, unit: &str) -> Result<Vec<(String, String, String)>> {
        let changes = self
            .systemd(async |m| m.disable_unit_files(&[unit], false).await)
            .with_context(|| format!("systemd cannot disable {unit}"))?;
        Ok(changes)
    }

    /// `systemctl daemon-reload`: re-runs generators, so new declarations become units.
    pub fn reload(&self) -> Result<()> {
        self.systemd(async |m| m.reload().await)
            .context("systemd daemon-reload failed")
    }

    /// machined's object for machine `name`, or `None` when it is not registered (not running).
    fn machine_path(&self, name: &str) -> Result<Option<OwnedObjectPath>> {
        match self.machined(async |m| m.get_machine(name).await) {
            Ok(p) => Ok(Some(p)),
            Err(zbus::Error::MethodError(err, _, _))
                if err.as_str() == "org.freedesktop.machine1.NoSuchMachine" =>
            {
                Ok(None)
            }
            Err(e) => {
                Err(anyhow::Error::new(e).context(format!("cannot ask machined about {name}")))
            }
        }
    }

    /// The PID of machine `name`'s leader (nspawn's child), or `None` when it is not running.
    pub fn machine_leader(&self, name: &str) -> Result<Option<u32>> {
        let Some(path) = self.machine_path(name)? else {
            return Ok(None);
        };
        let pid = self
            .object::<MachineProxy, _>(&path, async |m| m.leader().await)
            .context("cannot read the machine's leader")?;
        Ok(Some(pid))
    }

    /// Ask machined to terminate machine `name` (whatever started it: `machinectl start`, a
    /// manual `systemd-nspawn`) and wait up to `timeout` for it to be gone.
    pub fn terminate_machine(&self, name: &str, timeout: Duration) -> Result<()> {
        self.machined(async |m| m.terminate_machine(name).await)
            .with_context(|| format!("machined cannot terminate {name}"))?;
        let start = Instant::now();
        while self.machine_path(name)?.is_some() {
            if start.elapsed() > timeout {
                bail!(
                    "machine {name} is still registered {} s after TerminateMachine",
                    timeout.as_secs()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }

    /// The addresses of machine `name` (machined `GetMachineAddresses`); empty when not running.
    pub fn machine_addresses(&self, name: &str) -> Result<Vec<IpAddr>> {
        if self.machine_path(name)?.is_none() {
            return Ok(Vec::new());
        }
        let raw = self
            .machined(async |m| m.get_machine_addresses(name).await)
            .with_context(|| format!("machined cannot list the addresses of {name}"))?;
        Ok(raw
            .into_iter()
            .filter_map(|(_family, bytes)| address_from_bytes(&bytes))
            .collect())
    }
}

/// machined sends addresses as (family, bytes); the length says which family it is.
fn address_from_bytes(bytes: &[u8]) -> Option<IpAddr> {
    match bytes.len() {
        4 => Some(IpAddr::from(<[u8; 4]>::try_from(bytes).ok()?)),
        16 => Some(IpAddr::from(<[u8; 16]>::try_from(bytes).ok()?)),
        _ => None,
    }
}

/// A job systemd runs on a unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnitJob {
    /// `StartUnit`
    Start,
    /// `StopUnit`
    Stop,
    /// `RestartUnit`
    Restart,
}

impl UnitJob {
    fn verb(self) -> &'static str {
        match self {
            UnitJob::Start => "start",
            UnitJob::Stop => "stop",
            UnitJob::Restart => "restart",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_by_length() {
        assert_eq!(
            address_from_bytes(&[10, 0, 0, 2]),
            Some("10.0.0.2".parse().unwrap())
        );
        let v6: [u8; 16] = "300:2e98::1"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets();
        assert_eq!(
            address_from_bytes(&v6),
            Some("300:2e98::1".parse().unwrap())
        );
        assert_eq!(address_from_bytes(&[1, 2, 3]), None);
    }

    #[test]
    fn running_states() {
        let s = |a: &str| UnitState {
            load: "loaded".into(),
            active: a.into(),
            sub: String::new(),
            file: String::new(),
        };
        assert!(s("active").is_running());
        assert!(s("activating").is_running());
        assert!(!s("failed").is_running());
        assert!(!s("inactive").is_running());
    }
}
