//! man8env.env: the file a new machine starts with, and the Yggdrasil address it carries.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};

use man8s::Paths;
use man8s::machine::{Machine, YggdrasilAddress};
use man8s_oci::manifest::ImageConfig;
use man8s_oci::progress::{Event, Progress};

use crate::{Error, IoContext, Result};

/// Image variables that go to nspawn settings rather than man8env.env.
const ENV_EXCLUDED: [&str; 4] = ["PATH", "TERM", "HOME", "LANG"];

/// The host's Yggdrasil subnet from the bridge helper's state file, if known (an unreadable or
/// malformed file counts as unknown: the machine starts without a derived address).
pub fn yggdrasil_subnet(paths: &Paths) -> Option<ipnet::Ipv6Net> {
    man8s::yggdrasil::read(paths)
        .ok()
        .flatten()
        .map(|s| s.subnet)
}

/// The Yggdrasil address a machine gets, when known.
fn yggdrasil_address(machine: &Machine, subnet: Option<ipnet::Ipv6Net>) -> Option<String> {
    machine
        .network
        .yggdrasil
        .resolve(machine.name.as_str(), subnet)
        .map(|a| a.to_string())
}

/// Names an image's `Env` may not set: man8s's own (`MAN8S_*`), whose values man8s computes
/// (an image must not choose its mesh address, or another machine's name).
pub fn is_reserved(key: &str) -> bool {
    key.starts_with(man8s::envfile::RESERVED_PREFIX)
}

/// The reserved names an image config's `Env` tries to set (pure), in image order.
pub fn reserved_in_image(config: &ImageConfig) -> Vec<String> {
    let rc = config.config.clone().unwrap_or_default();
    rc.env
        .iter()
        .filter_map(|kv| kv.split_once('=').map(|(k, _)| k))
        .filter(|k| is_reserved(k))
        .map(str::to_owned)
        .collect()
}

/// The man8env.env a new machine starts with (pure). Image variables named `MAN8S_*` are left
/// out ([`reserved_in_image`] names them for a warning).
pub fn initial_env(
    machine: &Machine,
    config: &ImageConfig,
    subnet: Option<ipnet::Ipv6Net>,
) -> std::result::Result<String, String> {
    let rc = config.config.clone().unwrap_or_default();
    let args: Vec<String> = rc
        .entrypoint
        .iter()
        .chain(&rc.cmd)
        .map(|a| man8s::words::shell::quote(a))
        .collect();
    let args = args.join(" ");
    let mut vars: Vec<(String, String)> = vec![
        ("MAN8S_CONTAINER_NAME".into(), machine.name.to_string()),
        (
            "MAN8S_CONTAINER_TEMPLATE".into(),
            machine.template.as_str().into(),
        ),
    ];
    if let Some(a) = yggdrasil_address(machine, subnet) {
        vars.push(("MAN8S_YGGDRASIL_ADDRESS".into(), a));
    }
    vars.push(("MAN8S_OCI_IMAGE_URL".into(), machine.image.clone()));
    vars.push((
        "MAN8S_APPLICATION_ARGS".into(),
        args.replace(['\n', '\r'], " "),
    ));
    for kv in &rc.env {
        let Some((k, v)) = kv.split_once('=') else {
            continue;
        };
        if ENV_EXCLUDED.contains(&k) || is_reserved(k) || k.is_empty() || v.contains(['\n', '\r']) {
            continue;
        }
        vars.push((k.into(), v.into()));
    }
    man8s::envfile::render(vars.iter().map(|(k, v)| (k.as_str(), v.as_str())))
}

