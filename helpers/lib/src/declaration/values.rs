//! The value grammars of declaration keys: pure functions from one value to its model type (or
//! a one-line reason), shared by the declaration parser and `mbctl`'s import/migrate.

use std::path::PathBuf;

use crate::machine::{Credential, Port, Protocol, Volume, VolumeSource};
use crate::reference::ImageRef;
use crate::words::systemd::{self, Escapes};

/// Split an `Environment=` value the way systemd.exec does: whitespace-separated words, each
/// `NAME=VALUE`, with `"…"`/`'…'` quoting and C-style backslash escapes.
pub fn split_environment(value: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for word in systemd::split(value, Escapes::CUnescape)? {
        let Some((name, val)) = word.split_once('=') else {
            return Err(format!("{word:?} is not NAME=VALUE"));
        };
        if !is_env_name(name) {
            return Err(format!(
                "{name:?} is not a valid variable name (letters, digits and '_', not starting with a digit)"
            ));
        }
        out.push((name.to_owned(), val.to_owned()));
    }
    Ok(out)
}

/// Split a `Label=` value as Quadlet does (as `Environment=`): whitespace-separated
/// `KEY=VALUE` words with systemd quoting; a key is any non-empty text without control characters.
pub fn split_labels(value: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for word in systemd::split(value, Escapes::CUnescape)? {
        let Some((key, val)) = word.split_once('=') else {
            return Err(format!("{word:?} is not KEY=VALUE"));
        };
        if key.is_empty() {
            return Err(format!("{word:?} has an empty label key"));
        }
        if word.chars().any(char::is_control) {
            return Err(format!("label {key:?} contains a control character"));
        }
        out.push((key.to_owned(), val.to_owned()));
    }
    Ok(out)
}

fn is_env_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Values that end up on one line of a generated file cannot hold line breaks or NUL.
pub(super) fn check_single_line(value: &str) -> Result<(), String> {
    if value.contains(['\n', '\r', '\0']) {
        return Err("line breaks and NUL bytes cannot be passed on".into());
    }
    Ok(())
}

fn check_no_control(value: &str) -> Result<(), String> {
    if value.chars().any(|c| c.is_control()) {
        return Err("control characters are not allowed".into());
    }
    Ok(())
}

/// An absolute, normalised path without `.`/`..` components.
pub(super) fn absolute_path(value: &str) -> Result<String, String> {
    check_no_control(value)?;
    if !value.starts_with('/') {
        return Err(format!("{value:?} is not an absolute path"));
    }
    let mut out = String::new();
    for comp in value.split('/').filter(|c| !c.is_empty()) {
        if comp == "." || comp == ".." {
            return Err(format!("{value:?} contains a '{comp}' component"));
        }
        out.push('/');
        out.push_str(comp);
    }
    if out.is_empty() {
        out.push('/');
    }
    Ok(out)
}

/// `Image=`: an image reference, by the one grammar the fetcher also uses ([`ImageRef`]).
pub fn validate_image_reference(reference: &str) -> Result<(), String> {
    ImageRef::parse(reference)
        .map(drop)
        .map_err(|e| e.to_string())
}

/// `name`, `uid`, `name:group` or `uid:gid`.
pub(super) fn validate_user(value: &str) -> Result<(), String> {
    let part_ok = |p: &str| {
        if p.is_empty() || p.len() > 256 {
            return false;
        }
        if p.bytes().all(|b| b.is_ascii_digit()) {
            return p.parse::<u32>().is_ok_and(|n| n != u32::MAX);
        }
        let mut b = p.bytes();
        matches!(b.next(), Some(c) if c.is_ascii_alphabetic() || c == b'_')
            && p.trim_end_matches('$')
                .bytes()
                .skip(1)
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
    };
    let mut parts = value.splitn(2, ':');
    let user = parts.next().unwrap_or_default();
    let group = parts.next();
    if part_ok(user) && group.is_none_or(part_ok) {
        Ok(())
    } else {
        Err(format!(
            "{value:?} is not a user: expected NAME, UID, NAME:GROUP or UID:GID"
        ))
    }
}

