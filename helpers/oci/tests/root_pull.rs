//! Root tier: pulls against a real `docker-registry` on 127.0.0.1 (Debian package), images built by
//! `man8s_testsupport` and pushed with skopeo; faults injected by a loopback proxy.

// unsafe: set_var in a single-threaded test process.
#![allow(unsafe_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use man8s_oci::cache::BlobCache;
use man8s_oci::install::{InstallOptions, install_tree};
use man8s_oci::progress::Silent;
use man8s_oci::pull::{Policy, Puller, ResolvedImage};
use man8s_oci::registry::{RegistryConfig, RetryPolicy};
use man8s_oci::{Error, ImageRef, Platform};
use man8s_testsupport::{
    self as ts, Compression, Fault, FaultProxy, Format, Image, LayerBuilder, Registry, Rule,
    TokenAuth, require_root,
};
use serde_json::json;

struct Env {
    dir: tempfile::TempDir,
    cache: BlobCache,
    config: RegistryConfig,
}

impl Env {
    fn new() -> Self {
        require_root();
        let dir = tempfile::tempdir().unwrap();
        let cache = BlobCache::at(dir.path().join("cache"));
        let config = RegistryConfig {
            insecure: Default::default(),
            auth_files: vec![dir.path().join("auth.json")],
            retry: RetryPolicy {
                attempts: 4,
                initial_delay: Duration::from_millis(50),
                max_delay: Duration::from_secs(5),
                connect_timeout: Duration::from_secs(2),
                read_timeout: Duration::from_secs(10),
                ..RetryPolicy::default()
            },
        };
        Self { dir, cache, config }
    }

    fn layout(&self) -> PathBuf {
        self.dir.path().join("layout")
    }

    fn pull_for(
        &self,
        reference: &str,
        platform: &str,
        policy: Policy,
    ) -> Result<ResolvedImage, Error> {
        let puller = Puller {
            cache: &self.cache,
            config: &self.config,
            progress: &Silent,
            platform: platform.parse().unwrap(),
        };
        let image = ImageRef::parse(reference).unwrap();
        man8s_oci::pull::block_on(puller.pull(&image, policy)).unwrap()
    }

    fn pull(&self, reference: &str) -> Result<ResolvedImage, Error> {
        self.pull_for(reference, "linux/amd64", Policy::Missing)
    }

    fn install(&self, name: &str, image: &ResolvedImage) -> Result<PathBuf, Error> {
        let target = self.dir.path().join("machines").join(name);
        let opts = InstallOptions {
            protect_run_tmp: true,
            ..Default::default()
        };
        install_tree(&target, image, &self.cache, &opts, &Silent)?;
        Ok(target)
    }

    /// Write `img` to the layout under `tag` and push it as `repo:tag`.
    fn push(
        &self,
        reg: &Registry,
        img: &Image,
        repo: &str,
        tag: &str,
        format: Format,
    ) -> ts::Written {
        let w = img.write(&self.layout());
        ts::tag(&self.layout(), &w, tag, false);
        reg.push(&self.layout(), tag, repo, tag, format);
        w
    }
}

fn base_layers() -> Vec<(Vec<u8>, Compression)> {
    let l1 = LayerBuilder::new()
        .dir("etc", 0o755)
        .file("etc/hostname", 0o644, b"base\n")
        .file("etc/gone", 0o644, b"x")
        .dir("run", 0o755)
        .file("run/marker", 0o644, b"run-content")
        .dir("tmp", 0o1777)
        .file("tmp/t", 0o600, b"tmp-content")
        .dir("var", 0o755)
        .symlink("var/run", "/run")
        .file("big", 0o644, &ts::noise(600_000, 1))
        .tar();
    let l2 = LayerBuilder::new()
        .whiteout("etc/gone")
        .file("etc/app.conf", 0o640, b"port=80\n")
        .tar();
    vec![(l1, Compression::Gzip), (l2, Compression::Gzip)]
}

