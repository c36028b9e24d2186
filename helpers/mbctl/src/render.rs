//! [`Machine`] → `NAME.machine` text, the inverse of `man8s::declaration::parse` (tested by
//! round trip). Used by `machines pull`, `import --machine` and `migrate` to write declarations.

use std::fmt::Write as _;

use man8s::machine::{Machine, PullPolicy, Template, VolumeSource, YggdrasilAddress};

/// A value the declaration syntax cannot carry unchanged (it would be trimmed, continued on the
/// next line, or cut by a line break).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}= cannot be written to a declaration: {why}")]
pub struct RenderError {
    /// The key.
    pub key: &'static str,
    /// Why.
    pub why: String,
}

fn plain(key: &'static str, value: &str) -> Result<String, RenderError> {
    if value.chars().any(char::is_control) {
        return Err(RenderError {
            key,
            why: "it contains control characters".into(),
        });
    }
    if value.trim() != value {
        return Err(RenderError {
            key,
            why: "it starts or ends with white space".into(),
        });
    }
    if value.ends_with('\\') {
        return Err(RenderError {
            key,
            why: "it ends with a backslash (a line continuation)".into(),
        });
    }
    Ok(value.to_owned())
}

/// `NAME=VALUE` quoted for `Environment=` (systemd.exec quoting, C escapes for control bytes).
pub fn quote_environment(name: &str, value: &str) -> String {
    man8s::words::systemd::quote(&format!("{name}={value}"))
}

