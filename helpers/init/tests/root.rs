//! Root tier: the real `man8s-init` binary in network/mount/PID namespaces made here, against a
//! real DHCP server and router advertisements (Debian's dnsmasq on the far end of a veth pair).
//! Every test FAILS when not run as root.

use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use man8s_testsupport::{require_root, sh};

const INIT: &str = env!("CARGO_BIN_EXE_man8s-init");
const YGG: &str = "300:2e98:a4b0:1789:1d44:bc13:a177:c4d";

/// The Bitwarden man8env.env from the Python tool's README (seed 000), verbatim.
const BITWARDEN_ENV: &str = include_str!("data/bitwarden.man8env.env");

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A rootfs made of static busybox, with test users that exist only in it.
struct Rootfs {
    _scratch: tempfile::TempDir,
    dir: PathBuf,
    root: PathBuf,
}

impl Rootfs {
    fn new(with_shell: bool) -> Self {
        let scratch = tempfile::Builder::new()
            .prefix("man8s-init-root.")
            .tempdir()
            .unwrap();
        let dir = scratch.path().to_owned();
        let root = dir.join("rootfs");
        for d in [
            "bin", "usr/bin", "etc", "dev", "proc", "run", "tmp", "out", ".man8s",
        ] {
            fs::create_dir_all(root.join(d)).unwrap();
        }
        fs::set_permissions(root.join("out"), fs::Permissions::from_mode(0o777)).unwrap();
        fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
        let applets: &[&str] = if with_shell {
            &[
                "sh", "id", "env", "pwd", "cat", "stat", "echo", "sleep", "ls", "touch",
            ]
        } else {
            &["env", "id"]
        };
        for a in applets {
            std::os::unix::fs::symlink("/bin/busybox", root.join("usr/bin").join(a)).unwrap();
        }
        if with_shell {
            std::os::unix::fs::symlink("/usr/bin/sh", root.join("bin/sh")).unwrap();
        }
        fs::write(
            root.join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\nm8bwuser:x:1654:1654:bitwarden:/home/m8bwuser:/bin/sh\n",
        )
        .unwrap();
        fs::write(
            root.join("etc/group"),
            "root:x:0:\nm8bwuser:x:1654:\naudio:x:29:m8bwuser\nm8web:x:33:other,m8bwuser\n",
        )
        .unwrap();
        fs::write(root.join("man8env.env"), BITWARDEN_ENV).unwrap();
        Rootfs {
            _scratch: scratch,
            dir,
            root,
        }
    }

    fn image_config(&self, json: &str) {
        fs::write(self.root.join(".man8s/image.json"), json).unwrap();
    }

    fn script(&self, path: &str, body: &str) {
        let p = self.root.join(path.trim_start_matches('/'));
        fs::write(&p, format!("#!/bin/sh\n{body}")).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
    }

    fn read(&self, path: &str) -> String {
        fs::read_to_string(self.root.join(path.trim_start_matches('/')))
            .unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    /// The command that runs the init as PID 1 of a new PID namespace, in a new mount namespace
    /// (inside network namespace `netns` when given), with /proc, /run, /tmp and a small /dev.
    fn init_command(&self, netns: Option<&str>, notify: Option<&Path>, args: &[&str]) -> Command {
        let r = self.root.display();
        let mut setup = format!(
            "mount -t proc proc {r}/proc; mount -t tmpfs tmpfs {r}/run; mount -t tmpfs tmpfs {r}/tmp; \
             mount -t tmpfs tmpfs {r}/dev; mknod -m 666 {r}/dev/null c 1 3; \
             ln -s /proc/self/fd/1 {r}/dev/stdout; ln -s /proc/self/fd/2 {r}/dev/stderr; "
        );
        if let Some(sock) = notify {
            setup.push_str(&format!(
                "mkdir -p {r}/run/host; touch {r}/run/host/notify; mount --bind {} {r}/run/host/notify; ",
                sock.display()
            ));
        }
        setup.push_str(&format!("exec {INIT} --root={r} \"$@\""));
        let mut cmd = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, "unshare"]);
                c
            }
            None => Command::new("unshare"),
        };
        cmd.args([
            "--mount",
            "--pid",
            "--fork",
            "--kill-child",
            "--propagation",
            "private",
            "sh",
            "-ec",
            &setup,
            "sh",
        ]);
        cmd.args(args);
        // What nspawn hands its payload, plus things that must not reach the app.
        nspawn_environment(&mut cmd)
            .env("LISTEN_FDS", "1")
            .env("LISTEN_PID", "2")
            .env("RUST_BACKTRACE", "0");
        if notify.is_some() {
            cmd.env("NOTIFY_SOCKET", "/run/host/notify");
        }
        cmd
    }
}

/// Only the environment nspawn gives its payload (the init, or the oracle in its place).
fn nspawn_environment(cmd: &mut Command) -> &mut Command {
    cmd.env_clear()
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .env("container", "systemd-nspawn")
        .env("container_uuid", "0123456789abcdef0123456789abcdef")
        .env("container_host_id", "debian")
        .env("container_host_version_id", "13")
        .env("TERM", "vt220")
        .env("HOME", "/root")
}

/// Two network namespaces joined by a veth pair: `host0` in `app`, `peer` in `srv` with
/// 10.77.N.1/24 and fd77:N::1/64; optionally dnsmasq serving DHCPv4 and RAs on it. DAD is off
/// on the server side, as on a long-running bridge: a tentative link-local source would make the
/// kernel ignore the first router advertisements.
struct Net {
    app: String,
    srv: String,
    peer: String,
    net: u32,
    dnsmasq: Option<Child>,
}

impl Net {
    fn new(dir: &Path, with_dhcp: bool) -> Self {
        Self::with_router(dir, with_dhcp, None)
    }

