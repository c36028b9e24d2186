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
pub mod hosts;
pub mod image;
pub mod net;
pub mod netlink;
pub mod notify;
pub mod passwd;
pub mod protected;
pub mod stdio;

use std::fs;
use std::io;
use std::path::Path;
use std::time::Instant;

use man8s::envfile::{self, EnvFile};
use man8s::words::shell;

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

fn read_env_file(
    path: &Path,
    mode: envfile::Mode,
    outer: &dyn Fn(&str) -> Option<String>,
) -> io::Result<(EnvFile, bool)> {
    let bytes = fs::read(path)?;
    let lossy = std::str::from_utf8(&bytes).is_err();
    Ok((
        envfile::parse_mode(&String::from_utf8_lossy(&bytes), mode, outer),
        lossy,
    ))
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
    for w in &file.warnings {
        log(
            "environment",
            &format!("warning: {}:{}: {}", path.display(), w.line, w.reason),
        );
    }
}

/// Everything up to the exec; on success does not return (the process becomes the app).
pub fn run(args: args::Args) -> Failure {
    match prepare(&args) {
        Ok(launch) => launch.exec(),
        Err(failure) => failure,
    }
}

/// Everything decided before the exec.
struct Launch {
    program: std::path::PathBuf,
    argv: Vec<String>,
    env: env::Env,
    creds: passwd::Credentials,
    /// The app's bounding set (capability numbers).
    keep_capabilities: Vec<u8>,
}

impl Launch {
    /// Signal dispositions, user switch, `execve`; returns only on failure.
    fn exec(self) -> Failure {
        if let Err(e) = exec::prepare_signals() {
            return Failure::new("exec", format!("signal dispositions: {e}"));
        }
        if let Err(e) = exec::limit_bounding_set(&self.keep_capabilities) {
            return Failure::new("capabilities", e);
        }
        if let Err(e) = exec::switch_user(&self.creds) {
            let cause = format!(
                "switching to uid {} gid {}: {e}",
                self.creds.uid, self.creds.gid
            );
            return Failure::new("user", cause);
        }
        Failure::new(
            "exec",
            exec::exec(&self.program, &self.argv, &self.env.to_strings()),
        )
    }
}

/// The kernel's fixed inode number of the initial PID namespace (`PROC_PID_INIT_INO`).
const HOST_PID_NAMESPACE: &str = "pid:[4026531836]";

