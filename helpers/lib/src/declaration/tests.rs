use std::net::Ipv6Addr;

use proptest::prelude::*;

use std::fs;
use std::path::{Path, PathBuf};

use super::values::{validate_memory, validate_tasks_max, validate_user};
use super::*;
use crate::ini::edit_distance;
use crate::machine::Credential;
use crate::machine::{Machine, PullPolicy, Template, Volume, VolumeSource, YggdrasilAddress};
use crate::{MachineName, Paths};

fn name(n: &str) -> MachineName {
    MachineName::new(n).unwrap()
}

const MAIN: &str = "/etc/man8s/machines/web.machine";

fn one(text: &str) -> Result<Machine, Diagnostics> {
    parse(&name("web"), &[(PathBuf::from(MAIN), text.to_owned())])
}

/// The single error a text produces, as displayed.
fn error_of(text: &str) -> String {
    let d = one(text).expect_err("should be invalid");
    assert_eq!(d.0.len(), 1, "expected one diagnostic, got: {d}");
    d.to_string()
}

#[test]
fn minimal_has_defaults() {
    let m = one("[Machine]\nImage=redis\n").unwrap();
    assert_eq!(m.image, "redis");
    assert_eq!(m.network.bridge, None);
    assert_eq!(m.network.yggdrasil, YggdrasilAddress::Auto);
    assert_eq!(m.template, Template::NetworkIsolated);
    assert_eq!(m.pull, PullPolicy::Missing);
    assert!(
        m.exec.is_none()
            && m.user.is_none()
            && m.volumes.is_empty()
            && m.install.wanted_by.is_empty()
    );
    assert_eq!(m.source.main, Path::new(MAIN));
}