    /// As [`Net::new`], with the DHCP router option naming `router` instead of 10.77.N.1.
    fn with_router(dir: &Path, with_dhcp: bool, router: Option<&str>) -> Self {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let id = std::process::id() % 100_000;
        let net = 100 + (id * 7 + n) % 150;
        let me = Net {
            app: format!("m8i{id}a{n}"),
            srv: format!("m8i{id}s{n}"),
            peer: format!("m8p{id}x{n}"),
            net,
            dnsmasq: None,
        };
        let (app, srv, peer) = (me.app.clone(), me.srv.clone(), me.peer.clone());
        sh(&format!(
            "ip netns add {app}; ip netns add {srv}; \
             ip link add host0 netns {app} type veth peer name {peer} netns {srv}; \
             ip netns exec {srv} sysctl -qw net.ipv6.conf.{peer}.accept_dad=0; \
             ip -n {srv} addr add 10.77.{net}.1/24 dev {peer}; ip -n {srv} addr add fd77:{net}::1/64 dev {peer} nodad; \
             ip -n {srv} link set {peer} up; ip -n {srv} link set lo up"
        ));
        let mut me = me;
        if with_dhcp {
            let child = Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    &srv,
                    "dnsmasq",
                    "--keep-in-foreground",
                    "--conf-file=/dev/null",
                    "--no-resolv",
                ])
                .args([
                    "--no-hosts",
                    "--port=0",
                    "--bind-interfaces",
                    "--no-ping",
                    "--dhcp-authoritative",
                    "--user=root",
                ])
                .arg(format!("--interface={peer}"))
                .arg(format!(
                    "--dhcp-range=10.77.{net}.50,10.77.{net}.150,255.255.255.0,1h"
                ))
                .arg(format!(
                    "--dhcp-option=option:router,{}",
                    router
                        .map(str::to_owned)
                        .unwrap_or(format!("10.77.{net}.1"))
                ))
                .arg(format!("--dhcp-option=option:dns-server,10.77.{net}.53"))
                .arg("--dhcp-option=option:domain-name,m8s.test")
                .arg("--enable-ra")
                .arg(format!("--dhcp-range=fd77:{net}::,ra-only,64"))
                .arg(format!("--dhcp-leasefile={}/leases", dir.display()))
                .arg(format!("--pid-file={}/dnsmasq.pid", dir.display()))
                .arg(format!("--log-facility={}/dnsmasq.log", dir.display()))
                .arg("--log-dhcp")
                .stdout(Stdio::null())
                .spawn()
                .expect("start dnsmasq");
            me.dnsmasq = Some(child);
            std::thread::sleep(Duration::from_millis(200));
        }
        me
    }

    fn json(&self, what: &str) -> serde_json::Value {
        let out = sh(&format!("ip -j -n {} {what}", self.app));
        serde_json::from_slice(&out.stdout).unwrap()
    }

    fn addresses(&self) -> Vec<(String, u64, String)> {
        let v = self.json("addr show dev host0");
        v[0]["addr_info"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| {
                (
                    a["local"].as_str().unwrap().to_owned(),
                    a["prefixlen"].as_u64().unwrap(),
                    a["scope"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        if let Some(mut c) = self.dnsmasq.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.app])
            .status();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.srv])
            .status();
    }
}

fn run_to_end(mut cmd: Command, bound: Duration) -> (i32, String, String) {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut out = String::new();
            let mut err = String::new();
            child
                .stdout
                .take()
                .unwrap()
                .read_to_string(&mut out)
                .unwrap();
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            eprintln!("--- init stderr ---\n{err}");
            return (status.code().unwrap_or(-1), out, err);
        }
        if start.elapsed() > bound {
            let _ = child.kill();
            let mut err = String::new();
            let _ = child.stderr.take().unwrap().read_to_string(&mut err);
            panic!("init did not finish within {bound:?}; stderr:\n{err}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn bitwarden_lines() -> Vec<&'static str> {
    BITWARDEN_ENV.lines().filter(|l| !l.is_empty()).collect()
}

#[test]
fn root_boot_with_dhcp_slaac_yggdrasil_and_image_user() {
    require_root();
    let rootfs = Rootfs::new(true);
    rootfs.image_config(
        r#"{"config":{"User":"m8bwuser","WorkingDir":"/srv/app","Env":["PATH=/usr/bin:/bin","IMAGE_ONLY=1","APP_UID=0"],
            "Entrypoint":["/never-run"]}}"#,
    );
    // /entrypoint.sh is the seed's MAN8S_APPLICATION_ARGS.
    rootfs.script(
        "/entrypoint.sh",
        "id -u > /out/uid; id -g > /out/gid; id -G > /out/groups; pwd > /out/pwd; env > /out/env\n\
         stat -c '%u %g %a %N' /run/app/state /tmp/link /tmp > /out/protected\n\
         cat /proc/self/status > /out/status\n",
    );
    fs::create_dir_all(rootfs.root.join("run.man8sprotected/app")).unwrap();
    fs::write(rootfs.root.join("run.man8sprotected/app/state"), "x").unwrap();
    sh(&format!(
        "chown 1654:1654 {0}/run.man8sprotected/app/state; chmod 640 {0}/run.man8sprotected/app/state",
        rootfs.root.display()
    ));
    // A symlinked protected dir (followed inside the root, as `cp -a /tmp.man8sprotected/.`
    // did) whose mode and owner /tmp takes over.
    fs::create_dir_all(rootfs.root.join("var/tmp-image")).unwrap();
    std::os::unix::fs::symlink("/var/tmp-image", rootfs.root.join("tmp.man8sprotected")).unwrap();
    sh(&format!(
        "chown 1654:1654 {0}/var/tmp-image; chmod 1770 {0}/var/tmp-image",
        rootfs.root.display()
    ));
    std::os::unix::fs::symlink("/run/app/state", rootfs.root.join("var/tmp-image/link")).unwrap();

    let net = Net::new(&rootfs.dir, true);
    let cmd = rootfs.init_command(
        Some(&net.app),
        None,
        &["--dhcp-timeout=10", "--slaac-timeout=8"],
    );
    let (code, _out, err) = run_to_end(cmd, Duration::from_secs(40));
    assert_eq!(code, 0, "init/app failed; stderr:\n{err}");

    // Network: DHCP address, default route, resolv.conf, SLAAC and Yggdrasil addresses.
    let addrs = net.addresses();
    let v4 = addrs
        .iter()
        .find(|(a, _, _)| a.starts_with(&format!("10.77.{}.", net.net)))
        .unwrap_or_else(|| panic!("{addrs:?}\n{err}"));
    assert_eq!(v4.1, 24);
    assert!(
        addrs.iter().any(|(a, p, _)| a == YGG && *p == 64),
        "{addrs:?}"
    );
    assert!(
        addrs
            .iter()
            .any(|(a, p, s)| a.starts_with(&format!("fd77:{}:", net.net))
                && *p == 64
                && s == "global"),
        "no SLAAC address: {addrs:?}\n{err}"
    );
    let routes = net.json("route show default");
    assert_eq!(
        routes[0]["gateway"],
        format!("10.77.{}.1", net.net),
        "{routes}"
    );
    assert_eq!(routes[0]["dev"], "host0");
    let resolv = rootfs.read("/etc/resolv.conf");
    assert!(
        resolv.contains(&format!("nameserver 10.77.{}.53\n", net.net))
            && resolv.contains("search m8s.test"),
        "{resolv}"
    );
    assert!(err.contains("network: host0: 10.77."), "{err}");

    // The app: user only in the image, its groups, created WorkingDir, environment.
    assert_eq!(rootfs.read("/out/uid").trim(), "1654");
    assert_eq!(rootfs.read("/out/gid").trim(), "1654");
    let mut groups: Vec<u32> = rootfs
        .read("/out/groups")
        .split_whitespace()
        .map(|g| g.parse().unwrap())
        .collect();
    groups.sort();
    assert_eq!(groups, [29, 33, 1654]);
    assert_eq!(rootfs.read("/out/pwd").trim(), "/srv/app");
    let env = rootfs.read("/out/env");
    let env_lines: Vec<&str> = env.lines().collect();
    for line in bitwarden_lines() {
        assert!(
            env_lines.contains(&line),
            "missing {line:?} in app env:\n{env}"
        );
    }
    for line in [
        "IMAGE_ONLY=1",
        "PATH=/usr/bin:/bin",
        "HOME=/home/m8bwuser",
        "TERM=vt220",
        &format!("MAN8S_YGGDRASIL_ADDRESS={YGG}"),
        // As under the Python tool: the uplink's name and nspawn's container variables.
        "MAN8S_HOST_IFACE=host0",
        "container=systemd-nspawn",
        "container_uuid=0123456789abcdef0123456789abcdef",
        "container_host_id=debian",
        "container_host_version_id=13",
    ] {
        assert!(
            env_lines.contains(&line),
            "missing {line:?} in app env:\n{env}"
        );
    }
    assert!(
        env_lines.contains(&"APP_UID=1654"),
        "man8env.env must win over image Env:\n{env}"
    );
    for dropped in ["LISTEN_FDS=", "LISTEN_PID=", "NOTIFY_SOCKET="] {
        assert!(
            !env.lines().any(|l| l.starts_with(dropped)),
            "{dropped} leaked:\n{env}"
        );
    }

    // SIGPIPE at its default (the Rust runtime of the init ignores it), and SIGHUP (reload).
    let status = rootfs.read("/out/status");
    let ignored = status
        .lines()
        .find_map(|l| l.strip_prefix("SigIgn:\t"))
        .map(|hex| u64::from_str_radix(hex, 16).unwrap())
        .unwrap();
    assert_eq!(ignored & 1, 0, "SIGHUP (1) ignored: {ignored:x}");
    assert_eq!(ignored & (1 << 12), 0, "SIGPIPE (13) ignored: {ignored:x}");

    // Protected dirs copied with owner, mode and symlinks.
    let protected = rootfs.read("/out/protected");
    assert!(
        protected.contains("1654 1654 640 /run/app/state\n"),
        "{protected}"
    );
    assert!(protected.contains("1654 1654 1770 /tmp\n"), "{protected}");
    assert!(
        protected.contains("'/tmp/link' -> '/run/app/state'"),
        "{protected}"
    );
    assert!(
        err.contains("protected dirs: /run.man8sprotected → /run: 1 dirs, 1 files"),
        "{err}"
    );
}

