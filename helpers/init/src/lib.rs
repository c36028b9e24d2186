//! `man8s-init`: PID 2 inside a man8s machine.
//!
//! In order: arguments → environment (image config, `/man8env.env`, `--env-file`, `--env`) →
//! protected dirs (`/run`, `/tmp`) → network (lo, uplink, DHCPv4, SLAAC, Yggdrasil address) →
//! user switch and `execve` of the app, which then is PID 2. Every failure is one
//! [`Failure`] naming the step. See `man8s-init(8)`.

#![deny(missing_docs)]

pub mod args;
pub mod detach;
pub mod dhcp;
pub mod env;
pub mod exec;
pub mod forward;
pub mod image;
pub mod net;
pub mod netlink;
pub mod notify;
pub mod passwd;
pub mod protected;
pub mod shell;
pub mod stdio;

use std::fs;
use std::io;
use std::path::Path;
use std::time::Instant;

use man8s::envfile::{self, EnvFile};

/// A failed step: printed as `man8s-init: STEP: CAUSE`.
#[derive(Debug)]
pub struct Failure {
    /// The step (`args`, `environment`, `protected dirs`, `network`, `user`, `exec`, …).
    pub step: &'static str,
    /// Why.
    pub cause: String,
    /// Process exit code (2 for usage errors, 1 otherwise).
    pub code: i32,
}

impl Failure {
    fn new(step: &'static str, cause: impl Into<String>) -> Self {
        Self {
            step,
            cause: cause.into(),
            code: 1,
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "man8s-init: {}: {}", self.step, self.cause)
    }
}

/// One journal line for a step.
pub fn log(step: &str, message: &str) {
    eprintln!("man8s-init: {step}: {message}");
}

/// Signals that nspawn's stub PID 1 delivers on `systemctl stop` (it sends SIGTERM).
fn is_sigterm(name: &str) -> bool {
    matches!(
        name.trim().to_ascii_uppercase().as_str(),
        "" | "SIGTERM" | "TERM" | "15"
    )
}

fn read_env_file(path: &Path) -> io::Result<(EnvFile, bool)> {
    let bytes = fs::read(path)?;
    let lossy = std::str::from_utf8(&bytes).is_err();
    Ok((envfile::parse(&String::from_utf8_lossy(&bytes)), lossy))
}

fn report_env_file(path: &Path, file: &EnvFile, lossy: bool) {
    if lossy {
        log(
            "environment",
            &format!(
                "warning: {} is not valid UTF-8; bad bytes became U+FFFD",
                path.display()
            ),
        );
    }
    for e in &file.errors {
        log(
            "environment",
            &format!(
                "warning: {}:{}: {}; line ignored",
                path.display(),
                e.line,
                e.reason
            ),
        );
    }
}