fn prepare(args: &args::Args) -> Result<Launch, Failure> {
    let started = Instant::now();
    // Run by mistake on the host, the init would bring up the host's first network link and ask
    // its network for a DHCP lease: refuse outside a PID namespace of its own.
    if fs::read_link("/proc/self/ns/pid").is_ok_and(|ns| ns.as_os_str() == HOST_PID_NAMESPACE) {
        return Err(Failure::new(
            "args",
            "refusing to run in the host's PID namespace: man8s-init is the first process inside a \
             man8s machine (see man8s-init(8))",
        ));
    }
    if let Some(root) = &args.root {
        nix::unistd::chroot(root)
            .and_then(|()| nix::unistd::chdir("/"))
            .map_err(|e| Failure::new("args", format!("--root {}: {e}", root.display())))?;
    }
    let inherited: Vec<(String, String)> = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect();

    // Step 2: environment and user.
    let image = load_image_config()?;
    let mut app_env = load_environment(args, &image, &inherited)?;
    let creds = resolve_user(args, &image)?;
    env::finish(&mut app_env, creds.home.as_deref(), creds.uid, &inherited);

    // Step 3: protected dirs.
    copy_protected_dirs();

    // Step 4: network.
    let outcome = if args.no_network {
        None
    } else {
        Some(configure_network(args, &app_env)?)
    };
    // Machines by name: this machine's names file from man8s-bridge (nspawn sets the hostname to
    // the machine name), merged into /etc/hosts. Never fatal: the app starts without names.
    merge_names();
    // The Python tool's networking script exported the uplink's name for the app.
    if let Some(link) = outcome.as_ref().and_then(|o| o.link.as_ref()) {
        app_env.set("MAN8S_HOST_IFACE", &link.name);
    }

    // The machine's own sysctls (its network namespace), once its links exist.
    for (key, value) in &args.sysctls {
        let path = format!("/proc/sys/{}", key.replace('.', "/"));
        fs::write(&path, value)
            .map_err(|e| Failure::new("sysctl", format!("{key}={value}: {path}: {e}")))?;
        log("sysctl", &format!("{key}={value}"));
    }

    // Step 5: what to run, where.
    let has_shell = exec::is_executable(Path::new("/bin/sh"));
    let (argv, source) = exec::plan_argv(
        &exec::CommandSpec {
            exec: args.exec.as_deref(),
            entrypoint: args.entrypoint.as_deref(),
            application_args: app_env.get("MAN8S_APPLICATION_ARGS"),
            image_entrypoint: &image.entrypoint,
            image_cmd: &image.cmd,
        },
        has_shell,
    )
    .map_err(|e| Failure::new("exec", e))?;
    let workdir = args
        .workdir
        .clone()
        .or_else(|| Some(image.working_dir.clone()))
        .filter(|w| !w.is_empty())
        .unwrap_or_else(|| "/".into());
    enter_workdir(&workdir)?;
    let path_var = app_env.get("PATH").unwrap_or(env::DEFAULT_PATH);
    let program = exec::find_program(&argv[0], path_var, Path::new("."))
        .map_err(|e| Failure::new("exec", format!("{e} (command from {source})")))?;

    // Helpers that outlive the exec, then readiness.
    start_stdout_relay();
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
    notify_ready(&inherited);
    log(
        "exec",
        &format!(
            "{} (from {source}) as {}:{} in {workdir} after {:.1} ms",
            shell::join(&argv),
            creds.uid,
            creds.gid,
            started.elapsed().as_secs_f64() * 1000.0
        ),
    );
    Ok(Launch {
        program,
        argv,
        env: app_env,
        creds,
        keep_capabilities: man8s::machine::app_capabilities(
            &args
                .capabilities
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>(),
            &args
                .drop_capabilities
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>(),
        ),
    })
}

