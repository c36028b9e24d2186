//! `machines ps NAME` and `machines kill NAME`: the processes of a running machine and signals to
//! its app, over [`crate::payload`]. `kill --stop` is also the `ExecStop=` of `man8@.service`.

use std::io::Read;
use std::time::Duration;

use anyhow::{Context, Result};
use man8s::machine::DEFAULT_STOP_TIMEOUT;
use man8s::signal::Signal;
use man8s::{MachineName, Paths};

use crate::bus::Bus;
use crate::cli::KillArgs;
use crate::cmd::machine_name;
use crate::payload::{self, Anchor, Stopped};
use crate::{EXIT_OK, UsageError};

fn leader_of(name: &MachineName) -> Result<i32> {
    let bus = Bus::system()?;
    match bus.machine_leader(name.as_str())? {
        Some(pid) => Ok(i32::try_from(pid)?),
        None => anyhow::bail!("machine {name} is not running"),
    }
}

/// The runtime part of the image config installed for `name`, from the host-owned state (never
/// from the rootfs, which the machine's root can rewrite); `None` before the first install.
pub fn image_runtime_config(
    paths: &Paths,
    name: &MachineName,
) -> Result<Option<man8s::image_config::RuntimeConfig>> {
    let state = man8s_provision::state::MachineState::new(paths, name);
    let Some(text) = state.image_config() else {
        return Ok(None);
    };
    man8s::image_config::parse_runtime(&text)
        .map(Some)
        .with_context(|| format!("image config of machine {name}"))
}

/// The StopSignal of the image installed for `name`, if it names one.
pub fn image_stop_signal(paths: &Paths, name: &MachineName) -> Result<Option<Signal>> {
    let Some(sig) = image_runtime_config(paths, name)?.and_then(|c| c.stop_signal) else {
        return Ok(None);
    };
    Signal::parse(&sig)
        .map(Some)
        .with_context(|| format!("image config of machine {name}: StopSignal"))
}

fn parse_signal(text: &str) -> Result<Option<Signal>> {
    if text.is_empty() {
        return Ok(None);
    }
    Signal::parse(text)
        .map(Some)
        .map_err(|e| UsageError(format!("--signal: {e}")).into())
}

fn parse_timeout(text: &str) -> Result<Duration> {
    if text.is_empty() {
        return Ok(Duration::from_secs(DEFAULT_STOP_TIMEOUT));
    }
    text.parse::<u64>()
        .ok()
        .filter(|s| *s <= 86_400)
        .map(Duration::from_secs)
        .ok_or_else(|| UsageError(format!("--timeout: {text:?} is not a number of seconds")).into())
}

/// `machines kill NAME [--signal S] [--stop [--timeout T]]`.
pub fn kill(a: &KillArgs) -> Result<u8> {
    let name = machine_name(&a.name)?;
    let signal = parse_signal(&a.signal)?;
    let timeout = parse_timeout(&a.timeout)?;
    let anchor = if a.main_pid.is_empty() {
        Anchor::Leader(leader_of(&name)?)
    } else {
        match a.main_pid.parse::<i32>() {
            Ok(pid) if pid > 0 => Anchor::Nspawn(pid),
            // ExecStop= runs with an empty $MAINPID when nspawn has exited already.
            _ if a.stop => {
                eprintln!("mbctl: machine {name}: nspawn is not running; nothing to stop");
                return Ok(EXIT_OK);
            }
            _ => {
                return Err(
                    UsageError(format!("--main-pid: {:?} is not a PID", a.main_pid)).into(),
                );
            }
        }
    };
    let (leader, app) = match payload::find(anchor) {
        Ok(found) => found,
        Err(e) if a.stop => {
            eprintln!("mbctl: machine {name}: {e:#}; nothing to stop");
            return Ok(EXIT_OK);
        }
        Err(e) => return Err(e.context(format!("machine {name}"))),
    };
    let Some(app) = app else {
        if a.stop {
            eprintln!("mbctl: machine {name}: its app has exited already");
            return Ok(EXIT_OK);
        }
        anyhow::bail!("machine {name} has no app running (PID 2 inside has exited)");
    };
    if !a.stop {
        let sig = signal.unwrap_or(Signal::TERM);
        payload::Pidfd::open(app)
            .and_then(|p| p.signal(sig))
            .with_context(|| {
                format!("cannot send {sig} to the app of machine {name} (PID {app})")
            })?;
        return Ok(EXIT_OK);
    }
    let sig = match signal {
        Some(s) => s,
        None => match image_stop_signal(&Paths::from_env(), &name) {
            Ok(s) => s.unwrap_or(Signal::TERM),
            Err(e) => {
                eprintln!("mbctl: machine {name}: {e:#}; stopping it with SIGTERM");
                Signal::TERM
            }
        },
    };
    eprintln!(
        "mbctl: machine {name}: sending {sig} to its app (PID {app}), SIGKILL after {} s",
        timeout.as_secs()
    );
    // Held from before the stop: once the app is gone the stub exits with the app's status, and
    // nspawn ends on its own before systemd's KillSignal would reach it.
    let leader_fd = payload::Pidfd::open(leader.pid).ok();
    match payload::stop(app, sig, timeout)? {
        Stopped::NotRunning => eprintln!("mbctl: machine {name}: its app has exited already"),
        Stopped::Exited(d) => eprintln!(
            "mbctl: machine {name}: its app exited {:.1} s after {sig}",
            d.as_secs_f64()
        ),
        Stopped::Killed => eprintln!(
            "mbctl: machine {name}: its app did not exit within {} s of {sig}; killed it with SIGKILL",
            timeout.as_secs()
        ),
    }
    if let Some(fd) = leader_fd {
        fd.wait_exit(Duration::from_secs(5));
    }
    Ok(EXIT_OK)
}