#[test]
fn root_no_dhcp_answer_warns_and_continues() {
    require_root();
    let rootfs = Rootfs::new(true);
    rootfs.script("/entrypoint.sh", "echo started > /out/started\n");
    let net = Net::new(&rootfs.dir, false);
    let started = Instant::now();
    let cmd = rootfs.init_command(
        Some(&net.app),
        None,
        &["--dhcp-timeout=1", "--slaac-timeout=0"],
    );
    let (code, _out, err) = run_to_end(cmd, Duration::from_secs(20));
    assert_eq!(code, 0, "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(rootfs.read("/out/started"), "started\n");
    let warning: Vec<&str> = err.lines().filter(|l| l.contains("no IPv4")).collect();
    assert_eq!(warning.len(), 1, "{err}");
    assert!(
        warning[0]
            .starts_with("man8s-init: network: warning: no IPv4 on host0: no DHCP server answered"),
        "{err}"
    );
    assert!(warning[0].contains("Yggdrasil"), "{err}");
    let addrs = net.addresses();
    assert!(
        addrs.iter().any(|(a, p, _)| a == YGG && *p == 64),
        "{addrs:?}"
    );
    assert!(!addrs.iter().any(|(a, _, _)| a.contains('.')), "{addrs:?}");
}

#[test]
fn root_exact_environment_without_shell_and_ready_notification() {
    require_root();
    let rootfs = Rootfs::new(false);
    assert!(!rootfs.root.join("bin/sh").exists());
    rootfs.image_config(r#"{"config":{"Env":["FROM_IMAGE=yes","B=image"],"User":"1654"}}"#);
    let notify_path = rootfs.dir.join("notify");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    // --env-file files (literal format, later wins, over man8env.env, under --env).
    fs::create_dir_all(rootfs.root.join("envfiles")).unwrap();
    fs::write(
        rootfs.root.join("envfiles/0"),
        "B=file0\nFILE_ONLY=0\nAPP_UID=from-file \"quoted\"\n",
    )
    .unwrap();
    fs::write(
        rootfs.root.join("envfiles/1"),
        "# second file\nFILE_ONLY=1\n",
    )
    .unwrap();
    // Split shell-style (no /bin/sh): `env` runs directly, with two extra assignments.
    let cmd = rootfs.init_command(
        None,
        Some(&notify_path),
        &[
            "--no-network",
            "--exec=env 'GREETING=held out' X=\"a\\\"b\"",
            "--env-file=/envfiles/0",
            "--env-file=/envfiles/1",
            "--env=B=arg",
            "--env=C=c=d",
        ],
    );
    let (code, out, err) = run_to_end(cmd, Duration::from_secs(20));
    assert_eq!(code, 0, "{err}");
    let mut got: Vec<&str> = out.lines().collect();
    got.sort();
    let mut want: Vec<String> = bitwarden_lines()
        .iter()
        .filter(|l| !l.starts_with("APP_UID="))
        .map(|s| s.to_string())
        .collect();
    want.extend(
        [
            "APP_UID=from-file \"quoted\"",
            "FILE_ONLY=1",
            "FROM_IMAGE=yes",
            "B=arg",
            "C=c=d",
            "HOME=/home/m8bwuser",
            "TERM=vt220",
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "container=systemd-nspawn",
            "container_uuid=0123456789abcdef0123456789abcdef",
            "container_host_id=debian",
            "container_host_version_id=13",
            "GREETING=held out",
            "X=a\"b",
        ]
        .map(String::from),
    );
    want.sort();
    assert_eq!(got, want, "stderr:\n{err}");
    assert!(err.contains("(from --exec) as 1654:1654"), "{err}");
    let mut buf = [0u8; 256];
    let n = notify.recv(&mut buf).expect("READY=1 on NOTIFY_SOCKET");
    assert!(
        buf[..n].starts_with(b"READY=1\n"),
        "{:?}",
        String::from_utf8_lossy(&buf[..n])
    );
}

#[test]
fn root_dev_stdout_works_when_stdout_is_a_socket() {
    // The relay is a separate process: what is written by path in the last moment before the
    // machine ends can be lost (documented), hence the app's pause before it exits.
    require_root();
    let rootfs = Rootfs::new(true);
    rootfs.script(
        "/entrypoint.sh",
        "echo by-path > /dev/stdout; echo err-by-path > /dev/stderr; echo direct; sleep 1\n",
    );
    let (mine, theirs) = UnixStream::pair().unwrap();
    let theirs2 = theirs.try_clone().unwrap();
    let mut cmd = rootfs.init_command(None, None, &["--no-network"]);
    let mut child = cmd
        .stdout(Stdio::from(std::os::fd::OwnedFd::from(theirs)))
        .stderr(Stdio::from(std::os::fd::OwnedFd::from(theirs2)))
        .spawn()
        .unwrap();
    let status = child.wait().unwrap();
    drop(cmd);
    let mut out = String::new();
    mine.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut mine = mine;
    let _ = mine.read_to_string(&mut out);
    assert!(status.success(), "{out}");
    assert!(out.contains("by-path\n"), "{out}");
    assert!(out.contains("err-by-path\n"), "{out}");
    assert!(out.contains("direct\n"), "{out}");
    assert!(
        out.contains("man8s-init: output: /dev/stdout and /dev/stderr relayed"),
        "{out}"
    );
}

#[test]
fn root_failures_are_one_line_naming_the_step() {
    require_root();
    let cases: &[(&str, bool, &[&str], &str)] = &[
        (
            "",
            true,
            &["--no-network", "--env-file=/nope"],
            "man8s-init: environment: --env-file /nope: No such file or directory",
        ),
        (
            "",
            true,
            &["--no-network", "--user=nobody-here"],
            "man8s-init: user: no user \"nobody-here\" in the image's /etc/passwd",
        ),
        (
            "",
            false,
            &["--no-network", "--exec=/bin/busybox 'unbalanced"],
            "man8s-init: exec: --exec \"/bin/busybox 'unbalanced\": unbalanced '",
        ),
        ("", true, &["--no-network", "--exec=/nonexistent"], ""),
        (
            "{broken",
            true,
            &["--no-network"],
            "man8s-init: image config: /.man8s/image.json:",
        ),
        (
            "",
            false,
            &["--no-network", "--exec=missing-tool"],
            "man8s-init: exec: \"missing-tool\" not found in PATH=",
        ),
        (
            "",
            true,
            &["--bogus"],
            "man8s-init: args: unknown argument \"--bogus\"",
        ),
    ];
    for (image, shell, args, want) in cases {
        let rootfs = Rootfs::new(*shell);
        if !image.is_empty() {
            rootfs.image_config(image);
        }
        let (code, _out, err) = run_to_end(
            rootfs.init_command(None, None, args),
            Duration::from_secs(20),
        );
        if want.is_empty() {
            // With a shell the command goes to `sh -c "exec …"`, whose own error is the last line.
            assert_ne!(code, 0, "{args:?}: {err}");
            continue;
        }
        assert_eq!(
            code,
            if args.contains(&"--bogus") { 2 } else { 1 },
            "{args:?}: {err}"
        );
        let last = err.lines().last().unwrap_or_default();
        assert!(
            last.starts_with(want),
            "{args:?}: want {want:?}, got:\n{err}"
        );
        assert!(!err.contains("panicked"), "{err}");
    }
}

#[test]
fn root_no_shell_falls_back_to_image_entrypoint() {
    require_root();
    let rootfs = Rootfs::new(false);
    // No MAN8S_APPLICATION_ARGS, no --exec: Entrypoint+Cmd as argv.
    fs::write(rootfs.root.join("man8env.env"), "ONLY=this\n").unwrap();
    rootfs.image_config(r#"{"config":{"Entrypoint":["/usr/bin/env"],"Cmd":["-u","HOME"]}}"#);
    let (code, out, err) = run_to_end(
        rootfs.init_command(None, None, &["--no-network"]),
        Duration::from_secs(20),
    );
    assert_eq!(code, 0, "{err}");
    let mut got: Vec<&str> = out.lines().collect();
    got.sort();
    assert_eq!(
        got,
        [
            "ONLY=this",
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "TERM=vt220",
            "container=systemd-nspawn",
            "container_host_id=debian",
            "container_host_version_id=13",
            "container_uuid=0123456789abcdef0123456789abcdef"
        ],
        "{err}"
    );
    assert!(
        err.contains("(from image Entrypoint+Cmd) as 0:0 in /"),
        "{err}"
    );
}

/// Under the real systemd-nspawn (`--as-pid2`, the stub PID 1 of `ProcessTwo=yes`, with a private
/// user namespace as `PrivateUsers=pick`): READY=1 reaches nspawn's own notify socket
/// (`--notify-ready=yes`; nspawn accepts it only from the payload's PID 1, so the init sends it on
/// the stub's behalf), `SIGTERM` to nspawn with
/// `--kill-signal=SIGRTMIN+3` gives the app SIGTERM, and an app's own exit status becomes
/// nspawn's. The debug build of the init is dynamic, so the host's libraries are bound in.
#[test]
fn root_under_nspawn_ready_stop_and_exit_status() {
    require_root();
    let nspawn = |rootfs: &Rootfs, notify: Option<&Path>| {
        let mut cmd = Command::new("systemd-nspawn");
        cmd.args([
            "--quiet",
            "--keep-unit",
            "--register=no",
            "--as-pid2",
            "--private-users=pick",
            "--kill-signal=SIGRTMIN+3",
            "--console=pipe",
        ])
        .args([
            "--private-network",
            "--bind-ro=/lib/x86_64-linux-gnu",
            "--bind-ro=/lib64",
        ])
        .arg(format!("--bind-ro={INIT}:/run/host/man8s/man8s-init"))
        .arg(format!("--directory={}", rootfs.root.display()))
        .env("RUST_BACKTRACE", "0")
        .env_remove("NOTIFY_SOCKET");
        // With --notify-ready=yes nspawn reports READY=1 only once the payload sent it.
        if let Some(sock) = notify {
            cmd.arg("--notify-ready=yes").env("NOTIFY_SOCKET", sock);
        }
        cmd.args(["/run/host/man8s/man8s-init", "--no-network"]);
        cmd
    };

    // nspawn's own stop path (machinectl poweroff; man8@.service normally stops the app itself
    // with its StopSignal first): the stub sends SIGTERM then SIGHUP. The app traps SIGTERM, exits
    // 7 and ignores SIGHUP itself (the init leaves SIGHUP at its default, as Docker does); nspawn
    // powers the machine off and exits 0.
    let rootfs = Rootfs::new(true);
    rootfs.script(
        "/entrypoint.sh",
        "trap 'echo TERM >> /out/signals; exit 7' TERM\ntrap '' HUP\necho up > /out/up\n\
         i=0; while [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done\nexit 3\n",
    );
    let notify_path = rootfs.dir.join("nspawn-notify");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let mut child = nspawn(&rootfs, Some(&notify_path))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut buf = [0u8; 512];
    let ready = loop {
        let n = notify
            .recv(&mut buf)
            .expect("nspawn never reported READY=1");
        let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
        if msg.lines().any(|l| l == "READY=1") {
            break msg;
        }
    };
    assert!(ready.contains("READY=1"));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !rootfs.root.join("out/up").exists() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let mut err = String::new();
            let _ = child.stderr.take().unwrap().read_to_string(&mut err);
            panic!("app never started:\n{err}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let started = Instant::now();
    let status = child.wait().unwrap();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "stop took {:?}",
        started.elapsed()
    );
    let signals = fs::read_to_string(rootfs.root.join("out/signals")).unwrap_or_default();
    assert_eq!(signals, "TERM\n", "status {status:?}, stderr:\n{err}");
    assert_eq!(
        status.code(),
        Some(0),
        "a stopped machine is a clean poweroff: {err}"
    );

    // Exit on its own: the status comes through.
    let rootfs = Rootfs::new(true);
    rootfs.script("/entrypoint.sh", "exit 42\n");
    let status = nspawn(&rootfs, None)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(42));

    // A failing step: nspawn exits with the init's 1.
    let rootfs = Rootfs::new(true);
    rootfs.image_config(r#"{"config":{"User":"ghost"}}"#);
    let out = nspawn(&rootfs, None).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("man8s-init: user: no user \"ghost\""),
        "{out:?}"
    );
}

/// A scratch directory for one test's files (dnsmasq's leases, logs).
fn scratch_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("man8s-init-root.")
        .tempdir()
        .unwrap()
}

/// Run `f` on a thread that has entered network namespace `ns`.
fn in_netns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            let fd = fs::File::open(format!("/run/netns/{ns}")).unwrap();
            nix::sched::setns(fd, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            f()
        })
        .join()
        .unwrap()
    })
}

