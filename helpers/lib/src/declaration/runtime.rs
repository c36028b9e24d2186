//! The run-time keys of `[Machine]` (issue "real images"): how the app is started, stopped and
//! confined. Names and meanings are Quadlet's; every value is checked here and kept in the form
//! nspawn or the unit needs, so that the generator only copies it.

use crate::machine::{Device, Runtime, Tmpfs, ULIMITS};
use crate::signal::Signal;

/// The keys this module folds (all in `[Machine]`).
pub const KEYS: &[&str] = &[
    "Entrypoint",
    "StopSignal",
    "StopTimeout",
    "ReloadSignal",
    "AddCapability",
    "DropCapability",
    "NoNewPrivileges",
    "SystemCallFilter",
    "ReadOnly",
    "Tmpfs",
    "ShmSize",
    "Ulimit",
    "Sysctl",
    "Hostname",
    "Timezone",
    "AddDevice",
    "Label",
];

/// Apply `key=value` to `rt`. `key` is one of [`KEYS`]; an empty value resets the key (for
/// `Entrypoint=` it clears the Entrypoint, as in Quadlet).
pub fn fold(key: &str, value: &str, rt: &mut Runtime) -> Result<(), String> {
    let empty = value.is_empty();
    match key {
        "Entrypoint" => rt.entrypoint = Some(parse_entrypoint(value)?),
        "StopSignal" => rt.stop_signal = optional(value, parse_signal)?,
        "ReloadSignal" => rt.reload_signal = optional(value, parse_signal)?,
        "StopTimeout" => rt.stop_timeout = optional(value, parse_seconds)?,
        "AddCapability" | "DropCapability" => {
            let list = if key == "AddCapability" {
                &mut rt.add_capabilities
            } else {
                &mut rt.drop_capabilities
            };
            if empty {
                list.clear();
            }
            for word in value.split_whitespace() {
                list.push(parse_capability(word)?);
            }
            list.sort();
            list.dedup();
        }
        "NoNewPrivileges" => rt.no_new_privileges = !empty && parse_bool(value)?,
        "ReadOnly" => rt.read_only = !empty && parse_bool(value)?,
        "SystemCallFilter" => {
            if empty {
                rt.system_call_filter.clear();
            } else {
                validate_syscall_filter(value)?;
                rt.system_call_filter.push(value.to_owned());
            }
        }
        "Tmpfs" => {
            if empty {
                rt.tmpfs.clear();
            } else {
                let t = parse_tmpfs(value)?;
                if rt.tmpfs.iter().any(|x| x.path == t.path) {
                    return Err(format!("{} already has a Tmpfs=", t.path));
                }
                rt.tmpfs.push(t);
            }
        }
        "ShmSize" => rt.shm_size = optional(value, parse_size)?,
        "Ulimit" => {
            if empty {
                rt.ulimits.clear();
            } else {
                let (k, v) = parse_ulimit(value)?;
                rt.ulimits.retain(|(x, _)| *x != k);
                rt.ulimits.push((k, v));
                let order = |k: &str| ULIMITS.iter().position(|(_, n)| *n == k);
                rt.ulimits.sort_by_key(|(k, _)| order(k));
            }
        }
        "Sysctl" => {
            if empty {
                rt.sysctls.clear();
            } else {
                for word in value.split_whitespace() {
                    let (k, v) = parse_sysctl(word)?;
                    rt.sysctls.retain(|(x, _)| *x != k);
                    rt.sysctls.push((k, v));
                }
            }
        }
        "Hostname" => rt.hostname = optional(value, parse_hostname)?,
        "Timezone" => rt.timezone = optional(value, parse_timezone)?,
        "AddDevice" => {
            if empty {
                rt.devices.clear();
            } else {
                rt.devices.push(parse_device(value)?);
            }
        }
        "Label" => {
            if empty {
                rt.labels.clear();
            }
            for (k, v) in super::values::split_labels(value)? {
                match rt.labels.iter_mut().find(|(x, _)| *x == k) {
                    Some(slot) => slot.1 = v,
                    None => rt.labels.push((k, v)),
                }
            }
        }
        other => return Err(format!("internal: {other}= is not a run-time key")),
    }
    Ok(())
}