/// `machines ps NAME`.
pub fn ps(name: &str, json: bool) -> Result<u8> {
    let name = machine_name(name)?;
    let leader = leader_of(&name)?;
    let (leader, _) =
        payload::find(Anchor::Leader(leader)).with_context(|| format!("machine {name}"))?;
    let procs = payload::machine_processes(&payload::all_processes(), &leader);
    let depth = leader.nspid.len();
    let inside = |p: &payload::Proc| p.nspid.get(depth - 1).copied().unwrap_or(0);
    if json {
        let list: Vec<serde_json::Value> = procs
            .iter()
            .map(|p| {
                serde_json::json!({
                    "host_pid": p.pid, "machine_pid": inside(p), "host_ppid": p.ppid,
                    "host_uid": p.uid, "state": p.state.to_string(), "name": p.name,
                    "command": command_line(p.pid),
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(EXIT_OK);
    }
    let mut rows = vec![vec![
        "HOST PID".to_owned(),
        "PID".to_owned(),
        "HOST UID".to_owned(),
        "STATE".to_owned(),
        "COMMAND".to_owned(),
    ]];
    for p in &procs {
        let cmd = command_line(p.pid);
        rows.push(vec![
            p.pid.to_string(),
            inside(p).to_string(),
            p.uid.to_string(),
            p.state.to_string(),
            if cmd.is_empty() {
                format!("[{}]", p.name)
            } else {
                cmd
            },
        ]);
    }
    print!("{}", crate::output::table(&rows, |_, c| c.to_owned()));
    Ok(EXIT_OK)
}

/// `/proc/PID/cmdline` as one line (bounded; control characters shown as `?`).
fn command_line(pid: i32) -> String {
    let mut buf = Vec::new();
    if let Ok(f) = std::fs::File::open(format!("/proc/{pid}/cmdline")) {
        let _ = f.take(4096).read_to_end(&mut buf);
    }
    let text = String::from_utf8_lossy(&buf);
    text.trim_end_matches('\0')
        .split('\0')
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_and_timeout_arguments() {
        assert_eq!(parse_signal("").unwrap(), None);
        assert_eq!(parse_signal("HUP").unwrap(), Some(Signal::HUP));
        let e = parse_signal("SIGNOPE").unwrap_err();
        assert!(e.downcast_ref::<UsageError>().is_some(), "{e}");
        assert_eq!(parse_timeout("").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_timeout("3").unwrap(), Duration::from_secs(3));
        assert!(parse_timeout("-1").is_err());
        assert!(parse_timeout("1.5").is_err());
    }

    #[test]
    fn image_stop_signal_from_the_host_owned_config() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::new(dir.path());
        let name = MachineName::new("pg").unwrap();
        assert_eq!(image_stop_signal(&paths, &name).unwrap(), None);
        let image = paths
            .state_dir(&name)
            .join(man8s::paths::IMAGE_STATE_SUBDIR);
        std::fs::create_dir_all(&image).unwrap();
        std::fs::write(
            image.join("image.json"),
            r#"{"config":{"StopSignal":"SIGINT"}}"#,
        )
        .unwrap();
        assert_eq!(
            image_stop_signal(&paths, &name).unwrap(),
            Some(Signal::parse("INT").unwrap())
        );
        std::fs::write(
            image.join("image.json"),
            r#"{"config":{"StopSignal":"SIGNOPE"}}"#,
        )
        .unwrap();
        assert!(image_stop_signal(&paths, &name).is_err());
        // What the machine's root writes into its rootfs is never read.
        std::fs::remove_file(image.join("image.json")).unwrap();
        let meta = paths.rootfs(&name).join(".man8s");
        std::fs::create_dir_all(&meta).unwrap();
        std::fs::write(
            meta.join("image.json"),
            r#"{"config":{"StopSignal":"SIGINT"}}"#,
        )
        .unwrap();
        assert_eq!(image_stop_signal(&paths, &name).unwrap(), None);
    }
}