fn app_image() -> Image {
    Image::new(base_layers())
        .runtime(json!({"Env": ["PATH=/bin", "A=1"], "Cmd": ["/bin/app", "--x"]}))
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn debris(parent: &Path) -> Vec<String> {
    std::fs::read_dir(parent)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.contains("+tmp-"))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn root_pull_by_tag_and_digest_installs_rootfs() {
    let env = Env::new();
    let reg = Registry::start();
    let w = env.push(&reg, &app_image(), "team/app", "1", Format::Oci);
    let r = env.pull(&format!("{}/team/app:1", reg.host())).unwrap();
    assert_eq!(r.manifest_digest, w.digest);
    assert!(r.from_network);
    let root = env.install("web", &r).unwrap();
    assert_eq!(read(&root.join("etc/hostname")), "base\n");
    assert_eq!(read(&root.join("etc/app.conf")), "port=80\n");
    assert!(!root.join("etc/gone").exists(), "whiteout applied");
    // /run and /tmp moved aside, empty ones in their place.
    assert_eq!(read(&root.join("run.man8sprotected/marker")), "run-content");
    assert_eq!(read(&root.join("tmp.man8sprotected/t")), "tmp-content");
    assert_eq!(std::fs::read_dir(root.join("run")).unwrap().count(), 0);
    // The image has no /usr; nspawn refuses such a tree, so the install adds an empty one.
    assert!(root.join("usr").is_dir(), "/usr created for nspawn");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(root.join("tmp"))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777,
        0o1777
    );
    let image_json: serde_json::Value =
        serde_json::from_str(&read(&root.join(".man8s/image.json"))).unwrap();
    assert_eq!(image_json["config"]["Cmd"], json!(["/bin/app", "--x"]));
    let source = man8s_oci::install::read_source(&root).unwrap();
    assert_eq!(source.manifest_digest, w.digest);
    assert_eq!(source.reference, format!("{}/team/app:1", reg.host()));
    assert!(source.pulled_at.ends_with('Z'));
    // By digest, into a fresh cache: same manifest.
    let env2 = Env::new();
    let r2 = env2
        .pull(&format!("{}/team/app@{}", reg.host(), w.digest))
        .unwrap();
    assert_eq!(r2.manifest_digest, w.digest);
    assert!(debris(root.parent().unwrap()).is_empty());
}

/// A one-layer image for ARCH/VARIANT whose file `/arch` holds NAME, written into LAYOUT.
fn arch_image(layout: &Path, name: &str, arch: &str, variant: &str) -> ts::Written {
    Image::new(vec![(
        LayerBuilder::new()
            .file("arch", 0o644, name.as_bytes())
            .tar(),
        Compression::Gzip,
    )])
    .arch(arch, variant)
    .write(layout)
}

#[test]
fn root_multi_arch_index_selects_variant() {
    let env = Env::new();
    let reg = Registry::start();
    let layout = env.layout();
    let mk = |name: &str, arch: &str, variant: &str| arch_image(&layout, name, arch, variant);
    let amd = mk("amd64", "amd64", "");
    let v6 = mk("arm-v6", "arm", "v6");
    let v7 = mk("arm-v7", "arm", "v7");
    let a64 = mk("arm64-v8", "arm64", "v8");
    let idx = ts::write_index(
        &layout,
        &[
            (&amd, "amd64", ""),
            (&v6, "arm", "v6"),
            (&v7, "arm", "v7"),
            (&a64, "arm64", "v8"),
        ],
    );
    ts::tag(&layout, &idx, "multi", true);
    reg.push(&layout, "multi", "multi", "latest", Format::OciIndex);
    let reference = format!("{}/multi", reg.host());
    for (platform, want, digest) in [
        ("linux/arm/v7", "arm-v7", &v7.digest),
        ("linux/arm/v6", "arm-v6", &v6.digest),
        ("linux/arm64/v8", "arm64-v8", &a64.digest),
        ("linux/amd64", "amd64", &amd.digest),
    ] {
        let r = env.pull_for(&reference, platform, Policy::Always).unwrap();
        assert_eq!(&r.manifest_digest, digest, "{platform}");
        assert_eq!(r.index_digest.as_deref(), Some(idx.digest.as_str()));
        let root = env.install(&format!("m-{}", want), &r).unwrap();
        assert_eq!(read(&root.join("arch")), want, "{platform}");
    }
    // Cached index: another variant resolves offline too.
    let r = env
        .pull_for(&reference, "linux/arm/v7", Policy::Never)
        .unwrap();
    assert_eq!(r.manifest_digest, v7.digest);
    let e = env
        .pull_for(&reference, "linux/s390x", Policy::Always)
        .unwrap_err()
        .to_string();
    assert!(e.contains("no image for platform linux/s390x"), "{e}");
    assert!(
        e.contains("linux/arm/v7") && e.contains("linux/amd64"),
        "lists what exists: {e}"
    );
    let e = env
        .pull_for(&reference, "linux/arm/v5", Policy::Always)
        .unwrap_err()
        .to_string();
    assert!(e.contains("linux/arm/v5"), "{e}");
}

#[test]
fn root_docker_v2s2_image() {
    let env = Env::new();
    let reg = Registry::start();
    env.push(&reg, &app_image(), "docker/app", "v2", Format::V2s2);
    let r = env.pull(&format!("{}/docker/app:v2", reg.host())).unwrap();
    let body = env
        .cache
        .read_small(&r.manifest_digest, 1 << 20)
        .unwrap()
        .unwrap();
    let m: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        m["mediaType"],
        "application/vnd.docker.distribution.manifest.v2+json"
    );
    assert_eq!(
        m["layers"][0]["mediaType"],
        "application/vnd.docker.image.rootfs.diff.tar.gzip"
    );
    let root = env.install("v2", &r).unwrap();
    assert_eq!(read(&root.join("etc/app.conf")), "port=80\n");
}

