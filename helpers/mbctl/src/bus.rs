//! systemd and machined over the system bus (zbus), behind a small blocking API.
//!
//! Only the calls mbctl needs: start/stop/restart a unit and wait for its job, enable/disable unit
//! files, reload the manager, read a unit's state, and ask machined for a machine's leader PID
//! and addresses. The runtime is a current-thread tokio runtime owned by [`Bus`]; dropping the
//! [`Bus`] leaves the process single-threaded again (needed before `setns`).

use std::net::IpAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use zbus::{Connection, OwnedObjectPath, OwnedVariant};

const SYSTEMD: &str = "org.freedesktop.systemd1";
const SYSTEMD_PATH: &str = "/org/freedesktop/systemd1";
const MANAGER: &str = "org.freedesktop.systemd1.Manager";
const UNIT: &str = "org.freedesktop.systemd1.Unit";
const SERVICE: &str = "org.freedesktop.systemd1.Service";
const MACHINED: &str = "org.freedesktop.machine1";
const MACHINED_PATH: &str = "/org/freedesktop/machine1";
const MACHINED_MANAGER: &str = "org.freedesktop.machine1.Manager";
const MACHINE: &str = "org.freedesktop.machine1.Machine";
const PROPERTIES: &str = "org.freedesktop.DBus.Properties";

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

    fn call<B, R>(
        &self,
        dest: &str,
        path: &str,
        iface: &str,
        method: &str,
        body: &B,
    ) -> zbus::Result<R>
    where
        B: serde::Serialize + zbus::DynamicType,
        R: for<'d> serde::Deserialize<'d> + zbus::Type,
    {
        self.rt.block_on(async {
            let reply = self
                .conn
                .call_method(Some(dest), path, Some(iface), method, body)
                .await?;
            reply.body().deserialize::<R>()
        })
    }

    fn property(
        &self,
        dest: &str,
        path: &str,
        iface: &str,
        name: &str,
    ) -> zbus::Result<OwnedVariant> {
        self.call(dest, path, PROPERTIES, "Get", &(iface, name))
    }

    fn string_property(&self, dest: &str, path: &str, iface: &str, name: &str) -> Result<String> {
        let v = self
            .property(dest, path, iface, name)
            .with_context(|| format!("cannot read {iface}.{name}"))?;
        String::try_from(v).map_err(|e| anyhow!("{iface}.{name} has an unexpected type: {e}"))
    }

    /// The object path of a unit, loading it if needed.
    fn unit_path(&self, unit: &str) -> Result<OwnedObjectPath> {
        self.call(SYSTEMD, SYSTEMD_PATH, MANAGER, "LoadUnit", &(unit,))
            .with_context(|| format!("systemd cannot load {unit}"))
    }

    /// The state of `unit`.
    pub fn unit_state(&self, unit: &str) -> Result<UnitState> {
        let path = self.unit_path(unit)?;
        let get = |p| self.string_property(SYSTEMD, path.as_str(), UNIT, p);
        Ok(UnitState {
            load: get("LoadState")?,
            active: get("ActiveState")?,
            sub: get("SubState")?,
            file: get("UnitFileState")?,
        })
    }

    /// The cgroup of a running `unit` (`/machine.slice/man8@NAME.service`), empty when it has none.
    pub fn unit_control_group(&self, unit: &str) -> Result<String> {
        let path = self.unit_path(unit)?;
        self.string_property(SYSTEMD, path.as_str(), SERVICE, "ControlGroup")
    }

    /// Start (`StartUnit`), stop or restart `unit` (mode `replace`) and wait for the job to finish.
    /// Returns the unit's state afterwards.
    pub fn unit_job(&self, method: UnitJob, unit: &str) -> Result<UnitState> {
        let m = match method {
            UnitJob::Start => "StartUnit",
            UnitJob::Stop => "StopUnit",
            UnitJob::Restart => "RestartUnit",
        };
        let _job: OwnedObjectPath = self
            .call(SYSTEMD, SYSTEMD_PATH, MANAGER, m, &(unit, "replace"))
            .with_context(|| format!("systemd refused to {} {unit}", method.verb()))?;
        self.wait_for_job(unit, JOB_TIMEOUT)?;
        self.unit_state(unit)
    }

    /// Freeze every process of `unit` (`FreezeUnit`: cgroup v2 `cgroup.freeze`), so its files
    /// hold still while they are copied. [`Bus::thaw`] undoes it.
    pub fn freeze(&self, unit: &str) -> Result<()> {
        self.call::<_, ()>(SYSTEMD, SYSTEMD_PATH, MANAGER, "FreezeUnit", &(unit,))
            .with_context(|| format!("systemd cannot freeze {unit}"))
    }

    /// Let the processes of a frozen `unit` run again (`ThawUnit`).
    pub fn thaw(&self, unit: &str) -> Result<()> {
        self.call::<_, ()>(SYSTEMD, SYSTEMD_PATH, MANAGER, "ThawUnit", &(unit,))
            .with_context(|| format!("systemd cannot thaw {unit}"))
    }

    /// Wait until `unit` has no pending job.
    pub fn wait_for_job(&self, unit: &str, timeout: Duration) -> Result<()> {
        let path = self.unit_path(unit)?;
        let start = Instant::now();
        loop {
            let v = self
                .property(SYSTEMD, path.as_str(), UNIT, "Job")
                .context("cannot read the unit's job")?;
            let (id, _): (u32, OwnedObjectPath) = v
                .try_into()
                .map_err(|e| anyhow!("Unit.Job has an unexpected type: {e}"))?;
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
        let (_carries, changes): (bool, Vec<(String, String, String)>) = self
            .call(
                SYSTEMD,
                SYSTEMD_PATH,
                MANAGER,
                "EnableUnitFiles",
                &(vec![unit], false, false),
            )
            .with_context(|| format!("systemd cannot enable {unit}"))?;
        Ok(changes)
    }

    /// Disable `unit` (`DisableUnitFiles`, persistent).
    pub fn disable(&self, unit: &str) -> Result<Vec<(String, String, String)>> {
        let changes: Vec<(String, String, String)> = self
            .call(
                SYSTEMD,
                SYSTEMD_PATH,
                MANAGER,
                "DisableUnitFiles",
                &(vec![unit], false),
            )
            .with_context(|| format!("systemd cannot disable {unit}"))?;
        Ok(changes)
    }

    /// `systemctl daemon-reload`: re-runs generators, so new declarations become units.
    pub fn reload(&self) -> Result<()> {
        self.call::<_, ()>(SYSTEMD, SYSTEMD_PATH, MANAGER, "Reload", &())
            .context("systemd daemon-reload failed")
    }

    /// machined's object for machine `name`, or `None` when it is not registered (not running).
    fn machine_path(&self, name: &str) -> Result<Option<OwnedObjectPath>> {
        match self.call::<_, OwnedObjectPath>(
            MACHINED,
            MACHINED_PATH,
            MACHINED_MANAGER,
            "GetMachine",
            &(name,),
        ) {
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
        let v = self
            .property(MACHINED, path.as_str(), MACHINE, "Leader")
            .context("cannot read the machine's leader")?;
        let pid =
            u32::try_from(v).map_err(|e| anyhow!("Machine.Leader has an unexpected type: {e}"))?;
        Ok(Some(pid))
    }

    /// Ask machined to terminate machine `name` (whatever started it: `machinectl start`, a
    /// manual `systemd-nspawn`) and wait up to `timeout` for it to be gone.
    pub fn terminate_machine(&self, name: &str, timeout: Duration) -> Result<()> {
        self.call::<_, ()>(
            MACHINED,
            MACHINED_PATH,
            MACHINED_MANAGER,
            "TerminateMachine",
            &(name,),
        )
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
        let raw: Vec<(i32, Vec<u8>)> = self
            .call(
                MACHINED,
                MACHINED_PATH,
                MACHINED_MANAGER,
                "GetMachineAddresses",
                &(name,),
            )
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
