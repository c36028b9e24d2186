//! Image references: one grammar and one type for the declaration check (`Image=`, `mbctl verify`,
//! the generator) and the fetcher, so a reference that passes one never fails the other.
//!
//! Grammar (Docker's `[host[:port]/]path[:tag][@sha256:hex]`): the first path component is a
//! registry host when it contains `.` or `:` or is `localhost` (Docker's rule); host labels are
//! letters, digits and `-`, an IPv6 host is bracketed; path components are lowercase letters and
//! digits separated by `.`, `_`, `__` or dashes; a tag is up to 128 letters, digits, `_`, `.`, `-`
//! not starting with `.` or `-`; digests are `sha256:` and 64 lowercase hex digits (the only
//! algorithm registries serve and the fetcher verifies).
//!
//! Normalisation (Docker's): `redis` → `docker.io/library/redis:latest`; `user/app` →
//! `docker.io/user/app:latest`; `index.docker.io` is `docker.io`. Docker Hub's API lives on
//! `registry-1.docker.io`, not on `docker.io`: see [`ImageRef::api_host`].

use std::fmt;
use std::net::{IpAddr, Ipv6Addr};
use std::str::FromStr;

/// Docker Hub's canonical name.
pub const DOCKER_HUB: &str = "docker.io";
/// The host that actually serves Docker Hub's registry API.
pub const DOCKER_HUB_API: &str = "registry-1.docker.io";
/// Longer references are refused.
pub const MAX_LEN: usize = 512;

/// Why a reference is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{reference:?} is not an image reference: {reason}")]
pub struct ReferenceError {
    /// What was written.
    pub reference: String,
    /// Why it is refused.
    pub reason: String,
}

/// A parsed, normalised image reference.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ImageRef {
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<String>,
}

impl ImageRef {
    /// Parse and normalise a reference.
    pub fn parse(input: &str) -> Result<Self, ReferenceError> {
        let bad = |reason: &str| ReferenceError {
            reference: input.to_owned(),
            reason: reason.to_owned(),
        };
        if input.is_empty() {
            return Err(bad("empty"));
        }
        if input.len() > MAX_LEN {
            return Err(bad("too long"));
        }
        if input.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad("contains whitespace or control characters"));
        }
        let (name_tag, digest) = match input.split_once('@') {
            Some((n, d)) => (n, Some(parse_digest(d).map_err(bad)?)),
            None => (input, None),
        };
        // The tag is after the last ':' that follows the last '/'.
        let last_slash = name_tag.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match name_tag[last_slash..].rfind(':') {
            Some(i) => (
                &name_tag[..last_slash + i],
                Some(&name_tag[last_slash + i + 1..]),
            ),
            None => (name_tag, None),
        };
        if let Some(tag) = tag {
            let mut b = tag.bytes();
            let first_ok = matches!(b.next(), Some(c) if c.is_ascii_alphanumeric() || c == b'_');
            if !first_ok
                || tag.len() > 128
                || !b.all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
            {
                return Err(bad("bad tag (letters, digits, '_', '.', '-'; at most 128)"));
            }
        }
        let (registry, path) = match name.split_once('/') {
            Some((first, path)) if first.contains(['.', ':']) || first == "localhost" => {
                if !valid_domain(first) {
                    return Err(bad("bad registry host"));
                }
                (first, path)
            }
            _ => (DOCKER_HUB, name),
        };
        if !path.split('/').all(valid_path_component) {
            return Err(bad(
                "repository path components are lowercase letters and digits separated by '.', '_', '__' or '-'",
            ));
        }
        let registry = match registry {
            "index.docker.io" | DOCKER_HUB_API => DOCKER_HUB,
            r => r,
        };
        let repository = if registry == DOCKER_HUB && !path.contains('/') {
            format!("library/{path}")
        } else {
            path.to_owned()
        };
        if repository.len() > 255 {
            return Err(bad("the repository path is longer than 255 characters"));
        }
        let tag = match (tag, &digest) {
            (Some(t), _) => Some(t.to_owned()),
            (None, Some(_)) => None,
            (None, None) => Some("latest".to_owned()),
        };
        Ok(Self {
            registry: registry.to_owned(),
            repository,
            tag,
            digest,
        })
    }

    /// Registry name as written in references (`docker.io`, `ghcr.io`, `127.0.0.1:5000`).
    pub fn registry(&self) -> &str {
        &self.registry
    }
    /// Host (and port) that serves the registry API.
    pub fn api_host(&self) -> &str {
        if self.registry == DOCKER_HUB {
            DOCKER_HUB_API
        } else {
            &self.registry
        }
    }
    /// Repository path (`library/redis`).
    pub fn repository(&self) -> &str {
        &self.repository
    }
    /// Tag, if any.
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }
    /// Digest (`sha256:…`), if any.
    pub fn digest(&self) -> Option<&str> {
        self.digest.as_deref()
    }
    /// What to ask the registry's manifest endpoint for: the digest when pinned, else the tag.
    pub fn manifest_reference(&self) -> &str {
        self.digest
            .as_deref()
            .or(self.tag.as_deref())
            .unwrap_or("latest")
    }
    /// True when the registry host is a loopback address or `localhost` (plain HTTP is allowed).
    pub fn is_loopback(&self) -> bool {
        host_is_loopback(&self.registry)
    }
}

