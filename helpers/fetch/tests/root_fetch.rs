//! Root tier: the `man8s-fetch` binary end to end under `MAN8S_ROOT`, against a real
//! `docker-registry` on 127.0.0.1.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Output;

use man8s_testsupport::{self as ts, Compression, Image, LayerBuilder, Registry, Root, stderr};
use serde_json::json;

/// A relocated host that `man8s-fetch` runs on, with the OCI layout its images are written to.
struct Host(Root);

impl std::ops::Deref for Host {
    type Target = Root;
    fn deref(&self) -> &Root {
        &self.0
    }
}

impl Host {
    fn new() -> Self {
        Self(Root::new())
    }

    fn fetch_env(&self, args: &[&str], notify: Option<&Path>) -> Output {
        let mut c = self.command(env!("CARGO_BIN_EXE_man8s-fetch"));
        c.args(args)
            .env("HOME", self.path())
            .env_remove("REGISTRY_AUTH_FILE")
            .env_remove("XDG_RUNTIME_DIR");
        if let Some(n) = notify {
            c.env("NOTIFY_SOCKET", n);
        }
        c.output().unwrap()
    }

    fn fetch(&self, args: &[&str]) -> Output {
        self.fetch_env(args, None)
    }

    fn push(&self, reg: &Registry, img: &Image, repo: &str, tag: &str) -> ts::Written {
        reg.push_image(&self.at("/_layout"), img, repo, tag)
    }
}

fn app(version: &str) -> Image {
    Image::new(vec![(
        LayerBuilder::new()
            .dir("srv", 0o755)
            .dir("srv/data", 0o750)
            .file_owned("srv/data/db", 0o600, 1000, 1000, b"seed-db")
            .dir("etc", 0o755)
            .dir("etc/app", 0o755)
            .file("etc/app/app.conf", 0o644, b"listen=80\n")
            .file("version", 0o644, version.as_bytes())
            .tar(),
        Compression::Gzip,
    )])
    .runtime(json!({"Env": ["PATH=/usr/bin", "GREETING=hello world"], "Entrypoint": ["/bin/app"], "Cmd": ["--port", "80"]}))
}

/// A layer with only `/version`.
fn version_layer(version: &str) -> (Vec<u8>, Compression) {
    (
        LayerBuilder::new()
            .file("version", 0o644, version.as_bytes())
            .tar(),
        Compression::Gzip,
    )
}

/// An image of `first` and a second layer of `len` incompressible bytes (slow enough to
/// interrupt, large enough to corrupt in the middle).
fn big_second_layer(first: (Vec<u8>, Compression), len: usize, seed: u64) -> Image {
    let big = LayerBuilder::new()
        .file("big", 0o644, &ts::noise(len, seed))
        .tar();
    Image::new(vec![first, (big, Compression::Gzip)])
}