/// The declaration text of `m`, with a comment header naming who wrote it.
pub fn render(m: &Machine, header: &str) -> Result<String, RenderError> {
    let mut s = String::new();
    for line in header.lines() {
        let _ = writeln!(s, "# {line}");
    }
    s.push_str("[Machine]\n");
    let _ = writeln!(s, "Image={}", plain("Image", &m.image)?);
    if m.template != Template::default() {
        let _ = writeln!(s, "Template={}", m.template.as_str());
    }
    if m.pull != PullPolicy::default() {
        let _ = writeln!(s, "Pull={}", m.pull.as_str());
    }
    if let Some(exec) = &m.exec {
        let _ = writeln!(s, "Exec={}", plain("Exec", exec)?);
    }
    if let Some(w) = &m.working_directory {
        let _ = writeln!(s, "WorkingDirectory={}", plain("WorkingDirectory", w)?);
    }
    if let Some(u) = &m.user {
        let _ = writeln!(s, "User={}", plain("User", u)?);
    }
    for (k, v) in &m.environment {
        if v.chars().any(char::is_control) {
            return Err(RenderError {
                key: "Environment",
                why: format!("{k} contains control characters"),
            });
        }
        let _ = writeln!(s, "Environment={}", quote_environment(k, v));
    }
    if let Some(mode) = m.environment_compat.as_key_value() {
        let _ = writeln!(s, "EnvironmentCompat={mode}");
    }
    if !m.runtime.add_capabilities.is_empty() {
        let _ = writeln!(s, "AddCapability={}", m.runtime.add_capabilities.join(" "));
    }
    if !m.runtime.drop_capabilities.is_empty() {
        let _ = writeln!(
            s,
            "DropCapability={}",
            m.runtime.drop_capabilities.join(" ")
        );
    }
    for t in &m.runtime.tmpfs {
        let value = if t.options.is_empty() {
            t.path.clone()
        } else {
            format!("{}:{}", t.path, t.options)
        };
        let _ = writeln!(s, "Tmpfs={}", plain("Tmpfs", &value)?);
    }
    if let Some(h) = &m.runtime.hostname {
        let _ = writeln!(s, "Hostname={}", plain("Hostname", h)?);
    }
    for f in &m.environment_files {
        let _ = writeln!(
            s,
            "EnvironmentFile={}",
            plain("EnvironmentFile", &f.display().to_string())?
        );
    }
    for v in &m.volumes {
        let target = match &v.source {
            VolumeSource::Config => "config".to_owned(),
            VolumeSource::Data => "data".to_owned(),
            VolumeSource::Host(p) => p.display().to_string(),
            VolumeSource::Root(p) => format!("+{p}"),
        };
        let ro = if v.read_only { ":ro" } else { "" };
        let _ = writeln!(
            s,
            "Volume={}",
            plain("Volume", &format!("{}:{target}{ro}", v.container_path))?
        );
    }
    for p in &m.ports {
        let _ = writeln!(s, "Port={p}");
    }
    for c in &m.credentials {
        let _ = writeln!(
            s,
            "{}={}",
            c.unit_key(),
            plain(c.unit_key(), &format!("{}:{}", c.id(), c.unit_value()))?
        );
    }
    let d = &m.dependencies;
    for (key, list) in [
        ("Requires", &d.requires),
        ("Wants", &d.wants),
        ("After", &d.after),
    ] {
        for n in list {
            let _ = writeln!(s, "{key}={n}");
        }
    }
    for l in &m.links {
        let _ = writeln!(s, "Link={l}");
    }

    let net = &m.network;
    let default_net = man8s::machine::Network::default();
    if *net != default_net {
        s.push_str("\n[Network]\n");
        if let Some(bridge) = &net.bridge {
            let _ = writeln!(s, "Bridge={}", plain("Bridge", bridge)?);
        }
        match net.yggdrasil {
            YggdrasilAddress::Auto => {}
            YggdrasilAddress::No => s.push_str("YggdrasilAddress=no\n"),
            YggdrasilAddress::Fixed(a) => {
                let _ = writeln!(s, "YggdrasilAddress={a}");
            }
        }
        if let Some(mv) = &net.macvlan {
            let _ = writeln!(s, "MACVLAN={}", plain("MACVLAN", mv)?);
        }
        for e in &net.expose {
            let _ = writeln!(s, "Expose={e}");
        }
        for a in &net.allow_from {
            let _ = writeln!(s, "AllowFrom={a}");
        }
    }

    let r = &m.resources;
    if r.memory_max.is_some() || r.cpu_quota.is_some() || r.tasks_max.is_some() {
        s.push_str("\n[Resources]\n");
        for (k, v) in [
            ("MemoryMax", &r.memory_max),
            ("CPUQuota", &r.cpu_quota),
            ("TasksMax", &r.tasks_max),
        ] {
            if let Some(v) = v {
                let _ = writeln!(s, "{k}={v}");
            }
        }
    }

    if !m.install.wanted_by.is_empty() {
        s.push_str("\n[Install]\n");
        for w in &m.install.wanted_by {
            let _ = writeln!(s, "WantedBy={}", plain("WantedBy", w)?);
        }
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use man8s::MachineName;
    use man8s::declaration::parse;
    use man8s::machine::{Port, Protocol, Volume};

    use super::*;

    fn round_trip(m: &Machine) -> Machine {
        let text = render(m, "test").unwrap();
        let path = PathBuf::from("/etc/man8s/machines/x.machine");
        match parse(&m.name, &[(path, text.clone())]) {
            Ok(back) => back,
            Err(d) => panic!("{d}\n---\n{text}"),
        }
    }

    fn base() -> Machine {
        let name = MachineName::new("web").unwrap();
        let source = man8s::machine::SourceFiles {
            main: PathBuf::from("/etc/man8s/machines/x.machine"),
            dropins: vec![],
        };
        Machine::new(name, source, "docker.io/library/redis:7".into())
    }

    #[test]
    fn minimal() {
        let m = base();
        assert_eq!(
            render(&m, "by me").unwrap(),
            "# by me\n[Machine]\nImage=docker.io/library/redis:7\n"
        );
        assert_eq!(round_trip(&m), m);
    }

    #[test]
    fn everything() {
        let mut m = base();
        m.exec = Some("/entrypoint.sh --flag \"a b\" $HOME".into());
        m.working_directory = Some("/app".into());
        m.user = Some("1000:1000".into());
        m.environment = vec![
            ("GREETING".into(), "held out \"quoted\" \\ back".into()),
            ("EMPTY".into(), String::new()),
            ("UNI".into(), "ünï cödé".into()),
            ("EQ".into(), "a=b=c".into()),
        ];
        m.environment_files = vec![PathBuf::from("/etc/app.env")];
        m.environment_compat = man8s::envfile::Mode::PythonMbctl;
        m.runtime.add_capabilities = vec!["CAP_NET_ADMIN".into(), "CAP_SYS_ADMIN".into()];
        m.runtime.drop_capabilities = vec!["CAP_MKNOD".into()];
        m.runtime.hostname = Some("old-host".into());
        m.runtime.tmpfs = vec![
            man8s::machine::Tmpfs {
                path: "/cache".into(),
                options: String::new(),
            },
            man8s::machine::Tmpfs {
                path: "/run/app".into(),
                options: "mode=0700,size=10m".into(),
            },
        ];
        m.volumes = vec![
            Volume {
                container_path: "/data".into(),
                source: VolumeSource::Data,
                read_only: false,
            },
            Volume {
                container_path: "/etc/app".into(),
                source: VolumeSource::Config,
                read_only: true,
            },
            Volume {
                container_path: "/srv".into(),
                source: VolumeSource::Host("/srv/web".into()),
                read_only: false,
            },
            Volume {
                container_path: "/shared".into(),
                source: VolumeSource::Root("/opt/share".into()),
                read_only: true,
            },
        ];
        m.ports = vec![
            Port {
                protocol: Protocol::Tcp,
                host: 8080,
                container: 80,
            },
            Port {
                protocol: Protocol::Udp,
                host: 53,
                container: 53,
            },
        ];
        m.pull = PullPolicy::Always;
        m.network.yggdrasil =
            YggdrasilAddress::Fixed("300:2e98:a4b0:1789:1d44:bc13:a177:c4d".parse().unwrap());
        m.network.bridge = Some("br-test".into());
        m.resources.memory_max = Some("512M".into());
        m.resources.tasks_max = Some("100".into());
        m.install.wanted_by = vec!["machines.target".into()];
        assert_eq!(round_trip(&m), m);
        m.network.yggdrasil = YggdrasilAddress::No;
        assert_eq!(round_trip(&m), m);
    }

    #[test]
    fn refuses_what_cannot_round_trip() {
        let mut m = base();
        m.exec = Some("echo \\".into());
        assert!(render(&m, "").is_err());
        m.exec = Some(" padded".into());
        assert!(render(&m, "").is_err());
        m.exec = Some("a\nb".into());
        assert!(render(&m, "").is_err());
    }

    #[test]
    fn environment_quoting() {
        assert_eq!(quote_environment("A", "x\"y\\z\n"), "\"A=x\\\"y\\\\z\\n\"");
    }
}
