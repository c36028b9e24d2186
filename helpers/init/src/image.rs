//! The image config (an OCI image config JSON), from the host-owned state the generator binds
//! read-only at `/run/host/man8s/image/image.json`, else (a machine made before that bind
//! existed, or with a settings file of its own) the rootfs's own `/.man8s/image.json`. The type
//! is the one fetch uses (`man8s::image_config`).

pub use man8s::image_config::RuntimeConfig;

/// Where the host's copy of the image config appears inside the machine.
pub const IMAGE_CONFIG_BOUND: &str = "/run/host/man8s/image/image.json";
/// The rootfs's own copy (fallback).
pub const IMAGE_CONFIG_PATH: &str = "/.man8s/image.json";

/// Parse the JSON text of an OCI image config: its runtime part (every field optional).
pub fn parse(text: &str) -> Result<RuntimeConfig, serde_json::Error> {
    man8s::image_config::parse_runtime(text.as_bytes())
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
        assert_eq!(c.user, "101:101");
        assert_eq!(
            c.argv(),
            ["/docker-entrypoint.sh", "nginx", "-g", "daemon off;"]
        );
        assert_eq!(c.working_dir, "/srv");
        assert_eq!(c.stop_signal.as_deref(), Some("SIGQUIT"));
        assert_eq!(c.env[1], "A=b=c");
    }

    #[test]
    fn nulls_and_absence() {
        let c = parse(r#"{"config":{"Env":null,"Entrypoint":null,"Cmd":["sh"]}}"#).unwrap();
        assert_eq!(c.argv(), ["sh"]);
        assert_eq!(
            parse(r#"{"architecture":"amd64"}"#).unwrap(),
            RuntimeConfig::default()
        );
        assert!(parse("{not json").is_err());
    }
}
