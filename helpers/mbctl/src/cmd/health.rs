//! `machines health NAME` (one check now) and the hidden `health-monitor NAME` that
//! `man8@.service` runs as `ExecStartPost=`: with `Notify=healthy` it returns only after the first
//! passing check (failing the start when the machine turns unhealthy first); then it forks a
//! monitor that stays in the unit's cgroup, checks every `HealthInterval=`, reports transitions
//! to the journal and `STATUS=`, and acts on `HealthOnFailure=`.

// unsafe: fork() of the background monitor, SIG_IGN for signals meant for the app.
#![allow(unsafe_code)]

use std::io::Read as _;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use man8s::health::{self, DockerHealthcheck, HealthCheck, HealthSettings, HealthTest, OnFailure};
use man8s::{MachineName, Paths, declaration};

use crate::bus::{Bus, unit_name};
use crate::cmd::info::is_real_root;
use crate::cmd::machine_name;
use crate::health::{
    Outcome, State, Status, Tracker, enter_netns, exec_in_machine, notify, now_rfc3339, run_check,
    state_path, write_state,
};
use crate::{EXIT_OK, EXIT_RUNTIME, UsageError};

/// Checks while the machine is starting come this often (or at `HealthInterval=` when shorter).
const START_INTERVAL: Duration = Duration::from_secs(1);
/// Largest image config read from the machine's rootfs.
const MAX_IMAGE_CONFIG: u64 = 4 << 20;

/// What the image's config says that a check needs: its `Healthcheck`, `Env` and `User`.
#[derive(Debug, Default)]
pub struct ImageBits {
    /// `config.Healthcheck`, when there is one.
    pub healthcheck: Option<DockerHealthcheck>,
    /// `config.Env`.
    pub env: Vec<String>,
    /// `config.User`.
    pub user: String,
}

/// The image config of machine `name`: the host-owned copy (`man8s_provision::state`), else
/// (machines made before it existed) the rootfs's own `/.man8s/image.json`.
pub fn machine_image_bits(paths: &Paths, name: &MachineName) -> Result<ImageBits> {
    match man8s_provision::state::MachineState::new(paths, name).image_config() {
        Some(json) => parse_image_bits(&json),
        None => image_bits(&paths.rootfs(name)),
    }
}

/// Read `/.man8s/image.json` of a rootfs. The rootfs is machine-writable: the file is opened
/// inside it (`RESOLVE_IN_ROOT`), non-blocking, and read up to a bound. A malformed
/// `Healthcheck` is an error; a missing file is no healthcheck.
pub fn image_bits(rootfs: &Path) -> Result<ImageBits> {
    use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat2};
    let Ok(root) = std::fs::File::open(rootfs) else {
        return Ok(ImageBits::default());
    };
    let how = OpenHow::new()
        .flags(OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    let Ok(fd) = openat2(&root, ".man8s/image.json", how) else {
        return Ok(ImageBits::default());
    };
    let file = std::fs::File::from(fd);
    if !file.metadata().is_ok_and(|m| m.is_file()) {
        return Ok(ImageBits::default());
    }
    let mut text = Vec::new();
    file.take(MAX_IMAGE_CONFIG).read_to_end(&mut text)?;
    parse_image_bits(&text)
}

/// The bits of an image config JSON that a check needs (the type fetch and the init read it
/// into). A config that is not valid JSON gives none of them, as a missing one does.
fn parse_image_bits(text: &[u8]) -> Result<ImageBits> {
    let Ok(config) = man8s::image_config::parse_runtime(text) else {
        return Ok(ImageBits::default());
    };
    Ok(ImageBits {
        healthcheck: config.healthcheck().map_err(anyhow::Error::msg)?,
        env: config.env,
        user: config.user,
    })
}

/// The check of machine `name` and what an exec check needs; `override_cmd` (tests, and
/// `machines health --check`) replaces `HealthCmd=`.
pub struct Plan {
    /// The check; `None` when the machine has none.
    pub check: Option<HealthCheck>,
    /// `Notify=healthy`.
    pub notify_healthy: bool,
    /// Environment for exec checks (the image's).
    pub env: Vec<String>,
    /// User for exec checks (`User=`, else the image's).
    pub user: String,
}

