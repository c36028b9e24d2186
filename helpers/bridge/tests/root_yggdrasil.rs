//! Root tier: the admin client and `man8s-bridge` against real yggdrasil processes.
//!
//! Each yggdrasil runs in a network namespace of its own (`unshare --net`), without peers,
//! listeners or multicast, so its TUN and any traffic stay there; its admin socket is a unix
//! socket in the test's temp dir. The TCP test runs one with `IfName: none` (no TUN) whose only
//! socket is the admin API on 127.0.0.1. These tests FAIL when not run as root.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime};

use man8s::Paths;
use man8s_bridge::yggdrasil::{AdminEndpoint, SelfInfo, query_getself};
use man8s_testsupport::require_root;
use serde_json::Value;

const BOOKWORM_YGGDRASIL: &str = "/usr/sbin/yggdrasil";

/// Debian sid's yggdrasil 0.5, fetched once into target/ by tests/sid-yggdrasil.sh.
fn sid_yggdrasil() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let cache = manifest.join("../../target/test-cache/yggdrasil-sid");
    let out = Command::new(manifest.join("tests/sid-yggdrasil.sh"))
        .arg(&cache)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "fetching sid's yggdrasil failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// A running yggdrasil, killed on drop.
struct Ygg {
    child: Child,
    log: PathBuf,
    _dir: tempfile::TempDir,
    /// Its configuration (JSON), for writing a relocated copy.
    conf: Value,
}

