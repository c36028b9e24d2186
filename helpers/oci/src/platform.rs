//! Platforms (`linux/arm/v7`) and the choice of one manifest from an image index.

use std::fmt;
use std::str::FromStr;

use crate::error::Error;

/// An OS/architecture/variant triple, in OCI (Go) spelling: `amd64`, `arm64`, `arm`, `386`, …
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Platform {
    /// `linux`.
    pub os: String,
    /// `amd64`, `arm64`, `arm`, …
    pub architecture: String,
    /// `v7`, `v8`, … (empty when unspecified).
    pub variant: String,
}

impl Platform {
    /// The platform this program runs on.
    pub fn host() -> Self {
        let (architecture, variant) = match std::env::consts::ARCH {
            "x86_64" => ("amd64", ""),
            "aarch64" => ("arm64", "v8"),
            "arm" => ("arm", "v7"),
            "x86" => ("386", ""),
            "powerpc64" => ("ppc64le", ""),
            "s390x" => ("s390x", ""),
            "riscv64" => ("riscv64", ""),
            other => (other, ""),
        };
        Self {
            os: "linux".into(),
            architecture: architecture.into(),
            variant: variant.into(),
        }
    }

    /// Does an index entry's / config's platform satisfy this one?
    ///
    /// OS and architecture must be equal. Variants: when we ask for one, an entry that names a
    /// different variant does not match; `arm64` entries without a variant are `v8`, `arm`
    /// entries without one are accepted for any wanted variant only as a fallback (see
    /// [`select`]).
    pub fn matches(&self, os: &str, architecture: &str, variant: &str) -> bool {
        if self.os != os || self.architecture != normalise_arch(architecture) {
            return false;
        }
        let theirs = normalise_variant(&self.architecture, variant);
        let ours = normalise_variant(&self.architecture, &self.variant);
        ours.is_empty() || theirs.is_empty() || ours == theirs
    }
}

fn normalise_arch(a: &str) -> &str {
    match a {
        "x86_64" | "x86-64" => "amd64",
        "aarch64" => "arm64",
        "armhf" | "armel" => "arm",
        "i386" => "386",
        other => other,
    }
}

fn normalise_variant<'a>(arch: &str, v: &'a str) -> &'a str {
    match (arch, v) {
        ("arm64", "v8") => "",
        _ => v,
    }
}

/// One candidate from an index: its digest and platform fields.
#[derive(Clone, Debug)]
pub struct Candidate<'a> {
    /// Manifest digest.
    pub digest: &'a str,
    /// OS.
    pub os: &'a str,
    /// Architecture.
    pub architecture: &'a str,
    /// Variant (may be empty).
    pub variant: &'a str,
}

/// Choose the manifest for `want` from an index. An exact variant match wins over an entry
/// without a variant; entries of other variants never match.
pub fn select<'a>(want: &Platform, candidates: &[Candidate<'a>]) -> Option<&'a str> {
    let matching = candidates
        .iter()
        .filter(|c| want.matches(c.os, c.architecture, c.variant));
    let mut fallback = None;
    for c in matching {
        let exact = normalise_variant(&want.architecture, c.variant)
            == normalise_variant(&want.architecture, &want.variant);
        if exact {
            return Some(c.digest);
        }
        fallback.get_or_insert(c.digest);
    }
    fallback
}

impl FromStr for Platform {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        let parts: Vec<&str> = s.split('/').collect();
        let ok =
            |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        match parts.as_slice() {
            [os, arch] if ok(os) && ok(arch) => Ok(Self {
                os: (*os).into(),
                architecture: normalise_arch(arch).into(),
                variant: String::new(),
            }),
            [os, arch, var] if ok(os) && ok(arch) && ok(var) => Ok(Self {
                os: (*os).into(),
                architecture: normalise_arch(arch).into(),
                variant: (*var).into(),
            }),
            _ => Err(Error::Platform(s.to_owned())),
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if !self.variant.is_empty() {
            write!(f, "/{}", self.variant)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c<'a>(digest: &'a str, arch: &'a str, variant: &'a str) -> Candidate<'a> {
        Candidate {
            digest,
            os: "linux",
            architecture: arch,
            variant,
        }
    }

    #[test]
    fn selects_by_variant() {
        let idx = [
            c("amd", "amd64", ""),
            c("v6", "arm", "v6"),
            c("v7", "arm", "v7"),
            c("a64", "arm64", "v8"),
        ];
        let p = |s: &str| s.parse::<Platform>().unwrap();
        assert_eq!(select(&p("linux/arm/v7"), &idx), Some("v7"));
        assert_eq!(select(&p("linux/arm/v6"), &idx), Some("v6"));
        assert_eq!(select(&p("linux/arm64/v8"), &idx), Some("a64"));
        assert_eq!(select(&p("linux/arm64"), &idx), Some("a64"));
        assert_eq!(select(&p("linux/amd64"), &idx), Some("amd"));
        assert_eq!(select(&p("linux/arm/v5"), &idx), None);
        assert_eq!(select(&p("linux/s390x"), &idx), None);
        // arm64 entries often carry no variant at all.
        assert_eq!(
            select(&p("linux/arm64/v8"), &[c("x", "arm64", "")]),
            Some("x")
        );
    }

    #[test]
    fn parses() {
        assert_eq!(
            "linux/arm/v7".parse::<Platform>().unwrap().to_string(),
            "linux/arm/v7"
        );
        assert_eq!(
            "linux/x86_64".parse::<Platform>().unwrap().architecture,
            "amd64"
        );
        assert!("linux".parse::<Platform>().is_err());
        assert!("linux/arm/v7/x".parse::<Platform>().is_err());
        assert!("linux//v7".parse::<Platform>().is_err());
    }
}