/// Work out the check of `name` from its declaration and its image.
pub fn plan(paths: &Paths, name: &MachineName, override_cmd: Option<&str>) -> Result<Plan> {
    let machine = declaration::load(paths, name);
    let (mut settings, user) = match (&machine, override_cmd) {
        (Ok(m), _) => (settings_of(m), m.user.clone()),
        (Err(_), Some(_)) => (HealthSettings::default(), None),
        (Err(e), None) => bail!("{e}"),
    };
    if let Some(cmd) = override_cmd {
        settings.cmd = Some(
            health::parse_health_cmd(cmd)
                .map_err(|e| UsageError(format!("--check {cmd:?}: {e}")))?,
        );
    }
    let bits = machine_image_bits(paths, name)?;
    let check = health::effective(&settings, bits.healthcheck.as_ref())
        .map_err(|e| anyhow::anyhow!("machine {name}: {e}"))?;
    Ok(Plan {
        check,
        notify_healthy: settings.notify_healthy,
        env: bits.env,
        user: user.unwrap_or(bits.user),
    })
}

/// The health keys of a declaration.
fn settings_of(machine: &man8s::machine::Machine) -> HealthSettings {
    machine.health.clone()
}

/// The leader PID of a running machine: `--leader-pid` (tests) or machined's answer. The bus
/// connection is closed again, so the process is single-threaded afterwards.
fn leader(name: &MachineName, given: Option<i32>) -> Result<i32> {
    if let Some(pid) = given {
        return Ok(pid);
    }
    let bus = Bus::system()?;
    let pid = bus
        .machine_leader(name.as_str())?
        .with_context(|| format!("machine {name} is not running"))?;
    drop(bus);
    i32::try_from(pid).context("leader PID out of range")
}

/// Runs checks of one plan against one machine.
struct Runner<'a> {
    check: &'a HealthCheck,
    leader: i32,
    plan: &'a Plan,
}

impl Runner<'_> {
    fn once(&self) -> Outcome {
        let exec = |argv: &[String], timeout: Duration| {
            exec_in_machine(self.leader, &self.plan.user, &self.plan.env, argv, timeout)
        };
        run_check(&self.check.test, self.check.timeout, &exec)
    }
}

/// `machines health NAME [--check CMD] [--json]`: run the check once now.
pub fn health_now(
    name: &str,
    override_cmd: Option<&str>,
    leader_pid: Option<i32>,
    json: bool,
) -> Result<u8> {
    let name = machine_name(name)?;
    let paths = Paths::from_env();
    let plan = plan(&paths, &name, override_cmd)?;
    let Some(check) = plan.check.as_ref() else {
        println!(
            "Machine {name} has no health check (HealthCmd= unset and none in the image, or HealthCmd=none)."
        );
        return Ok(EXIT_OK);
    };
    let leader = leader(&name, leader_pid)?;
    if matches!(check.test, HealthTest::Tcp(_) | HealthTest::Http { .. }) {
        enter_netns(leader)?;
    }
    let outcome = Runner {
        check,
        leader,
        plan: &plan,
    }
    .once();
    if json {
        println!(
            "{}",
            serde_json::json!({
                "machine": name.as_str(),
                "check": check.test.to_string(),
                "source": check.source,
                "healthy": outcome.ok,
                "output": outcome.output,
            })
        );
    } else {
        println!(
            "{name}: {} ({}) — {} (from the {})",
            if outcome.ok { "healthy" } else { "unhealthy" },
            outcome.output,
            check.test,
            check.source
        );
    }
    Ok(if outcome.ok { EXIT_OK } else { EXIT_RUNTIME })
}

/// Record one result: state file, and on a transition a journal line and `STATUS=`.
fn record(
    paths: &Paths,
    name: &MachineName,
    check: &HealthCheck,
    tracker: &mut Tracker,
    outcome: &Outcome,
) -> Option<Status> {
    let changed = tracker.record(outcome.ok, Instant::now());
    let state = State {
        status: tracker.status,
        check: check.test.to_string(),
        last_check: now_rfc3339(),
        last_output: outcome.output.clone(),
        failing_streak: tracker.failing_streak,
        invocation: std::env::var("INVOCATION_ID").unwrap_or_default(),
    };
    if let Err(e) = write_state(&state_path(paths, name), &state) {
        eprintln!("mbctl: note: {e:#}");
    }
    if let Some(status) = changed {
        let line = status_line(status, &outcome.output);
        eprintln!("{name}: {line} (check {})", check.test);
        notify(&format!("STATUS={line}"));
    }
    changed
}

/// `STATUS=` text: `healthy`, `unhealthy: <last output line>`.
pub fn status_line(status: Status, output: &str) -> String {
    match status {
        Status::Healthy => "healthy".into(),
        Status::Unhealthy => format!("unhealthy: {output}"),
        Status::Starting => format!("health: starting ({output})"),
    }
}