fn optional<T>(value: &str, parse: fn(&str) -> Result<T, String>) -> Result<Option<T>, String> {
    if value.is_empty() {
        Ok(None)
    } else {
        parse(value).map(Some)
    }
}

fn parse_signal(value: &str) -> Result<Signal, String> {
    match Signal::parse(value) {
        Ok(s) if s == Signal::KILL || s.number() == 19 => Err(format!(
            "{s} cannot be caught; the app would get no chance to stop cleanly"
        )),
        Ok(s) => Ok(s),
        Err(e) => Err(e.to_string()),
    }
}

fn parse_bool(value: &str) -> Result<bool, String> {
    match value.to_ascii_lowercase().as_str() {
        "1" | "yes" | "y" | "true" | "t" | "on" => Ok(true),
        "0" | "no" | "n" | "false" | "f" | "off" => Ok(false),
        _ => Err(format!("{value:?} is not a boolean (yes or no)")),
    }
}

/// Whole seconds (Quadlet's `StopTimeout=`); at most a day.
fn parse_seconds(value: &str) -> Result<u64, String> {
    value
        .parse::<u64>()
        .ok()
        .filter(|s| *s <= 86_400 && value.bytes().all(|b| b.is_ascii_digit()))
        .ok_or_else(|| format!("{value:?} is not a number of seconds (0 to 86400)"))
}

/// A single program, or a JSON array of words (Quadlet's two forms). `""`, `[]` and empty clear.
pub fn parse_entrypoint(value: &str) -> Result<Vec<String>, String> {
    if value.is_empty() || value == "\"\"" {
        return Ok(Vec::new());
    }
    let words: Vec<String> = if value.starts_with('[') {
        serde_json::from_str(value)
            .map_err(|_| format!("{value:?} is not a JSON array of strings"))?
    } else {
        vec![value.to_owned()]
    };
    if words.iter().any(|w| w.contains('\0') || w.contains('\n')) {
        return Err("a word contains a NUL or line break".into());
    }
    if words.first().is_some_and(|w| w.is_empty()) {
        return Err("the program (first word) is empty".into());
    }
    Ok(words)
}

/// `CAP_NET_ADMIN`, `NET_ADMIN`, `net_admin` → `CAP_NET_ADMIN` (Podman accepts all three).
pub fn parse_capability(word: &str) -> Result<String, String> {
    let upper = word.to_ascii_uppercase();
    if upper == "ALL" {
        return Ok(upper);
    }
    let name = if upper.starts_with("CAP_") {
        upper
    } else {
        format!("CAP_{upper}")
    };
    if crate::machine::CAPABILITIES.iter().any(|(c, _)| *c == name) {
        Ok(name)
    } else {
        Err(format!(
            "{word:?} is not a Linux capability (e.g. CAP_NET_ADMIN)"
        ))
    }
}

/// systemd's `SystemCallFilter=` words: `[~]NAME|@GROUP[:ERRNO]`, space-separated.
fn validate_syscall_filter(value: &str) -> Result<(), String> {
    let body = value.strip_prefix('~').unwrap_or(value);
    let ok_word = |w: &str| {
        let (name, errno) = w.split_once(':').unwrap_or((w, "x"));
        let name = name.strip_prefix('@').unwrap_or(name);
        !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
            && !errno.is_empty()
            && errno.bytes().all(|b| b.is_ascii_alphanumeric())
    };
    match body.split_whitespace().find(|w| !ok_word(w)) {
        None if !body.trim().is_empty() => Ok(()),
        None => Err("no system call named".into()),
        Some(w) => Err(format!(
            "{w:?} is not a system call or @group (systemd.exec(5) SystemCallFilter=)"
        )),
    }
}