/// Everything up to the exec; on success does not return (the process becomes the app).
pub fn run(args: args::Args) -> Failure {
    let started = Instant::now();
    if let Some(Err(e)) = args
        .root
        .as_ref()
        .map(|r| nix::unistd::chroot(r).and_then(|()| nix::unistd::chdir("/")))
    {
        return Failure::new(
            "args",
            format!(
                "--root {}: {e}",
                args.root
                    .as_ref()
                    .map(|r| r.display().to_string())
                    .unwrap_or_default()
            ),
        );
    }

    // Step 2: environment.
    let inherited: Vec<(String, String)> = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect();
    let image = match fs::read_to_string(image::IMAGE_CONFIG_PATH) {
        Ok(text) => match image::parse(&text) {
            Ok(c) => c,
            Err(e) => {
                return Failure::new("image config", format!("{}: {e}", image::IMAGE_CONFIG_PATH));
            }
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => image::ContainerConfig::default(),
        Err(e) => {
            return Failure::new("image config", format!("{}: {e}", image::IMAGE_CONFIG_PATH));
        }
    };
    let man8env_path = Path::new(man8s::paths::ENV_FILE_IN_MACHINE);
    let man8env = match read_env_file(man8env_path) {
        Ok((f, lossy)) => {
            report_env_file(man8env_path, &f, lossy);
            Some(f)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Failure::new("environment", format!("{}: {e}", man8env_path.display())),
    };
    let mut env_files = Vec::new();
    for path in &args.env_files {
        match read_env_file(path) {
            Ok((f, lossy)) => {
                report_env_file(path, &f, lossy);
                env_files.push(f);
            }
            Err(e) => {
                return Failure::new("environment", format!("--env-file {}: {e}", path.display()));
            }
        }
    }
    let image_env = image.env.clone().unwrap_or_default();
    let mut app_env = env::compose(&env::Sources {
        inherited: &inherited,
        image: &image_env,
        man8env: man8env.as_ref(),
        env_files: &env_files,
        env_args: &args.env,
    });

    let user_spec = args
        .user
        .clone()
        .or_else(|| image.user.clone())
        .unwrap_or_default();
    let read_or_empty = |p: &str| fs::read_to_string(p).unwrap_or_default();
    let creds = match passwd::resolve(
        &user_spec,
        &passwd::parse_passwd(&read_or_empty("/etc/passwd")),
        &passwd::parse_group(&read_or_empty("/etc/group")),
    ) {
        Ok(c) => c,
        Err(e) => return Failure::new("user", e.to_string()),
    };
    env::finish(&mut app_env, creds.home.as_deref(), &inherited);

    // Step 3: protected dirs.
    let mut copied = Vec::new();
    for (src, dst) in [
        ("/run.man8sprotected", "/run"),
        ("/tmp.man8sprotected", "/tmp"),
    ] {
        match protected::copy_contents(Path::new(src), Path::new(dst)) {
            Ok(Some(stats)) => copied.push(format!("{src} → {dst}: {stats}")),
            Ok(None) => {}
            Err(e) => return Failure::new("protected dirs", e.to_string()),
        }
    }
    if !copied.is_empty() {
        log("protected dirs", &copied.join("; "));
    }

    // Step 4: network.
    let mut outcome = None;
    if !args.no_network {
        let yggdrasil = match net::parse_yggdrasil(app_env.get("MAN8S_YGGDRASIL_ADDRESS")) {
            Ok(y) => y,
            Err(e) => return Failure::new("network", e),
        };
        let cfg = net::NetConfig {
            dhcp_timeout: args.dhcp_timeout,
            carrier_timeout: args.carrier_timeout,
            slaac_timeout: args.slaac_timeout,
            yggdrasil,
        };
        match net::configure(&cfg, &mut |m| log("network", &m)) {
            Ok(o) => outcome = Some(o),
            Err(e) => return Failure::new("network", e),
        }
        match (yggdrasil, args.forward.is_empty()) {
            (_, true) => {}
            (Some(ygg), false) => {
                if let Err(e) = forward::spawn(&args.forward, ygg) {
                    log(
                        "network",
                        &format!("warning: could not start the IPv4 port forwarder: {e}"),
                    );
                }
            }
            (None, false) => log(
                "network",
                "warning: --forward without a Yggdrasil address; nothing to forward to",
            ),
        }
    }

    // Step 5: exec.
    let has_shell = exec::is_executable(Path::new("/bin/sh"));
    let (argv, source) = match exec::plan_argv(
        args.exec.as_deref(),
        app_env.get("MAN8S_APPLICATION_ARGS"),
        &image.argv(),
        has_shell,
    ) {
        Ok(a) => a,
        Err(e) => return Failure::new("exec", e),
    };
    let workdir = args
        .workdir
        .clone()
        .or_else(|| image.working_dir.clone())
        .filter(|w| !w.is_empty())
        .unwrap_or_else(|| "/".into());
    if !Path::new(&workdir).is_dir() {
        // Docker creates a missing WorkingDir; so do we (owned by root, like Docker).
        if let Err(e) = fs::create_dir_all(&workdir) {
            return Failure::new("exec", format!("working directory {workdir}: {e}"));
        }
    }
    if let Err(e) = nix::unistd::chdir(Path::new(&workdir)) {
        return Failure::new("exec", format!("working directory {workdir}: {e}"));
    }
    let program = match exec::find_program(
        &argv[0],
        app_env.get("PATH").unwrap_or(env::DEFAULT_PATH),
        Path::new("."),
    ) {
        Ok(p) => p,
        Err(e) => return Failure::new("exec", format!("{e} (command from {source})")),
    };

    // Output: make /dev/stdout usable when fd 1/2 are sockets.
    match stdio::prepare(Path::new("/dev")) {
        Ok(relays) if !relays.is_empty() => {
            let names: Vec<String> = relays
                .iter()
                .map(|r| r.path.display().to_string())
                .collect();
            match detach::spawn(move || stdio::relay_forever(relays)) {
                Ok(()) => log(
                    "output",
                    &format!(
                        "{} relayed through FIFOs (fd 1/2 are sockets)",
                        names.join(" and ")
                    ),
                ),
                Err(e) => log(
                    "output",
                    &format!("warning: could not start the /dev/stdout relay: {e}"),
                ),
            }
        }
        Ok(_) => {}
        Err(e) => log(
            "output",
            &format!("warning: could not replace /dev/stdout by a FIFO: {e}"),
        ),
    }

    if let Some(net::NetOutcome {
        link: Some(link),
        lease: Some((lease, obtained)),
        ..
    }) = outcome
        && lease.lease_secs.is_some()
        && !args.no_lease_keeper
        && let Err(e) = detach::spawn(move || net::keep_lease(link, lease, obtained))
    {
        log(
            "network",
            &format!(
                "warning: could not start the lease keeper: {e}; the lease will not be renewed"
            ),
        );
    }

    if let Some(sig) = image.stop_signal.as_deref().filter(|s| !is_sigterm(s)) {
        log(
            "exec",
            &format!(
                "warning: the image asks for StopSignal={sig}, but nspawn's stub PID 1 stops the app with SIGTERM"
            ),
        );
    }

    match inherited.iter().find(|(k, _)| k == "NOTIFY_SOCKET") {
        Some((_, path)) => match notify::notify(
            path,
            "READY=1\nSTATUS=Starting the application\n",
            notify::stand_in_pid(),
        ) {
            Ok(()) => log("notify", &format!("READY=1 sent to {path}")),
            Err(e) => log("notify", &format!("warning: READY=1 to {path}: {e}")),
        },
        None => log("notify", "no NOTIFY_SOCKET; not reporting readiness"),
    }

    log(
        "exec",
        &format!(
            "{} (from {source}) as {}:{} in {workdir} after {} ms",
            shell_quote(&argv),
            creds.uid,
            creds.gid,
            started.elapsed().as_millis()
        ),
    );
    if let Err(e) = exec::prepare_signals() {
        return Failure::new("exec", format!("signal dispositions: {e}"));
    }
    if let Err(e) = exec::switch_user(&creds) {
        return Failure::new(
            "user",
            format!("switching to uid {} gid {}: {e}", creds.uid, creds.gid),
        );
    }
    Failure::new("exec", exec::exec(&program, &argv, &app_env.to_strings()))
}

/// Render argv for a log line.
fn shell_quote(argv: &[String]) -> String {
    argv.iter()
        .map(|a| {
            if !a.is_empty()
                && a.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"/-_.=:,@+%".contains(&b))
            {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_for_logs() {
        assert_eq!(
            shell_quote(&["/bin/sh".into(), "-c".into(), "exec it's".into()]),
            r"/bin/sh -c 'exec it'\''s'"
        );
        assert!(is_sigterm("SIGTERM") && is_sigterm("15") && is_sigterm("term"));
        assert!(!is_sigterm("SIGQUIT"));
    }
}
