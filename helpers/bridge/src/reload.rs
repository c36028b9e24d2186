//! Asking systemd-networkd to re-read its files, over D-Bus (`org.freedesktop.network1.Manager.Reload`).

const NETWORKD: &str = "org.freedesktop.network1";

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
        let has_owner = conn
            .call_method(
                Some("org.freedesktop.DBus"),
                "/org/freedesktop/DBus",
                Some("org.freedesktop.DBus"),
                "NameHasOwner",
                &(NETWORKD,),
            )
            .await
            .map_err(ReloadError::Call)?;
        let running: bool = has_owner.body().deserialize().map_err(ReloadError::Call)?;
        if !running {
            return Ok(Reloaded::NotRunning);
        }
        conn.call_method(
            Some(NETWORKD),
            "/org/freedesktop/network1",
            Some("org.freedesktop.network1.Manager"),
            "Reload",
            &(),
        )
        .await
        .map_err(ReloadError::Call)?;
        Ok(Reloaded::Done)
    })
}