#[test]
fn root_zstd_and_uncompressed_layers() {
    let env = Env::new();
    let reg = Registry::start();
    let img = Image::new(vec![
        (
            LayerBuilder::new()
                .file("a", 0o644, &ts::noise(200_000, 7))
                .tar(),
            Compression::Zstd,
        ),
        (
            LayerBuilder::new().file("b", 0o644, b"plain").tar(),
            Compression::None,
        ),
        (
            LayerBuilder::new().file("c", 0o644, b"gz").tar(),
            Compression::Gzip,
        ),
    ]);
    let w = env.push(&reg, &img, "zstd", "1", Format::Oci);
    let r = env.pull(&format!("{}/zstd:1", reg.host())).unwrap();
    assert_eq!(
        r.manifest.layers[0].media_type,
        "application/vnd.oci.image.layer.v1.tar+zstd"
    );
    assert_eq!(
        r.manifest.layers[0].digest, w.layer_digests[0],
        "skopeo kept the zstd blob as is"
    );
    let root = env.install("z", &r).unwrap();
    assert_eq!(
        std::fs::read(root.join("a")).unwrap(),
        ts::noise(200_000, 7)
    );
    assert_eq!(read(&root.join("b")), "plain");
    assert_eq!(read(&root.join("c")), "gz");
}

#[test]
fn root_wrong_architecture_is_refused() {
    let env = Env::new();
    let reg = Registry::start();
    let img = Image::new(vec![(
        LayerBuilder::new().file("x", 0o644, b"x").tar(),
        Compression::Gzip,
    )])
    .arch("arm64", "v8");
    env.push(&reg, &img, "armonly", "1", Format::Oci);
    let e = env
        .pull(&format!("{}/armonly:1", reg.host()))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("linux/arm64/v8")
            && e.contains("not for linux/amd64")
            && e.contains("wrong architecture"),
        "{e}"
    );
    assert!(e.contains("armonly:1"), "names the image: {e}");
}

#[test]
fn root_basic_auth() {
    let env = Env::new();
    let reg = Registry::start_with_auth("alice", "s3cret");
    env.push(&reg, &app_image(), "private/app", "1", Format::Oci);
    let reference = format!("{}/private/app:1", reg.host());
    // No credentials: refused with a hint.
    let e = env.pull(&reference).unwrap_err();
    assert!(matches!(e, Error::Denied { status: 401, .. }), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains(&reference) && msg.contains(&format!("registry {}", reg.host())),
        "{msg}"
    );
    assert!(msg.contains("no credentials"), "{msg}");
    // Wrong password.
    let auth = env.dir.path().join("auth.json");
    std::fs::write(
        &auth,
        json!({"auths": {reg.host(): {"username": "alice", "password": "wrong"}}}).to_string(),
    )
    .unwrap();
    let msg = env.pull(&reference).unwrap_err().to_string();
    assert!(
        msg.contains("access denied") && msg.contains("\"alice\"") && msg.contains("refused"),
        "{msg}"
    );
    // Right password, as base64 `auth`.
    let b64 = {
        let out = std::process::Command::new("base64")
            .arg("-w0")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        out.stdin
            .as_ref()
            .unwrap()
            .write_all(b"alice:s3cret")
            .unwrap();
        String::from_utf8(out.wait_with_output().unwrap().stdout).unwrap()
    };
    std::fs::write(
        &auth,
        json!({"auths": {format!("http://{}", reg.host()): {"auth": b64}}}).to_string(),
    )
    .unwrap();
    let r = env.pull(&reference).unwrap();
    env.install("priv", &r).unwrap();
}

#[test]
fn root_not_found_is_one_clear_line() {
    let env = Env::new();
    let reg = Registry::start();
    let reference = format!("{}/nothing/here:7", reg.host());
    let e = env.pull(&reference).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, Error::NotFound { .. }), "{msg}");
    assert_eq!(
        msg,
        format!(
            "{reference}: tag \"7\" not found in registry {}",
            reg.host()
        )
    );
    assert!(!msg.contains('\n'));
}

