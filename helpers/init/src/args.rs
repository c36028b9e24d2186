//! Command line of `man8s-init` (from the `.nspawn` file's `Parameters=`).
//!
//! Hand-parsed to keep the static binary small. Every option takes `--opt=VALUE` or `--opt VALUE`.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// Parsed arguments.
#[derive(Debug, Clone, PartialEq)]
pub struct Args {
    /// Cmd override (declaration `Exec=`), a shell-style string; the Entrypoint stays.
    pub exec: Option<String>,
    /// Entrypoint override (declaration `Entrypoint=`, as a JSON array of words); empty clears it.
    pub entrypoint: Option<Vec<String>>,
    /// User override (declaration `User=`).
    pub user: Option<String>,
    /// Working directory override (declaration `WorkingDirectory=`).
    pub workdir: Option<String>,
    /// `--env=K=V`, in order.
    pub env: Vec<(String, String)>,
    /// `--env-file=PATH`, in order.
    pub env_files: Vec<PathBuf>,
    /// `--env-compat=python-mbctl`: how `/man8env.env` is read (declaration `EnvironmentCompat=`).
    pub env_compat: man8s::envfile::Mode,
    /// Skip all network configuration.
    pub no_network: bool,
    /// Overall bound for DHCPv4.
    pub dhcp_timeout: Duration,
    /// Bound for the link's carrier to come up.
    pub carrier_timeout: Duration,
    /// How long to wait for a SLAAC address (never fatal).
    pub slaac_timeout: Duration,
    /// Do not leave a process behind to renew the DHCP lease.
    pub no_lease_keeper: bool,
    /// `--forward=[tcp:|udp:]PORT`: container ports to relay from the Yggdrasil address to an
    /// app that listens on IPv4 only (see [`crate::forward`]).
    pub forward: Vec<(crate::forward::Proto, u16)>,
    /// `--sysctl=net.NAME=VALUE` (declaration `Sysctl=`): written under /proc/sys before the exec.
    pub sysctls: Vec<(String, String)>,
    /// `--capability=CAP_A,…` (declaration `AddCapability=`): kept for the app beyond Docker's set.
    pub capabilities: Vec<String>,
    /// `--drop-capability=CAP_A,…` or `ALL` (declaration `DropCapability=`): not kept.
    pub drop_capabilities: Vec<String>,
    /// Test harness only: `chroot` here before doing anything else.
    pub root: Option<PathBuf>,
    /// `--help` was asked for.
    pub help: bool,
    /// `--version` was asked for.
    pub version: bool,
}

impl Default for Args {
    fn default() -> Self {
        Self {
            exec: None,
            entrypoint: None,
            user: None,
            workdir: None,
            env: Vec::new(),
            env_files: Vec::new(),
            env_compat: man8s::envfile::Mode::Literal,
            no_network: false,
            dhcp_timeout: Duration::from_secs(5),
            carrier_timeout: Duration::from_secs(5),
            slaac_timeout: Duration::from_secs(1),
            no_lease_keeper: false,
            forward: Vec::new(),
            sysctls: Vec::new(),
            capabilities: Vec::new(),
            drop_capabilities: Vec::new(),
            root: None,
            help: false,
            version: false,
        }
    }
}

/// Usage text for `--help`.
pub const USAGE: &str = "\
usage: man8s-init [--exec=CMD] [--entrypoint=JSON-ARRAY] [--user=USER[:GROUP]] [--workdir=DIR] [--env=K=V]...
                  [--env-file=PATH]... [--env-compat=python-mbctl]
                  [--no-network] [--dhcp-timeout=SECS] [--carrier-timeout=SECS] [--slaac-timeout=SECS]
                  [--no-lease-keeper] [--forward=[tcp:|udp:]PORT]... [--sysctl=net.NAME=VALUE]...
                  [--capability=CAP_X,...] [--drop-capability=CAP_X,...|ALL]
Runs as PID 2 inside a man8s machine: environment, protected dirs, network, then exec of the app.
See man8s-init(8).
";

/// A usage error (exit code 2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

fn seconds(opt: &str, v: &str) -> Result<Duration, UsageError> {
    v.parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s >= 0.0 && *s < 86_400.0)
        .map(Duration::from_secs_f64)
        .ok_or_else(|| UsageError(format!("{opt}: {v:?} is not a number of seconds")))
}