#[test]
fn every_key() {
    let m = one(r#"
# comment
; another
[Machine]
Image=ghcr.io/bitwarden/self-host:latest
Exec=/bin/app --flag "two words"
Environment="GREETING=held out" A=1
Environment=B='x y' C=\"q\"
EnvironmentFile=/etc/app.env
EnvironmentCompat=python-mbctl
WorkingDirectory=/srv//app/
User=1000:1000
Volume=/data:data
Volume=/etc/app:config:ro
Volume=/srv/media:/mnt/media:rw
Port=8080:80
Port=udp:5353:53
Template=network_isolated
Pull=always
LoadCredential=db:/etc/secrets/db
LoadCredentialEncrypted=tls:/etc/credstore.encrypted/tls
SetCredential=mode:production
SetCredentialEncrypted=k:SGVsbG8=
X-Anything=ignored

[Network]
Bridge=br0
YggdrasilAddress=300:2e98:a4b0:1789::5

[Resources]
MemoryMax=1.5G
CPUQuota=150%
TasksMax=512
DiskMax=2G

[Install]
WantedBy=machines.target multi-user.target
WantedBy=machines.target

[X-Mine]
Whatever=1
"#)
    .unwrap();
    assert_eq!(m.image, "ghcr.io/bitwarden/self-host:latest");
    assert_eq!(m.exec.as_deref(), Some(r#"/bin/app --flag "two words""#));
    let env: Vec<(&str, &str)> = m
        .environment
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    assert_eq!(
        env,
        [
            ("GREETING", "held out"),
            ("A", "1"),
            ("B", "x y"),
            ("C", "\"q\"")
        ]
    );
    assert_eq!(m.environment_files, [PathBuf::from("/etc/app.env")]);
    assert_eq!(m.environment_compat, crate::envfile::Mode::PythonMbctl);
    assert_eq!(m.working_directory.as_deref(), Some("/srv/app"));
    assert_eq!(m.user.as_deref(), Some("1000:1000"));
    assert_eq!(
        m.volumes,
        [
            Volume {
                container_path: "/data".into(),
                source: VolumeSource::Data,
                read_only: false
            },
            Volume {
                container_path: "/etc/app".into(),
                source: VolumeSource::Config,
                read_only: true
            },
            Volume {
                container_path: "/srv/media".into(),
                source: VolumeSource::Host("/mnt/media".into()),
                read_only: false
            },
        ]
    );
    assert_eq!(
        m.volumes[0].host_path(&m.name),
        Path::new("/var/lib/man8machine_storage/web/data")
    );
    assert_eq!(
        m.volumes[1].host_path(&m.name),
        Path::new("/var/lib/man8machine_configs/web/etc/app")
    );
    assert_eq!(m.volumes[2].host_path(&m.name), Path::new("/mnt/media"));
    // nspawn's `+`: a directory of the machine's own root.
    let v = crate::declaration::parse_volume("/cache:+/var//cache/app/:ro").unwrap();
    assert_eq!(v.source, VolumeSource::Root("/var/cache/app".into()));
    assert!(v.read_only);
    assert_eq!(
        v.host_path(&m.name),
        Path::new("/var/lib/man8machines/web/var/cache/app")
    );
    assert_eq!(
        m.ports.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
        ["tcp:8080:80", "udp:5353:53"]
    );
    assert_eq!(m.pull, PullPolicy::Always);
    assert_eq!(
        m.credentials,
        [
            Credential::Load {
                id: "db".into(),
                path: "/etc/secrets/db".into()
            },
            Credential::LoadEncrypted {
                id: "tls".into(),
                path: "/etc/credstore.encrypted/tls".into()
            },
            Credential::Set {
                id: "mode".into(),
                value: "production".into()
            },
            Credential::SetEncrypted {
                id: "k".into(),
                value: "SGVsbG8=".into()
            },
        ]
    );
    assert_eq!(m.network.bridge.as_deref(), Some("br0"));
    assert_eq!(
        m.network.yggdrasil,
        YggdrasilAddress::Fixed("300:2e98:a4b0:1789::5".parse::<Ipv6Addr>().unwrap())
    );
    assert_eq!(m.resources.memory_max.as_deref(), Some("1.5G"));
    assert_eq!(m.resources.cpu_quota.as_deref(), Some("150%"));
    assert_eq!(m.resources.tasks_max.as_deref(), Some("512"));
    assert_eq!(m.resources.disk_max, Some(2 << 30));
    assert_eq!(
        m.install.wanted_by,
        ["machines.target", "multi-user.target"]
    );
}

#[test]
fn macvlan_template() {
    let m = one("[Machine]\nImage=redis\nTemplate=macvlan\n[Network]\nMACVLAN=eth0\n").unwrap();
    assert_eq!(m.template, Template::Macvlan);
    assert_eq!(m.network.macvlan.as_deref(), Some("eth0"));
    assert!(
        error_of("[Machine]\nImage=redis\nTemplate=macvlan\n").contains("needs [Network] MACVLAN=")
    );
    assert!(
        error_of("[Machine]\nImage=redis\n[Network]\nMACVLAN=eth0\n").contains(":4: MACVLAN=: ")
    );
    assert!(
        error_of("[Machine]\nImage=redis\nTemplate=macvlan\nPort=1:1\n[Network]\nMACVLAN=eth0\n")
            .contains(":4: Port=: ")
    );
}

#[test]
fn empty_assignment_resets_lists_and_single_values() {
    let m = one(
        "[Machine]\nImage=redis\nEnvironment=A=1\nEnvironment=\nEnvironment=B=2\nVolume=/a:data\nVolume=\nPort=1:1\nPort=\n\
         User=x\nUser=\nExec=a\nExec=\nEnvironmentFile=/x\nEnvironmentFile=\n\
         LoadCredential=a:/a\nSetCredential=b:c\nLoadCredential=\n[Install]\nWantedBy=a.target\nWantedBy=\n\
         [Network]\nBridge=br1\nBridge=\n[Resources]\nMemoryMax=1G\nMemoryMax=\n",
    )
    .unwrap();
    assert_eq!(m.environment, [("B".to_owned(), "2".to_owned())]);
    assert!(m.volumes.is_empty() && m.ports.is_empty() && m.environment_files.is_empty());
    assert!(m.user.is_none() && m.exec.is_none() && m.install.wanted_by.is_empty());
    assert_eq!(
        m.credentials,
        [Credential::Set {
            id: "b".into(),
            value: "c".into()
        }]
    );
    assert_eq!(m.network.bridge, None);
    assert!(m.resources.memory_max.is_none());
}

#[test]
fn last_single_value_wins() {
    let m =
        one("[Machine]\nImage=a\nImage=b\nPull=never\n[Network]\nYggdrasilAddress=no\n").unwrap();
    assert_eq!(m.image, "b");
    assert_eq!(m.pull, PullPolicy::Never);
    assert_eq!(m.network.yggdrasil, YggdrasilAddress::No);
}

#[test]
fn continuation_lines() {
    let m =
        one("[Machine]\nImage=redis\nExec=/bin/app \\\n# a comment inside\n  --flag \\\n  last\n")
            .unwrap();
    // systemd replaces the backslash by a space and keeps the one before it
    assert_eq!(m.exec.as_deref(), Some("/bin/app  --flag  last"));
    // a continuation at end of file is not an error
    assert!(one("[Machine]\nImage=redis\nExec=a \\").is_ok());
}

#[test]
fn crlf_and_whitespace() {
    let m = one("[Machine]\r\n  Image = redis:7  \r\n").unwrap();
    assert_eq!(m.image, "redis:7");
}

#[test]
fn dropins_override_and_accumulate() {
    let files = [
        (
            PathBuf::from(MAIN),
            "[Machine]\nImage=redis\nEnvironment=A=1\n".to_owned(),
        ),
        (
            PathBuf::from("/etc/man8s/machines/web.machine.d/10-x.conf"),
            "[Machine]\nImage=redis:7\nEnvironment=B=2\n".to_owned(),
        ),
        (
            PathBuf::from("/usr/lib/man8s/machines/web.machine.d/20-y.conf"),
            "[Resources]\nTasksMax=9\n".to_owned(),
        ),
    ];
    let m = parse(&name("web"), &files).unwrap();
    assert_eq!(m.image, "redis:7");
    assert_eq!(m.environment.len(), 2);
    assert_eq!(m.resources.tasks_max.as_deref(), Some("9"));
    assert_eq!(m.source.dropins.len(), 2);
    // errors in a drop-in name the drop-in
    let bad = [
        files[0].clone(),
        (
            PathBuf::from("/run/man8s/machines/web.machine.d/a.conf"),
            "[Machine]\nPort=x\n".into(),
        ),
    ];
    assert_eq!(
        parse(&name("web"), &bad).unwrap_err().to_string(),
        "/run/man8s/machines/web.machine.d/a.conf:2: Port=: \"x\" is not [tcp:|udp:]HOSTPORT:CONTAINERPORT"
    );
}

#[test]
fn error_format_and_hints() {
    assert_eq!(
        error_of("[Machine]\nImage=redis\nEnviroment=A=1\n"),
        "/etc/man8s/machines/web.machine:3: Enviroment=: unknown key in [Machine] (did you mean Environment=?)"
    );
    assert_eq!(
        error_of("[Machine]\nImage=redis\n[Netwrok]\nBridge=x\n"),
        "/etc/man8s/machines/web.machine:3: unknown section [Netwrok] (did you mean [Network]?)"
    );
    assert_eq!(
        error_of("[Machine]\nImage=redis\nMemoryMax=1G\n"),
        "/etc/man8s/machines/web.machine:3: MemoryMax=: MemoryMax= belongs in [Resources], not [Machine]"
    );
    assert_eq!(
        error_of("[Machine]\nImage=redis\nCompletelyDifferent=1\n"),
        "/etc/man8s/machines/web.machine:3: CompletelyDifferent=: unknown key in [Machine]"
    );
    assert_eq!(
        error_of("[Machine]\n"),
        "/etc/man8s/machines/web.machine: Image=: missing: [Machine] Image= is required"
    );
    assert!(
        error_of("Image=redis\n[Machine]\nImage=redis\n")
            .contains(":1: Image=: assignment outside of any section")
    );
    assert!(error_of("[Machine]\nImage=redis\njunk\n").contains(":3: not a Key=Value assignment"));
    assert!(error_of("[Machine]\nImage=redis\n[Install\n").contains(":3: bad section header"));
    assert!(error_of("[Machine]\nImage=redis\n=x\n").contains(":3: empty key"));
    assert!(error_of("[Machine]\nImage=redis\nimage=x\n").contains("(did you mean Image=?)"));
}

#[test]
fn all_errors_are_reported_not_just_the_first() {
    let d = one("[Machine]\nImage=Bad Ref\nPort=0:1\nVolume=rel:data\n[Resources]\nCPUQuota=0%\n")
        .unwrap_err();
    let lines: Vec<usize> = d.0.iter().map(|x| x.line).collect();
    assert_eq!(lines, [2, 3, 4, 6], "{d}");
}

#[test]
fn value_errors() {
    let cases: &[(&str, &str)] = &[
        ("Image=", "Image= is required"),
        ("Image=docker.io/UPPER/case", "not an image reference"),
        ("Image=redis:", "bad tag"),
        ("Image=redis@sha256:abc", "at least 32"),
        (
            "Image=redis@sha256:0123456789abcdef0123456789abcdef",
            "64 hex digits",
        ),
        ("Image=host:99999/x", "bad registry host"),
        // The fetcher's grammar (man8s::reference), so these fail here and not at start.
        (
            "Image=Foo/bar:1",
            "repository path components are lowercase",
        ),
        ("Image=ex_ample.com/app", "bad registry host"),
        ("Image=a//b", "not an image reference"),
        ("Image=redis\nEnvironment=NOEQUALS", "is not NAME=VALUE"),
        ("Image=redis\nEnvironment=1A=x", "not a valid variable name"),
        ("Image=redis\nEnvironment=A=a\\nb", "line breaks"),
        ("Image=redis\nEnvironment=\"A=x", "unterminated"),
        ("Image=redis\nEnvironment=A=\\q", "unknown escape"),
        ("Image=redis\nEnvironment=A=\\x00", "not a non-NUL ASCII"),
        (
            "Image=redis\nEnvironmentFile=rel.env",
            "not an absolute path",
        ),
        (
            "Image=redis\nEnvironmentFile=-/opt.env",
            "optional environment files",
        ),
        ("Image=redis\nEnvironmentCompat=bash", "is not python-mbctl"),
        ("Image=redis\nWorkingDirectory=data", "not an absolute path"),
        ("Image=redis\nWorkingDirectory=/a/../b", "'..' component"),
        ("Image=redis\nUser=a:b:c", "is not a user"),
        ("Image=redis\nUser=-x", "is not a user"),
        ("Image=redis\nUser=4294967295", "is not a user"),
        ("Image=redis\nVolume=/data", "is not CONTAINER_PATH"),
        (
            "Image=redis\nVolume=/data:elsewhere",
            "is not config, data, an absolute host path or +/path in the root",
        ),
        (
            "Image=redis\nVolume=/data:+/",
            "root cannot be a volume source",
        ),
        ("Image=redis\nVolume=/data:+/a/../../etc", "'..' component"),
        ("Image=redis\nVolume=/data:data:rx", "neither ro nor rw"),
        ("Image=redis\nVolume=/:data", "may not be /"),
        ("Image=redis\nVolume=/x/../../etc:config", "'..' component"),
        (
            "Image=redis\nVolume=/a:data\nVolume=/a/:config",
            "already a volume",
        ),
        (
            "Image=redis\nPort=80",
            "is not [tcp:|udp:]HOSTPORT:CONTAINERPORT",
        ),
        ("Image=redis\nPort=sctp:1:1", "neither tcp nor udp"),
        ("Image=redis\nPort=0:80", "not a port number"),
        ("Image=redis\nPort=65536:80", "not a port number"),
        ("Image=redis\nPort=+80:80", "not a port number"),
        (
            "Image=redis\nPort=80:80\nPort=tcp:80:81",
            "already forwarded",
        ),
        ("Image=redis\nTemplate=host", "unknown template"),
        (
            "Image=redis\nPull=sometimes",
            "not missing, always or never",
        ),
        ("Image=redis\nLoadCredential=nocolon", "is not ID:PATH"),
        (
            "Image=redis\nLoadCredential=a/b:/x",
            "not a credential name",
        ),
        ("Image=redis\nLoadCredential=a:rel", "not an absolute path"),
        (
            "Image=redis\nSetCredential=a:1\nLoadCredential=a:/x",
            "already defined",
        ),
        ("Image=redis\nSetCredentialEncrypted=a:!!", "base64"),
        (
            "Image=redis\n[Network]\nBridge=this-name-is-too-long",
            "not a network interface name",
        ),
        (
            "Image=redis\n[Network]\nYggdrasilAddress=maybe",
            "not auto, no or an IPv6 address",
        ),
        (
            "Image=redis\n[Network]\nYggdrasilAddress=fd00::1",
            "not a Yggdrasil address",
        ),
        ("Image=redis\n[Resources]\nMemoryMax=1Q", "is not a size"),
        (
            "Image=redis\n[Resources]\nMemoryMax=101%",
            "between 0% and 100%",
        ),
        (
            "Image=redis\n[Resources]\nMemoryMax=99999999999E",
            "is not a size",
        ),
        (
            "Image=redis\n[Resources]\nCPUQuota=50",
            "positive percentage",
        ),
        ("Image=redis\n[Resources]\nTasksMax=-1", "positive number"),
        ("Image=redis\n[Resources]\nDiskMax=10%", "is not a size"),
        ("Image=redis\n[Resources]\nDiskMax=4K", "smaller than 1M"),
        (
            "Image=redis\n[Install]\nWantedBy=machines",
            "not a unit name",
        ),
    ];
    for (body, want) in cases {
        let text = format!("[Machine]\n{body}\n");
        let err = one(&text).expect_err(body).to_string();
        assert!(
            err.contains(want),
            "{body:?}: {err:?} does not contain {want:?}"
        );
        assert!(err.starts_with(MAIN), "{err}");
    }
}

#[test]
fn accepted_values() {
    for image in [
        "redis",
        "docker.io/library/redis:7",
        "ghcr.io/bitwarden/self-host:latest",
        "localhost:5000/a/b_c__d-e.f:v1.2-rc",
        "127.0.0.1:5000/x@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        "[::1]:5000/x:tag",
        "registry.example/ns/app:1@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
    ] {
        assert_eq!(validate_image_reference(image), Ok(()), "{image}");
    }
    for mem in [
        "infinity", "1024", "1K", "512M", "2G", "1.5T", "50%", "12.5%",
    ] {
        assert_eq!(validate_memory(mem), Ok(()), "{mem}");
    }
    for t in ["infinity", "1", "50%"] {
        assert_eq!(validate_tasks_max(t), Ok(()), "{t}");
    }
    for u in [
        "root",
        "0",
        "1000:1000",
        "www-data:www-data",
        "_svc",
        "user$",
    ] {
        assert_eq!(validate_user(u), Ok(()), "{u}");
    }
}

#[test]
fn environment_quoting_like_systemd() {
    assert_eq!(
        split_environment(r#""GREETING=held out" A=1 'B=it''s' C="x\ty" D=\x41"#).unwrap(),
        [
            ("GREETING".into(), "held out".into()),
            ("A".into(), "1".into()),
            ("B".into(), "its".into()),
            ("C".into(), "x\ty".into()),
            ("D".into(), "A".into()),
        ]
    );
    assert_eq!(
        split_environment("E=").unwrap(),
        [("E".into(), String::new())]
    );
}

// ------------------------------------------------------------------------------------------
// File system: search paths, drop-ins, masking, discovery

fn write(root: &Path, rel: &str, text: &str) {
    let p = root.join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, text).unwrap();
}

#[test]
fn find_precedence_and_dropins() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(
        root,
        "usr/lib/man8s/machines/web.machine",
        "[Machine]\nImage=usr\n",
    );
    write(
        root,
        "run/man8s/machines/web.machine",
        "[Machine]\nImage=run\n",
    );
    write(
        root,
        "usr/lib/man8s/machines/web.machine.d/10-a.conf",
        "[Machine]\nEnvironment=A=usr\n",
    );
    write(
        root,
        "etc/man8s/machines/web.machine.d/10-a.conf",
        "[Machine]\nEnvironment=A=etc\n",
    );
    write(
        root,
        "run/man8s/machines/web.machine.d/20-b.conf",
        "[Machine]\nEnvironment=B=run\n",
    );
    write(
        root,
        "run/man8s/machines/web.machine.d/05-c.conf",
        "[Machine]\nEnvironment=C=run\n",
    );
    write(root, "run/man8s/machines/web.machine.d/ignored.txt", "junk");
    let paths = Paths::new(root);
    let src = find(&paths, &name("web")).unwrap().unwrap();
    assert_eq!(src.main, Path::new("/run/man8s/machines/web.machine"));
    assert_eq!(
        src.dropins,
        [
            PathBuf::from("/run/man8s/machines/web.machine.d/05-c.conf"),
            PathBuf::from("/etc/man8s/machines/web.machine.d/10-a.conf"),
            PathBuf::from("/run/man8s/machines/web.machine.d/20-b.conf"),
        ]
    );
    let m = load(&paths, &name("web")).unwrap();
    assert_eq!(m.image, "run");
    let env: Vec<String> = m
        .environment
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    assert_eq!(env, ["C=run", "A=etc", "B=run"]);

    // /etc wins over /run
    write(
        root,
        "etc/man8s/machines/web.machine",
        "[Machine]\nImage=etc\n",
    );
    assert_eq!(load(&paths, &name("web")).unwrap().image, "etc");
    // a drop-in masked with /dev/null is skipped
    std::os::unix::fs::symlink(
        "/dev/null",
        root.join("etc/man8s/machines/web.machine.d/20-b.conf"),
    )
    .unwrap();
    let m = load(&paths, &name("web")).unwrap();
    assert!(m.environment.iter().all(|(k, _)| k != "B"));
    // masking the main file hides the machine
    fs::remove_file(root.join("etc/man8s/machines/web.machine")).unwrap();
    std::os::unix::fs::symlink("/dev/null", root.join("etc/man8s/machines/web.machine")).unwrap();
    assert!(find(&paths, &name("web")).unwrap().is_none());
    assert!(matches!(
        load(&paths, &name("web")),
        Err(LoadError::NotFound(_))
    ));
    assert!(discover(&paths).is_empty());
}

#[test]
fn load_reports_missing_bad_utf8_and_huge_files() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let paths = Paths::new(root);
    assert!(matches!(
        load(&paths, &name("nope")),
        Err(LoadError::NotFound(_))
    ));
    let p = root.join("etc/man8s/machines/bin.machine");
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(&p, b"[Machine]\nImage=x\n\xff\n").unwrap();
    let e = load(&paths, &name("bin")).unwrap_err().to_string();
    assert_eq!(e, "/etc/man8s/machines/bin.machine:3: not valid UTF-8");
    fs::write(&p, vec![b'#'; MAX_FILE_SIZE as usize + 1]).unwrap();
    assert!(
        load(&paths, &name("bin"))
            .unwrap_err()
            .to_string()
            .contains("larger than")
    );
}

#[test]
fn discover_lists_names_once_and_reports_bad_names() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(root, "etc/man8s/machines/b.machine", "");
    write(root, "usr/lib/man8s/machines/b.machine", "");
    write(root, "usr/lib/man8s/machines/a.machine", "");
    write(root, "run/man8s/machines/bad_name.machine", "");
    write(root, "run/man8s/machines/notes.txt", "");
    write(root, "run/man8s/machines/.hidden.machine", "");
    let found = discover(&Paths::new(root));
    let ok: Vec<String> = found
        .iter()
        .filter_map(|r| r.as_ref().ok())
        .map(|n| n.to_string())
        .collect();
    assert_eq!(ok, ["a", "b"]);
    let errs: Vec<String> = found
        .iter()
        .filter_map(|r| r.as_ref().err())
        .map(|e| e.to_string())
        .collect();
    assert_eq!(errs.len(), 1);
    assert!(
        errs[0].starts_with("/run/man8s/machines/bad_name.machine: bad machine name"),
        "{errs:?}"
    );
}