/// A path inside the machine that nspawn's colon-separated settings can carry as is.
fn plain_container_path(p: &str) -> Result<String, String> {
    let safe = |b: u8| b.is_ascii_alphanumeric() || b"/._-+@".contains(&b);
    if !p.starts_with('/') || p.split('/').any(|c| c == "..") {
        return Err(format!("{p:?} is not an absolute path without '..'"));
    }
    if !p.bytes().all(safe) {
        return Err(format!(
            "{p:?}: only letters, digits and /._-+@ are allowed in this path"
        ));
    }
    let trimmed = p.trim_end_matches('/');
    Ok(if trimmed.is_empty() { "/" } else { trimmed }.to_owned())
}

/// `PATH[:OPTIONS]` (Podman's `--tmpfs`; options as mount(8)'s tmpfs options).
pub fn parse_tmpfs(value: &str) -> Result<Tmpfs, String> {
    let (path, options) = value.split_once(':').unwrap_or((value, ""));
    let path = plain_container_path(path)?;
    if path == "/" {
        return Err("the root cannot be a Tmpfs= (see ReadOnly=)".into());
    }
    let safe = |b: u8| b.is_ascii_alphanumeric() || b"=,._-+%".contains(&b);
    if !options.bytes().all(safe) {
        return Err(format!(
            "options {options:?}: only letters, digits and =,._-+% are allowed"
        ));
    }
    Ok(Tmpfs {
        path,
        options: options.to_owned(),
    })
}

/// systemd's size syntax: bytes with an optional K/M/G/T suffix (base 1024), at least 1 MiB.
pub fn parse_size(value: &str) -> Result<String, String> {
    let bad = || format!("{value:?} is not a size (e.g. 64M, 1G)");
    let (digits, suffix) = value.split_at(
        value
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(value.len()),
    );
    let n: u64 = digits.parse().map_err(|_| bad())?;
    let mult: u64 = match suffix.to_ascii_uppercase().as_str() {
        "" => 1,
        "K" | "KB" | "KIB" => 1 << 10,
        "M" | "MB" | "MIB" => 1 << 20,
        "G" | "GB" | "GIB" => 1 << 30,
        "T" | "TB" | "TIB" => 1 << 40,
        _ => return Err(bad()),
    };
    let bytes = n.checked_mul(mult).ok_or_else(bad)?;
    if bytes < 1 << 20 {
        return Err(format!("{value:?} is smaller than 1M"));
    }
    // tmpfs takes k/m/g suffixes; keep plain bytes so every consumer reads the same number.
    Ok(bytes.to_string())
}

/// `TYPE=SOFT[:HARD]` (Podman's `--ulimit`): numbers or `unlimited`/`-1`; soft ≤ hard.
pub fn parse_ulimit(value: &str) -> Result<(String, String), String> {
    let Some((kind, limits)) = value.split_once('=') else {
        return Err(format!(
            "{value:?} is not TYPE=SOFT[:HARD] (e.g. nofile=65536:65536)"
        ));
    };
    let Some((_, key)) = ULIMITS.iter().find(|(t, _)| *t == kind) else {
        let names: Vec<&str> = ULIMITS.iter().map(|(t, _)| *t).collect();
        return Err(format!("{kind:?} is not a limit ({})", names.join(", ")));
    };
    let num = |s: &str| -> Result<Option<u64>, String> {
        match s {
            "unlimited" | "infinity" | "-1" => Ok(None),
            _ => s
                .parse::<u64>()
                .map(Some)
                .map_err(|_| format!("{s:?} is not a number or unlimited")),
        }
    };
    let (soft, hard) = limits.split_once(':').unwrap_or((limits, limits));
    let (s, h) = (num(soft)?, num(hard)?);
    if let (Some(s), Some(h)) = (s, h)
        && s > h
    {
        return Err(format!("soft limit {s} is above the hard limit {h}"));
    }
    if s.is_none() && h.is_some() {
        return Err("an unlimited soft limit needs an unlimited hard limit".into());
    }
    let show = |v: Option<u64>| v.map_or("infinity".to_owned(), |n| n.to_string());
    Ok(((*key).to_owned(), format!("{}:{}", show(s), show(h))))
}