fn forward_port(v: &str) -> Result<(crate::forward::Proto, u16), UsageError> {
    use crate::forward::Proto;
    let (proto, port) = match v.split_once(':') {
        Some(("tcp", p)) => (Proto::Tcp, p),
        Some(("udp", p)) => (Proto::Udp, p),
        None => (Proto::Tcp, v),
        Some(_) => {
            return Err(UsageError(format!(
                "--forward: {v:?} is not [tcp:|udp:]PORT"
            )));
        }
    };
    match port.parse::<u16>() {
        Ok(p) if p > 0 && port.bytes().all(|b| b.is_ascii_digit()) => Ok((proto, p)),
        _ => Err(UsageError(format!(
            "--forward: {v:?} is not [tcp:|udp:]PORT"
        ))),
    }
}

/// `net.NAME=VALUE`: the machine's own (network namespace) sysctls only; no path tricks.
fn sysctl(v: &str) -> Result<(String, String), UsageError> {
    let bad = || UsageError(format!("--sysctl: {v:?} is not net.NAME=VALUE"));
    let (k, val) = v.split_once('=').ok_or_else(bad)?;
    let ok = k.starts_with("net.")
        && k.split('.').all(|c| {
            !c.is_empty()
                && c.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        })
        && !val.is_empty();
    if ok {
        Ok((k.to_owned(), val.to_owned()))
    } else {
        Err(bad())
    }
}

/// `CAP_A,CAP_B` (or `ALL`) → canonical names.
fn capabilities(opt: &str, v: &str) -> Result<Vec<String>, UsageError> {
    use man8s::machine::CAPABILITIES;
    v.split(',')
        .map(|name| {
            if name.eq_ignore_ascii_case("ALL") {
                return Ok("ALL".to_owned());
            }
            CAPABILITIES
                .iter()
                .find(|(c, _)| c.eq_ignore_ascii_case(name))
                .map(|(c, _)| (*c).to_owned())
                .ok_or_else(|| UsageError(format!("{opt}: {name:?} is not a capability")))
        })
        .collect()
}