#[test]
fn root_cache_hit_needs_no_network_and_gc_clear() {
    let env = Env::new();
    let mut reg = Registry::start();
    let wa = env.push(&reg, &app_image(), "a", "1", Format::Oci);
    let other = Image::new(vec![(
        LayerBuilder::new()
            .file("o", 0o644, &ts::noise(50_000, 3))
            .tar(),
        Compression::Gzip,
    )]);
    let wb = env.push(&reg, &other, "b", "1", Format::Oci);
    let ra = env.pull(&format!("{}/a:1", reg.host())).unwrap();
    env.pull(&format!("{}/b:1", reg.host())).unwrap();
    reg.stop();
    // Second machine from the same tag: everything from the cache.
    let again = env.pull(&format!("{}/a:1", reg.host())).unwrap();
    assert!(!again.from_network);
    assert_eq!(again.manifest_digest, ra.manifest_digest);
    env.install("second", &again).unwrap();
    // Pull=never works from the cache; Pull=always needs the registry and says so.
    env.pull_for(&format!("{}/a:1", reg.host()), "linux/amd64", Policy::Never)
        .unwrap();
    let e = env
        .pull_for(
            &format!("{}/a:1", reg.host()),
            "linux/amd64",
            Policy::Always,
        )
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("cannot reach registry") && e.contains("gave up after 4 attempts"),
        "{e}"
    );
    let e = env
        .pull_for(
            &format!("{}/zzz:1", reg.host()),
            "linux/amd64",
            Policy::Never,
        )
        .unwrap_err()
        .to_string();
    assert!(e.contains("not in the local cache"), "{e}");
    // gc keeping image a: b's manifest, config and layer go, a stays complete.
    let listing = env.cache.list().unwrap();
    assert_eq!(listing.refs.len(), 2);
    let report = env.cache.gc(&[&wa.digest]).unwrap();
    assert_eq!(report.removed, 3, "manifest, config and layer of b");
    assert!(
        !env.cache.has_blob(&wb.layer_digests[0], 0)
            && env
                .cache
                .blob_path(&wb.layer_digests[0])
                .is_some_and(|p| !p.exists())
    );
    assert!(
        env.pull(&format!("{}/a:1", reg.host())).is_ok(),
        "a still complete offline"
    );
    assert_eq!(
        env.cache.list().unwrap().refs.len(),
        1,
        "b's tag dropped with its blobs"
    );
    env.cache.clear().unwrap();
    assert!(env.cache.list().unwrap().blobs.is_empty());
    assert!(env.pull(&format!("{}/a:1", reg.host())).is_err());
}

fn big_layer_image() -> Image {
    Image::new(vec![
        (
            LayerBuilder::new().file("small", 0o644, b"s").tar(),
            Compression::Gzip,
        ),
        (
            LayerBuilder::new()
                .file("big", 0o644, &ts::noise(3_000_000, 9))
                .tar(),
            Compression::Gzip,
        ),
    ])
}

#[test]
fn root_fault_reset_mid_blob_resumes_with_range() {
    let env = Env::new();
    let reg = Registry::start();
    let w = env.push(&reg, &big_layer_image(), "f", "1", Format::Oci);
    let big = w.layer_digests[1].clone();
    let proxy = FaultProxy::start(
        reg.addr,
        vec![
            Rule {
                path_contains: big.clone(),
                fault: Fault::ResetAfter(1_000_000),
                times: 1,
            },
            Rule {
                path_contains: big.clone(),
                fault: Fault::TruncateAfter(500_000),
                times: 1,
            },
        ],
    );
    let r = env.pull(&format!("{}/f:1", proxy.host())).unwrap();
    assert_eq!(proxy.remaining(), 0);
    let ranges: Vec<String> = proxy
        .seen()
        .into_iter()
        .filter(|s| s.line.contains(&big))
        .filter_map(|s| s.range)
        .collect();
    assert_eq!(ranges.len(), 2, "two resumed requests: {ranges:?}");
    assert!(
        ranges
            .iter()
            .all(|r| r.starts_with("bytes=") && !r.starts_with("bytes=0-")),
        "{ranges:?}"
    );
    let root = env.install("f", &r).unwrap();
    assert_eq!(
        std::fs::read(root.join("big")).unwrap(),
        ts::noise(3_000_000, 9)
    );
}

#[test]
fn root_fault_429_with_retry_after_and_500_then_ok() {
    let env = Env::new();
    let reg = Registry::start();
    let w = env.push(&reg, &big_layer_image(), "f", "1", Format::Oci);
    let big = w.layer_digests[1].clone();
    let proxy = FaultProxy::start(
        reg.addr,
        vec![
            Rule {
                path_contains: "/manifests/".into(),
                fault: Fault::Status {
                    code: 500,
                    retry_after: None,
                },
                times: 1,
            },
            Rule {
                path_contains: big.clone(),
                fault: Fault::Status {
                    code: 429,
                    retry_after: Some(1),
                },
                times: 1,
            },
            Rule {
                path_contains: big.clone(),
                fault: Fault::Status {
                    code: 503,
                    retry_after: None,
                },
                times: 1,
            },
        ],
    );
    env.pull(&format!("{}/f:1", proxy.host())).unwrap();
    assert_eq!(proxy.remaining(), 0);
    let big_reqs: Vec<_> = proxy
        .seen()
        .into_iter()
        .filter(|s| s.line.contains(&big))
        .collect();
    assert_eq!(big_reqs.len(), 3);
    let waited = big_reqs[1].at - big_reqs[0].at;
    assert!(
        waited >= Duration::from_millis(950),
        "Retry-After: 1 honoured, waited {waited:?}"
    );
}