/// Create the machine's config dir and man8env.env when missing (never overwriting a user's
/// file), and add a missing `MAN8S_YGGDRASIL_ADDRESS` when `YggdrasilAddress=auto` and the subnet is
/// known. The file is the machine's (bound read-write): it is read bounded and never followed.
pub fn ensure_env_file(
    paths: &Paths,
    machine: &Machine,
    config: &ImageConfig,
    progress: &dyn Progress,
) -> Result<()> {
    let name = &machine.name;
    let config_dir = paths.config_dir(name);
    crate::private::private_dir(&paths.fs(man8s::paths::CONFIG_DIR))?;
    crate::private::private_volume_dir(&config_dir)?;
    let env_path = paths.env_file(name);
    let subnet = yggdrasil_subnet(paths);
    match fs::symlink_metadata(&env_path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let reserved = reserved_in_image(config);
            if !reserved.is_empty() {
                progress.event(Event::UpToDate {
                    reason: &format!(
                        "warning: {}: image Env sets {}; ignored (man8s sets MAN8S_* itself)",
                        machine.name,
                        reserved.join(", ")
                    ),
                });
            }
            let text = initial_env(machine, config, subnet)
                .map_err(|e| Error::Other(format!("{}: {e}", env_path.display())))?;
            let mut tmp = tempfile::NamedTempFile::new_in(&config_dir).at(&config_dir)?;
            tmp.write_all(text.as_bytes()).at(&env_path)?;
            fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o600)).at(tmp.path())?;
            // persist_noclobber: a file a user created meanwhile wins.
            tmp.persist_noclobber(&env_path)
                .map_err(|e| Error::io(&env_path, e.error))?;
        }
        Err(e) => return Err(Error::io(&env_path, e)),
        Ok(_) => {
            if let Some(addr) = (machine.network.yggdrasil == YggdrasilAddress::Auto)
                .then(|| yggdrasil_address(machine, subnet))
                .flatten()
            {
                let text = man8s::untrusted::read_regular_string(
                    &env_path,
                    man8s::untrusted::SMALL_FILE_LIMIT,
                )
                .at(&env_path)?;
                if man8s::envfile::parse(&text)
                    .get("MAN8S_YGGDRASIL_ADDRESS")
                    .is_none()
                {
                    let mut f = OpenOptions::new()
                        .append(true)
                        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
                        .open(&env_path)
                        .at(&env_path)?;
                    let sep = if text.is_empty() || text.ends_with('\n') {
                        ""
                    } else {
                        "\n"
                    };
                    writeln!(f, "{sep}MAN8S_YGGDRASIL_ADDRESS={addr}").at(&env_path)?;
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use man8s::MachineName;

    #[test]
    fn initial_env_contents() {
        let name = MachineName::new("TestBWContainer3").unwrap();
        let src = man8s::machine::SourceFiles {
            main: "/etc/man8s/machines/TestBWContainer3.machine".into(),
            dropins: vec![],
        };
        let m = Machine::new(name, src, "redis:7".into());
        let cfg: ImageConfig = serde_json::from_str(
            r#"{"architecture":"amd64","config":{"Env":["PATH=/usr/bin","A=x y","HOME=/root","LANG=C"],"Entrypoint":["docker-entrypoint.sh"],"Cmd":["redis-server","--save",""]},"rootfs":{"diff_ids":[]}}"#,
        )
        .unwrap();
        let subnet: ipnet::Ipv6Net = "300:2e98:a4b0:1789::/64".parse().unwrap();
        let text = initial_env(&m, &cfg, Some(subnet)).unwrap();
        assert_eq!(
            text,
            "MAN8S_CONTAINER_NAME=TestBWContainer3\nMAN8S_CONTAINER_TEMPLATE=network_isolated\n\
             MAN8S_YGGDRASIL_ADDRESS=300:2e98:a4b0:1789:1d44:bc13:a177:c4d\nMAN8S_OCI_IMAGE_URL=redis:7\n\
             MAN8S_APPLICATION_ARGS=docker-entrypoint.sh redis-server --save ''\nA=x y\n"
        );
        let text = initial_env(&m, &cfg, None).unwrap();
        assert!(!text.contains("YGGDRASIL"));
        let hostile: ImageConfig = serde_json::from_str(
            r#"{"architecture":"amd64","config":{"Env":["MAN8S_YGGDRASIL_ADDRESS=300::1","MAN8S_CONTAINER_NAME=other","B=1"]},"rootfs":{"diff_ids":[]}}"#,
        )
        .unwrap();
        let text = initial_env(&m, &hostile, Some(subnet)).unwrap();
        assert!(text.contains("MAN8S_YGGDRASIL_ADDRESS=300:2e98:a4b0:1789:1d44:bc13:a177:c4d\n"));
        assert!(
            text.contains("MAN8S_CONTAINER_NAME=TestBWContainer3\n") && text.ends_with("B=1\n")
        );
        assert!(
            !text.contains("300::1") && !text.contains("=other"),
            "{text}"
        );
        assert_eq!(
            reserved_in_image(&hostile),
            ["MAN8S_YGGDRASIL_ADDRESS", "MAN8S_CONTAINER_NAME"]
        );
    }
}