impl FromStr for ImageRef {
    type Err = ReferenceError;
    fn from_str(s: &str) -> Result<Self, ReferenceError> {
        Self::parse(s)
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

/// True for `localhost`, `127.x.y.z`, `[::1]` (with or without a port).
pub fn host_is_loopback(host_port: &str) -> bool {
    let host = if let Some(rest) = host_port.strip_prefix('[') {
        rest.split_once(']').map_or(rest, |(h, _)| h)
    } else {
        host_port.rsplit_once(':').map_or(host_port, |(h, _)| h)
    };
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Checks a `sha256:<64 hex>` digest as found in manifests (untrusted input); returns the hex part.
pub fn digest_hex(d: &str) -> Option<&str> {
    let hex = d.strip_prefix("sha256:")?;
    (hex.len() == 64
        && hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
    .then_some(hex)
}

fn parse_digest(d: &str) -> Result<String, &'static str> {
    let Some((algo, hex)) = d.split_once(':') else {
        return Err("digest must be ALGORITHM:HEX");
    };
    let algo_ok = !algo.is_empty()
        && algo.split(['+', '.', '_', '-']).all(|p| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        });
    if !algo_ok {
        return Err("bad digest algorithm");
    }
    if hex.len() < 32
        || !hex
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    {
        return Err("digest must be at least 32 lowercase hex digits");
    }
    if algo != "sha256" {
        return Err("unsupported digest algorithm (only sha256)");
    }
    if hex.len() != 64 {
        return Err("a sha256 digest has 64 hex digits");
    }
    Ok(d.to_owned())
}

fn valid_domain(domain: &str) -> bool {
    let (host, port) = if let Some(rest) = domain.strip_prefix('[') {
        let Some((inner, after)) = rest.split_once(']') else {
            return false;
        };
        if inner.parse::<Ipv6Addr>().is_err() {
            return false;
        }
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p),
            None if after.is_empty() => None,
            None => return false,
        };
        (None, port)
    } else {
        match domain.rsplit_once(':') {
            Some((h, p)) => (Some(h), Some(p)),
            None => (Some(domain), None),
        }
    };
    if let Some(p) = port
        && (p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) || p.parse::<u16>().is_err())
    {
        return false;
    }
    match host {
        None => true,
        Some(h) => {
            !h.is_empty()
                && h.split('.').all(|l| {
                    !l.is_empty()
                        && !l.starts_with('-')
                        && !l.ends_with('-')
                        && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                })
        }
    }
}

/// `[a-z0-9]+ ((\.|_|__|-+) [a-z0-9]+)*`
fn valid_path_component(comp: &str) -> bool {
    let b = comp.as_bytes();
    if b.is_empty() {
        return false;
    }
    let alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    if !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &comp[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|c| c == b'-');
        if !ok {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(s: &str) -> String {
        ImageRef::parse(s).unwrap().to_string()
    }

    #[test]
    fn docker_normalisation() {
        assert_eq!(norm("redis"), "docker.io/library/redis:latest");
        assert_eq!(norm("redis:7"), "docker.io/library/redis:7");
        assert_eq!(norm("user/app"), "docker.io/user/app:latest");
        assert_eq!(
            norm("index.docker.io/library/redis:7"),
            "docker.io/library/redis:7"
        );
        assert_eq!(
            norm("ghcr.io/bitwarden/self-host:latest"),
            "ghcr.io/bitwarden/self-host:latest"
        );
        assert_eq!(norm("localhost/app"), "localhost/app:latest");
        assert_eq!(norm("127.0.0.1:5000/a/b:v1.2"), "127.0.0.1:5000/a/b:v1.2");
        assert_eq!(norm("[::1]:5000/x:tag"), "[::1]:5000/x:tag");
        let d = format!("sha256:{}", "a".repeat(64));
        assert_eq!(
            norm(&format!("host:5000/app@{d}")),
            format!("host:5000/app@{d}")
        );
        assert_eq!(
            norm(&format!("app:1@{d}")),
            format!("docker.io/library/app:1@{d}")
        );
    }

    #[test]
    fn api_host_quirk() {
        assert_eq!(
            ImageRef::parse("redis").unwrap().api_host(),
            "registry-1.docker.io"
        );
        assert_eq!(
            ImageRef::parse("quay.io/x/y").unwrap().api_host(),
            "quay.io"
        );
    }

    #[test]
    fn manifest_reference_prefers_digest() {
        let d = format!("sha256:{}", "b".repeat(64));
        assert_eq!(
            ImageRef::parse(&format!("a:1@{d}"))
                .unwrap()
                .manifest_reference(),
            d
        );
        assert_eq!(ImageRef::parse("a:1").unwrap().manifest_reference(), "1");
    }

    #[test]
    fn refused() {
        for bad in [
            "",
            "Redis",
            "a b",
            " redis",
            "a:",
            "a@sha256:abc",
            "a@md5:00",
            "a//b",
            "-a",
            "a:-x",
            "x/a@",
            "a:b:c",
            // Once accepted by the declaration check only, then refused by the fetcher.
            "Foo/bar:1",
            // Once accepted by the fetcher only.
            "ex_ample.com/app",
            &format!("a@sha512:{}", "0".repeat(128)),
        ] {
            assert!(ImageRef::parse(bad).is_err(), "{bad:?} should be refused");
        }
        assert_eq!(
            ImageRef::parse("Foo/bar:1").unwrap_err().to_string(),
            "\"Foo/bar:1\" is not an image reference: repository path components are lowercase letters and digits separated by '.', '_', '__' or '-'"
        );
        assert_eq!(
            ImageRef::parse("ex_ample.com/app").unwrap_err().reason,
            "bad registry host"
        );
    }

    #[test]
    fn loopback() {
        assert!(host_is_loopback("127.0.0.1:5000"));
        assert!(host_is_loopback("localhost"));
        assert!(host_is_loopback("[::1]:5000"));
        assert!(!host_is_loopback("10.0.0.1:5000"));
        assert!(!host_is_loopback("ghcr.io"));
    }
}