/// Parse arguments (without argv[0]).
pub fn parse<I, S>(argv: I) -> Result<Args, UsageError>
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    let mut args = Args::default();
    let mut it = argv.into_iter().map(Into::into);
    while let Some(arg) = it.next() {
        let (opt, inline) = match arg.split_once('=') {
            Some((o, v)) if o.starts_with("--") => (o.to_owned(), Some(v.to_owned())),
            _ => (arg.clone(), None),
        };
        let flag = |args: &mut Args, inline: &Option<String>| -> Result<(), UsageError> {
            if inline.is_some() {
                return Err(UsageError(format!("{opt} takes no value")));
            }
            match opt.as_str() {
                "--no-network" => args.no_network = true,
                "--no-lease-keeper" => args.no_lease_keeper = true,
                "--help" | "-h" => args.help = true,
                "--version" => args.version = true,
                _ => unreachable!("only called for flags"),
            }
            Ok(())
        };
        match opt.as_str() {
            "--no-network" | "--no-lease-keeper" | "--help" | "-h" | "--version" => {
                flag(&mut args, &inline)?
            }
            "--exec" | "--entrypoint" | "--user" | "--workdir" | "--env" | "--env-file"
            | "--env-compat" | "--dhcp-timeout" | "--carrier-timeout" | "--slaac-timeout"
            | "--forward" | "--root" | "--sysctl" | "--capability" | "--drop-capability" => {
                let value = match inline {
                    Some(v) => v,
                    None => it
                        .next()
                        .ok_or_else(|| UsageError(format!("{opt} needs a value")))?,
                };
                match opt.as_str() {
                    "--exec" => args.exec = Some(value),
                    "--entrypoint" => {
                        args.entrypoint = Some(serde_json::from_str(&value).map_err(|_| {
                            UsageError(format!(
                                "--entrypoint: {value:?} is not a JSON array of strings"
                            ))
                        })?)
                    }
                    "--user" => args.user = Some(value),
                    "--workdir" => args.workdir = Some(value),
                    "--env" => {
                        let (k, v) = crate::env::split_assignment(&value).ok_or_else(|| {
                            UsageError(format!("--env: {value:?} is not KEY=VALUE"))
                        })?;
                        args.env.push((k.to_owned(), v.to_owned()));
                    }
                    "--env-file" => args.env_files.push(PathBuf::from(value)),
                    "--env-compat" => {
                        args.env_compat = match value.as_str() {
                            man8s::envfile::python_mbctl::KEY_VALUE => {
                                man8s::envfile::Mode::PythonMbctl
                            }
                            "literal" => man8s::envfile::Mode::Literal,
                            _ => {
                                return Err(UsageError(format!(
                                    "--env-compat: {value:?} is not python-mbctl or literal"
                                )));
                            }
                        }
                    }
                    "--dhcp-timeout" => args.dhcp_timeout = seconds(&opt, &value)?,
                    "--carrier-timeout" => args.carrier_timeout = seconds(&opt, &value)?,
                    "--slaac-timeout" => args.slaac_timeout = seconds(&opt, &value)?,
                    "--forward" => args.forward.push(forward_port(&value)?),
                    "--sysctl" => args.sysctls.push(sysctl(&value)?),
                    "--capability" => args.capabilities.extend(capabilities(&opt, &value)?),
                    "--drop-capability" => {
                        args.drop_capabilities.extend(capabilities(&opt, &value)?)
                    }
                    "--root" => args.root = Some(PathBuf::from(value)),
                    _ => unreachable!("matched above"),
                }
            }
            _ => return Err(UsageError(format!("unknown argument {arg:?} (see --help)"))),
        }
    }
    Ok(args)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_invocation() {
        assert_eq!(parse(Vec::<String>::new()).unwrap(), Args::default());
    }

    #[test]
    fn all_options() {
        let a = parse([
            "--exec=nginx -g 'daemon off;'",
            r#"--entrypoint=["/docker-entrypoint.sh","a b"]"#,
            "--user",
            "101:101",
            "--workdir=/srv",
            "--env=A=b=c",
            "--env",
            "EMPTY=",
            "--env-file=/run/host/man8s/env/0",
            "--env-compat=python-mbctl",
            "--no-network",
            "--dhcp-timeout=0.5",
            "--no-lease-keeper",
            "--forward=8080",
            "--forward",
            "udp:53",
            "--sysctl=net.ipv4.ip_unprivileged_port_start=80",
            "--capability=CAP_SYS_ADMIN",
            "--drop-capability=cap_mknod,CAP_CHOWN",
        ])
        .unwrap();
        assert_eq!(a.exec.as_deref(), Some("nginx -g 'daemon off;'"));
        assert_eq!(
            a.entrypoint,
            Some(vec!["/docker-entrypoint.sh".to_owned(), "a b".to_owned()])
        );
        assert_eq!(a.user.as_deref(), Some("101:101"));
        assert_eq!(a.workdir.as_deref(), Some("/srv"));
        assert_eq!(
            a.env,
            vec![("A".into(), "b=c".into()), ("EMPTY".into(), "".into())]
        );
        assert_eq!(a.env_files, vec![PathBuf::from("/run/host/man8s/env/0")]);
        assert_eq!(a.env_compat, man8s::envfile::Mode::PythonMbctl);
        assert!(a.no_network && a.no_lease_keeper);
        assert_eq!(a.dhcp_timeout, Duration::from_millis(500));
        use crate::forward::Proto;
        assert_eq!(a.forward, vec![(Proto::Tcp, 8080), (Proto::Udp, 53)]);
        assert_eq!(a.capabilities, vec!["CAP_SYS_ADMIN"]);
        assert_eq!(a.drop_capabilities, vec!["CAP_MKNOD", "CAP_CHOWN"]);
        assert_eq!(
            a.sysctls,
            vec![("net.ipv4.ip_unprivileged_port_start".into(), "80".into())]
        );
    }

    #[test]
    fn usage_errors() {
        for bad in [
            vec!["--bogus"],
            vec!["positional"],
            vec!["--env=NOEQUALS"],
            vec!["--env==x"],
            vec!["--exec"],
            vec!["--entrypoint=/bin/sh"],
            vec!["--entrypoint=[1]"],
            vec!["--dhcp-timeout=soon"],
            vec!["--dhcp-timeout=-1"],
            vec!["--no-network=yes"],
            vec!["--forward=sctp:1"],
            vec!["--forward=0"],
            vec!["--forward=tcp:+80"],
            vec!["--forward=70000"],
            vec!["--sysctl=kernel.shmmax=1"],
            vec!["--drop-capability=CAP_FLY"],
            vec!["--sysctl=net.ipv4../x=1"],
            vec!["--sysctl=net.core.somaxconn="],
            vec!["--env-compat=bash"],
        ] {
            assert!(parse(bad.clone()).is_err(), "{bad:?} should be refused");
        }
        assert!(
            parse(["--bogus"])
                .unwrap_err()
                .to_string()
                .contains("--bogus")
        );
    }
}