// ------------------------------------------------------------------------------------------
// Fuzzing: no input makes the parser panic, and every error names the file.

const VALID: &str = "[Machine]\nImage=docker.io/library/redis:7\nExec=redis-server\nEnvironment=\"A=b c\" D=e\n\
Volume=/data:data\nPort=udp:53:53\nUser=1:1\nLoadCredential=x:/y\n[Network]\nYggdrasilAddress=300::1\n\
[Resources]\nMemoryMax=1G\nCPUQuota=20%\nTasksMax=5\n[Install]\nWantedBy=machines.target\n";

fn check_no_panic(text: &str) {
    if let Err(d) = one(text) {
        assert!(!d.0.is_empty());
        for x in &d.0 {
            assert_eq!(x.file, Path::new(MAIN));
            assert!(
                !x.to_string().contains('\n'),
                "a diagnostic is one line: {x}"
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn fuzz_random_text(text in "\\PC*") {
        check_no_panic(&text);
    }

    #[test]
    fn fuzz_random_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        check_no_panic(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn fuzz_mutated_valid_file(pos in 0usize..VALID.len(), insert in "[\\[\\]=:\\\\\"' \n%$a-zA-Z0-9/.@-]{0,8}", cut in 0usize..6) {
        let mut s = VALID.as_bytes().to_vec();
        let end = (pos + cut).min(s.len());
        s.splice(pos..end, insert.bytes());
        check_no_panic(&String::from_utf8_lossy(&s));
    }

    #[test]
    fn fuzz_line_soup(lines in proptest::collection::vec(prop_oneof![
        Just("[Machine]".to_owned()), Just("[Network]".to_owned()), Just("[Resources]".to_owned()),
        Just("[Install]".to_owned()), Just("Image=redis".to_owned()), Just("Volume=".to_owned()),
        Just("\\".to_owned()), "[A-Za-z]{1,12}=[ -~]{0,20}",
    ], 0..30)) {
        check_no_panic(&lines.join("\n"));
    }
}

#[test]
fn hints_for_transpositions_and_case() {
    for (typo, want) in [
        ("Imgae", "Image="),
        ("image", "Image="),
        ("Evnironment", "Environment="),
        ("Prot", "Port="),
        ("WorkingDir", "WorkingDirectory="),
    ] {
        let err = one(&format!("[Machine]\nImage=redis\n{typo}=x\n"))
            .unwrap_err()
            .to_string();
        if want == "WorkingDirectory=" {
            // too far from any key to guess
            assert!(!err.contains("did you mean"), "{err}");
        } else {
            assert!(
                err.contains(&format!("(did you mean {want}?)")),
                "{typo}: {err}"
            );
        }
    }
    assert_eq!(edit_distance("Imgae", "Image"), 1);
    assert_eq!(edit_distance("abc", "abc"), 0);
    assert_eq!(edit_distance("", "abc"), 3);
}

/// Run `f` on another thread; fail instead of hanging when it blocks.
fn within_seconds<T: Send + 'static>(secs: u64, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(f()));
    rx.recv_timeout(std::time::Duration::from_secs(secs))
        .expect("reading a declaration blocked")
}

#[test]
fn fifos_sockets_and_directories_are_refused_without_blocking() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_owned();
    let machines = root.join("etc/man8s/machines");
    fs::create_dir_all(machines.join("drop.machine.d")).unwrap();
    nix::unistd::mkfifo(
        &machines.join("pipe.machine"),
        nix::sys::stat::Mode::from_bits_truncate(0o644),
    )
    .unwrap();
    write(
        &root,
        "etc/man8s/machines/drop.machine",
        "[Machine]\nImage=x\n",
    );
    nix::unistd::mkfifo(
        &machines.join("drop.machine.d/10-x.conf"),
        nix::sys::stat::Mode::from_bits_truncate(0o644),
    )
    .unwrap();
    let _socket = std::os::unix::net::UnixListener::bind(machines.join("sock.machine")).unwrap();
    fs::create_dir(machines.join("dir.machine")).unwrap();
    let errors = within_seconds(20, move || {
        let paths = Paths::new(&root);
        ["pipe", "drop", "sock", "dir"].map(|n| load(&paths, &name(n)).unwrap_err().to_string())
    });
    assert_eq!(
        errors,
        [
            "/etc/man8s/machines/pipe.machine: not a regular file (a FIFO)",
            "/etc/man8s/machines/drop.machine.d/10-x.conf: not a regular file (a FIFO)",
            "/etc/man8s/machines/sock.machine: not a regular file (a socket)",
            "/etc/man8s/machines/dir.machine: not a regular file (a directory)",
        ]
    );
}

#[test]
fn unreadable_dropin_dir_is_an_error_for_find_and_discover_alike() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(
        root,
        "etc/man8s/machines/web.machine",
        "[Machine]\nImage=x\n",
    );
    write(
        root,
        "etc/man8s/machines/ok.machine",
        "[Machine]\nImage=x\n",
    );
    // A symlink loop: listing it fails with ELOOP, also for root.
    std::os::unix::fs::symlink(
        "web.machine.d",
        root.join("etc/man8s/machines/web.machine.d"),
    )
    .unwrap();
    let paths = Paths::new(root);
    let want = "/etc/man8s/machines/web.machine.d: ";
    let e = find(&paths, &name("web")).unwrap_err();
    assert!(e.to_string().starts_with(want), "{e}");
    let e = load(&paths, &name("web")).unwrap_err();
    assert!(
        matches!(e, LoadError::Io { .. }) && e.to_string().starts_with(want),
        "{e}"
    );
    let found = discover_sources(&paths);
    assert_eq!(found.len(), 2);
    assert!(found[0].is_ok(), "ok.machine is unaffected");
    match &found[1] {
        Err(e @ DiscoverError::Dropins { name: n, .. }) => {
            assert_eq!(n.as_str(), "web");
            assert!(e.to_string().starts_with(want), "{e}");
        }
        other => panic!("{other:?}"),
    }
    // `discover` still names the machine (its load then fails).
    let names: Vec<String> = discover(&paths)
        .into_iter()
        .map(|r| r.unwrap().to_string())
        .collect();
    assert_eq!(names, ["ok", "web"]);
}

#[test]
fn mesh_keys_expose_allow_from_dependencies_links() {
    let m = one(
        "[Machine]\nImage=redis\nRequires=db\nWants=cache db\nAfter=logs\nLink=db:database db.nas\n\
         [Network]\nExpose=6379 udp:53\nAllowFrom=@nas 300:1:2:3::/64\n",
    )
    .unwrap();
    assert_eq!(
        m.network
            .expose
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        ["tcp:6379", "udp:53"]
    );
    assert_eq!(
        m.network
            .allow_from
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        ["@nas", "300:1:2:3::/64"]
    );
    assert_eq!(m.dependencies.requires, [name("db")]);
    assert_eq!(m.dependencies.wants, [name("cache"), name("db")]);
    assert_eq!(m.dependencies.after, [name("logs")]);
    let after: Vec<&str> = m
        .dependencies
        .ordered_after()
        .iter()
        .map(|n| n.as_str())
        .collect();
    assert_eq!(after, ["cache", "db", "logs"]);
    assert_eq!(
        m.links.iter().map(ToString::to_string).collect::<Vec<_>>(),
        ["db:database", "db.nas"]
    );
    // An empty value clears, as for every list key.
    let m = one("[Machine]\nImage=redis\nRequires=db\nRequires=\n[Network]\nExpose=80\nExpose=\n")
        .unwrap();
    assert!(m.dependencies.requires.is_empty() && m.network.expose.is_empty());
    for (text, want) in [
        (
            "[Network]\nExpose=http\n",
            "web.machine:4: Expose=: \"http\" is not a port number",
        ),
        (
            "[Network]\nAllowFrom=nas\n",
            "AllowFrom=: \"nas\" is not an address",
        ),
        (
            "[Network]\nAllowFrom=192.0.2.0/24\n",
            "machines' IPv4 addresses are DHCP leases",
        ),
        (
            "[Machine]\nRequires=web\n",
            "Requires=: a machine cannot depend on itself",
        ),
        (
            "[Machine]\nAfter=bad_name\n",
            "After=: \"bad_name\": machine name",
        ),
        (
            "[Machine]\nLink=db:-x\n",
            "Link=: alias: machine name \"-x\"",
        ),
    ] {
        let e = error_of(&format!("[Machine]\nImage=redis\n{text}"));
        assert!(e.contains(want), "{text:?}: {e}");
    }
}

/// Every run-time key is known to the lexer's schema and folded (none falls through to the
/// "internal: unhandled" arm), and a bad value names file, line and key.
#[test]
fn runtime_keys_are_parsed_with_file_and_line() {
    let name = MachineName::new("pg").unwrap();
    let files = [(
        PathBuf::from("/etc/man8s/machines/pg.machine"),
        "[Machine]\nImage=postgres\nStopSignal=SIGINT\nStopTimeout=30\nEntrypoint=[\"/init\",\"--\"]\n\
         Ulimit=nofile=65536:65536\nShmSize=256M\nHostname=pg\nTmpfs=/cache\nReadOnly=yes\n\
         NoNewPrivileges=yes\nAddCapability=SYS_NICE\nDropCapability=MKNOD\nSystemCallFilter=@system-service\n\
         Sysctl=net.core.somaxconn=1024\nTimezone=UTC\nAddDevice=/dev/fuse\nReloadSignal=SIGUSR1\n"
            .to_owned(),
    )];
    let m = parse(&name, &files).unwrap();
    assert_eq!(m.runtime.stop_timeout, Some(30));
    assert_eq!(
        m.runtime.entrypoint.as_deref().map(<[String]>::len),
        Some(2)
    );
    assert_eq!(m.runtime.devices.len(), 1);
    let files = [(
        PathBuf::from("/etc/man8s/machines/pg.machine"),
        "[Machine]\nImage=postgres\nStopSignal=SIGSTOP\nUlimit=nofile=9:1\n".to_owned(),
    )];
    let e = parse(&name, &files).unwrap_err().to_string();
    assert!(
        e.contains("pg.machine:3") && e.contains("StopSignal"),
        "{e}"
    );
    assert!(e.contains("pg.machine:4") && e.contains("Ulimit"), "{e}");
}

#[test]
fn day_two_keys_health_notify_auto_update() {
    use crate::health::{HealthTest, OnFailure};
    use std::time::Duration;
    let m = one(
        "[Machine]\nImage=redis\nHealthCmd=tcp:6379\nHealthInterval=1m30s\nHealthTimeout=5 s\n\
         HealthRetries=2\nHealthStartPeriod=1min\nHealthOnFailure=restart\nNotify=healthy\nAutoUpdate=registry\n",
    )
    .unwrap();
    let h = &m.health;
    assert_eq!(h.cmd, Some(Some(HealthTest::Tcp(6379))));
    assert_eq!(h.interval, Some(Some(Duration::from_secs(90))));
    assert_eq!(h.timeout, Some(Duration::from_secs(5)));
    assert_eq!(h.retries, Some(2));
    assert_eq!(h.start_period, Some(Duration::from_secs(60)));
    assert_eq!(h.on_failure, Some(OnFailure::Restart));
    assert!(h.notify_healthy && m.auto_update);

    let m = one("[Machine]\nImage=redis\nHealthCmd=none\nHealthInterval=disable\n").unwrap();
    assert_eq!(m.health.cmd, Some(None), "none turns the image's check off");
    assert_eq!(m.health.interval, Some(None));
    let m = one("[Machine]\nImage=redis\nHealthCmd=tcp:1\nHealthCmd=\n").unwrap();
    assert_eq!(m.health.cmd, None, "empty resets to the image's");
    assert!(!one("[Machine]\nImage=redis\n").unwrap().auto_update);

    for (text, why) in [
        ("HealthCmd=http://192.0.2.1/", "must be 127.0.0.1"),
        ("HealthInterval=0", "longer than 0"),
        ("HealthTimeout=soon", "not a time span"),
        ("HealthRetries=0", "positive number"),
        ("HealthOnFailure=explode", "none, restart, stop, kill"),
        ("Notify=true", "Notify=healthy"),
        ("AutoUpdate=local", "not supported"),
    ] {
        let e = error_of(&format!("[Machine]\nImage=redis\n{text}\n"));
        assert!(e.contains(why) && e.contains(":3:"), "{text}: {e}");
    }
}