#[test]
fn root_persistent_errors_and_corrupt_blob_keep_previous_rootfs() {
    let env = Env::new();
    let reg = Registry::start();
    env.push(&reg, &app_image(), "keep", "1", Format::Oci);
    let good = env.pull(&format!("{}/keep:1", reg.host())).unwrap();
    let root = env.install("keep", &good).unwrap();
    // A new tag whose big layer is corrupted in the registry's storage.
    let w = env.push(&reg, &big_layer_image(), "keep", "2", Format::Oci);
    let data = reg.blob_data_path(&w.layer_digests[1]);
    let mut bytes = std::fs::read(&data).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&data, &bytes).unwrap();
    let e = env.pull(&format!("{}/keep:2", reg.host())).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, Error::Corrupt { .. }), "{msg}");
    assert!(
        msg.contains(&w.layer_digests[1]) && msg.contains("corrupt") && msg.contains("hashes to"),
        "{msg}"
    );
    assert!(!env.cache.has_blob(&w.layer_digests[1], bytes.len() as u64));
    assert_eq!(
        std::fs::metadata(env.cache.partial_path(&w.layer_digests[1]).unwrap())
            .map(|m| m.len())
            .unwrap_or(0),
        0
    );
    // A registry that keeps failing: a clear network error after the retries.
    let proxy = FaultProxy::start(
        reg.addr,
        vec![Rule {
            path_contains: "/v2/".into(),
            fault: Fault::Status {
                code: 500,
                retry_after: None,
            },
            times: 100,
        }],
    );
    let msg = env
        .pull_for(
            &format!("{}/keep:1", proxy.host()),
            "linux/amd64",
            Policy::Always,
        )
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("HTTP 500") && msg.contains("gave up after 4 attempts"),
        "{msg}"
    );
    // A layer the unpacker refuses: install fails, previous rootfs intact, no temp dir left.
    let hostile = Image::new(vec![
        (
            LayerBuilder::new().file("ok", 0o644, b"x").tar(),
            Compression::Gzip,
        ),
        (
            {
                let mut b = tar::Builder::new(Vec::new());
                let mut h = tar::Header::new_gnu();
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(1);
                h.set_mode(0o644);
                h.set_uid(0);
                h.set_gid(0);
                h.set_mtime(0);
                // set_path refuses `..`; write the name bytes directly.
                h.as_old_mut().name[..9].copy_from_slice(b"../escape");
                h.set_cksum();
                b.append(&h, &b"x"[..]).unwrap();
                b.into_inner().unwrap()
            },
            Compression::Gzip,
        ),
    ]);
    env.push(&reg, &hostile, "keep", "3", Format::Oci);
    let bad = env.pull(&format!("{}/keep:3", reg.host())).unwrap();
    let msg = env.install("keep", &bad).unwrap_err().to_string();
    assert!(
        msg.contains("layer 2 of the image") && msg.contains("../escape"),
        "{msg}"
    );
    assert_eq!(
        read(&root.join("etc/app.conf")),
        "port=80\n",
        "previous rootfs intact"
    );
    assert_eq!(
        man8s_oci::install::read_source(&root)
            .unwrap()
            .manifest_digest,
        good.manifest_digest
    );
    assert!(
        debris(root.parent().unwrap()).is_empty(),
        "no temp dirs left"
    );
    assert!(
        !env.dir.path().join("escape").exists() && !env.dir.path().join("machines/escape").exists()
    );
}

#[test]
fn root_replace_keeps_previous_on_request_and_cleans_stale_tmp() {
    let env = Env::new();
    let reg = Registry::start();
    env.push(&reg, &app_image(), "rep", "1", Format::Oci);
    env.push(&reg, &big_layer_image(), "rep", "2", Format::Oci);
    let v1 = env.pull(&format!("{}/rep:1", reg.host())).unwrap();
    let v2 = env.pull(&format!("{}/rep:2", reg.host())).unwrap();
    let root = env.install("rep", &v1).unwrap();
    let parent = root.parent().unwrap().to_owned();
    // Debris of an interrupted run.
    std::fs::create_dir_all(parent.join(".rep+tmp-AbCdEf/etc")).unwrap();
    let opts = InstallOptions {
        protect_run_tmp: true,
        keep_previous: true,
        ..Default::default()
    };
    let prev = install_tree(&root, &v2, &env.cache, &opts, &Silent)
        .unwrap()
        .unwrap();
    assert_eq!(prev, parent.join(".rep.previous"));
    assert!(root.join("big").exists() && !root.join("etc/app.conf").exists());
    assert_eq!(read(&prev.join("etc/app.conf")), "port=80\n");
    assert!(debris(&parent).is_empty(), "stale temp dir removed");
    // Without keep_previous the old tree is removed.
    env.install("rep", &v1).unwrap();
    assert_eq!(read(&root.join("etc/app.conf")), "port=80\n");
    assert!(debris(&parent).is_empty());
}