/// Inside the app's namespace: netlink, `host0` brought up (waiting for its carrier) and a DHCP
/// client socket on it.
fn host0_up() -> (
    man8s_init::netlink::Netlink,
    man8s_init::netlink::Link,
    std::net::UdpSocket,
) {
    let mut nl = man8s_init::netlink::Netlink::open().unwrap();
    let link = nl
        .links()
        .unwrap()
        .into_iter()
        .find(|l| l.name == "host0")
        .unwrap();
    nl.set_up(link.index).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !nl
        .links()
        .unwrap()
        .iter()
        .any(|l| l.index == link.index && l.oper_up)
    {
        assert!(Instant::now() < deadline, "host0 never came up");
        std::thread::sleep(Duration::from_millis(5));
    }
    let sock = man8s_init::dhcp::client_socket("host0", std::net::Ipv4Addr::UNSPECIFIED).unwrap();
    (nl, link, sock)
}

/// The lease keeper's protocol steps against dnsmasq: a lease, its renewal by unicast (RENEWING)
/// and by broadcast (REBINDING). (A NAK to a REQUEST with `ciaddr` goes to that address, which
/// only a client holding it can receive; NAK parsing is covered by the unit tests.)
#[test]
fn root_dhcp_renew_and_rebind() {
    use man8s_init::dhcp::{self, Reply};
    use std::net::Ipv4Addr;
    require_root();
    let scratch = scratch_dir();
    let net = Net::new(scratch.path(), true);
    let subnet = net.net;
    in_netns(&net.app, || {
        let (mut nl, link, sock) = host0_up();
        let lease = dhcp::acquire(&sock, &link.mac, Duration::from_secs(10)).unwrap();
        assert_eq!(lease.address.octets()[..3], [10, 77, subnet as u8]);
        assert_eq!(lease.server, Ipv4Addr::new(10, 77, subnet as u8, 1));
        assert_eq!(
            (lease.lease_secs, lease.t1(), lease.t2()),
            (Some(3600), Some(1800), Some(3150))
        );
        nl.add_ipv4(
            link.index,
            lease.address,
            lease.prefix_len,
            lease.lease_secs,
        )
        .unwrap();

        let renewed = dhcp::renew_once(
            &sock,
            &link.mac,
            lease.address,
            lease.server,
            Duration::from_secs(5),
        )
        .unwrap();
        match renewed {
            Some(Reply::Ack(l)) => assert_eq!(l.address, lease.address),
            other => panic!("unicast renewal: {other:?}"),
        }
        let rebound = dhcp::renew_once(
            &sock,
            &link.mac,
            lease.address,
            Ipv4Addr::BROADCAST,
            Duration::from_secs(5),
        )
        .unwrap();
        match rebound {
            Some(Reply::Ack(l)) => assert_eq!(l.address, lease.address),
            other => panic!("broadcast rebinding: {other:?}"),
        }
    });
}