fn parse_port_number(s: &str) -> Result<u16, String> {
    match s.parse::<u32>() {
        Ok(n) if (1..=65535).contains(&n) && s.bytes().all(|b| b.is_ascii_digit()) => Ok(n as u16),
        _ => Err(format!("{s:?} is not a port number (1-65535)")),
    }
}

/// `[tcp:|udp:]HOSTPORT:CONTAINERPORT`.
pub fn parse_port(value: &str) -> Result<Port, String> {
    let parts: Vec<&str> = value.split(':').collect();
    let (protocol, host, container) = match parts.as_slice() {
        [proto, h, c] => {
            let p = match *proto {
                "tcp" => Protocol::Tcp,
                "udp" => Protocol::Udp,
                other => return Err(format!("protocol {other:?} is neither tcp nor udp")),
            };
            (p, *h, *c)
        }
        [h, c] => (Protocol::Tcp, *h, *c),
        _ => {
            return Err(format!(
                "{value:?} is not [tcp:|udp:]HOSTPORT:CONTAINERPORT"
            ));
        }
    };
    Ok(Port {
        protocol,
        host: parse_port_number(host)?,
        container: parse_port_number(container)?,
    })
}

/// `CONTAINER_PATH:config|data|/host/path[:ro|:rw]`.
pub fn parse_volume(value: &str) -> Result<Volume, String> {
    let parts: Vec<&str> = value.split(':').collect();
    let (path, source, read_only) = match parts.as_slice() {
        [p, s] => (*p, *s, false),
        [p, s, "ro"] => (*p, *s, true),
        [p, s, "rw"] => (*p, *s, false),
        [_, _, opt] => return Err(format!("option {opt:?} is neither ro nor rw")),
        _ => {
            return Err(format!(
                "{value:?} is not CONTAINER_PATH:config|data|/host/path|+/path[:ro]"
            ));
        }
    };
    let container_path = absolute_path(path).map_err(|e| format!("container path: {e}"))?;
    if container_path == "/" {
        return Err("the container path may not be /".into());
    }
    let source = match source {
        "config" => VolumeSource::Config,
        "data" => VolumeSource::Data,
        host if host.starts_with('/') => VolumeSource::Host(PathBuf::from(
            absolute_path(host).map_err(|e| format!("host path: {e}"))?,
        )),
        inside if inside.starts_with("+/") => {
            let p = absolute_path(&inside[1..]).map_err(|e| format!("path in the root: {e}"))?;
            if p == "/" {
                return Err("the machine's root cannot be a volume source".into());
            }
            VolumeSource::Root(p)
        }
        other => {
            return Err(format!(
                "volume source {other:?} is not config, data, an absolute host path or +/path in the root"
            ));
        }
    };
    Ok(Volume {
        container_path,
        source,
        read_only,
    })
}

fn parse_decimal_percent(s: &str) -> Option<f64> {
    let num = s.strip_suffix('%')?;
    let (int, frac) = num.split_once('.').unwrap_or((num, ""));
    let ok = !int.is_empty()
        && int.len() <= 9
        && int.bytes().all(|b| b.is_ascii_digit())
        && frac.len() <= 2
        && frac.bytes().all(|b| b.is_ascii_digit())
        && (num.contains('.') != frac.is_empty());
    ok.then(|| num.parse().ok()).flatten()
}

/// `MemoryMax=`: `infinity`, bytes with an optional K/M/G/T/P/E (base 1024) suffix, or a percentage.
pub(super) fn validate_memory(value: &str) -> Result<(), String> {
    if value == "infinity" {
        return Ok(());
    }
    if value.ends_with('%') {
        return match parse_decimal_percent(value) {
            Some(p) if p <= 100.0 => Ok(()),
            _ => Err(format!("{value:?} is not a percentage between 0% and 100%")),
        };
    }
    let digits_end = value
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(value.len());
    let (num, suffix) = value.split_at(digits_end);
    let num_ok = !num.is_empty()
        && !num.starts_with('.')
        && !num.ends_with('.')
        && num.matches('.').count() <= 1;
    let exp = match suffix {
        "" | "B" => 0,
        "K" => 1,
        "M" => 2,
        "G" => 3,
        "T" => 4,
        "P" => 5,
        "E" => 6,
        _ => -1,
    };
    let fits = num
        .parse::<f64>()
        .is_ok_and(|n| exp >= 0 && n * 1024f64.powi(exp) < u64::MAX as f64);
    if num_ok && exp >= 0 && fits {
        Ok(())
    } else {
        Err(format!(
            "{value:?} is not a size: bytes with an optional K, M, G, T, P or E suffix, a percentage, or infinity"
        ))
    }
}