fn load_image_config() -> Result<image::RuntimeConfig, Failure> {
    for path in [image::IMAGE_CONFIG_BOUND, image::IMAGE_CONFIG_PATH] {
        let fail = |e: &dyn std::fmt::Display| Failure::new("image config", format!("{path}: {e}"));
        match fs::read_to_string(path) {
            Ok(text) => return image::parse(&text).map_err(|e| fail(&e)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(fail(&e)),
        }
    }
    Ok(image::RuntimeConfig::default())
}

fn load_environment(
    args: &args::Args,
    image: &image::RuntimeConfig,
    inherited: &[(String, String)],
) -> Result<env::Env, Failure> {
    let image_env = image.env.clone();
    let before_man8env = env::compose(&env::Sources {
        inherited,
        image: &image_env,
        ..Default::default()
    });
    let outer = env::outer_lookup(&before_man8env, inherited);
    let man8env_path = Path::new(man8s::paths::ENV_FILE_IN_MACHINE);
    let man8env = match read_env_file(man8env_path, args.env_compat, &outer) {
        Ok((f, lossy)) => {
            report_env_file(man8env_path, &f, lossy);
            Some(f)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => {
            return Err(Failure::new(
                "environment",
                format!("{}: {e}", man8env_path.display()),
            ));
        }
    };
    let mut env_files = Vec::new();
    for path in &args.env_files {
        let (f, lossy) = read_env_file(path, envfile::Mode::Literal, &outer).map_err(|e| {
            Failure::new("environment", format!("--env-file {}: {e}", path.display()))
        })?;
        report_env_file(path, &f, lossy);
        env_files.push(f);
    }
    Ok(env::compose(&env::Sources {
        inherited,
        image: &image_env,
        man8env: man8env.as_ref(),
        env_files: &env_files,
        env_args: &args.env,
    }))
}

fn resolve_user(
    args: &args::Args,
    image: &image::RuntimeConfig,
) -> Result<passwd::Credentials, Failure> {
    let spec = args.user.clone().unwrap_or_else(|| image.user.clone());
    let read_or_empty = |p: &str| fs::read_to_string(p).unwrap_or_default();
    passwd::resolve(
        &spec,
        &passwd::parse_passwd(&read_or_empty("/etc/passwd")),
        &passwd::parse_group(&read_or_empty("/etc/group")),
    )
    .map_err(|e| Failure::new("user", e.to_string()))
}

/// Never fatal: the Python tool's `cp -a` went on after an error, and so does the machine.
fn copy_protected_dirs() {
    let mut copied = Vec::new();
    for (src, dst) in [
        ("/run.man8sprotected", "/run"),
        ("/tmp.man8sprotected", "/tmp"),
    ] {
        match protected::copy_contents(Path::new(src), Path::new(dst)) {
            Ok(None) => {}
            Ok(Some(stats)) => {
                if let Some(first) = &stats.first_failure {
                    log(
                        "protected dirs",
                        &format!(
                            "warning: {src} → {dst}: {} entries not copied, the first: {first}",
                            stats.failed
                        ),
                    );
                }
                copied.push(format!("{src} → {dst}: {stats}"));
            }
            Err(e) => log(
                "protected dirs",
                &format!("warning: {src} → {dst} not copied: {e}"),
            ),
        }
    }
    if !copied.is_empty() {
        log("protected dirs", &copied.join("; "));
    }
}

fn merge_names() {
    let Ok(host) = nix::unistd::gethostname() else {
        return;
    };
    let file =
        Path::new(man8s::mesh::NAMES_IN_MACHINE).join(format!("{}.hosts", host.to_string_lossy()));
    match hosts::install(Path::new("/etc"), &file) {
        Ok(true) => log(
            "names",
            &format!("/etc/hosts: machines' names from {}", file.display()),
        ),
        Ok(false) => {}
        Err(e) => log(
            "names",
            &format!(
                "warning: /etc/hosts not updated from {}: {e}",
                file.display()
            ),
        ),
    }
}

fn configure_network(args: &args::Args, app_env: &env::Env) -> Result<net::NetOutcome, Failure> {
    let yggdrasil = net::parse_yggdrasil(app_env.get("MAN8S_YGGDRASIL_ADDRESS"))
        .map_err(|e| Failure::new("network", e))?;
    let cfg = net::NetConfig {
        dhcp_timeout: args.dhcp_timeout,
        carrier_timeout: args.carrier_timeout,
        slaac_timeout: args.slaac_timeout,
        yggdrasil,
    };
    let outcome = net::configure(&cfg, &mut |m| log("network", &m))
        .map_err(|e| Failure::new("network", e))?;
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
    Ok(outcome)
}

fn enter_workdir(workdir: &str) -> Result<(), Failure> {
    let fail = |e: &dyn std::fmt::Display| {
        Failure::new("exec", format!("working directory {workdir}: {e}"))
    };
    if !Path::new(workdir).is_dir() {
        // Docker creates a missing WorkingDir; so do we (owned by root, like Docker).
        fs::create_dir_all(workdir).map_err(|e| fail(&e))?;
    }
    nix::unistd::chdir(Path::new(workdir)).map_err(|e| fail(&e))
}

/// Make `/dev/stdout` usable when fd 1/2 are sockets (see [`stdio`]); never fatal.
fn start_stdout_relay() {
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
}

/// READY=1 to nspawn (on its stub's behalf, see [`notify`]); never fatal.
fn notify_ready(inherited: &[(String, String)]) {
    match inherited.iter().find(|(k, _)| k == "NOTIFY_SOCKET") {
        Some((_, path)) => {
            match notify::notify(
                path,
                "READY=1\nSTATUS=Starting the application\n",
                notify::stand_in_pid(),
            ) {
                Ok(()) => log("notify", &format!("READY=1 sent to {path}")),
                Err(e) => log("notify", &format!("warning: READY=1 to {path}: {e}")),
            }
        }
        None => log("notify", "no NOTIFY_SOCKET; not reporting readiness"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_for_logs() {
        assert_eq!(
            shell::join(&["/bin/sh".into(), "-c".into(), "exec it's".into()]),
            r#"/bin/sh -c 'exec it'"'"'s'"#
        );
    }
}