/// A stub registry on loopback that serves only a schema 1 manifest (docker-registry 2.8 no
/// longer accepts schema 1 pushes, so the real one cannot serve one).
#[test]
fn root_schema1_manifest_is_refused_clearly() {
    let env = Env::new();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        use std::io::{BufRead, BufReader, Write};
        for conn in listener.incoming().flatten() {
            let mut r = BufReader::new(conn.try_clone().unwrap());
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            loop {
                let mut h = String::new();
                if r.read_line(&mut h).unwrap() == 0 || h == "\r\n" {
                    break;
                }
            }
            let body = r#"{"schemaVersion":1,"name":"old","tag":"1","architecture":"amd64","fsLayers":[],"history":[]}"#;
            let mut c = conn;
            let _ = write!(
                c,
                "HTTP/1.1 200 OK\r\nContent-Type: application/vnd.docker.distribution.manifest.v1+prettyjws\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    let msg = env.pull(&format!("{addr}/old:1")).unwrap_err().to_string();
    assert!(
        msg.contains("legacy Docker schema 1 manifest, unsupported"),
        "{msg}"
    );
    assert!(msg.contains(&format!("{addr}/old:1")), "{msg}");
}

#[test]
fn root_concurrent_pulls_share_one_download() {
    let env = Env::new();
    let reg = Registry::start();
    env.push(&reg, &big_layer_image(), "par", "1", Format::Oci);
    let reference = format!("{}/par:1", reg.host());
    let results: Vec<_> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..3)
            .map(|_| s.spawn(|| env.pull_for(&reference, "linux/amd64", Policy::Always)))
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for r in results {
        let r = r.unwrap();
        assert!(
            r.manifest
                .layers
                .iter()
                .all(|l| env.cache.has_blob(&l.digest, l.size))
        );
    }
}

#[allow(dead_code)]
fn _platform_is_host(p: Platform) -> bool {
    p == Platform::host()
}

/// Unmounts on drop.
struct Tmpfs(PathBuf);

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn root_disk_full_is_one_clear_line() {
    let env = Env::new();
    let reg = Registry::start();
    env.push(&reg, &big_layer_image(), "full", "1", Format::Oci);
    let small = env.dir.path().join("small");
    std::fs::create_dir(&small).unwrap();
    let st = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(&small)
        .status()
        .unwrap();
    assert!(st.success(), "mount tmpfs");
    let _guard = Tmpfs(small.clone());
    let env_small = Env {
        cache: BlobCache::at(small.join("cache")),
        ..Env::new()
    };
    let reference = format!("{}/full:1", reg.host());
    let e = env_small.pull(&reference).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, Error::DiskFull { .. }), "{msg}");
    assert!(
        msg.starts_with(&format!(
            "{reference}: no space left on device while writing {}",
            small.display()
        )),
        "{msg}"
    );
    assert!(!msg.contains('\n'));
}

#[test]
fn root_interrupted_download_resumes_in_the_next_run() {
    let mut env = Env::new();
    let reg = Registry::start();
    let w = env.push(&reg, &big_layer_image(), "resume", "1", Format::Oci);
    let big = w.layer_digests[1].clone();
    let proxy = FaultProxy::start(
        reg.addr,
        vec![Rule {
            path_contains: big.clone(),
            fault: Fault::TruncateAfter(1_000_000),
            times: 1,
        }],
    );
    env.config.retry.attempts = 1;
    let reference = format!("{}/resume:1", proxy.host());
    let msg = env.pull(&reference).unwrap_err().to_string();
    assert!(
        msg.contains("after 1000000 of") && msg.contains("gave up after 1 attempts"),
        "{msg}"
    );
    let partial = env.cache.partial_path(&big).unwrap();
    assert_eq!(
        std::fs::metadata(&partial).unwrap().len(),
        1_000_000,
        "partial download kept"
    );
    env.config.retry.attempts = 4;
    let r = env.pull(&reference).unwrap();
    let ranges: Vec<_> = proxy
        .seen()
        .into_iter()
        .filter(|s| s.line.contains(&big))
        .map(|s| s.range)
        .collect();
    assert_eq!(ranges, vec![None, Some("bytes=1000000-".to_owned())]);
    assert!(!partial.exists());
    let root = env.install("resumed", &r).unwrap();
    assert_eq!(
        std::fs::read(root.join("big")).unwrap(),
        ts::noise(3_000_000, 9)
    );
}

