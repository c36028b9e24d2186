//! The image config (an OCI image config JSON), from the host-owned state the generator binds
//! read-only at `/run/host/man8s/image/image.json`, else (a machine made before that bind
//! existed, or with a settings file of its own) the rootfs's own `/.man8s/image.json`.

use serde::Deserialize;

/// Where the host's copy of the image config appears inside the machine.
pub const IMAGE_CONFIG_BOUND: &str = "/run/host/man8s/image/image.json";
/// The rootfs's own copy (fallback).
pub const IMAGE_CONFIG_PATH: &str = "/.man8s/image.json";

/// The parts of an OCI image config the init uses. Every field is optional: `null`, absent and
/// empty all mean "not set".
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerConfig {
    /// `KEY=VALUE` strings.
    #[serde(default)]
    pub env: Option<Vec<String>>,
    /// Entrypoint argv.
    #[serde(default)]
    pub entrypoint: Option<Vec<String>>,
    /// Cmd argv (arguments to the entrypoint, or the command).
    #[serde(default)]
    pub cmd: Option<Vec<String>>,
    /// `user`, `uid`, `user:group`, `uid:gid`.
    #[serde(default)]
    pub user: Option<String>,
    /// Working directory.
    #[serde(default)]
    pub working_dir: Option<String>,
    /// Signal that stops the app (`SIGTERM` when unset).
    #[serde(default)]
    pub stop_signal: Option<String>,
}

#[derive(Deserialize)]
struct ImageConfigFile {
    #[serde(default)]
    config: Option<ContainerConfig>,
}

/// Parse the JSON text of an OCI image config.
pub fn parse(text: &str) -> Result<ContainerConfig, serde_json::Error> {
    Ok(serde_json::from_str::<ImageConfigFile>(text)?
        .config
        .unwrap_or_default())
}

impl ContainerConfig {
    /// Entrypoint followed by Cmd (Docker's rule).
    pub fn argv(&self) -> Vec<String> {
        self.entrypoint
            .iter()
            .flatten()
            .chain(self.cmd.iter().flatten())
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_oci_config() {
        let c = parse(
            r#"{"architecture":"amd64","os":"linux","config":{"User":"101:101","Env":["PATH=/usr/bin","A=b=c"],
            "Entrypoint":["/docker-entrypoint.sh"],"Cmd":["nginx","-g","daemon off;"],"WorkingDir":"/srv",
            "StopSignal":"SIGQUIT","ExposedPorts":{"80/tcp":{}},"Labels":null},"rootfs":{"type":"layers","diff_ids":[]}}"#,
        )
        .unwrap();
        assert_eq!(c.user.as_deref(), Some("101:101"));
        assert_eq!(
            c.argv(),
            ["/docker-entrypoint.sh", "nginx", "-g", "daemon off;"]
        );
        assert_eq!(c.working_dir.as_deref(), Some("/srv"));
        assert_eq!(c.stop_signal.as_deref(), Some("SIGQUIT"));
        assert_eq!(c.env.unwrap()[1], "A=b=c");
    }

    #[test]
    fn nulls_and_absence() {
        let c = parse(r#"{"config":{"Env":null,"Entrypoint":null,"Cmd":["sh"]}}"#).unwrap();
        assert_eq!(c.argv(), ["sh"]);
        assert_eq!(
            parse(r#"{"architecture":"amd64"}"#).unwrap(),
            ContainerConfig::default()
        );
        assert!(parse("{not json").is_err());
    }
}
