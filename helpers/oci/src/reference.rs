//! Image references with Docker's normalisation rules.
//!
//! `redis` → `docker.io/library/redis:latest`; `user/app` → `docker.io/user/app:latest`;
//! `host:5000/app@sha256:…` keeps its registry. The first path component is a registry when it
//! contains `.` or `:` or is `localhost` (Docker's rule). Docker Hub's API lives on
//! `registry-1.docker.io`, not on `docker.io`: see [`ImageRef::api_host`].

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use crate::error::Error;

/// Docker Hub's canonical name.
pub const DOCKER_HUB: &str = "docker.io";
/// The host that actually serves Docker Hub's registry API.
pub const DOCKER_HUB_API: &str = "registry-1.docker.io";

/// A normalised image reference.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ImageRef {
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<String>,
}

impl ImageRef {
    /// Parse and normalise a reference.
    pub fn parse(input: &str) -> Result<Self, Error> {
        let bad = |reason: &str| Error::Reference {
            reference: input.to_owned(),
            reason: reason.to_owned(),
        };
        let s = input.trim();
        if s.is_empty() {
            return Err(bad("empty"));
        }
        if s.len() > 4096 {
            return Err(bad("too long"));
        }
        if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad("contains whitespace or control characters"));
        }
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => (r, Some(parse_digest(d).map_err(|e| bad(&e))?)),
            None => (s, None),
        };
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
            None => (rest, None),
        };
        if let Some(t) = tag {
            let ok = !t.is_empty()
                && t.len() <= 128
                && !t.starts_with(['.', '-'])
                && t.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
            if !ok {
                return Err(bad(&format!("invalid tag {t:?}")));
            }
        }
        let (registry, path) = match name.split_once('/') {
            Some((first, path))
                if first.contains(['.', ':']) || first == "localhost" || first.starts_with('[') =>
            {
                (first.to_owned(), path.to_owned())
            }
            _ => (DOCKER_HUB.to_owned(), name.to_owned()),
        };
        let registry = if registry == "index.docker.io" || registry == DOCKER_HUB_API {
            DOCKER_HUB.to_owned()
        } else {
            registry
        };
        if registry.is_empty() || registry.contains(['/', '@']) {
            return Err(bad("invalid registry host"));
        }
        let repository = if registry == DOCKER_HUB && !path.contains('/') {
            format!("library/{path}")
        } else {
            path
        };
        validate_repository(&repository).map_err(|e| bad(&e))?;
        let tag = match (tag, &digest) {
            (Some(t), _) => Some(t.to_owned()),
            (None, Some(_)) => None,
            (None, None) => Some("latest".to_owned()),
        };
        Ok(Self {
            registry,
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

fn parse_digest(d: &str) -> Result<String, String> {
    let (algo, hex) = d
        .split_once(':')
        .ok_or_else(|| format!("invalid digest {d:?}"))?;
    if algo != "sha256" {
        return Err(format!(
            "unsupported digest algorithm {algo:?} (only sha256)"
        ));
    }
    if hex.len() != 64
        || !hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(format!(
            "invalid sha256 digest {d:?} (64 lowercase hex digits expected)"
        ));
    }
    Ok(d.to_owned())
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

fn validate_repository(repo: &str) -> Result<(), String> {
    if repo.is_empty() || repo.len() > 255 {
        return Err("invalid repository name length".into());
    }
    for comp in repo.split('/') {
        let ok = !comp.is_empty()
            && comp.bytes().all(|b| {
                b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
            })
            && comp.as_bytes()[0].is_ascii_alphanumeric()
            && comp.as_bytes()[comp.len() - 1].is_ascii_alphanumeric();
        if !ok {
            return Err(format!(
                "invalid repository component {comp:?} (lowercase letters, digits and . _ - separators)"
            ));
        }
    }
    Ok(())
}

impl FromStr for ImageRef {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
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
            "a:",
            "a@sha256:abc",
            "a@md5:00",
            "a//b",
            "-a",
            "a:-x",
            "x/a@",
            "a:b:c",
        ] {
            assert!(ImageRef::parse(bad).is_err(), "{bad:?} should be refused");
        }
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