/// `CPUQuota=`: a positive percentage (may exceed 100%, one CPU = 100%).
pub(super) fn validate_cpu_quota(value: &str) -> Result<(), String> {
    match parse_decimal_percent(value) {
        Some(p) if p > 0.0 => Ok(()),
        _ => Err(format!(
            "{value:?} is not a positive percentage (100% = one CPU)"
        )),
    }
}

/// `TasksMax=`: a number, a percentage, or `infinity`.
pub(super) fn validate_tasks_max(value: &str) -> Result<(), String> {
    if value == "infinity" {
        return Ok(());
    }
    if value.ends_with('%') {
        return match parse_decimal_percent(value) {
            Some(p) if p <= 100.0 => Ok(()),
            _ => Err(format!("{value:?} is not a percentage between 0% and 100%")),
        };
    }
    match value.parse::<u64>() {
        Ok(n) if n > 0 && value.bytes().all(|b| b.is_ascii_digit()) => Ok(()),
        _ => Err(format!(
            "{value:?} is not a positive number, a percentage, or infinity"
        )),
    }
}

/// A Linux network interface name: 1–15 printable ASCII characters, no `/`, `:` or `%`, not `.`
/// or `..` (what the kernel and networkd accept).
pub fn validate_ifname(value: &str) -> Result<(), String> {
    let ok = !value.is_empty()
        && value.len() < 16
        && value != "."
        && value != ".."
        && value
            .bytes()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b'/' | b':' | b'%'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{value:?} is not a network interface name (1-15 characters, no '/', ':', '%' or spaces)"
        ))
    }
}

const UNIT_SUFFIXES: &[&str] = &[
    ".target",
    ".service",
    ".socket",
    ".device",
    ".mount",
    ".automount",
    ".swap",
    ".path",
    ".timer",
    ".slice",
    ".scope",
];

pub(super) fn validate_unit_name(value: &str) -> Result<(), String> {
    let ok = value.len() <= 255
        && UNIT_SUFFIXES
            .iter()
            .any(|s| value.len() > s.len() && value.ends_with(s))
        && value.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b':' | b'-' | b'_' | b'.' | b'\\' | b'@')
        });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{value:?} is not a unit name (e.g. machines.target)"
        ))
    }
}

/// A credential name as systemd accepts it.
fn validate_credential_id(id: &str) -> Result<(), String> {
    let ok = !id.is_empty()
        && id.len() <= 255
        && id != "."
        && id != ".."
        && !id.contains('/')
        && id.chars().all(|c| !c.is_control() && !c.is_whitespace());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{id:?} is not a credential name (no '/', spaces or control characters)"
        ))
    }
}

pub(super) fn parse_credential(key: &str, value: &str) -> Result<Credential, String> {
    check_no_control(value)?;
    let Some((id, rest)) = value.split_once(':') else {
        return Err(format!(
            "{value:?} is not ID:{}",
            if key.starts_with("Load") {
                "PATH"
            } else {
                "VALUE"
            }
        ));
    };
    validate_credential_id(id)?;
    let id = id.to_owned();
    Ok(match key {
        "LoadCredential" | "LoadCredentialEncrypted" => {
            let path = PathBuf::from(absolute_path(rest)?);
            if key == "LoadCredential" {
                Credential::Load { id, path }
            } else {
                Credential::LoadEncrypted { id, path }
            }
        }
        "SetCredential" => Credential::Set {
            id,
            value: rest.to_owned(),
        },
        _ => {
            if rest.is_empty()
                || !rest
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=' | b' '))
            {
                return Err(
                    "the value must be base64 (from systemd-creds encrypt --pretty)".into(),
                );
            }
            Credential::SetEncrypted {
                id,
                value: rest.to_owned(),
            }
        }
    })
}