/// A server slower than the first retransmission: it answers only the first DISCOVER, after the
/// client has sent more, and the client takes that late OFFER (retransmissions keep their xid; a
/// new xid per DISCOVER would drop it and wait for an answer that never comes).
#[test]
fn root_dhcp_takes_a_late_offer_to_an_earlier_discover() {
    use dhcproto::v4::{DhcpOption, Message, MessageType, Opcode};
    use dhcproto::{Decodable, Encodable};
    use std::net::{Ipv4Addr, UdpSocket};
    require_root();
    let scratch = scratch_dir();
    let net = Net::new(scratch.path(), false);
    let offered = Ipv4Addr::new(10, 77, net.net as u8, 60);
    let server_id = Ipv4Addr::new(10, 77, net.net as u8, 1);
    let (srv, peer) = (net.srv.clone(), net.peer.clone());
    let server = std::thread::spawn(move || {
        in_netns(&srv, || {
            let sock = UdpSocket::bind("0.0.0.0:67").unwrap();
            sock.set_broadcast(true).unwrap();
            nix::sys::socket::setsockopt(
                &sock,
                nix::sys::socket::sockopt::BindToDevice,
                &std::ffi::OsString::from(&peer),
            )
            .unwrap();
            sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let recv = |sock: &UdpSocket| {
                let mut buf = [0u8; 1536];
                let n = sock.recv(&mut buf)?;
                Ok::<_, std::io::Error>(
                    Message::decode(&mut dhcproto::Decoder::new(&buf[..n])).unwrap(),
                )
            };
            let next = |sock: &UdpSocket| recv(sock).expect("a client message");
            let reply = |to: &Message, kind| {
                let mut m = Message::new_with_id(
                    to.xid(),
                    Ipv4Addr::UNSPECIFIED,
                    offered,
                    Ipv4Addr::UNSPECIFIED,
                    Ipv4Addr::UNSPECIFIED,
                    &to.chaddr()[..6],
                );
                m.set_opcode(Opcode::BootReply);
                m.opts_mut().insert(DhcpOption::MessageType(kind));
                m.opts_mut().insert(DhcpOption::ServerIdentifier(server_id));
                m.opts_mut()
                    .insert(DhcpOption::SubnetMask([255, 255, 255, 0].into()));
                m.opts_mut().insert(DhcpOption::AddressLeaseTime(3600));
                m.to_vec().unwrap()
            };
            let first = next(&sock);
            assert_eq!(first.opts().msg_type(), Some(MessageType::Discover));
            // Slower than the client: the answer to `first` goes out only after a retransmission
            // (and whatever else has come by then) is in.
            let mut later_xids = vec![next(&sock).xid()];
            sock.set_nonblocking(true).unwrap();
            while let Ok(m) = recv(&sock) {
                later_xids.push(m.xid());
            }
            sock.set_nonblocking(false).unwrap();
            sock.send_to(&reply(&first, MessageType::Offer), "255.255.255.255:68")
                .unwrap();
            let request = loop {
                let m = next(&sock);
                if m.opts().msg_type() == Some(MessageType::Request) {
                    break m;
                }
            };
            assert_eq!(
                request.xid(),
                first.xid(),
                "the REQUEST is of another transaction"
            );
            sock.send_to(&reply(&request, MessageType::Ack), "255.255.255.255:68")
                .unwrap();
            (first.xid(), later_xids)
        })
    });
    let lease = in_netns(&net.app, || {
        let (_nl, link, sock) = host0_up();
        man8s_init::dhcp::acquire(&sock, &link.mac, Duration::from_secs(3))
    })
    .expect("a lease from the late OFFER");
    let (xid, later_xids) = server.join().unwrap();
    assert_eq!(lease.address, offered);
    assert!(
        later_xids.iter().all(|x| *x == xid),
        "retransmissions changed the xid: first {xid:#x}, later {later_xids:x?}"
    );
}