#[test]
fn root_bearer_token_challenge_anonymous_and_with_credentials() {
    let env = Env::new();
    let reg = Registry::start();
    env.push(&reg, &app_image(), "gated", "1", Format::Oci);
    // Anonymous token (Docker Hub style).
    let open = FaultProxy::start_with(
        reg.addr,
        vec![],
        // Tokens "expire" after one request: a pull needs four (manifest, config, two layers).
        Some(TokenAuth {
            token: "tok-123".into(),
            basic: None,
            uses: 1,
        }),
    );
    let r = env.pull(&format!("{}/gated:1", open.host())).unwrap();
    env.install("gated", &r).unwrap();
    let seen = open.seen();
    assert!(
        seen.iter()
            .any(|s| s.line.contains("/token?")
                && s.line.contains("scope=repository%3Agated%3Apull")),
        "{seen:?}"
    );
    let tokens = seen.iter().filter(|s| s.line.contains("/token?")).count();
    assert!(
        tokens >= 2,
        "an expired token was replaced: {tokens} token requests"
    );
    // A token endpoint that wants credentials.
    let closed = FaultProxy::start_with(
        reg.addr,
        vec![],
        Some(TokenAuth {
            token: "tok-456".into(),
            basic: Some(("bob".into(), "pw".into())),
            uses: 0,
        }),
    );
    let reference = format!("{}/gated:1", closed.host());
    let fresh = Env::new();
    let msg = fresh.pull(&reference).unwrap_err().to_string();
    assert!(
        msg.contains("access denied") && msg.contains("no credentials"),
        "{msg}"
    );
    std::fs::write(
        fresh.dir.path().join("auth.json"),
        json!({"auths": {closed.host(): {"username": "bob", "password": "pw"}}}).to_string(),
    )
    .unwrap();
    fresh.pull(&reference).unwrap();
}

#[test]
fn root_stalled_response_times_out_and_is_retried() {
    let mut env = Env::new();
    let reg = Registry::start();
    let w = env.push(&reg, &big_layer_image(), "slow", "1", Format::Oci);
    let big = w.layer_digests[1].clone();
    env.config.retry.read_timeout = Duration::from_millis(700);
    env.config.retry.attempts = 2;
    let proxy = FaultProxy::start(
        reg.addr,
        vec![Rule {
            path_contains: big.clone(),
            fault: Fault::Stall(Duration::from_secs(3)),
            times: 2,
        }],
    );
    let msg = env
        .pull(&format!("{}/slow:1", proxy.host()))
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("timed out") && msg.contains("gave up after 2 attempts"),
        "{msg}"
    );
    // One stall only: the retry gets through.
    let proxy = FaultProxy::start(
        reg.addr,
        vec![Rule {
            path_contains: big,
            fault: Fault::Stall(Duration::from_secs(3)),
            times: 1,
        }],
    );
    env.pull(&format!("{}/slow:1", proxy.host())).unwrap();
}

/// Issue 10 case 6: a body that drips a byte at a time is never silent long enough for the read
/// timeout, so the low-speed floor (bytes per interval) is what stops it, with one line.
#[test]
fn root_dripping_registry_is_given_up_by_the_low_speed_floor() {
    let mut env = Env::new();
    let reg = Registry::start();
    let w = env.push(&reg, &big_layer_image(), "drip", "1", Format::Oci);
    let big = w.layer_digests[1].clone();
    env.config.retry.read_timeout = Duration::from_secs(30);
    env.config.retry.low_speed_limit = 1024;
    env.config.retry.low_speed_time = Duration::from_secs(2);
    let proxy = FaultProxy::start(
        reg.addr,
        vec![Rule {
            path_contains: big,
            fault: Fault::Drip(Duration::from_millis(50)),
            times: 10,
        }],
    );
    let started = std::time::Instant::now();
    let msg = env
        .pull(&format!("{}/drip:1", proxy.host()))
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("transfer too slow") && msg.contains("LowSpeedLimit=") && !msg.contains('\n'),
        "{msg}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn root_http_proxy_from_environment_is_used() {
    let env = Env::new();
    let reg = Registry::start();
    env.push(&reg, &app_image(), "via", "1", Format::Oci);
    let proxy = FaultProxy::start(reg.addr, vec![]);
    // Nothing listens on 127.0.0.3:9; only the proxy can make this pull work.
    // SAFETY: nextest runs every test in its own process; no other thread reads the environment yet.
    unsafe {
        std::env::set_var("HTTP_PROXY", format!("http://{}", proxy.host()));
        std::env::remove_var("NO_PROXY");
        std::env::remove_var("no_proxy");
    }
    env.pull("127.0.0.3:9/via:1").unwrap();
    let seen = proxy.seen();
    assert!(
        seen.iter().any(|s| s
            .line
            .starts_with("GET http://127.0.0.3:9/v2/via/manifests/1 ")),
        "{seen:?}"
    );
}

