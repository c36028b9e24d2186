//! The OCI image config (`application/vnd.oci.image.config.v1+json`, and Docker's v2s2 config,
//! which has the same keys): the one type that fetch, the init and `mbctl` read it into.
//!
//! The JSON is hostile (registry answers, or a file a machine's root may rewrite). Only the keys
//! man8s uses are read; in `config`, `null`, absent and empty all mean "not set", as Docker reads
//! them. oci-spec's types are not used: they require `architecture`, `os` and `rootfs` where the
//! init must accept a partial config, and they carry no `Healthcheck` (docs/HACKING.md).

use std::collections::BTreeMap;

use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::value::RawValue;

use crate::health::DockerHealthcheck;

/// An image config, as a registry serves it (fetch checks it against the manifest).
#[derive(Clone, Debug, Default, Deserialize)]
pub struct ImageConfig {
    /// Architecture the image was built for.
    #[serde(default)]
    pub architecture: String,
    /// OS.
    #[serde(default)]
    pub os: String,
    /// Variant.
    #[serde(default)]
    pub variant: String,
    /// Runtime settings.
    #[serde(default)]
    pub config: Option<RuntimeConfig>,
    /// Layer diff_ids (required, as in the spec).
    pub rootfs: RootFs,
}

/// `rootfs` of an image config.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct RootFs {
    /// `layers`.
    #[serde(rename = "type", default)]
    pub kind: String,
    /// One per layer, bottom first.
    #[serde(default)]
    pub diff_ids: Vec<String>,
}

/// `config` of an image config (Docker's capitalised keys).
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RuntimeConfig {
    /// `KEY=VALUE` strings.
    #[serde(default, deserialize_with = "null_default")]
    pub env: Vec<String>,
    /// Entrypoint argv.
    #[serde(default, deserialize_with = "null_default")]
    pub entrypoint: Vec<String>,
    /// Cmd argv (arguments to the entrypoint, or the command).
    #[serde(default, deserialize_with = "null_default")]
    pub cmd: Vec<String>,
    /// Declared volumes (keys are paths; the values are always `{}`).
    #[serde(default, deserialize_with = "null_default")]
    pub volumes: BTreeMap<String, IgnoredAny>,
    /// Working directory.
    #[serde(default, deserialize_with = "null_default")]
    pub working_dir: String,
    /// `user`, `uid`, `user:group`, `uid:gid`.
    #[serde(default, deserialize_with = "null_default")]
    pub user: String,
    /// The signal that stops the app (`SIGTERM` when unset), as the image spells it.
    #[serde(default)]
    pub stop_signal: Option<String>,
    /// Docker's `Healthcheck`, kept as JSON: only the health monitor reads it
    /// ([`RuntimeConfig::healthcheck`]), so a malformed one fails the check, not the pull or start.
    #[serde(default)]
    pub healthcheck: Option<RawJson>,
}

/// A JSON value kept as its text (no `serde_json::Value` tree: the static init links this type).
#[derive(Clone, Debug, Deserialize)]
#[serde(transparent)]
pub struct RawJson(Box<RawValue>);

impl PartialEq for RawJson {
    fn eq(&self, other: &Self) -> bool {
        self.0.get() == other.0.get()
    }
}

fn null_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// The runtime part of an image config JSON; a config without one (or a partial config of a
/// machine made by hand) gives the defaults.
pub fn parse_runtime(json: &[u8]) -> Result<RuntimeConfig, serde_json::Error> {
    /// Only `config`: the runtime readers need nothing else, and accept a config without `rootfs`.
    #[derive(Deserialize)]
    struct ConfigOnly {
        #[serde(default)]
        config: Option<RuntimeConfig>,
    }
    Ok(serde_json::from_slice::<ConfigOnly>(json)?
        .config
        .unwrap_or_default())
}

impl RuntimeConfig {
    /// Entrypoint followed by Cmd (Docker's rule).
    pub fn argv(&self) -> Vec<String> {
        self.entrypoint.iter().chain(&self.cmd).cloned().collect()
    }

    /// The image's `Healthcheck`, when it has one (`null` is none).
    pub fn healthcheck(&self) -> Result<Option<DockerHealthcheck>, String> {
        let Some(h) = &self.healthcheck else {
            return Ok(None);
        };
        serde_json::from_str(h.0.get())
            .map(Some)
            .map_err(|e| format!("image config Healthcheck is malformed: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nulls_absence_and_empty_are_unset() {
        let c = parse_runtime(
            br#"{"config":{"Env":null,"Entrypoint":null,"Cmd":["sh"],"User":null,"Volumes":null}}"#,
        )
        .unwrap();
        assert_eq!(c.argv(), ["sh"]);
        assert!(c.env.is_empty() && c.user.is_empty() && c.volumes.is_empty());
        assert_eq!(
            parse_runtime(br#"{"architecture":"amd64"}"#).unwrap(),
            RuntimeConfig::default()
        );
        assert!(parse_runtime(b"{not json").is_err());
        assert!(parse_runtime(br#"{"config":{"Env":"A=1"}}"#).is_err());
    }

    #[test]
    fn healthcheck_is_read_on_demand() {
        let c = parse_runtime(br#"{"config":{"Healthcheck":{"Test":"not a list"}}}"#).unwrap();
        assert!(c.healthcheck().unwrap_err().contains("malformed"));
        let c = parse_runtime(br#"{"config":{"Healthcheck":{"Test":["CMD","/x"]}}}"#).unwrap();
        assert_eq!(
            c.healthcheck().unwrap().unwrap().test.unwrap(),
            ["CMD", "/x"]
        );
        let c = parse_runtime(br#"{"config":{"Healthcheck":null}}"#).unwrap();
        assert_eq!(c.healthcheck(), Ok(None));
    }

    #[test]
    fn the_whole_config_needs_its_rootfs() {
        assert!(serde_json::from_str::<ImageConfig>(r#"{"architecture":"amd64"}"#).is_err());
        let c: ImageConfig = serde_json::from_str(
            r#"{"architecture":"arm64","variant":"v8","rootfs":{"type":"layers","diff_ids":["sha256:x"]}}"#,
        )
        .unwrap();
        assert_eq!(
            (c.architecture.as_str(), c.rootfs.diff_ids.len()),
            ("arm64", 1)
        );
        assert!(c.config.is_none());
    }
}