/// `net.…=VALUE`: only the network namespace's sysctls, which the machine owns.
pub fn parse_sysctl(word: &str) -> Result<(String, String), String> {
    let Some((name, value)) = word.split_once('=') else {
        return Err(format!("{word:?} is not NAME=VALUE"));
    };
    let name = name.replace('/', ".");
    let valid = name.split('.').all(|c| {
        !c.is_empty()
            && c.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    });
    if !valid {
        return Err(format!("{name:?} is not a sysctl name"));
    }
    if !name.starts_with("net.") {
        return Err(format!(
            "{name}: only net.* sysctls belong to the machine (its network namespace); others would change the host"
        ));
    }
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!("{name}: {value:?} is not a sysctl value"));
    }
    Ok((name, value.to_owned()))
}

/// An RFC 1123 host name (labels of letters, digits and `-`), at most 64 bytes.
pub fn parse_hostname(value: &str) -> Result<String, String> {
    let ok = value.len() <= 64
        && value.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if ok {
        Ok(value.to_owned())
    } else {
        Err(format!("{value:?} is not a host name"))
    }
}

/// `local` or a tz database name (`Europe/Berlin`, `UTC`, `Etc/GMT+2`).
pub fn parse_timezone(value: &str) -> Result<String, String> {
    let ok = value == "local"
        || (!value.starts_with('/')
            && value.split('/').all(|c| {
                !c.is_empty()
                    && c != ".."
                    && c != "."
                    && c.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"_+-".contains(&b))
            }));
    if ok {
        Ok(value.to_owned())
    } else {
        Err(format!(
            "{value:?} is not local or a time zone name such as Europe/Berlin"
        ))
    }
}