#[test]
fn root_docker_manifest_list_selects_variant() {
    let env = Env::new();
    let reg = Registry::start();
    let layout = env.layout();
    let mk = |name: &str, arch: &str, variant: &str| arch_image(&layout, name, arch, variant);
    let amd = mk("amd64", "amd64", "");
    let v7 = mk("arm-v7", "arm", "v7");
    let idx = ts::write_index(&layout, &[(&amd, "amd64", ""), (&v7, "arm", "v7")]);
    ts::tag(&layout, &idx, "list", true);
    reg.push(&layout, "list", "dlist", "1", Format::DockerList);
    let r = env
        .pull_for(
            &format!("{}/dlist:1", reg.host()),
            "linux/arm/v7",
            Policy::Missing,
        )
        .unwrap();
    let top = env
        .cache
        .read_small(r.index_digest.as_deref().unwrap(), 1 << 20)
        .unwrap()
        .unwrap();
    let top: serde_json::Value = serde_json::from_slice(&top).unwrap();
    assert_eq!(
        top["mediaType"],
        "application/vnd.docker.distribution.manifest.list.v2+json"
    );
    let root = env.install("dl", &r).unwrap();
    assert_eq!(read(&root.join("arch")), "arm-v7");
}

#[test]
fn root_layer_compression_is_sniffed_when_the_media_type_lies() {
    let env = Env::new();
    let reg = Registry::start();
    let gzip = "application/vnd.oci.image.layer.v1.tar+gzip";
    let img = Image::new(vec![
        (
            LayerBuilder::new().file("z", 0o644, b"zstd inside").tar(),
            Compression::Zstd,
        ),
        (
            LayerBuilder::new().file("p", 0o644, b"plain inside").tar(),
            Compression::None,
        ),
        (
            LayerBuilder::new().file("g", 0o644, b"gzip inside").tar(),
            Compression::Gzip,
        ),
    ])
    .mislabel(0, gzip)
    .mislabel(1, gzip)
    .mislabel(2, "application/vnd.oci.image.layer.v1.tar");
    // skopeo would correct the media types; push the bytes as written.
    let w = img.write(&env.layout());
    reg.push_raw(&env.layout(), &w, "liar", "1");
    let r = env.pull(&format!("{}/liar:1", reg.host())).unwrap();
    assert_eq!(
        r.manifest.layers[0].media_type, gzip,
        "registry kept the lie"
    );
    let root = env.install("liar", &r).unwrap();
    assert_eq!(read(&root.join("z")), "zstd inside");
    assert_eq!(read(&root.join("p")), "plain inside");
    assert_eq!(read(&root.join("g")), "gzip inside");
}

#[test]
fn root_diff_id_mismatch_fails_install_and_keeps_previous() {
    let env = Env::new();
    let reg = Registry::start();
    env.push(&reg, &app_image(), "dif", "1", Format::Oci);
    let good = env.pull(&format!("{}/dif:1", reg.host())).unwrap();
    let root = env.install("dif", &good).unwrap();
    let bad = Image::new(vec![
        (
            LayerBuilder::new().file("a", 0o644, b"a").tar(),
            Compression::Gzip,
        ),
        (
            LayerBuilder::new().file("b", 0o644, b"b").tar(),
            Compression::Gzip,
        ),
    ])
    .wrong_diff_id(1);
    let w = env.push(&reg, &bad, "dif", "2", Format::Oci);
    let r = env.pull(&format!("{}/dif:2", reg.host())).unwrap();
    let e = env.install("dif", &r).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, Error::DiffId { index: 1, .. }), "{msg}");
    assert!(
        msg.contains(&w.layer_digests[1]) && msg.contains("image config says"),
        "{msg}"
    );
    assert_eq!(
        read(&root.join("etc/app.conf")),
        "port=80\n",
        "previous rootfs intact"
    );
    assert!(debris(root.parent().unwrap()).is_empty());
    assert!(
        !env.cache.blob_path(&w.layer_digests[1]).unwrap().exists(),
        "inconsistent blob dropped from the cache"
    );
}

#[test]
fn root_damaged_partial_download_is_fetched_again_from_the_start() {
    let env = Env::new();
    let reg = Registry::start();
    let w = env.push(&reg, &big_layer_image(), "dmg", "1", Format::Oci);
    let big = w.layer_digests[1].clone();
    // An earlier run left 1000 bytes that are not the blob's.
    let partial = env.cache.partial_path(&big).unwrap();
    std::fs::create_dir_all(partial.parent().unwrap()).unwrap();
    std::fs::write(&partial, vec![0x5a; 1000]).unwrap();
    let proxy = FaultProxy::start(reg.addr, vec![]);
    let r = env.pull(&format!("{}/dmg:1", proxy.host())).unwrap();
    let ranges: Vec<_> = proxy
        .seen()
        .into_iter()
        .filter(|s| s.line.contains(&big))
        .map(|s| s.range)
        .collect();
    assert_eq!(
        ranges,
        vec![Some("bytes=1000-".to_owned()), None],
        "resumed, failed to verify, fetched whole"
    );
    let root = env.install("dmg", &r).unwrap();
    assert_eq!(
        std::fs::read(root.join("big")).unwrap(),
        ts::noise(3_000_000, 9)
    );
}
