//! `/etc/man8s/registries.conf`: which non-loopback registries may be reached over plain HTTP.
//!
//! Format (systemd-style, `#`/`;` comments, an optional `[Registries]` header):
//!
//! ```text
//! [Registries]
//! Insecure=registry.lan:5000 mirror.lan
//! Insecure=10.1.2.3:5000
//! ```
//!
//! Each `Insecure=` takes one or more `HOST[:PORT]`, separated by spaces; repeated keys accumulate.
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
    /// Parse the text; errors name the line.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut conf = Self::default();
        for (i, line) in text.lines().enumerate() {
            let l = line.trim();
            if l.is_empty() || l.starts_with(['#', ';']) || l.eq_ignore_ascii_case("[registries]") {
                continue;
            }
            match l.split_once('=') {
                Some((k, v)) if k.trim() == "Insecure" => {
                    conf.insecure
                        .extend(v.split_whitespace().map(str::to_owned));
                }
                Some((k, _)) => {
                    return Err(format!(
                        "line {}: unknown key {:?} (only Insecure=)",
                        i + 1,
                        k.trim()
                    ));
                }
                None => return Err(format!("line {}: expected Insecure=HOST[:PORT] …", i + 1)),
            }
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
        assert!(
            RegistriesConf::parse("Secure=x")
                .unwrap_err()
                .contains("line 1")
        );
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