/// `HOST[:CONTAINER][:PERMISSIONS]` (Podman's `--device`).
pub fn parse_device(value: &str) -> Result<Device, String> {
    let parts: Vec<&str> = value.split(':').collect();
    let is_perm = |s: &str| !s.is_empty() && s.len() <= 3 && s.bytes().all(|b| b"rwm".contains(&b));
    let (host, container, perms) = match parts.as_slice() {
        [h] => (*h, *h, "rwm"),
        [h, p] if is_perm(p) => (*h, *h, *p),
        [h, c] => (*h, *c, "rwm"),
        [h, c, p] => (*h, *c, *p),
        _ => return Err(format!("{value:?} is not HOST[:CONTAINER][:PERMISSIONS]")),
    };
    let host = plain_container_path(host)?;
    if !host.starts_with("/dev/") {
        return Err(format!("{host} is not a device under /dev"));
    }
    let container = plain_container_path(container)?;
    if !is_perm(perms) {
        return Err(format!("{perms:?} is not r, w, m or a combination"));
    }
    Ok(Device {
        host,
        container,
        permissions: perms.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn folded(pairs: &[(&str, &str)]) -> Result<Runtime, String> {
        let mut rt = Runtime::default();
        for (k, v) in pairs {
            fold(k, v, &mut rt)?;
        }
        Ok(rt)
    }

    #[test]
    fn entrypoint_forms() {
        assert_eq!(
            parse_entrypoint("/usr/bin/tini").unwrap(),
            ["/usr/bin/tini"]
        );
        assert_eq!(
            parse_entrypoint(r#"["/bin/tini", "--", "a b"]"#).unwrap(),
            ["/bin/tini", "--", "a b"]
        );
        for clear in ["", "\"\"", "[]"] {
            assert!(parse_entrypoint(clear).unwrap().is_empty(), "{clear}");
        }
        assert!(parse_entrypoint("[\"unclosed\"").is_err());
        assert!(parse_entrypoint("[1, 2]").is_err());
        assert!(parse_entrypoint(r#"["", "x"]"#).is_err());
        // Entrypoint= in a drop-in clears what the main file set.
        let rt = folded(&[("Entrypoint", "/x"), ("Entrypoint", "")]).unwrap();
        assert_eq!(rt.entrypoint, Some(vec![]));
    }

    #[test]
    fn stop_keys() {
        let rt = folded(&[
            ("StopSignal", "SIGINT"),
            ("StopTimeout", "30"),
            ("ReloadSignal", "USR2"),
        ])
        .unwrap();
        assert_eq!(
            rt.stop_signal.map(|s| s.to_string()).as_deref(),
            Some("SIGINT")
        );
        assert_eq!(rt.stop_timeout, Some(30));
        assert_eq!(rt.reload_signal.map(|s| s.number()), Some(12));
        let rt = folded(&[("StopSignal", "SIGINT"), ("StopSignal", "")]).unwrap();
        assert_eq!(rt.stop_signal, None);
        for (k, v, why) in [
            ("StopSignal", "SIGFOO", "not a signal"),
            ("StopSignal", "KILL", "cannot be caught"),
            ("StopTimeout", "10s", "seconds"),
            ("StopTimeout", "-1", "seconds"),
            ("StopTimeout", "100000", "seconds"),
            ("ReloadSignal", "SIGRTMIN+99", "not a signal"),
        ] {
            let e = folded(&[(k, v)]).unwrap_err();
            assert!(e.contains(why), "{k}={v}: {e}");
        }
    }

    #[test]
    fn capabilities() {
        let rt = folded(&[
            ("AddCapability", "SYS_ADMIN net_admin"),
            ("AddCapability", "CAP_SYS_TIME"),
            ("DropCapability", "CAP_MKNOD"),
        ])
        .unwrap();
        assert_eq!(
            rt.add_capabilities,
            ["CAP_NET_ADMIN", "CAP_SYS_ADMIN", "CAP_SYS_TIME"]
        );
        let add: Vec<&str> = rt.add_capabilities.iter().map(String::as_str).collect();
        let drop: Vec<&str> = rt.drop_capabilities.iter().map(String::as_str).collect();
        let keep = crate::machine::app_capabilities(&add, &drop);
        assert!(!keep.contains(&27), "CAP_MKNOD dropped"); // 27
        assert!(!keep.contains(&19), "CAP_SYS_PTRACE is not Docker's"); // 19
        assert!(keep.contains(&21) && keep.contains(&25), "added back");
        assert!(keep.contains(&0), "CAP_CHOWN is Docker's");
        assert!(crate::machine::app_capabilities(&[], &["ALL"]).is_empty());
        let e = folded(&[("AddCapability", "CAP_FLY")]).unwrap_err();
        assert!(e.contains("not a Linux capability"), "{e}");
        let rt = folded(&[("AddCapability", "SYS_ADMIN"), ("AddCapability", "")]).unwrap();
        assert!(rt.add_capabilities.is_empty());
    }

    #[test]
    fn booleans_and_syscall_filters() {
        let rt = folded(&[
            ("NoNewPrivileges", "yes"),
            ("ReadOnly", "true"),
            ("SystemCallFilter", "@system-service"),
            ("SystemCallFilter", "~@mount kexec_load:EPERM"),
        ])
        .unwrap();
        assert!(rt.no_new_privileges && rt.read_only);
        assert_eq!(rt.system_call_filter.len(), 2);
        assert!(
            folded(&[("ReadOnly", "maybe")])
                .unwrap_err()
                .contains("boolean")
        );
        for bad in ["~", "@Bad!", "open\\x", "a:"] {
            assert!(folded(&[("SystemCallFilter", bad)]).is_err(), "{bad}");
        }
    }

    #[test]
    fn tmpfs_shm_and_ulimits() {
        let rt = folded(&[
            ("Tmpfs", "/cache:size=64m,mode=1777"),
            ("Tmpfs", "/scratch"),
            ("ShmSize", "256M"),
            ("Ulimit", "nofile=65536:65536"),
            ("Ulimit", "core=0"),
            ("Ulimit", "memlock=-1"),
        ])
        .unwrap();
        assert_eq!(rt.tmpfs[0].options, "size=64m,mode=1777");
        assert_eq!(rt.tmpfs[1].options, "");
        assert_eq!(rt.shm_size.as_deref(), Some("268435456"));
        assert_eq!(
            rt.ulimits,
            [
                ("LimitCORE".to_owned(), "0:0".to_owned()),
                ("LimitMEMLOCK".to_owned(), "infinity:infinity".to_owned()),
                ("LimitNOFILE".to_owned(), "65536:65536".to_owned())
            ]
        );
        for (k, v, why) in [
            ("Tmpfs", "relative", "absolute"),
            ("Tmpfs", "/a/../etc", "absolute"),
            ("Tmpfs", "/", "root"),
            ("Tmpfs", "/x:size=1 ;rm", "options"),
            ("Tmpfs", "/a b", "only letters"),
            ("ShmSize", "64X", "not a size"),
            ("ShmSize", "1000", "smaller"),
            ("Ulimit", "nofile", "TYPE=SOFT"),
            ("Ulimit", "files=1", "not a limit"),
            ("Ulimit", "nofile=10:5", "above the hard"),
            ("Ulimit", "nofile=lots", "not a number"),
        ] {
            let e = folded(&[(k, v)]).unwrap_err();
            assert!(e.contains(why), "{k}={v}: {e}");
        }
        assert!(folded(&[("Tmpfs", "/x"), ("Tmpfs", "/x/")]).is_err());
    }

    #[test]
    fn sysctls_hostnames_timezones_devices() {
        let rt = folded(&[
            (
                "Sysctl",
                "net.ipv4.ip_unprivileged_port_start=80 net/core/somaxconn=1024",
            ),
            ("Hostname", "db-1.example"),
            ("Timezone", "Europe/Berlin"),
            ("AddDevice", "/dev/fuse"),
            ("AddDevice", "/dev/dri/renderD128:/dev/dri/renderD128:rw"),
            ("AddDevice", "/dev/net/tun:r"),
        ])
        .unwrap();
        assert_eq!(rt.sysctls[1].0, "net.core.somaxconn");
        assert_eq!(rt.devices[0].permissions, "rwm");
        assert_eq!(rt.devices[1].permissions, "rw");
        assert_eq!(rt.devices[2].container, "/dev/net/tun");
        assert_eq!(rt.devices[2].permissions, "r");
        for (k, v, why) in [
            ("Sysctl", "kernel.shmmax=1", "only net."),
            ("Sysctl", "net.ipv4..x=1", "not a sysctl name"),
            ("Sysctl", "net.core.somaxconn", "NAME=VALUE"),
            ("Hostname", "-bad", "host name"),
            ("Hostname", "a_b", "host name"),
            ("Timezone", "../../etc/passwd", "time zone"),
            ("Timezone", "/etc/localtime", "time zone"),
            ("AddDevice", "/etc/shadow", "device under /dev"),
            ("AddDevice", "/dev/fuse:rwx", "absolute"),
            ("AddDevice", "/dev/../etc/shadow", "absolute"),
        ] {
            let e = folded(&[(k, v)]).unwrap_err();
            assert!(e.contains(why), "{k}={v}: {e}");
        }
    }

    #[test]
    fn labels_as_quadlet() {
        let rt = folded(&[
            (
                "Label",
                "org.opencontainers.image.title=pg \"tier=data base\"",
            ),
            ("Label", "tier=db owner="),
        ])
        .unwrap();
        assert_eq!(
            rt.labels,
            [
                ("org.opencontainers.image.title".to_owned(), "pg".to_owned()),
                ("tier".to_owned(), "db".to_owned()),
                ("owner".to_owned(), String::new()),
            ]
        );
        assert!(
            folded(&[("Label", "a=1"), ("Label", ""), ("Label", "b=2")])
                .unwrap()
                .labels
                .iter()
                .all(|(k, _)| k == "b")
        );
        for (v, why) in [
            ("novalue", "KEY=VALUE"),
            ("=x", "empty label key"),
            ("\"a=b", "unterminated"),
            ("a=\\x07", "control character"),
        ] {
            let e = folded(&[("Label", v)]).unwrap_err();
            assert!(e.contains(why), "Label={v}: {e}");
        }
    }
}