#[test]
fn root_fetch_installs_machine_with_env_and_volumes() {
    let h = Host::new();
    let mut reg = Registry::start();
    h.push(&reg, &app("1"), "app", "1");
    let image = format!("{}/app:1", reg.host());
    h.declare(
        "web",
        &format!("[Machine]\nImage={image}\nVolume=/srv/data:data\nVolume=/etc/app:config\nVolume=/empty:data\n"),
    );
    std::fs::create_dir_all(h.at("run/man8s")).unwrap();
    std::fs::write(
        h.at("run/man8s/yggdrasil.json"),
        r#"{"address":"200::1","subnet":"300:2e98:a4b0:1789::/64"}"#,
    )
    .unwrap();
    let o = h.fetch(&["web"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let rootfs = h.at("var/lib/man8machines/web");
    assert_eq!(
        std::fs::read_to_string(rootfs.join("version")).unwrap(),
        "1"
    );
    assert!(rootfs.join(".man8s/image.json").is_file());
    for private in ["var/lib/man8machines", "var/cache/man8s"] {
        let mode = std::fs::metadata(h.at(private))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(
            mode, 0o700,
            "{private} holds image content: not for other users"
        );
    }
    assert_eq!(
        std::fs::read_link(h.at("var/lib/machines/web")).unwrap(),
        Path::new("/var/lib/man8machines/web")
    );
    let env = std::fs::read_to_string(h.at("var/lib/man8machine_configs/web/man8env.env")).unwrap();
    let addr = man8s::address::machine_address("300:2e98:a4b0:1789::/64".parse().unwrap(), "web");
    assert_eq!(
        env,
        format!(
            "MAN8S_CONTAINER_NAME=web\nMAN8S_CONTAINER_TEMPLATE=network_isolated\nMAN8S_YGGDRASIL_ADDRESS={addr}\n\
             MAN8S_OCI_IMAGE_URL={image}\nMAN8S_APPLICATION_ARGS=/bin/app --port 80\nGREETING=hello world\n"
        )
    );
    // Volumes seeded from the image, owners and modes kept.
    let db = h.at("var/lib/man8machine_storage/web/srv/data/db");
    assert_eq!(std::fs::read(&db).unwrap(), b"seed-db");
    let m = std::fs::metadata(&db).unwrap();
    assert_eq!(
        (m.uid(), m.gid(), m.permissions().mode() & 0o7777),
        (1000, 1000, 0o600)
    );
    let dm = std::fs::metadata(h.at("var/lib/man8machine_storage/web/srv/data")).unwrap();
    assert_eq!(dm.permissions().mode() & 0o7777, 0o750);
    assert_eq!(
        std::fs::read_to_string(h.at("var/lib/man8machine_configs/web/etc/app/app.conf")).unwrap(),
        "listen=80\n"
    );
    assert!(h.at("var/lib/man8machine_storage/web/empty").is_dir());

    // The user edits man8env.env and a volume; the registry goes away.
    let env_path = h.at("var/lib/man8machine_configs/web/man8env.env");
    std::fs::write(&env_path, "MAN8S_CONTAINER_NAME=web\nMINE=kept \"as is\"").unwrap();
    std::fs::write(&db, b"user-data").unwrap();
    reg.stop();
    let o = h.fetch(&["web"]);
    assert!(
        o.status.success(),
        "rootfs present, Pull=missing: no network needed: {}",
        stderr(&o)
    );
    let env = std::fs::read_to_string(&env_path).unwrap();
    assert_eq!(
        env,
        format!("MAN8S_CONTAINER_NAME=web\nMINE=kept \"as is\"\nMAN8S_YGGDRASIL_ADDRESS={addr}\n")
    );
    // Rootfs gone: re-created from the cache, still offline; user files untouched.
    std::fs::remove_dir_all(&rootfs).unwrap();
    let o = h.fetch(&["web"]);
    assert!(
        o.status.success(),
        "second install from the cache: {}",
        stderr(&o)
    );
    assert_eq!(
        std::fs::read_to_string(rootfs.join("version")).unwrap(),
        "1"
    );
    assert_eq!(std::fs::read(&db).unwrap(), b"user-data");
    assert_eq!(std::fs::read_to_string(&env_path).unwrap(), env);
    // Image= edited afterwards: the installed rootfs still runs, with a warning that says how to switch.
    h.declare(
        "web",
        &format!(
            "[Machine]\nImage={}/app:2\nVolume=/srv/data:data\n",
            reg.host()
        ),
    );
    let o = h.fetch(&["web"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains(&format!(
            "rootfs is from {image}, but the declaration says {}/app:2",
            reg.host()
        )),
        "{}",
        stderr(&o)
    );
    // Another machine from the same image: offline as well.
    h.declare(
        "web2",
        &format!("[Machine]\nImage={image}\n[Network]\nYggdrasilAddress=no\n"),
    );
    let o = h.fetch(&["web2"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let env2 =
        std::fs::read_to_string(h.at("var/lib/man8machine_configs/web2/man8env.env")).unwrap();
    assert!(!env2.contains("YGGDRASIL"), "{env2}");
    // Pull=never is fine while the cache has the image.
    h.declare("web3", &format!("[Machine]\nImage={image}\nPull=never\n"));
    let o = h.fetch(&["web3"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        std::fs::read_to_string(h.at("var/lib/man8machines/web3/version")).unwrap(),
        "1"
    );
}

#[test]
fn root_fetch_pull_always_replaces_only_on_change_and_notifies_systemd() {
    let h = Host::new();
    let mut reg = Registry::start();
    h.push(&reg, &app("1"), "app", "stable");
    h.declare(
        "svc",
        &format!("[Machine]\nImage={}/app:stable\nPull=always\n", reg.host()),
    );
    let sock_path = h.at("notify.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&sock_path).unwrap();
    sock.set_nonblocking(true).unwrap();
    let o = h.fetch_env(&["svc"], Some(&sock_path));
    assert!(o.status.success(), "{}", stderr(&o));
    let mut msgs = String::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = sock.recv(&mut buf) {
        msgs.push_str(&String::from_utf8_lossy(&buf[..n]));
        msgs.push('\n');
    }
    assert!(
        msgs.contains("STATUS=") && msgs.contains("EXTEND_TIMEOUT_USEC="),
        "{msgs}"
    );
    assert!(
        !stderr(&o).contains('\x1b'),
        "journal lines carry no escape codes"
    );
    let rootfs = h.at("var/lib/man8machines/svc");
    let first = man8s_oci::install::read_source(&rootfs).unwrap();
    // Same tag, same content: kept.
    let o = h.fetch(&["svc"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(man8s_oci::install::read_source(&rootfs).unwrap(), first);
    assert!(stderr(&o).contains("already at"), "{}", stderr(&o));
    // The tag moves: replaced.
    let w2 = h.push(&reg, &app("2"), "app", "stable");
    let o = h.fetch(&["svc"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        std::fs::read_to_string(rootfs.join("version")).unwrap(),
        "2"
    );
    assert_eq!(
        man8s_oci::install::read_source(&rootfs)
            .unwrap()
            .manifest_digest,
        w2.digest
    );
    let leftovers: Vec<_> = std::fs::read_dir(h.at("var/lib/man8machines"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("tmp") || n.contains("previous"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    // Registry unreachable (network not up at boot): the installed rootfs is used, with a warning.
    reg.stop();
    let o = h.fetch(&["svc"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("warning:") && stderr(&o).contains("cannot reach registry"),
        "{}",
        stderr(&o)
    );
    assert_eq!(
        std::fs::read_to_string(rootfs.join("version")).unwrap(),
        "2"
    );
}

#[test]
fn root_fetch_exit_codes_and_one_line_errors() {
    let h = Host::new();
    let o = h.fetch(&[]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let o = h.fetch(&["a", "b"]);
    assert_eq!(o.status.code(), Some(2));
    let o = h.fetch(&["--bogus", "a"]);
    assert_eq!(o.status.code(), Some(2));
    let o = h.fetch(&["--platform", "linux", "a"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let o = h.fetch(&["nosuch"]);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert_eq!(e.lines().count(), 1, "{e}");
    assert!(e.contains("nosuch") && e.contains("no declaration"), "{e}");
    // Pull=never with nothing cached.
    h.declare("cold", "[Machine]\nImage=127.0.0.1:1/none:1\nPull=never\n");
    let o = h.fetch(&["cold"]);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert_eq!(e.lines().count(), 1, "{e}");
    assert!(
        e.contains("127.0.0.1:1/none:1") && e.contains("Pull=never"),
        "{e}"
    );
    // A registry that does not exist: one line naming image and registry, after retries.
    h.declare("gone", "[Machine]\nImage=127.0.0.1:1/none:1\n");
    let o = h.fetch(&["gone"]);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    let last = e.lines().last().unwrap();
    assert!(
        last.starts_with(
            "man8s-fetch: gone: 127.0.0.1:1/none:1: cannot reach registry 127.0.0.1:1"
        ),
        "{e}"
    );
    assert!(!h.at("var/lib/man8machines/gone").exists());
}

fn tmp_debris(h: &Host) -> Vec<String> {
    std::fs::read_dir(h.at("var/lib/man8machines"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("+tmp-"))
        .collect()
}

#[test]
fn root_fetch_failed_update_keeps_the_running_rootfs() {
    let h = Host::new();
    let reg = Registry::start();
    h.push(&reg, &app("1"), "app", "stable");
    h.declare(
        "upd",
        &format!("[Machine]\nImage={}/app:stable\nPull=always\n", reg.host()),
    );
    let o = h.fetch(&["upd"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let rootfs = h.at("var/lib/man8machines/upd");
    // The tag moves to an image whose second layer is corrupt in the registry's storage.
    let broken = big_second_layer(version_layer("2"), 2_000_000, 5);
    let w = h.push(&reg, &broken, "app", "stable");
    let data = reg.blob_data_path(&w.layer_digests[1]);
    let mut bytes = std::fs::read(&data).unwrap();
    bytes[1000] ^= 1;
    std::fs::write(&data, &bytes).unwrap();
    let o = h.fetch(&["upd"]);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    let last = e.lines().last().unwrap();
    assert!(
        last.starts_with("man8s-fetch: upd: ") && last.contains("is corrupt"),
        "{e}"
    );
    assert_eq!(
        std::fs::read_to_string(rootfs.join("version")).unwrap(),
        "1",
        "old rootfs untouched"
    );
    assert!(tmp_debris(&h).is_empty(), "{:?}", tmp_debris(&h));
    // A hostile first layer: refused while the second may still be downloading; same guarantees.
    let hostile = {
        let mut b = tar::Builder::new(Vec::new());
        let mut hd = tar::Header::new_gnu();
        hd.set_entry_type(tar::EntryType::Symlink);
        hd.set_size(0);
        hd.set_mode(0o777);
        hd.set_uid(0);
        hd.set_gid(0);
        hd.set_mtime(0);
        hd.set_path("evil").unwrap();
        hd.set_link_name("/").unwrap();
        hd.set_cksum();
        b.append(&hd, &[][..]).unwrap();
        let mut hd = tar::Header::new_gnu();
        hd.set_entry_type(tar::EntryType::Regular);
        hd.set_size(1);
        hd.set_mode(0o644);
        hd.set_uid(0);
        hd.set_gid(0);
        hd.set_mtime(0);
        hd.as_old_mut().name[..14].copy_from_slice(b"../../../pwned");
        hd.set_cksum();
        b.append(&hd, &b"x"[..]).unwrap();
        b.into_inner().unwrap()
    };
    let bad = big_second_layer((hostile, Compression::Gzip), 2_000_000, 6);
    h.push(&reg, &bad, "app", "stable");
    let o = h.fetch(&["upd"]);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(
        e.lines().last().unwrap().contains("layer 1 of the image") && e.contains("pwned"),
        "{e}"
    );
    assert_eq!(
        std::fs::read_to_string(rootfs.join("version")).unwrap(),
        "1"
    );
    assert!(tmp_debris(&h).is_empty());
    assert!(!h.path().join("pwned").exists() && !Path::new("/pwned").exists());
}

#[test]
fn root_fetch_machine_migrated_from_the_python_tool() {
    let h = Host::new();
    // A rootfs and man8env.env written by the Python mbctl: no /.man8s, no registry needed.
    std::fs::create_dir_all(h.at("var/lib/man8machines/old/etc")).unwrap();
    std::fs::create_dir_all(h.at("var/lib/man8machine_configs/old")).unwrap();
    let env_path = h.at("var/lib/man8machine_configs/old/man8env.env");
    std::fs::write(
        &env_path,
        "MAN8S_CONTAINER_NAME=old\nMAN8S_APPLICATION_ARGS=sleep 1\n",
    )
    .unwrap();
    h.declare(
        "old",
        "[Machine]\nImage=127.0.0.1:1/gone:1\nVolume=/data:data\n",
    );
    std::fs::create_dir_all(h.at("run/man8s")).unwrap();
    std::fs::write(
        h.at("run/man8s/yggdrasil.json"),
        r#"{"address":"200::1","subnet":"300:1:2:3::/64"}"#,
    )
    .unwrap();
    let o = h.fetch(&["old"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let addr = man8s::address::machine_address("300:1:2:3::/64".parse().unwrap(), "old");
    assert_eq!(
        std::fs::read_to_string(&env_path).unwrap(),
        format!(
            "MAN8S_CONTAINER_NAME=old\nMAN8S_APPLICATION_ARGS=sleep 1\nMAN8S_YGGDRASIL_ADDRESS={addr}\n"
        )
    );
    assert!(h.at("var/lib/man8machine_storage/old/data").is_dir());
    assert_eq!(
        std::fs::read_link(h.at("var/lib/machines/old")).unwrap(),
        Path::new("/var/lib/man8machines/old")
    );
}

#[test]
fn root_fetch_private_registry_with_etc_man8s_auth_json() {
    let h = Host::new();
    let reg = Registry::start_with_auth("carol", "hunter2");
    h.push(&reg, &app("1"), "priv/app", "1");
    h.declare(
        "priv",
        &format!("[Machine]\nImage={}/priv/app:1\n", reg.host()),
    );
    let o = h.fetch(&["priv"]);
    assert_eq!(o.status.code(), Some(1));
    let last = stderr(&o).lines().last().unwrap().to_owned();
    assert!(
        last.contains(&format!(
            "access denied by registry {} (HTTP 401)",
            reg.host()
        )) && last.contains("no credentials"),
        "{last}"
    );
    std::fs::create_dir_all(h.at("etc/man8s")).unwrap();
    std::fs::write(
        h.at("etc/man8s/auth.json"),
        json!({"auths": {reg.host(): {"username": "carol", "password": "hunter2"}}}).to_string(),
    )
    .unwrap();
    let o = h.fetch(&["priv"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        std::fs::read_to_string(h.at("var/lib/man8machines/priv/version")).unwrap(),
        "1"
    );
}

#[test]
fn root_fetch_killed_mid_pull_leaves_old_rootfs_and_next_run_cleans_up() {
    let h = Host::new();
    let reg = Registry::start();
    h.push(&reg, &app("1"), "app", "stable");
    let proxy = ts::FaultProxy::start(reg.addr, vec![]);
    h.declare(
        "kil",
        &format!(
            "[Machine]\nImage={}/app:stable\nPull=always\n",
            proxy.host()
        ),
    );
    let o = h.fetch(&["kil"]);
    assert!(o.status.success(), "{}", stderr(&o));
    // v2: the first layer unpacks into the temp dir while the second one's download hangs.
    let v2 = big_second_layer(version_layer("2"), 1_000_000, 8);
    let w = h.push(&reg, &v2, "app", "stable");
    let stalled = ts::FaultProxy::start(
        reg.addr,
        vec![ts::Rule {
            path_contains: w.layer_digests[1].clone(),
            fault: ts::Fault::Stall(std::time::Duration::from_secs(30)),
            times: 1,
        }],
    );
    h.declare(
        "kil",
        &format!(
            "[Machine]\nImage={}/app:stable\nPull=always\n",
            stalled.host()
        ),
    );
    let mut child = h
        .command(env!("CARGO_BIN_EXE_man8s-fetch"))
        .arg("kil")
        .env("HOME", h.path())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !stalled
        .seen()
        .iter()
        .any(|s| s.line.contains(&w.layer_digests[1]))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "second layer never requested"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    std::thread::sleep(std::time::Duration::from_millis(300)); // let layer 1 land in the temp dir
    child.kill().unwrap(); // SIGKILL: no cleanup code runs
    child.wait().unwrap();
    let rootfs = h.at("var/lib/man8machines/kil");
    assert_eq!(
        std::fs::read_to_string(rootfs.join("version")).unwrap(),
        "1",
        "old rootfs untouched"
    );
    assert_eq!(
        tmp_debris(&h).len(),
        1,
        "the killed run left its temp dir: {:?}",
        tmp_debris(&h)
    );
    // The next start (registry fine again) removes it and installs v2.
    h.declare(
        "kil",
        &format!(
            "[Machine]\nImage={}/app:stable\nPull=always\n",
            proxy.host()
        ),
    );
    let o = h.fetch(&["kil"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        std::fs::read_to_string(rootfs.join("version")).unwrap(),
        "2"
    );
    assert!(tmp_debris(&h).is_empty(), "{:?}", tmp_debris(&h));
}
