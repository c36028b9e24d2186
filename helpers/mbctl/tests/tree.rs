//! Golden outputs on a relocated tree (MAN8S_ROOT): `machines list`/`status` (text and JSON),
//! `verify` messages, and `migrate` of a machine laid out exactly the way the Python mbctl did.
//! No privileges, no systemd (a relocated tree is never looked up on the bus).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::json;

mod pty;

struct Tree(tempfile::TempDir);

impl Tree {
    fn new() -> Self {
        Self(tempfile::tempdir().unwrap())
    }
    fn at(&self, canonical: &str) -> PathBuf {
        self.0.path().join(canonical.trim_start_matches('/'))
    }
    fn write(&self, canonical: &str, text: &str) {
        let p = self.at(canonical);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
    fn run(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_mbctl"))
            .args(args)
            .env("MAN8S_ROOT", self.0.path())
            .env("RUST_BACKTRACE", "0")
            .env("NO_COLOR", "1")
            .output()
            .unwrap()
    }
    fn stdout(&self, args: &[&str], code: i32) -> String {
        let o = self.run(args);
        assert_eq!(
            o.status.code(),
            Some(code),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8(o.stdout).unwrap()
    }
}

/// The layout the Python mbctl left for `TestBWContainer3` (its README's example).
fn python_machine(t: &Tree) {
    t.write(
        "/etc/systemd/nspawn/TestBWContainer3.nspawn",
        "[Exec]\nBoot=no\nProcessTwo=yes\nParameters=/sbin/busybox-init.sh\nResolvConf=copy-stub\nTimezone=copy\n\
         LinkJournal=no\nPrivateUsers=pick\nEnvironment=\"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\"\n\
         Environment=\"TERM=xterm\"\nEnvironment=\"HOME=/root\"\nWorkingDirectory=/app\n\n[Network]\nVirtualEthernet=yes\n\
         Bridge=srvgrp0\n\n[Files]\nPrivateUsersOwnership=map\n\
         Bind=/var/lib/man8machine_configs/TestBWContainer3/man8env.env:/man8env.env:idmap\n\
         Bind=/var/lib/man8machine_configs/TestBWContainer3/etc/bitwarden:/etc/bitwarden:idmap\n",
    );
    t.write(
        "/var/lib/man8machine_configs/TestBWContainer3/man8env.env",
        "MAN8S_CONTAINER_NAME=TestBWContainer3\nMAN8S_CONTAINER_TEMPLATE=network_isolated\n\
         MAN8S_YGGDRASIL_ADDRESS=300:2e98:a4b0:1789:1d44:bc13:a177:c4d\nMAN8S_OCI_IMAGE_URL=ghcr.io/bitwarden/self-host:latest\n\
         MAN8S_APPLICATION_ARGS=/entrypoint.sh\nBW_ENABLE_ADMIN=true\n",
    );
    t.write(
        "/var/lib/man8machine_configs/TestBWContainer3/etc/bitwarden/vault.db",
        "data",
    );
    t.write(
        "/var/lib/man8machines/TestBWContainer3/sbin/busybox-init.sh",
        "#!/bin/sh\n",
    );
    std::fs::create_dir_all(t.at("/var/lib/machines")).unwrap();
    std::os::unix::fs::symlink(
        "/var/lib/man8machines/TestBWContainer3",
        t.at("/var/lib/machines/TestBWContainer3"),
    )
    .unwrap();
}

#[test]
fn list_status_and_verify_golden() {
    let t = Tree::new();
    t.write(
        "/etc/man8s/machines/web.machine",
        "[Machine]\nImage=docker.io/library/nginx:1\nVolume=/usr/share/nginx/html:data:ro\nPort=8080:80\n\
         [Network]\nYggdrasilAddress=300:1::5\n",
    );
    // The rootfs's own record is the machine's (never read by host tools); the host's is trusted.
    t.write(
        "/var/lib/man8machines/web/.man8s/source.json",
        r#"{"reference":"x","manifest_digest":"sha256:bad","pulled_at":"2026-11-23T16:40:00Z"}"#,
    );
    t.write("/var/lib/man8s/machines/web/source.json", r#"{"reference":"docker.io/library/nginx:1","manifest_digest":"sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef","pulled_at":"2026-11-23T16:40:00Z"}"#);
    t.write(
        "/run/man8s/machines/broken.machine",
        "[Machine]\nImage=redis\nPrt=1:2\n[Network]\nYggdrasilAddress=10.0.0.1\n",
    );
    t.write(
        "/usr/lib/man8s/machines/web.machine",
        "[Machine]\nImage=shadowed-by-etc\n",
    );

    // Sizes are allocated blocks, which depend on the file system the test runs on.
    let copy = mbctl::disk::Walker::new().tree(&t.at("/var/lib/man8machines/web"));
    let own = mbctl::disk::human(copy);
    let w = own.chars().count().max(3);
    assert_eq!(
        t.stdout(&["machines", "list"], 0),
        format!(
            "NAME    STATE    IMAGE                      DIGEST        {:<w$}  SHARED  YGGDRASIL  ADDRESSES\n\
             broken  invalid  -                          -             {:<w$}  -       -          -\n\
             web     unknown  docker.io/library/nginx:1  0123456789ab  {own:<w$}  -       300:1::5   -\n",
            "OWN", "-"
        )
    );
    let list: serde_json::Value =
        serde_json::from_str(&t.stdout(&["machines", "list", "--json"], 0)).unwrap();
    assert_eq!(
        list,
        json!([
            {
                "name": "broken", "state": "unknown", "sub_state": null, "enabled": null, "image": null,
                "digest": null, "yggdrasil_address": null, "addresses": [],
                "declaration": "/run/man8s/machines/broken.machine", "kind": "declaration",
                "rootfs_present": false, "volumes": [], "ports": [],
                "errors": [
                    "/run/man8s/machines/broken.machine:3: Prt=: unknown key in [Machine] (did you mean Port=?)",
                    "/run/man8s/machines/broken.machine:5: YggdrasilAddress=: \"10.0.0.1\" is not auto, no or an IPv6 address"
                ]
            },
            {
                "name": "web", "state": "unknown", "sub_state": null, "enabled": null,
                "image": "docker.io/library/nginx:1",
                "digest": "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
                "yggdrasil_address": "300:1::5", "addresses": [],
                "declaration": "/etc/man8s/machines/web.machine", "kind": "declaration", "rootfs_present": true,
                "volumes": [{"container_path": "/usr/share/nginx/html", "kind": "data",
                             "host_path": "/var/lib/man8machine_storage/web/usr/share/nginx/html", "read_only": true}],
                "ports": ["tcp:8080:80"], "errors": [],
                "storage": "full copy (made before shared layers; `mbctl machines reset --convert web` makes it layered)",
                "disk": {"kind": "copy", "own": {"bytes": copy.bytes}, "root": {"bytes": copy.bytes},
                         "volumes": {"bytes": 0}}
            }
        ])
    );
    assert_eq!(
        t.stdout(&["machines", "status", "web"], 0),
        format!(
            "web - man8@web.service\n\
         \x20     State: unknown\n\
         Declaration: /etc/man8s/machines/web.machine\n\
         \x20     Image: docker.io/library/nginx:1\n\
         \x20    Digest: sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\n\
         \x20    Rootfs: /var/lib/man8machines/web\n\
         \x20   Storage: full copy (made before shared layers; `mbctl machines reset --convert web` makes it layered)\n\
         \x20      Disk: own {own} (full copy {own}, volumes 0 KiB)\n\
         \x20 Yggdrasil: 300:1::5\n\
         \x20   Volumes: /usr/share/nginx/html → /var/lib/man8machine_storage/web/usr/share/nginx/html (data, read-only)\n\
         \x20     Ports: tcp:8080:80\n\
         \x20    Filter: unknown\n\
         \x20            man8s-bridge has not applied the filter (systemctl status man8s-bridge)\n\
         \x20 Reachable: from this host and machines on the same bridge: every port\n\
         \x20            from everyone else: nothing (no Expose=)\n\
         \x20            from everyone who reaches this host: Port= tcp:8080:80 (published like podman's PublishPort=)\n"
        )
    );
    // verify over the whole tree: one line per problem, canonical paths, exit 1.
    assert_eq!(
        t.stdout(&["verify"], 1),
        "/run/man8s/machines/broken.machine:3: Prt=: unknown key in [Machine] (did you mean Port=?)\n\
         /run/man8s/machines/broken.machine:5: YggdrasilAddress=: \"10.0.0.1\" is not auto, no or an IPv6 address\n"
    );
    // verify of one good file: silent, exit 0.
    let web = t.at("/etc/man8s/machines/web.machine");
    assert_eq!(t.stdout(&["verify", web.to_str().unwrap()], 0), "");
    assert_eq!(t.stdout(&["machines", "status", "nosuch"], 1), "");
}

#[test]
fn migrate_python_machine() {
    let t = Tree::new();
    python_machine(&t);
    let list: serde_json::Value =
        serde_json::from_str(&t.stdout(&["machines", "list", "--json"], 0)).unwrap();
    assert_eq!(list[0]["kind"], "python-mbctl");
    assert_eq!(list[0]["image"], "ghcr.io/bitwarden/self-host:latest");
    assert!(
        t.stdout(&["machines", "list"], 0)
            .contains("unknown (not migrated)")
    );

    let out = t.stdout(&["migrate", "TestBWContainer3"], 0);
    assert!(
        out.contains("Start it with: mbctl machines start TestBWContainer3"),
        "{out}"
    );
    assert_eq!(
        std::fs::read_to_string(t.at("/etc/man8s/machines/TestBWContainer3.machine")).unwrap(),
        "# Machine TestBWContainer3, migrated by `mbctl migrate TestBWContainer3` from /etc/systemd/nspawn/TestBWContainer3.nspawn (Python mbctl),\n\
         # now kept as /etc/systemd/nspawn/TestBWContainer3.nspawn.python-mbctl. Rootfs, config, data and man8env.env are unchanged.\n\
         [Machine]\nImage=ghcr.io/bitwarden/self-host:latest\nWorkingDirectory=/app\nUser=0\n\
         Environment=\"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\"\n\
         Environment=\"TERM=xterm\"\nEnvironment=\"HOME=/root\"\nEnvironmentCompat=python-mbctl\n\
         AddCapability=CAP_AUDIT_CONTROL CAP_DAC_READ_SEARCH CAP_IPC_OWNER CAP_LEASE CAP_LINUX_IMMUTABLE CAP_NET_BROADCAST CAP_SYS_ADMIN CAP_SYS_BOOT CAP_SYS_NICE CAP_SYS_PTRACE CAP_SYS_RESOURCE CAP_SYS_TTY_CONFIG\n\
         Volume=/etc/bitwarden:config\n"
    );
    // The old settings file no longer wins over the generated one, but is kept.
    assert!(!t.at("/etc/systemd/nspawn/TestBWContainer3.nspawn").exists());
    assert!(
        t.at("/etc/systemd/nspawn/TestBWContainer3.nspawn.python-mbctl")
            .exists()
    );
    // Rootfs, scripts, config, address untouched.
    assert!(
        t.at("/var/lib/man8machines/TestBWContainer3/sbin/busybox-init.sh")
            .exists()
    );
    assert_eq!(
        std::fs::read_to_string(
            t.at("/var/lib/man8machine_configs/TestBWContainer3/etc/bitwarden/vault.db")
        )
        .unwrap(),
        "data"
    );
    let status: serde_json::Value =
        serde_json::from_str(&t.stdout(&["machines", "status", "TestBWContainer3", "--json"], 0))
            .unwrap();
    assert_eq!(status["kind"], "declaration");
    assert_eq!(
        status["yggdrasil_address"],
        "300:2e98:a4b0:1789:1d44:bc13:a177:c4d"
    );
    assert_eq!(t.stdout(&["verify"], 0), "");

    // Twice is refused; nothing else changes.
    let o = t.run(&["migrate", "TestBWContainer3"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("is declared already"));
    // A machine that is not the Python tool's is refused with the reason.
    let o = t.run(&["migrate", "other"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("cannot read /etc/systemd/nspawn/other.nspawn")
    );
}

#[test]
fn remove_of_python_machine_keeps_config() {
    let t = Tree::new();
    python_machine(&t);
    let o = t.run(&["machines", "remove", "TestBWContainer3"]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    for gone in [
        "/etc/systemd/nspawn/TestBWContainer3.nspawn",
        "/var/lib/man8machines/TestBWContainer3",
        "/var/lib/machines/TestBWContainer3",
    ] {
        assert!(t.at(gone).symlink_metadata().is_err(), "{gone}");
    }
    assert!(Path::new(&t.at("/var/lib/man8machine_configs/TestBWContainer3/man8env.env")).exists());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("Kept ") && err.contains("use --purge"),
        "{err}"
    );
}

#[test]
fn auto_address_comes_from_the_bridge_state_until_man8env_has_one() {
    let t = Tree::new();
    t.write(
        "/etc/man8s/machines/TestBWContainer3.machine",
        "[Machine]\nImage=ghcr.io/bitwarden/self-host:latest\n",
    );
    let ygg = |t: &Tree| {
        let v: serde_json::Value = serde_json::from_str(
            &t.stdout(&["machines", "status", "TestBWContainer3", "--json"], 0),
        )
        .unwrap();
        v["yggdrasil_address"].clone()
    };
    assert_eq!(
        ygg(&t),
        serde_json::Value::Null,
        "no subnet known, no address"
    );
    // The bridge helper's state file names the host's subnet: the README's address follows.
    t.write(
        "/run/man8s/yggdrasil.json",
        r#"{"address":"200:2e98:a4b0:1789::1","subnet":"300:2e98:a4b0:1789::/64"}"#,
    );
    assert_eq!(ygg(&t), "300:2e98:a4b0:1789:1d44:bc13:a177:c4d");
    // man8env.env wins (the user's file is the truth once it exists).
    t.write(
        "/var/lib/man8machine_configs/TestBWContainer3/man8env.env",
        "MAN8S_YGGDRASIL_ADDRESS=300::42\n",
    );
    assert_eq!(ygg(&t), "300::42");
}

#[test]
fn colour_only_on_a_terminal() {
    let t = Tree::new();
    t.write(
        "/etc/man8s/machines/broken.machine",
        "[Machine]\nImage=redis\nPrt=1\n",
    );
    // Piped, without NO_COLOR: plain text.
    let o = Command::new(env!("CARGO_BIN_EXE_mbctl"))
        .args(["machines", "list"])
        .env("MAN8S_ROOT", t.0.path())
        .env_remove("NO_COLOR")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("invalid") && !text.contains('\x1b'),
        "{text:?}"
    );
    // On a terminal: the state is painted; NO_COLOR turns it off again.
    for (no_color, painted) in [(None, true), (Some("1"), false)] {
        let mut c = Command::new(env!("CARGO_BIN_EXE_mbctl"));
        c.args(["machines", "list"])
            .env("MAN8S_ROOT", t.0.path())
            .env_remove("NO_COLOR");
        if let Some(v) = no_color {
            c.env("NO_COLOR", v);
        }
        let mut pty = pty::OnPty::spawn(c);
        pty.expect("broken");
        let (code, rest) = pty.finish();
        assert_eq!(code, 0);
        assert_eq!(rest.contains("\x1b[31minvalid\x1b[0m"), painted, "{rest:?}");
    }
}

#[test]
fn cache_clear_also_empties_the_python_scratch() {
    let t = Tree::new();
    t.write("/var/tmp/man8s/oci/blobs/sha256/aa", "old download");
    t.write("/var/tmp/keep-me", "not ours");
    let out = t.stdout(&["cache", "clear"], 0);
    assert!(
        out.contains("Removed ") && out.contains("var/tmp/man8s"),
        "{out}"
    );
    assert!(!t.at("/var/tmp/man8s").exists());
    assert!(t.at("/var/tmp/keep-me").exists());
    // Nothing there: still fine, and quiet about it.
    let out = t.stdout(&["cache", "clear"], 0);
    assert!(!out.contains("scratch"), "{out}");
}

#[test]
fn getsuffix_outputs() {
    let t = Tree::new();
    assert_eq!(
        t.stdout(&["address", "getsuffix", "TestBWContainer3"], 0),
        "::1d44:bc13:a177:c4d\n"
    );
    assert_eq!(
        t.stdout(
            &[
                "address",
                "getsuffix",
                "TestBWContainer3",
                "--prefix",
                "300:2e98:a4b0:1789::/64"
            ],
            0
        ),
        "300:2e98:a4b0:1789:1d44:bc13:a177:c4d\n"
    );
    assert_eq!(
        t.stdout(
            &["address", "getsuffix", "TestBWContainer3", "--labelled"],
            0
        ),
        "容器名字: TestBWContainer3\nIPv6 后缀地址: ::1d44:bc13:a177:c4d\n"
    );
}

#[test]
fn verify_notes_man8env_lines_the_two_modes_read_differently() {
    let t = Tree::new();
    t.write(
        "/etc/man8s/machines/web.machine",
        "[Machine]\nImage=redis\n",
    );
    t.write(
        "/var/lib/man8machine_configs/web/man8env.env",
        "SAME=1\nB=a\\\\b\nexport E=1\n",
    );
    // Notes only: the declaration is fine, so the exit status stays 0.
    let out = t.stdout(&["verify"], 0);
    assert_eq!(
        out,
        "note: /var/lib/man8machine_configs/web/man8env.env:2: literal mode: B=\"a\\\\\\\\b\"; python-mbctl mode: B=\"a\\\\b\"\n"
    );
    let file = t.at("/etc/man8s/machines/web.machine");
    assert_eq!(t.stdout(&["verify", file.to_str().unwrap()], 0), out);
}
