//! Asking systemd-networkd to re-read its files, over D-Bus (`org.freedesktop.network1.Manager.Reload`).

const NETWORKD: &str = "org.freedesktop.network1";

/// networkd's manager (the one call the bridge makes).
#[zbus::proxy(
    interface = "org.freedesktop.network1.Manager",
    default_service = "org.freedesktop.network1",
    default_path = "/org/freedesktop/network1"
)]
trait NetworkManager {
    fn reload(&self) -> zbus::Result<()>;
}

/// What became of the reload request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reloaded {
    /// networkd re-read its files.
    Done,
    /// networkd is not running (it reads the files when it starts); not started by us, because
    /// calling it would D-Bus-activate networkd on a host that does not use it.
    NotRunning,
}

/// Why networkd could not be reloaded.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// No system bus (or no permission on it).
    #[error("cannot connect to the system bus: {0}")]
    Bus(zbus::Error),
    /// The call failed.
    #[error("org.freedesktop.network1.Manager.Reload failed: {0}")]
    Call(zbus::Error),
    /// The async runtime could not be created.
    #[error("cannot start the D-Bus client: {0}")]
    Runtime(std::io::Error),
}

/// Reload networkd on the system bus (`$DBUS_SYSTEM_BUS_ADDRESS` or the default socket).
pub fn reload_networkd() -> Result<Reloaded, ReloadError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(ReloadError::Runtime)?;
    rt.block_on(async {
        let conn = zbus::Connection::system().await.map_err(ReloadError::Bus)?;
        let running = zbus::fdo::DBusProxy::new(&conn)
            .await
            .map_err(ReloadError::Call)?
            .name_has_owner(NETWORKD.try_into().map_err(ReloadError::Call)?)
            .await
            .map_err(|e| ReloadError::Call(e.into()))?;
        if !running {
            return Ok(Reloaded::NotRunning);
        }
        NetworkManagerProxy::new(&conn)
            .await
            .map_err(ReloadError::Call)?
            .reload()
            .await
            .map_err(ReloadError::Call)?;
        Ok(Reloaded::Done)
    })
}

/// Where the kernel lists network interfaces (canonical path).
pub const SYS_CLASS_NET: &str = "/sys/class/net";

/// Wait until interface `name` exists (networkd creates a new `.netdev` asynchronously after a
/// reload, and machines started right after `man8s-bridge.service` need their bridge to attach
/// to). `true` when it appeared within `timeout`.
pub fn wait_for_link(paths: &man8s::Paths, name: &str, timeout: std::time::Duration) -> bool {
    let path = paths.fs(SYS_CLASS_NET).join(name);
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if path.exists() {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    #[test]
    fn waits_for_the_link_to_appear() {
        let dir = tempfile::tempdir().unwrap();
        let paths = man8s::Paths::new(dir.path());
        let t = Instant::now();
        assert!(!wait_for_link(
            &paths,
            "srvgrp0",
            Duration::from_millis(200)
        ));
        assert!(t.elapsed() >= Duration::from_millis(200));
        let link = dir.path().join("sys/class/net/srvgrp0");
        let maker = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(150));
            std::fs::create_dir_all(link).unwrap();
        });
        assert!(wait_for_link(&paths, "srvgrp0", Duration::from_secs(10)));
        maker.join().unwrap();
    }
}