/// `systemctl` arguments for `HealthOnFailure=` (none for `none`).
pub fn failure_action(on_failure: OnFailure, unit: &str) -> Option<Vec<String>> {
    let args: &[&str] = match on_failure {
        OnFailure::None => return None,
        OnFailure::Restart => &["restart", "--no-block"],
        OnFailure::Stop => &["stop", "--no-block"],
        OnFailure::Kill => &["kill", "--signal=SIGKILL"],
    };
    let mut v: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
    v.push(unit.to_owned());
    Some(v)
}

/// The `STATUS=` to send again after the machine stopped: the unhealthy state that `state`
/// records for this same run of the unit (`invocation`), if any. A state of an earlier run (the
/// start failed before the monitor ran) is not this run's reason.
pub fn status_after_stop(state: Option<&State>, invocation: &str) -> Option<String> {
    let s = state?;
    (!invocation.is_empty() && s.invocation == invocation && s.status == Status::Unhealthy)
        .then(|| format!("STATUS={}", status_line(s.status, &s.last_output)))
}

/// Hidden `health-monitor NAME --after-stop` (man8@.service's `ExecStopPost=`): nspawn's last
/// word is `STATUS=Terminating...`, which would leave `systemctl status` without the reason a
/// `Notify=healthy` start failed or `HealthOnFailure=` stopped the machine; say it again.
pub fn after_stop(name: &str) -> Result<u8> {
    let name = machine_name(name)?;
    let paths = Paths::from_env();
    let state = crate::health::read_state(&state_path(&paths, &name));
    let invocation = std::env::var("INVOCATION_ID").unwrap_or_default();
    if let Some(status) = status_after_stop(state.as_ref(), &invocation) {
        notify(&status);
    }
    Ok(EXIT_OK)
}

