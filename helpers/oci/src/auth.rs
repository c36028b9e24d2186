//! Registry credentials from Docker-format `auths` files.
//!
//! Looked up in order, first file with an entry for the registry wins: `/etc/man8s/auth.json`
//! (under `MAN8S_ROOT`), `$REGISTRY_AUTH_FILE`, `$XDG_RUNTIME_DIR/containers/auth.json`,
//! `$HOME/.docker/config.json`. Entries carry `auth` (base64 of `user:password`) or
//! `username` + `password`; keys may be bare hosts or URLs (`https://index.docker.io/v1/`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use serde::Deserialize;

use crate::error::Error;
use crate::reference::DOCKER_HUB;

/// A username and password for basic auth or for the token endpoint.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// User name.
    pub username: String,
    /// Password or token.
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({:?}, <hidden>)", self.username)
    }
}

#[derive(Deserialize)]
struct AuthFile {
    #[serde(default)]
    auths: BTreeMap<String, Entry>,
}

#[derive(Deserialize)]
struct Entry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
}

/// The auth files to consult, in order (file-system paths).
pub fn auth_files(paths: &man8s::Paths) -> Vec<PathBuf> {
    let mut files = vec![paths.fs(man8s::paths::AUTH_FILE)];
    if let Some(f) = std::env::var_os("REGISTRY_AUTH_FILE").filter(|f| !f.is_empty()) {
        files.push(f.into());
    }
    if let Some(d) = std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        files.push(Path::new(&d).join("containers/auth.json"));
    }
    if let Some(h) = std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        files.push(Path::new(&h).join(".docker/config.json"));
    }
    files
}

/// Credentials for `registry` from the first file in `files` that has them.
pub fn lookup(files: &[PathBuf], registry: &str) -> Result<Option<Credentials>, Error> {
    for f in files {
        let text = match std::fs::read_to_string(f) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                return Err(Error::Config {
                    path: f.clone(),
                    reason: e.to_string(),
                });
            }
        };
        if let Some(c) = find_in(&text, registry).map_err(|reason| Error::Config {
            path: f.clone(),
            reason,
        })? {
            return Ok(Some(c));
        }
    }
    Ok(None)
}

/// Look `registry` up in the text of one auths file.
pub fn find_in(text: &str, registry: &str) -> Result<Option<Credentials>, String> {
    let file: AuthFile =
        serde_json::from_str(text).map_err(|e| format!("not a Docker auths file: {e}"))?;
    let want = canonical_host(registry);
    for (key, entry) in &file.auths {
        if canonical_host(key) != want {
            continue;
        }
        if let (Some(u), Some(p)) = (&entry.username, &entry.password) {
            return Ok(Some(Credentials {
                username: u.clone(),
                password: p.clone(),
            }));
        }
        if let Some(a) = entry.auth.as_deref().filter(|a| !a.is_empty()) {
            let raw = decode_base64(a.trim())
                .ok_or_else(|| format!("entry {key:?}: \"auth\" is not base64"))?;
            let s = String::from_utf8(raw)
                .map_err(|_| format!("entry {key:?}: \"auth\" is not UTF-8"))?;
            let (u, p) = s
                .split_once(':')
                .ok_or_else(|| format!("entry {key:?}: \"auth\" is not user:password"))?;
            return Ok(Some(Credentials {
                username: u.into(),
                password: p.into(),
            }));
        }
    }
    Ok(None)
}

/// `https://index.docker.io/v1/` → `docker.io`; `http://h:5000/x` → `h:5000`.
fn canonical_host(key: &str) -> &str {
    let k = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let k = k.split('/').next().unwrap_or(k);
    match k {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => DOCKER_HUB,
        other => other,
    }
}

/// Standard base64, padded or not, as lenient as Docker's own reader (trailing bits allowed).
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

pub(crate) fn decode_base64(s: &str) -> Option<Vec<u8>> {
    BASE64.decode(s).ok()
}

/// Standard base64 with padding (tests build auth files with it).
#[cfg(test)]
pub(crate) fn encode_base64(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_roundtrip() {
        for s in ["", "a", "ab", "abc", "user:pa:ss", "ünï"] {
            assert_eq!(
                decode_base64(&encode_base64(s.as_bytes())).unwrap(),
                s.as_bytes()
            );
        }
        assert_eq!(encode_base64(b"user:pass"), "dXNlcjpwYXNz");
    }

    #[test]
    fn finds_entries() {
        let text = r#"{"auths":{"https://index.docker.io/v1/":{"auth":"dXNlcjpwYXNz"},
            "127.0.0.1:5000":{"username":"u","password":"p:q"}}}"#;
        let hub = find_in(text, "docker.io").unwrap().unwrap();
        assert_eq!(
            (hub.username.as_str(), hub.password.as_str()),
            ("user", "pass")
        );
        let local = find_in(text, "127.0.0.1:5000").unwrap().unwrap();
        assert_eq!(local.password, "p:q");
        assert!(find_in(text, "ghcr.io").unwrap().is_none());
        assert!(find_in("{", "x").is_err());
        assert!(
            find_in(r#"{"auths":{"x":{"auth":"!!"}}}"#, "x")
                .unwrap_err()
                .contains("base64")
        );
    }

    #[test]
    fn file_order() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.json");
        let b = dir.path().join("b.json");
        std::fs::write(&a, r#"{"auths":{"other":{"username":"x","password":"y"}}}"#).unwrap();
        std::fs::write(&b, r#"{"auths":{"reg":{"username":"u","password":"p"}}}"#).unwrap();
        let missing = dir.path().join("none.json");
        let c = lookup(&[missing, a, b], "reg").unwrap().unwrap();
        assert_eq!(c.username, "u");
    }
}