/// `--forward`: an app listening on 127.0.0.1 only is reachable on the Yggdrasil address through
/// the forwarder the init leaves behind (the bridge engineer's `forward` module), from the far end
/// of the veth.
#[test]
fn root_forward_reaches_an_ipv4_only_app_on_the_yggdrasil_address() {
    require_root();
    let rootfs = Rootfs::new(true);
    for a in ["httpd", "mkdir"] {
        std::os::unix::fs::symlink("/bin/busybox", rootfs.root.join("usr/bin").join(a)).unwrap();
    }
    rootfs.script(
        "/entrypoint.sh",
        "mkdir -p /tmp/www; echo forwarded-ok > /tmp/www/index.html\nexec httpd -f -p 127.0.0.1:8080 -h /tmp/www\n",
    );
    let net = Net::new(&rootfs.dir, true);
    // The bridge holds <subnet>::1/64, as man8s-bridge sets it up.
    sh(&format!(
        "ip -n {} addr add 300:2e98:a4b0:1789::1/64 dev {} nodad",
        net.srv, net.peer
    ));
    let mut child = rootfs
        .init_command(
            Some(&net.app),
            None,
            &["--slaac-timeout=0", "--forward=tcp:8080"],
        )
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The forwarder binds once the port has been IPv4-only for its settle time (2 s).
    let deadline = Instant::now() + Duration::from_secs(20);
    let body = loop {
        let out = Command::new("ip")
            // curl: the static busybox wget of bookworm crashes on IPv6 literals.
            .args(["netns", "exec", &net.srv, "curl", "-sSg", "-m", "3"])
            .arg(format!("http://[{YGG}]:8080/"))
            .output()
            .unwrap();
        if out.status.success() {
            break String::from_utf8_lossy(&out.stdout).into_owned();
        }
        let exited = child.try_wait().unwrap();
        if Instant::now() > deadline || exited.is_some() {
            let listening = Command::new("ip")
                .args(["netns", "exec", &net.app, "ss", "-ltnp"])
                .output()
                .unwrap();
            let listening = String::from_utf8_lossy(&listening.stdout).into_owned();
            let _ = child.kill();
            let mut err = String::new();
            let _ = child.stderr.take().unwrap().read_to_string(&mut err);
            let last = String::from_utf8_lossy(&out.stderr).into_owned();
            panic!(
                "no answer on [{YGG}]:8080 ({last}); init exited: {exited:?}; listening:\n{listening}\ninit stderr:\n{err}"
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(body, "forwarded-ok\n");
}

/// The lease keeper itself: given a lease that pretends to last 4 s, it renews at T1 (2 s) and the
/// address then carries the server's real lifetime (1 h) instead of expiring.
#[test]
fn root_lease_keeper_renews_before_expiry() {
    use man8s_init::dhcp;
    require_root();
    let scratch = scratch_dir();
    let net = Net::new(scratch.path(), true);
    let app = net.app.clone();
    let (link, lease) = in_netns(&app, || {
        let (mut nl, link, sock) = host0_up();
        let mut lease = dhcp::acquire(&sock, &link.mac, Duration::from_secs(10)).unwrap();
        (lease.lease_secs, lease.renew_secs, lease.rebind_secs) = (Some(4), None, None);
        nl.add_ipv4(
            link.index,
            lease.address,
            lease.prefix_len,
            lease.lease_secs,
        )
        .unwrap();
        (link, lease)
    });
    let address = lease.address.to_string();
    // The keeper never returns: it runs on a thread of its own inside the namespace until this test
    // process ends.
    let keeper_ns = app.clone();
    std::thread::spawn(move || {
        let fd = fs::File::open(format!("/run/netns/{keeper_ns}")).unwrap();
        nix::sched::setns(fd, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        man8s_init::net::keep_lease(link, lease, Instant::now());
    });
    std::thread::sleep(Duration::from_secs(5));
    let v = net.json("addr show dev host0");
    let entry = v[0]["addr_info"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["local"] == address.as_str())
        .unwrap_or_else(|| panic!("{address} expired: the keeper did not renew it: {v}"))
        .clone();
    let valid = entry["valid_life_time"].as_u64().unwrap();
    assert!(valid > 3000, "lifetime after renewal: {valid} s ({entry})");
}

/// A lease whose router the kernel cannot reach (outside the subnet) costs only the default route:
/// one warning, the address stays, the app starts.
#[test]
fn root_unreachable_router_warns_and_continues() {
    require_root();
    let rootfs = Rootfs::new(true);
    rootfs.script("/entrypoint.sh", "echo started > /out/started\n");
    let net = Net::with_router(&rootfs.dir, true, Some("192.0.2.1"));
    let cmd = rootfs.init_command(
        Some(&net.app),
        None,
        &["--dhcp-timeout=5", "--slaac-timeout=0"],
    );
    let (code, _out, err) = run_to_end(cmd, Duration::from_secs(20));
    assert_eq!(code, 0, "{err}");
    assert_eq!(rootfs.read("/out/started"), "started\n");
    let warning: Vec<&str> = err.lines().filter(|l| l.contains("warning")).collect();
    assert_eq!(warning.len(), 1, "{err}");
    assert!(
        warning[0]
            .starts_with("man8s-init: network: warning: no default route via 192.0.2.1 on host0"),
        "{err}"
    );
    let addrs = net.addresses();
    assert!(
        addrs
            .iter()
            .any(|(a, p, _)| a.starts_with(&format!("10.77.{}.", net.net)) && *p == 24),
        "{addrs:?}"
    );
    assert!(addrs.iter().any(|(a, p, _)| a == YGG && *p == 64));
    assert!(
        net.json("route show default")
            .as_array()
            .unwrap()
            .is_empty()
    );
}

/// The Python mbctl's man8env.env loader and application start, re-implemented as a busybox
/// shell script from the facts in issue 14 (the test oracle; see the script's header).
const PYTHON_MBCTL_ORACLE: &str = include_str!("data/python-mbctl-loader.sh");

/// man8env.env files whose lines the old loader's `export KEY="VALUE"` + `eval` turned into
/// something other than the literal text. No command substitution here: man8s keeps it literal
/// on purpose (checked below), the old shell ran it.
const PYTHON_MBCTL_CORPUS: &[&str] = &[
    // Quotes, '=', blanks, comments.
    "MAN8S_APPLICATION_ARGS=/show \"two  words\" 'single q' plain\nA=x=\"y z\" $HOME\nB='single'\n\
     C=\"double\"\nD=a=b=c\nE==\nF=\n G=leading blank\nH=trailing blank  \n# comment\n   # indented\n\n\
     I=a #not a comment; and not a command\nJ=~ and ~/x\n",
    // `$` expansion from earlier lines and from nspawn's environment; a lone `$` stays.
    "BASE=/srv\nP=$BASE/data\nQ=${BASE}x $BASE_ $UNSET end\nR=$ $. 5$ $/ ${container}\n\
     S=$container-$HOME-$TERM\nHOSTOS=$container_host_id $container_host_version_id\nT=\\$BASE\nMAN8S_APPLICATION_ARGS=/show $P \"$Q\" '$BASE' \\$BASE\n",
    // Backslashes: double-quote rules, and a backslash before a '"' that ended the quotes.
    "A=a\\\\b\nB=\\$x and \\` and \\\\\\\\\nC=\\n\\t\\x\nD=trailing\\\nK=x\\\" Y=\\\"z\nM=1\\\\\\\"2\n\
     N=\\\"quoted\\\"\nMAN8S_APPLICATION_ARGS=/show \"$A\" \\\\n 'a\\b' \"\\$N\"\n",
    // `export`, lines without '=', empty and odd keys, CRLF.
    "export FOO=1\r\nexport\tBAR=2\nX\n=x\nA B=3\n1A=4\nWIN=crlf\r\n\r\nexport\nV W\n  export   Z=z\n\
     MAN8S_APPLICATION_ARGS=/show $FOO $BAR \"$X\"\n",
    // Later lines win; expansion sees the value of that moment; non-ASCII.
    "A=1\nB=$A\nA=2\nC=$A$B\nU=grüße $A\nMAN8S_APPLICATION_ARGS=/show \"$B\" '$A' $U\nMAN8S_APPLICATION_ARGS=/show last $C\n",
];

/// Shell bookkeeping that differs only because the oracle's chain has one more shell.
fn comparable(out: &str) -> Vec<String> {
    let mut lines: Vec<String> = out
        .lines()
        .filter(|l| !l.starts_with("SHLVL=") && !l.starts_with("PWD=") && !l.starts_with("OLDPWD="))
        .map(str::to_owned)
        .collect();
    lines.sort();
    lines
}

#[test]
fn root_python_mbctl_env_matches_the_old_loader() {
    require_root();
    let rootfs = Rootfs::new(true);
    rootfs.script("/oracle.sh", PYTHON_MBCTL_ORACLE);
    rootfs.script(
        "/show",
        "for a in \"$@\"; do printf 'ARG=%s\\n' \"$a\"; done\nenv\n",
    );
    // The init with TEXT as /man8env.env: (exit code, stdout, stderr).
    let run_init = |text: &str, args: &[&str]| {
        fs::write(rootfs.root.join("man8env.env"), text).unwrap();
        run_to_end(
            rootfs.init_command(None, None, args),
            Duration::from_secs(20),
        )
    };
    let compat = ["--no-network", "--env-compat=python-mbctl"];
    for (i, text) in PYTHON_MBCTL_CORPUS.iter().enumerate() {
        let (code, out, err) = run_init(text, &compat);
        assert_eq!(code, 0, "corpus {i}: {err}");
        // The oracle, in the same rootfs, with what nspawn gives its payload.
        let mut oracle = Command::new("chroot");
        oracle
            .arg(&rootfs.root)
            .args(["/bin/sh", "/oracle.sh", "/man8env.env"]);
        let oracle = nspawn_environment(&mut oracle).output().unwrap();
        let oracle_err = String::from_utf8_lossy(&oracle.stderr);
        assert!(oracle.status.success(), "corpus {i}: oracle: {oracle_err}");
        let want = comparable(&String::from_utf8_lossy(&oracle.stdout));
        assert!(
            want.iter().any(|l| l.starts_with("ARG=")),
            "corpus {i}: {want:?}"
        );
        assert_eq!(
            comparable(&out),
            want,
            "corpus {i}:\n{text}\ninit stderr:\n{err}"
        );
        // The same lines are refused, each with its file:line.
        let ignored = |s: &str, marker: &str| -> Vec<String> {
            s.lines()
                .filter_map(|l| l.split_once(marker))
                .map(|(_, rest)| rest.chars().take_while(char::is_ascii_digit).collect())
                .collect()
        };
        let init_ignored: Vec<String> = err
            .lines()
            .filter(|l| l.ends_with("line ignored"))
            .flat_map(|l| ignored(l, "/man8env.env:"))
            .collect();
        assert_eq!(
            init_ignored,
            ignored(&oracle_err, "oracle: ignored line "),
            "corpus {i}: refused lines\ninit: {err}\noracle: {oracle_err}"
        );
    }

    // Command substitution is never run: kept literally, one warning naming file:line.
    let (code, out, err) = run_init(
        "OK=1\nA=$(touch /out/ran) `touch /out/ran2`\nMAN8S_APPLICATION_ARGS=/show\n",
        &compat,
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.lines()
            .any(|l| l == "A=$(touch /out/ran) `touch /out/ran2`"),
        "{out}"
    );
    assert!(!rootfs.root.join("out/ran").exists() && !rootfs.root.join("out/ran2").exists());
    assert_eq!(
        err.lines()
            .filter(|l| l.contains("/man8env.env:2: ") && l.contains("kept literally"))
            .count(),
        2,
        "{err}"
    );

    // Without --env-compat the same file is literal.
    let (code, out, err) = run_init(
        "A=$HOME \\$x\nexport B=1\nMAN8S_APPLICATION_ARGS=/show\n",
        &["--no-network"],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.lines().any(|l| l == "A=$HOME \\$x"), "{out}");
    assert!(out.lines().any(|l| l == "B=1"), "{out}");
}

/// Everything about a tree that a stray write could change, never following a symlink: path,
/// type, mode, owner, size, mtime, and a file's content or a symlink's target.
fn tree_snapshot(top: &Path) -> Vec<String> {
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    let mut todo = vec![top.to_owned()];
    while let Some(p) = todo.pop() {
        let m = fs::symlink_metadata(&p).unwrap();
        let what = if m.file_type().is_symlink() {
            format!("-> {}", fs::read_link(&p).unwrap().display())
        } else if m.is_file() {
            format!("{:?}", fs::read(&p).unwrap())
        } else {
            String::new()
        };
        out.push(format!(
            "{} {:o} {}:{} {} {}.{} {what}",
            p.strip_prefix(top).unwrap().display(),
            m.mode(),
            m.uid(),
            m.gid(),
            m.len(),
            m.mtime(),
            m.mtime_nsec()
        ));
        if m.is_dir() {
            for e in fs::read_dir(&p).unwrap() {
                todo.push(e.unwrap().path());
            }
        }
    }
    out.sort();
    out
}

/// Canaries for the protected-dir copy: hostile `*.man8sprotected` trees (symlinks out of the
/// root, relative and absolute, a protected dir that is itself a symlink leading out, a FIFO)
/// leave a tree outside the root byte for byte as it was, bring none of its content in, and
/// cost one warning line, not the machine.
#[test]
fn root_protected_dirs_never_touch_or_read_outside_the_root() {
    require_root();
    let rootfs = Rootfs::new(true);
    let outside = rootfs.dir.join("outside");
    fs::create_dir_all(outside.join("sub")).unwrap();
    fs::write(outside.join("secret"), "host secret\n").unwrap();
    fs::write(
        outside.join("sub/run"),
        "host file named like a protected entry\n",
    )
    .unwrap();
    sh(&format!(
        "chmod 0751 {0}; chown 1654:29 {0}/secret",
        outside.display()
    ));
    let run = rootfs.root.join("run.man8sprotected");
    fs::create_dir_all(run.join("dir")).unwrap();
    fs::write(run.join("dir/kept"), "image file\n").unwrap();
    std::os::unix::fs::symlink("../../outside", run.join("up")).unwrap();
    std::os::unix::fs::symlink(&outside, run.join("abs")).unwrap();
    std::os::unix::fs::symlink(outside.join("secret"), run.join("dir/secret")).unwrap();
    nix::unistd::mkfifo(
        &run.join("fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .unwrap();
    // The protected /tmp itself leads out of the root (as seen from inside: to nothing).
    std::os::unix::fs::symlink(
        "../../../../../../outside/sub",
        rootfs.root.join("tmp.man8sprotected"),
    )
    .unwrap();
    fs::write(
        rootfs.root.join("man8env.env"),
        "MAN8S_APPLICATION_ARGS=/entrypoint.sh\n",
    )
    .unwrap();
    rootfs.script(
        "/entrypoint.sh",
        "stat -c '%F %N' /run/up /run/abs /run/dir/secret /run/fifo /run/dir/kept > /out/hostile\n\
         cat /run/abs/secret /run/dir/secret /run/up/secret /tmp/run > /out/leak 2>&1 || true\n\
         ls -A /tmp > /out/tmp\n",
    );
    let before = tree_snapshot(&outside);
    let (code, _out, err) = run_to_end(
        rootfs.init_command(None, None, &["--no-network"]),
        Duration::from_secs(20),
    );
    assert_eq!(
        code, 0,
        "the machine must survive hostile protected dirs: {err}"
    );
    assert_eq!(
        tree_snapshot(&outside),
        before,
        "the tree outside the root changed"
    );
    let hostile = rootfs.read("/out/hostile");
    for want in [
        "symbolic link '/run/up' -> '../../outside'",
        &format!("symbolic link '/run/abs' -> '{}'", outside.display()),
        &format!(
            "symbolic link '/run/dir/secret' -> '{}'",
            outside.join("secret").display()
        ),
        "fifo /run/fifo",
        "regular file /run/dir/kept",
    ] {
        assert!(hostile.contains(want), "{want:?} in:\n{hostile}");
    }
    let leak = rootfs.read("/out/leak");
    assert!(
        !leak.contains("host"),
        "outside content reached the machine: {leak}"
    );
    assert_eq!(
        rootfs.read("/out/tmp"),
        "",
        "/tmp got content from outside the root"
    );
    let warnings: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("/tmp.man8sprotected"))
        .collect();
    assert_eq!(
        warnings.len(),
        1,
        "one warning line for the protected /tmp: {err}"
    );
    assert!(warnings[0].contains("warning"), "{err}");
}
