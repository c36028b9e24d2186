//! `/etc/man8s/registries.conf`: which non-loopback registries may be reached over plain HTTP.
//!
//! Format (man8s's systemd-style INI dialect, `man8s::ini`):
//!
//! ```text
//! [Registries]
//! Insecure=registry.lan:5000 mirror.lan
//! Insecure=10.1.2.3:5000
//! ```
//!
//! Each `Insecure=` takes one or more `HOST[:PORT]`, separated by spaces; repeated keys accumulate,
//! an empty `Insecure=` clears the list so far.
//! Loopback registries (`localhost`, `127.0.0.0/8`, `[::1]`) are always allowed over HTTP.

use std::path::Path;

use crate::error::Error;

/// Parsed registries.conf.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RegistriesConf {
    /// Registries (`host[:port]`) that may use plain HTTP.
    pub insecure: Vec<String>,
}

impl RegistriesConf {
    /// Parse the text (man8s's INI dialect, [`man8s::ini`]); errors name the line.
    pub fn parse(text: &str) -> Result<Self, String> {
        const SCHEMA: man8s::ini::Schema = &[("Registries", &["Insecure"])];
        let mut assignments = Vec::new();
        let mut problems = Vec::new();
        let file = Path::new(man8s::paths::REGISTRIES_CONF);
        man8s::ini::lex(
            file,
            text,
            SCHEMA,
            "[Registries]",
            &mut assignments,
            &mut problems,
        );
        if let Some(p) = problems.first() {
            return Err(format!("line {}: {}", p.line, p.what()));
        }
        let mut conf = Self::default();
        for a in assignments {
            // As in unit files, an empty assignment clears the list so far.
            if a.value.is_empty() {
                conf.insecure.clear();
            }
            conf.insecure
                .extend(a.value.split_whitespace().map(str::to_owned));
        }
        Ok(conf)
    }

    /// Read from the file-system; a missing file is empty.
    pub fn load(paths: &man8s::Paths) -> Result<Self, Error> {
        let path = paths.fs(man8s::paths::REGISTRIES_CONF);
        Self::load_file(&path)
    }

    /// Read one file; a missing file is empty.
    pub fn load_file(path: &Path) -> Result<Self, Error> {
        match std::fs::read_to_string(path) {
            Ok(t) => Self::parse(&t).map_err(|reason| Error::Config {
                path: path.into(),
                reason,
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(Error::io(path, e)),
        }
    }

    /// May `registry` be reached over plain HTTP?
    pub fn allows_http(&self, registry: &str) -> bool {
        crate::reference::host_is_loopback(registry) || self.insecure.iter().any(|r| r == registry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses() {
        let c =
            RegistriesConf::parse("# x\n[Registries]\nInsecure=a.lan:5000 b\n; y\nInsecure = c\n")
                .unwrap();
        assert_eq!(c.insecure, vec!["a.lan:5000", "b", "c"]);
        assert!(c.allows_http("a.lan:5000"));
        assert!(!c.allows_http("a.lan"));
        assert!(c.allows_http("127.0.0.1:1234"));
        let e = RegistriesConf::parse("[Registries]\nSecure=x").unwrap_err();
        assert!(
            e.contains("line 2: Secure=: unknown key") && e.contains("Insecure="),
            "{e}"
        );
        let e = RegistriesConf::parse("Insecure=x").unwrap_err();
        assert!(e.contains("line 1") && e.contains("[Registries]"), "{e}");
        let c = RegistriesConf::parse("[Registries]\nInsecure=a\nInsecure=\nInsecure=b").unwrap();
        assert_eq!(c.insecure, vec!["b"]);
    }
}

#[cfg(test)]
mod shipped {
    /// The registries.conf the package ships parses and allows nothing beyond loopback.
    #[test]
    fn shipped_registries_conf_lists_nothing() {
        let text = include_str!("../../../packaging/etc/registries.conf");
        let conf = super::RegistriesConf::parse(text).expect("shipped registries.conf parses");
        assert!(conf.insecure.is_empty(), "{conf:?}");
    }
}