impl Ygg {
    /// Start `binary` with `AdminListen` = `admin`; `netns` puts it in a namespace of its own.
    fn start(binary: &Path, admin: &str, netns: bool, dir: tempfile::TempDir) -> Ygg {
        let genconf = Command::new(binary)
            .args(["-genconf", "-json"])
            .output()
            .unwrap();
        assert!(genconf.status.success(), "{binary:?} -genconf failed");
        let mut conf: Value = serde_json::from_slice(&genconf.stdout).unwrap();
        conf["AdminListen"] = admin.into();
        conf["MulticastInterfaces"] = Value::Array(vec![]);
        conf["Peers"] = Value::Array(vec![]);
        conf["Listen"] = Value::Array(vec![]);
        conf["IfName"] = if netns { "yggtest0" } else { "none" }.into();
        let conf_path = dir.path().join("yggdrasil.json");
        std::fs::write(&conf_path, serde_json::to_vec_pretty(&conf).unwrap()).unwrap();
        let log = dir.path().join("yggdrasil.log");
        let logf = std::fs::File::create(&log).unwrap();
        let mut cmd = if netns {
            let mut c = Command::new("unshare");
            c.arg("--net").arg(binary);
            c
        } else {
            Command::new(binary)
        };
        let child = cmd
            .arg("-useconffile")
            .arg(&conf_path)
            .stdin(Stdio::null())
            .stdout(logf.try_clone().unwrap())
            .stderr(logf)
            .spawn()
            .unwrap();
        let mut y = Ygg {
            child,
            log,
            _dir: dir,
            conf,
        };
        y.wait_for("admin socket listening");
        y
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn wait_for(&mut self, needle: &str) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while !self.log_text().contains(needle) {
            if let Some(st) = self.child.try_wait().unwrap() {
                panic!(
                    "yggdrasil exited ({st}) before {needle:?}:\n{}",
                    self.log_text()
                );
            }
            assert!(
                Instant::now() < deadline,
                "yggdrasil never logged {needle:?}:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// What yggdrasil printed about itself at startup — the reference to compare with.
    fn logged_self(&mut self) -> SelfInfo {
        self.wait_for("Your IPv6 subnet is ");
        let text = self.log_text();
        let after = |k: &str| {
            text.split(k)
                .nth(1)
                .unwrap()
                .lines()
                .next()
                .unwrap()
                .trim()
                .to_owned()
        };
        SelfInfo {
            address: after("Your IPv6 address is ").parse().unwrap(),
            subnet: after("Your IPv6 subnet is ").parse().unwrap(),
        }
    }
}

impl Drop for Ygg {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn check_getself(binary: &Path) {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("admin.sock");
    let mut y = Ygg::start(binary, &format!("unix://{}", sock.display()), true, dir);
    let want = y.logged_self();
    // Absolute socket path, so resolve against "/".
    let got = query_getself(&AdminEndpoint::Unix(sock), &Paths::new("/")).unwrap();
    assert_eq!(got, want);
    assert_eq!(got.subnet.prefix_len(), 64);
    assert_eq!(got.address.octets()[0], 0x02);
}

#[test]
fn root_getself_yggdrasil_04_bookworm() {
    check_getself(Path::new(BOOKWORM_YGGDRASIL));
}

#[test]
fn root_getself_yggdrasil_05_sid() {
    require_root();
    check_getself(&sid_yggdrasil());
}

#[test]
fn root_getself_over_tcp_loopback() {
    require_root();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut y = Ygg::start(
        Path::new(BOOKWORM_YGGDRASIL),
        &format!("tcp://127.0.0.1:{port}"),
        false,
        tempfile::tempdir().unwrap(),
    );
    let want = y.logged_self();
    let got = query_getself(
        &AdminEndpoint::Tcp(format!("127.0.0.1:{port}")),
        &Paths::new("/"),
    )
    .unwrap();
    assert_eq!(got, want);
}

fn run_bridge(root: &Path, args: &[&str]) -> (Output, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_man8s-bridge"))
        .args(args)
        .env("MAN8S_ROOT", root)
        .env_remove("JOURNAL_STREAM")
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    (out, err)
}

fn mtime(p: &Path) -> SystemTime {
    std::fs::metadata(p).unwrap().modified().unwrap()
}

/// A MAN8S_ROOT tree whose yggdrasil.conf points (canonically) at `/run/yggdrasil/yggdrasil.sock`,
/// which under the root is where the test's yggdrasil listens.
fn bridge_root() -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    std::fs::create_dir_all(r.join("etc/man8s")).unwrap();
    std::fs::create_dir_all(r.join("run/yggdrasil")).unwrap();
    std::fs::create_dir_all(r.join("proc/sys/net/ipv6/conf/all")).unwrap();
    std::fs::write(r.join("proc/sys/net/ipv6/conf/all/forwarding"), "0\n").unwrap();
    // Docker's bridge on the same default subnet (as this little-endian kernel prints it).
    std::fs::create_dir_all(r.join("proc/net")).unwrap();
    std::fs::write(
        r.join("proc/net/route"),
        "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
         docker0\t000011AC\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0\n",
    )
    .unwrap();
    std::fs::write(
        r.join("etc/machine-id"),
        "0123456789abcdef0123456789abcdef\n",
    )
    .unwrap();
    // Short wait: the stopped-yggdrasil case below should not take 10 s.
    std::fs::write(r.join("etc/man8s/man8s.conf"), "[Yggdrasil]\nWaitSec=1\n").unwrap();
    for d in ["etc/man8s/machines", "usr/lib/man8s/machines"] {
        std::fs::create_dir_all(r.join(d)).unwrap();
    }
    std::fs::write(
        r.join("etc/man8s/machines/web.machine"),
        "[Machine]\nImage=busybox\n",
    )
    .unwrap();
    root
}

/// yggdrasil's config as found under MAN8S_ROOT: the same, with the socket named canonically.
fn write_relocated_conf(r: &Path, conf: &Value) {
    let mut relocated = conf.clone();
    relocated["AdminListen"] = "unix:///run/yggdrasil/yggdrasil.sock".into();
    std::fs::create_dir_all(r.join("etc/yggdrasil")).unwrap();
    std::fs::write(
        r.join("etc/yggdrasil/yggdrasil.conf"),
        serde_json::to_vec_pretty(&relocated).unwrap(),
    )
    .unwrap();
}

#[test]
fn root_bridge_writes_files_and_state_then_only_changes() {
    require_root();
    let root = bridge_root();
    let r = root.path();
    let sock = r.join("run/yggdrasil/yggdrasil.sock");
    let mut y = Ygg::start(
        Path::new(BOOKWORM_YGGDRASIL),
        &format!("unix://{}", sock.display()),
        true,
        tempfile::tempdir().unwrap(),
    );
    let me = y.logged_self();
    // Now that its config is known, give the tree a copy naming the socket canonically.
    write_relocated_conf(r, &y.conf);

    // A declaration whose explicit address is web's derived one: reported as a collision.
    let web = man8s::address::machine_address(me.subnet, "web");
    std::fs::write(
        r.join("etc/man8s/machines/copycat.machine"),
        format!("[Machine]\nImage=busybox\n[Network]\nYggdrasilAddress={web}\n"),
    )
    .unwrap();

    let (out, err) = run_bridge(r, &["--no-reload"]);
    assert!(out.status.success(), "{err}");
    let netdev = r.join("run/systemd/network/10-man8s-srvgrp0.netdev");
    let network = r.join("run/systemd/network/10-man8s-srvgrp0.network");
    let state = r.join("run/man8s/yggdrasil.json");
    let dropin = r.join("run/systemd/networkd.conf.d/10-man8s.conf");
    let n = std::fs::read_to_string(&network).unwrap();
    let bridge_addr = man8s::address::bridge_address(me.subnet);
    assert!(
        n.contains(&format!(
            "[Address]\nAddress={bridge_addr}/64\nDuplicateAddressDetection=none\n"
        )),
        "{n}"
    );
    assert!(
        n.contains(&format!(
            "[IPv6Prefix]\nPrefix={}\nAddressAutoconfiguration=no\n",
            me.subnet
        )),
        "{n}"
    );
    assert!(n.contains("Address=172.17.0.1/16\n"), "{n}");
    // The full MTU on the bridge, its machines' veth ports and (by DHCP) their host0.
    assert!(
        n.contains("MTUBytes=65535\n") && n.contains("SendOption=26:uint16:65535\n"),
        "{n}"
    );
    assert!(
        std::fs::read_to_string(
            r.join("run/systemd/network/80-container-vb.network.d/10-man8s-mtu.conf")
        )
        .unwrap()
        .ends_with("[Link]\nMTUBytes=65535\n")
    );
    assert!(
        std::fs::read_to_string(&netdev)
            .unwrap()
            .contains("[NetDev]\nName=srvgrp0\nKind=bridge\n")
    );
    assert!(
        std::fs::read_to_string(&dropin)
            .unwrap()
            .contains("IPv6Forwarding=yes")
    );
    assert_eq!(
        std::fs::read_to_string(r.join("proc/sys/net/ipv6/conf/all/forwarding")).unwrap(),
        "1\n"
    );
    let st: Value = serde_json::from_str(&std::fs::read_to_string(&state).unwrap()).unwrap();
    assert_eq!(st["address"], me.address.to_string());
    assert_eq!(st["subnet"], me.subnet.to_string());
    // The state file is what other crates read.
    assert_eq!(man8s_bridge::host_yggdrasil(&Paths::new(r)).unwrap(), me);
    assert!(
        err.contains(&format!(
            "yggdrasil: address {}, subnet {}",
            me.address, me.subnet
        )),
        "{err}"
    );
    assert!(
        err.contains("wrote /run/systemd/network/10-man8s-srvgrp0.network"),
        "{err}"
    );
    if cfg!(target_endian = "little") {
        assert!(
            err.contains(
                "docker0 already routes 172.17.0.0/16, which overlaps the bridge's IPv4 subnet"
            ),
            "{err}"
        );
    }

    // Second run: nothing changed, nothing rewritten.
    let before: Vec<_> = [&netdev, &network, &state, &dropin]
        .iter()
        .map(|p| mtime(p))
        .collect();
    std::thread::sleep(Duration::from_millis(30));
    let (out, err) = run_bridge(r, &["--no-reload"]);
    assert!(out.status.success(), "{err}");
    let after: Vec<_> = [&netdev, &network, &state, &dropin]
        .iter()
        .map(|p| mtime(p))
        .collect();
    assert_eq!(before, after, "unchanged files were rewritten");
    assert!(
        err.contains("bridge srvgrp0: up to date, nothing written"),
        "{err}"
    );
    assert!(!err.contains("enabled IPv6 forwarding"), "{err}");

    // Rename the bridge: new pair written, the old pair (ours) removed.
    std::fs::write(
        r.join("etc/man8s/man8s.conf"),
        "[Bridge]\nName=m8br\n[Yggdrasil]\nWaitSec=1\n",
    )
    .unwrap();
    let (out, err) = run_bridge(r, &["--no-reload"]);
    assert!(out.status.success(), "{err}");
    assert!(!netdev.exists() && !network.exists(), "{err}");
    assert!(r.join("run/systemd/network/10-man8s-m8br.network").exists());
    assert!(
        err.contains("removed /run/systemd/network/10-man8s-srvgrp0.netdev"),
        "{err}"
    );

    // yggdrasil goes away: the bridge keeps IPv4 + ULA, the state file goes, one clear line, exit 0.
    drop(y);
    let t = Instant::now();
    let (out, err) = run_bridge(r, &["--no-reload"]);
    assert!(out.status.success(), "{err}");
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "waited {:?}",
        t.elapsed()
    );
    let n = std::fs::read_to_string(r.join("run/systemd/network/10-man8s-m8br.network")).unwrap();
    assert!(!n.contains("Address=3"), "{n}");
    assert!(n.contains("Address=172.17.0.1/16\n"), "{n}");
    assert!(n.contains("[Address]\nAddress=fd"), "{n}");
    assert!(!state.exists());
    let warn: Vec<_> = err
        .lines()
        .filter(|l| l.contains("is yggdrasil running?"))
        .collect();
    assert_eq!(warn.len(), 1, "{err}");
    assert!(
        warn[0].contains("machines start without Yggdrasil addresses"),
        "{err}"
    );
}

#[test]
fn root_bridge_waits_for_a_starting_yggdrasil() {
    require_root();
    // yggdrasil is configured (its config file exists) but starts a moment after man8s-bridge,
    // as at boot: the bridge waits for the socket instead of giving up.
    let root = bridge_root();
    let r = root.path().to_owned();
    std::fs::write(r.join("etc/man8s/man8s.conf"), "[Yggdrasil]\nWaitSec=20\n").unwrap();
    std::fs::create_dir_all(r.join("etc/yggdrasil")).unwrap();
    std::fs::write(
        r.join("etc/yggdrasil/yggdrasil.conf"),
        "{\n  AdminListen: unix:///run/yggdrasil/yggdrasil.sock\n}\n",
    )
    .unwrap();
    let sock = r.join("run/yggdrasil/yggdrasil.sock");
    let bridge = std::thread::spawn({
        let r = r.clone();
        move || run_bridge(&r, &["--no-reload"])
    });
    std::thread::sleep(Duration::from_millis(1500));
    let mut y = Ygg::start(
        Path::new(BOOKWORM_YGGDRASIL),
        &format!("unix://{}", sock.display()),
        true,
        tempfile::tempdir().unwrap(),
    );
    let me = y.logged_self();
    let (out, err) = bridge.join().unwrap();
    assert!(out.status.success(), "{err}");
    let st = man8s_bridge::state::read(&Paths::new(&r)).unwrap().unwrap();
    assert_eq!(st, me);
}

#[test]
fn root_bridge_config_error_is_one_line_exit_1() {
    require_root();
    let root = bridge_root();
    std::fs::write(
        root.path().join("etc/man8s/man8s.conf"),
        "[Bridge]\nIPv4Adress=10.0.0.1/24\n",
    )
    .unwrap();
    let (out, err) = run_bridge(root.path(), &["--no-reload"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        err,
        "man8s-bridge: /etc/man8s/man8s.conf:2: IPv4Adress=: unknown key in [Bridge] (did you mean IPv4Address=?)\n"
    );
    assert!(!root.path().join("run/systemd/network").exists());
    let (out, _) = run_bridge(root.path(), &["--no-such-flag"]);
    assert_eq!(out.status.code(), Some(2));
}

/// A private dbus-daemon (session configuration) standing in for the system bus: no networkd on it.
struct Bus {
    child: Child,
    address: String,
}

impl Bus {
    fn start() -> Bus {
        let mut child = Command::new("dbus-daemon")
            .args(["--session", "--nofork", "--print-address"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("dbus-daemon (package dbus) is installed");
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.as_mut().unwrap()),
            &mut line,
        )
        .unwrap();
        assert!(line.starts_with("unix:"), "dbus-daemon printed {line:?}");
        Bus {
            child,
            address: line.trim().to_owned(),
        }
    }
}

impl Drop for Bus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn run_bridge_on_bus(root: &Path, bus: &str, args: &[&str]) -> (Output, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_man8s-bridge"))
        .args(args)
        .env("MAN8S_ROOT", root)
        .env("DBUS_SYSTEM_BUS_ADDRESS", bus)
        .env_remove("JOURNAL_STREAM")
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    (out, err)
}

#[test]
fn root_reload_asks_the_bus_and_does_not_start_networkd() {
    require_root();
    let root = bridge_root();
    let r = root.path();
    std::fs::write(r.join("etc/man8s/man8s.conf"), "[Yggdrasil]\nWaitSec=0\n").unwrap();
    let bus = Bus::start();
    // Files change → reload → networkd is not on this bus → said so, success.
    let (out, err) = run_bridge_on_bus(r, &bus.address, &[]);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("systemd-networkd is not running; it will apply the files when it starts"),
        "{err}"
    );
    // Nothing changed → no reload asked; --force-reload asks anyway.
    let (out, err) = run_bridge_on_bus(r, &bus.address, &[]);
    assert!(
        out.status.success() && !err.contains("systemd-networkd"),
        "{err}"
    );
    let (out, err) = run_bridge_on_bus(r, &bus.address, &["--force-reload"]);
    assert!(
        out.status.success() && err.contains("systemd-networkd is not running"),
        "{err}"
    );
}

#[test]
fn root_reload_without_a_bus_fails_clearly() {
    require_root();
    let root = bridge_root();
    let r = root.path();
    std::fs::write(r.join("etc/man8s/man8s.conf"), "[Yggdrasil]\nWaitSec=0\n").unwrap();
    let nowhere = format!("unix:path={}", r.join("no-bus-here").display());
    let (out, err) = run_bridge_on_bus(r, &nowhere, &[]);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let last = err.lines().last().unwrap();
    assert!(
        last.starts_with("man8s-bridge: files written, but systemd-networkd was not reloaded: cannot connect to the system bus: "),
        "{err}"
    );
    assert!(last.ends_with("; run 'networkctl reload'"), "{err}");
    assert!(
        r.join("run/systemd/network/10-man8s-srvgrp0.network")
            .exists()
    );
}