/// Hidden `health-monitor NAME`: see the module documentation.
pub fn monitor(name: &str, override_cmd: Option<&str>, leader_pid: Option<i32>) -> Result<u8> {
    let name = machine_name(name)?;
    let paths = Paths::from_env();
    let plan = match plan(&paths, &name, override_cmd) {
        Ok(p) => p,
        Err(e) => {
            // A broken check must not stop a machine that does not wait for it.
            let waits = declaration::load(&paths, &name).is_ok_and(|m| m.health.notify_healthy);
            if waits {
                bail!("Notify=healthy, but the health check of {name} cannot run: {e:#}");
            }
            eprintln!("mbctl: health check of {name} not run: {e:#}");
            return Ok(EXIT_OK);
        }
    };
    let Some(check) = plan.check.clone() else {
        if plan.notify_healthy {
            bail!("Notify=healthy, but machine {name} has no health check (HealthCmd=)");
        }
        return Ok(EXIT_OK);
    };
    let leader = leader(&name, leader_pid)?;
    if matches!(check.test, HealthTest::Tcp(_) | HealthTest::Http { .. }) {
        enter_netns(leader)?;
    }
    let runner = Runner {
        check: &check,
        leader,
        plan: &plan,
    };
    let mut tracker = Tracker::new(&check, Instant::now());
    let start_every = check.interval.unwrap_or(START_INTERVAL).min(START_INTERVAL);
    notify("STATUS=health: starting");
    if plan.notify_healthy {
        // systemctl start waits for this loop: the unit becomes active only when it ends well.
        loop {
            let outcome = runner.once();
            match record(&paths, &name, &check, &mut tracker, &outcome) {
                Some(Status::Healthy) => break,
                Some(Status::Unhealthy) => bail!(
                    "machine {name} did not become healthy: {} (check {}); start failed",
                    outcome.output,
                    check.test
                ),
                _ => std::thread::sleep(start_every),
            }
        }
        if check.interval.is_none() {
            return Ok(EXIT_OK);
        }
    }
    // The rest runs in the background, still in the unit's cgroup: stopping the unit ends it.
    // SAFETY: single-threaded (no bus connection is open, no threads were started).
    match unsafe { nix::unistd::fork() }.context("cannot fork the health monitor")? {
        nix::unistd::ForkResult::Parent { .. } => return Ok(EXIT_OK),
        nix::unistd::ForkResult::Child => {
            let _ = nix::unistd::setsid();
            // `systemctl kill --signal=HUP|QUIT|USR1|USR2 man8@NAME` is meant for the app; it
            // reaches every process of the unit, this one too.
            use nix::sys::signal::{SigHandler, Signal, signal};
            for sig in [
                Signal::SIGHUP,
                Signal::SIGQUIT,
                Signal::SIGUSR1,
                Signal::SIGUSR2,
            ] {
                // SAFETY: SigIgn installs no handler code.
                let _ = unsafe { signal(sig, SigHandler::SigIgn) };
            }
        }
    }
    let unit = unit_name(name.as_str());
    let act = is_real_root(&paths);
    loop {
        let every = if tracker.status == Status::Starting {
            start_every
        } else {
            match check.interval {
                Some(i) => i,
                None => std::process::exit(0),
            }
        };
        std::thread::sleep(every);
        let outcome = runner.once();
        if record(&paths, &name, &check, &mut tracker, &outcome) == Some(Status::Unhealthy)
            && let Some(args) = failure_action(check.on_failure, &unit)
        {
            eprintln!(
                "{name}: HealthOnFailure={}: systemctl {}",
                check.on_failure.as_str(),
                args.join(" ")
            );
            if act {
                let _ = std::process::Command::new("systemctl").args(&args).status();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_actions_are_systemctl_verbs() {
        assert_eq!(failure_action(OnFailure::None, "man8@a.service"), None);
        assert_eq!(
            failure_action(OnFailure::Restart, "man8@a.service").unwrap(),
            ["restart", "--no-block", "man8@a.service"]
        );
        assert_eq!(
            failure_action(OnFailure::Kill, "u").unwrap(),
            ["kill", "--signal=SIGKILL", "u"]
        );
        assert_eq!(
            status_line(Status::Unhealthy, "HTTP 503"),
            "unhealthy: HTTP 503"
        );
        assert_eq!(status_line(Status::Healthy, "x"), "healthy");
    }

    #[test]
    fn the_reason_is_said_again_after_stop_only_for_this_run() {
        let state = State {
            status: Status::Unhealthy,
            check: "tcp:9999".into(),
            last_check: now_rfc3339(),
            last_output: "connect to 127.0.0.1:9999: Connection refused".into(),
            failing_streak: 1,
            invocation: "run-2".into(),
        };
        assert_eq!(
            status_after_stop(Some(&state), "run-2").as_deref(),
            Some("STATUS=unhealthy: connect to 127.0.0.1:9999: Connection refused")
        );
        assert_eq!(status_after_stop(Some(&state), "run-3"), None);
        assert_eq!(status_after_stop(Some(&state), ""), None);
        assert_eq!(status_after_stop(None, "run-2"), None);
        let healthy = State {
            status: Status::Healthy,
            ..state
        };
        assert_eq!(status_after_stop(Some(&healthy), "run-2"), None);
    }

    #[test]
    fn image_bits_from_a_rootfs_without_escaping_it() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join(".man8s")).unwrap();
        // An absolute symlink resolves inside the root, never to the host's file.
        let outside = dir.path().join("image.json");
        std::fs::write(
            &outside,
            r#"{"config":{"Healthcheck":{"Test":["CMD","/host"]}}}"#,
        )
        .unwrap();
        std::os::unix::fs::symlink(&outside, root.join(".man8s/image.json")).unwrap();
        assert!(image_bits(&root).unwrap().healthcheck.is_none());
        std::fs::remove_file(root.join(".man8s/image.json")).unwrap();
        std::fs::write(
            root.join(".man8s/image.json"),
            r#"{"config":{"Env":["A=1"],"User":"app","Healthcheck":{"Test":["CMD-SHELL","true"],"Interval":1000000000}}}"#,
        )
        .unwrap();
        let b = image_bits(&root).unwrap();
        assert_eq!(b.env, ["A=1"]);
        assert_eq!(b.user, "app");
        assert_eq!(
            b.healthcheck.unwrap().health_test().unwrap(),
            Some(HealthTest::Shell("true".into()))
        );
        std::fs::write(
            root.join(".man8s/image.json"),
            r#"{"config":{"Healthcheck":{"Test":"not a list"}}}"#,
        )
        .unwrap();
        assert!(
            image_bits(&root)
                .unwrap_err()
                .to_string()
                .contains("malformed")
        );
        // A FIFO in its place does not block.
        std::fs::remove_file(root.join(".man8s/image.json")).unwrap();
        nix::unistd::mkfifo(
            &root.join(".man8s/image.json"),
            nix::sys::stat::Mode::from_bits_truncate(0o644),
        )
        .unwrap();
        assert!(image_bits(&root).unwrap().healthcheck.is_none());
    }
}
