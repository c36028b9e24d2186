//! Test-only helpers shared by the root-tier tests of several crates.
//!
//! - [`Registry`]: Debian's `docker-registry` on `127.0.0.1:<free port>` with its own storage dir,
//!   optionally behind htpasswd basic auth; killed on drop.
//! - [`Image`] / [`Index`] / [`LayerBuilder`]: write OCI images (layers built with the `tar`
//!   crate, gzip/zstd/none) into an OCI layout dir; [`Registry::push`] copies them in with `skopeo`
//!   (OCI or Docker v2s2 media types; `--all` for an index).
//! - [`FaultProxy`]: a loopback HTTP proxy in front of a registry that answers chosen requests
//!   with 429/500, or resets/truncates a response mid-body, and records what it saw.
//!
//! All network traffic stays on 127.0.0.1.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// Fail (not skip) a root-tier test when not run as root.
pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "root-tier test: run as root (make test-root)"
    );
}

/// `sha256:<hex>` of some bytes.
pub fn digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind 127.0.0.1:0")
        .local_addr()
        .expect("local addr")
        .port()
}

/// A `docker-registry` on loopback, killed on drop.
pub struct Registry {
    /// Where it listens.
    pub addr: SocketAddr,
    dir: tempfile::TempDir,
    child: Option<Child>,
    auth: Option<(String, String)>,
}

impl Registry {
    /// Start an anonymous registry.
    pub fn start() -> Self {
        Self::spawn(None)
    }

    /// Start a registry that requires basic auth with this user and password (bcrypt cost 4).
    pub fn start_with_auth(user: &str, password: &str) -> Self {
        Self::spawn(Some((user.to_owned(), password.to_owned())))
    }

    fn spawn(auth: Option<(String, String)>) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let htpasswd = dir.path().join("htpasswd");
        if let Some((user, password)) = &auth {
            let st = Command::new("htpasswd")
                .args(["-B", "-C", "4", "-b", "-c"])
                .arg(&htpasswd)
                .args([user, password])
                .stderr(Stdio::null())
                .status()
                .expect("run htpasswd (apache2-utils)");
            assert!(st.success(), "htpasswd failed");
        }
        // The free port may be taken by a parallel test between our probe and the registry's bind:
        // then the registry exits, and we try another port.
        for _attempt in 0..5 {
            let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
            let mut config = format!(
                "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n",
                dir.path().join("storage").display()
            );
            if auth.is_some() {
                config.push_str(&format!(
                    "auth:\n  htpasswd:\n    realm: test\n    path: {}\n",
                    htpasswd.display()
                ));
            }
            let cfg_path = dir.path().join("config.yml");
            std::fs::write(&cfg_path, config).expect("write registry config");
            let log = std::fs::File::create(dir.path().join("registry.log")).expect("log file");
            let mut child = Command::new("/usr/bin/docker-registry")
                .arg("serve")
                .arg(&cfg_path)
                .stdout(log.try_clone().expect("dup log"))
                .stderr(log)
                .spawn()
                .expect("start /usr/bin/docker-registry (Debian package docker-registry)");
            let deadline = Instant::now() + Duration::from_secs(20);
            let exited;
            loop {
                if child.try_wait().expect("wait registry").is_some() {
                    exited = true;
                    break;
                }
                if TcpStream::connect(addr).is_ok() {
                    // Still ours? (another registry may answer on a port we lost)
                    std::thread::sleep(Duration::from_millis(50));
                    exited = child.try_wait().expect("wait registry").is_some();
                    break;
                }
                assert!(Instant::now() < deadline, "registry did not start");
                std::thread::sleep(Duration::from_millis(20));
            }
            if !exited {
                return Self {
                    addr,
                    dir,
                    child: Some(child),
                    auth,
                };
            }
        }
        panic!(
            "docker-registry would not start: {}",
            std::fs::read_to_string(dir.path().join("registry.log")).unwrap_or_default()
        );
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// The registry's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// Storage path of a blob's data (to corrupt it in tests).
    pub fn blob_data_path(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").expect("sha256 digest");
        self.dir
            .path()
            .join("storage/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    /// Push `layout:tag` (an OCI layout dir) to `repo:dest_tag` with skopeo.
    pub fn push(&self, layout: &Path, tag: &str, repo: &str, dest_tag: &str, format: Format) {
        let mut cmd = Command::new("skopeo");
        cmd.args([
            "copy",
            "--quiet",
            "--dest-tls-verify=false",
            "--retry-times",
            "2",
        ]);
        if let Some((u, p)) = &self.auth {
            cmd.arg(format!("--dest-creds={u}:{p}"));
        }
        match format {
            Format::Oci => {
                cmd.args(["--format", "oci"]);
            }
            Format::V2s2 => {
                cmd.args(["--format", "v2s2"]);
            }
            Format::OciIndex => {
                cmd.arg("--all");
            }
            Format::DockerList => {
                cmd.args(["--all", "--format", "v2s2"]);
            }
        }
        cmd.arg(format!("oci:{}:{tag}", layout.display()));
        cmd.arg(format!("docker://{}/{repo}:{dest_tag}", self.host()));
        let out = cmd.output().expect("run skopeo");
        assert!(
            out.status.success(),
            "skopeo copy failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Push a written image byte for byte over the registry's HTTP API (no skopeo, which would
    /// "fix" media types and compression): its blobs, then the manifest as `repo:tag`.
    /// Anonymous registries only.
    pub fn push_raw(&self, layout: &Path, written: &Written, repo: &str, tag: &str) {
        let blob =
            |d: &str| std::fs::read(layout.join("blobs/sha256").join(&d[7..])).expect("read blob");
        for d in std::iter::once(&written.config_digest).chain(&written.layer_digests) {
            let (status, headers, _) = http(
                self.addr,
                "POST",
                &format!("/v2/{repo}/blobs/uploads/"),
                &[],
                &[],
            );
            assert_eq!(status, 202, "start upload");
            let location = headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("location"))
                .map(|(_, v)| v.clone())
                .expect("Location header");
            let path = location
                .find("/v2/")
                .map(|i| &location[i..])
                .expect("upload path");
            let sep = if path.contains('?') { '&' } else { '?' };
            let (status, _, body) = http(
                self.addr,
                "PUT",
                &format!("{path}{sep}digest={d}"),
                &[("Content-Type", "application/octet-stream")],
                &blob(d),
            );
            assert_eq!(
                status,
                201,
                "finish upload of {d}: {}",
                String::from_utf8_lossy(&body)
            );
        }
        let manifest = blob(&written.digest);
        let mt: serde_json::Value = serde_json::from_slice(&manifest).expect("manifest json");
        let mt = mt["mediaType"]
            .as_str()
            .unwrap_or("application/vnd.oci.image.manifest.v1+json")
            .to_owned();
        let (status, _, body) = http(
            self.addr,
            "PUT",
            &format!("/v2/{repo}/manifests/{tag}"),
            &[("Content-Type", &mt)],
            &manifest,
        );
        assert_eq!(
            status,
            201,
            "put manifest: {}",
            String::from_utf8_lossy(&body)
        );
    }

    /// Kill the registry now (e.g. to prove that a pull needs no network).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}

/// How [`Registry::push`] writes the manifest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// OCI media types, one image.
    Oci,
    /// Docker v2 schema 2 media types, one image (gzip layers only).
    V2s2,
    /// An image index, copied with all its images.
    OciIndex,
    /// An image index converted to a Docker manifest list (v2s2 images; gzip layers only).
    DockerList,
}

/// Layer compression.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    /// Plain tar.
    None,
    /// gzip.
    Gzip,
    /// zstd.
    Zstd,
}

/// Builds one layer tar.
pub struct LayerBuilder {
    tar: tar::Builder<Vec<u8>>,
}

impl Default for LayerBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl LayerBuilder {
    /// An empty layer.
    pub fn new() -> Self {
        let mut tar = tar::Builder::new(Vec::new());
        tar.mode(tar::HeaderMode::Deterministic);
        Self { tar }
    }

    fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(size);
        h.set_mtime(1_700_000_000);
        h.set_uid(0);
        h.set_gid(0);
        h
    }

    /// A directory.
    pub fn dir(mut self, path: &str, mode: u32) -> Self {
        let mut h = Self::header(tar::EntryType::Directory, mode, 0);
        self.tar
            .append_data(&mut h, path, &[][..])
            .expect("tar dir");
        self
    }

    /// A regular file.
    pub fn file(mut self, path: &str, mode: u32, content: &[u8]) -> Self {
        let mut h = Self::header(tar::EntryType::Regular, mode, content.len() as u64);
        self.tar
            .append_data(&mut h, path, content)
            .expect("tar file");
        self
    }

    /// A regular file owned by uid/gid.
    pub fn file_owned(mut self, path: &str, mode: u32, uid: u64, gid: u64, content: &[u8]) -> Self {
        let mut h = Self::header(tar::EntryType::Regular, mode, content.len() as u64);
        h.set_uid(uid);
        h.set_gid(gid);
        self.tar
            .append_data(&mut h, path, content)
            .expect("tar file");
        self
    }

    /// A symlink.
    pub fn symlink(mut self, path: &str, target: &str) -> Self {
        let mut h = Self::header(tar::EntryType::Symlink, 0o777, 0);
        self.tar
            .append_link(&mut h, path, target)
            .expect("tar symlink");
        self
    }

    /// A character device node `major:minor`.
    pub fn char_device(mut self, path: &str, mode: u32, major: u32, minor: u32) -> Self {
        let mut h = Self::header(tar::EntryType::Char, mode, 0);
        h.set_device_major(major).expect("gnu header");
        h.set_device_minor(minor).expect("gnu header");
        self.tar
            .append_data(&mut h, path, &[][..])
            .expect("tar device");
        self
    }

    /// A whiteout of `path` (`dir/.wh.name`).
    pub fn whiteout(self, path: &str) -> Self {
        let (dir, name) = path.rsplit_once('/').unwrap_or(("", path));
        let wh = if dir.is_empty() {
            format!(".wh.{name}")
        } else {
            format!("{dir}/.wh.{name}")
        };
        self.file(&wh, 0o644, b"")
    }

    /// The finished, uncompressed tar.
    pub fn tar(self) -> Vec<u8> {
        self.tar.into_inner().expect("finish tar")
    }
}

/// Compress a tar.
pub fn compress(tar: &[u8], c: Compression) -> Vec<u8> {
    match c {
        Compression::None => tar.to_vec(),
        Compression::Gzip => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(tar).expect("gzip");
            e.finish().expect("gzip")
        }
        Compression::Zstd => zstd::encode_all(tar, 3).expect("zstd"),
    }
}

/// A single-platform image to write.
#[derive(Clone)]
pub struct Image {
    /// Layers: uncompressed tar and compression.
    pub layers: Vec<(Vec<u8>, Compression)>,
    /// `architecture`.
    pub architecture: String,
    /// `variant` (empty: none).
    pub variant: String,
    /// Extra keys of the config's `config` object (`Env`, `Cmd`, `Volumes`, …).
    pub runtime: serde_json::Value,
    /// Media types that lie about a layer's compression: `(layer index, media type)`.
    pub mislabelled: Vec<(usize, String)>,
    /// Layers whose diff_id in the config is wrong (to test the diff_id check).
    pub wrong_diff_ids: Vec<usize>,
}

/// Where a written image or index is.
#[derive(Clone, Debug)]
pub struct Written {
    /// Manifest (or index) digest.
    pub digest: String,
    /// Its size.
    pub size: u64,
    /// Config digest (images only).
    pub config_digest: String,
    /// Compressed layer digests (images only).
    pub layer_digests: Vec<String>,
}

impl Image {
    /// An amd64 image with these layers and no runtime config.
    pub fn new(layers: Vec<(Vec<u8>, Compression)>) -> Self {
        Self {
            layers,
            architecture: "amd64".into(),
            variant: String::new(),
            runtime: serde_json::json!({}),
            mislabelled: Vec::new(),
            wrong_diff_ids: Vec::new(),
        }
    }

    /// Make the config's diff_id of layer `index` wrong.
    pub fn wrong_diff_id(mut self, index: usize) -> Self {
        self.wrong_diff_ids.push(index);
        self
    }

    /// Give layer `index` this media type whatever its real compression (as broken tools do).
    pub fn mislabel(mut self, index: usize, media_type: &str) -> Self {
        self.mislabelled.push((index, media_type.to_owned()));
        self
    }

    /// Set the architecture (and variant).
    pub fn arch(mut self, arch: &str, variant: &str) -> Self {
        self.architecture = arch.into();
        self.variant = variant.into();
        self
    }

    /// Set the runtime config object (`{"Env": [...], "Cmd": [...]}`).
    pub fn runtime(mut self, v: serde_json::Value) -> Self {
        self.runtime = v;
        self
    }

    /// Write blobs, config and manifest into the OCI layout at `layout` (created when missing);
    /// the manifest is not tagged (see [`tag`]).
    pub fn write(&self, layout: &Path) -> Written {
        init_layout(layout);
        let mut diff_ids = Vec::new();
        let mut layers = Vec::new();
        let mut layer_digests = Vec::new();
        for (i, (tar, c)) in self.layers.iter().enumerate() {
            diff_ids.push(if self.wrong_diff_ids.contains(&i) {
                digest(b"not this layer")
            } else {
                digest(tar)
            });
            let blob = compress(tar, *c);
            let d = put_blob(layout, &blob);
            layer_digests.push(d.clone());
            let mt = match c {
                Compression::None => "application/vnd.oci.image.layer.v1.tar",
                Compression::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
                Compression::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
            };
            let mt = self
                .mislabelled
                .iter()
                .find(|(j, _)| *j == i)
                .map_or(mt, |(_, m)| m.as_str());
            layers.push(serde_json::json!({"mediaType": mt, "digest": d, "size": blob.len()}));
        }
        let mut config = serde_json::json!({
            "architecture": self.architecture,
            "os": "linux",
            "config": self.runtime,
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        });
        if !self.variant.is_empty() {
            config["variant"] = self.variant.clone().into();
        }
        let config = serde_json::to_vec(&config).expect("json");
        let config_digest = put_blob(layout, &config);
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
            "layers": layers,
        }))
        .expect("json");
        let d = put_blob(layout, &manifest);
        Written {
            digest: d,
            size: manifest.len() as u64,
            config_digest,
            layer_digests,
        }
    }
}

/// Write an image index of already written images (`(written, arch, variant)`).
pub fn write_index(layout: &Path, images: &[(&Written, &str, &str)]) -> Written {
    let manifests: Vec<serde_json::Value> = images
        .iter()
        .map(|(w, arch, variant)| {
            let mut p = serde_json::json!({"os": "linux", "architecture": arch});
            if !variant.is_empty() {
                p["variant"] = (*variant).into();
            }
            serde_json::json!({
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": w.digest, "size": w.size, "platform": p,
            })
        })
        .collect();
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": manifests,
    }))
    .expect("json");
    let d = put_blob(layout, &index);
    Written {
        digest: d,
        size: index.len() as u64,
        config_digest: String::new(),
        layer_digests: Vec::new(),
    }
}

/// Point `tag` of the layout's `index.json` at a written manifest or index.
pub fn tag(layout: &Path, written: &Written, tag: &str, is_index: bool) {
    let path = layout.join("index.json");
    let mut idx: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).expect("read index.json"))
            .expect("index.json");
    let mt = if is_index {
        "application/vnd.oci.image.index.v1+json"
    } else {
        "application/vnd.oci.image.manifest.v1+json"
    };
    let list = idx["manifests"].as_array_mut().expect("manifests array");
    list.retain(|m| m["annotations"]["org.opencontainers.image.ref.name"] != tag);
    list.push(serde_json::json!({
        "mediaType": mt, "digest": written.digest, "size": written.size,
        "annotations": {"org.opencontainers.image.ref.name": tag},
    }));
    std::fs::write(&path, serde_json::to_vec(&idx).expect("json")).expect("write index.json");
}

fn init_layout(layout: &Path) {
    std::fs::create_dir_all(layout.join("blobs/sha256")).expect("layout dir");
    let lay = layout.join("oci-layout");
    if !lay.exists() {
        std::fs::write(lay, br#"{"imageLayoutVersion":"1.0.0"}"#).expect("oci-layout");
        std::fs::write(
            layout.join("index.json"),
            br#"{"schemaVersion":2,"manifests":[]}"#,
        )
        .expect("index.json");
    }
}

fn put_blob(layout: &Path, data: &[u8]) -> String {
    let d = digest(data);
    std::fs::write(layout.join("blobs/sha256").join(&d[7..]), data).expect("write blob");
    d
}

/// What a [`FaultProxy`] does to a matching request.
#[derive(Clone, Debug)]
pub enum Fault {
    /// Answer with this status (and `Retry-After: secs` when given) instead of forwarding.
    Status {
        /// HTTP status.
        code: u16,
        /// `Retry-After` seconds.
        retry_after: Option<u32>,
    },
    /// Forward, but reset the connection (RST) after this many body bytes.
    ResetAfter(usize),
    /// Forward, but close the connection cleanly after this many body bytes.
    TruncateAfter(usize),
    /// Accept the request and say nothing for this long (to trigger read timeouts).
    Stall(Duration),
    /// Forward, but send the body one byte per this interval (never silent for long, never done).
    Drip(Duration),
}

/// A rule: requests whose path contains `path_contains` get `fault`, `times` times.
#[derive(Clone, Debug)]
pub struct Rule {
    /// Substring of the request path.
    pub path_contains: String,
    /// What to do.
    pub fault: Fault,
    /// How many matching requests are affected.
    pub times: usize,
}

/// One request seen by the proxy.
#[derive(Clone, Debug)]
pub struct Seen {
    /// Request line (`GET /v2/... HTTP/1.1`).
    pub line: String,
    /// `Range` header, if any.
    pub range: Option<String>,
    /// When it arrived.
    pub at: Instant,
}

/// A loopback HTTP/1.1 proxy in front of a registry that injects faults.
pub struct FaultProxy {
    /// Where it listens.
    pub addr: SocketAddr,
    rules: Arc<Mutex<Vec<Rule>>>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

/// Token auth in front of an anonymous registry, as Docker Hub and ghcr do it: `/v2/…` without
/// `Authorization: Bearer TOKEN` gets 401 with a Bearer challenge whose realm is this proxy's
/// `/token`, which hands out TOKEN (only with these basic credentials, when given).
#[derive(Clone, Debug)]
pub struct TokenAuth {
    /// The token handed out and required.
    pub token: String,
    /// `user:password` the token endpoint requires, if any.
    pub basic: Option<(String, String)>,
    /// Registry requests one token is good for (0: unlimited); then it "expires" and the next
    /// token handed out is a different one (`TOKEN-2`, `TOKEN-3`, …).
    pub uses: usize,
}

impl FaultProxy {
    /// Start forwarding to `upstream` with these rules.
    pub fn start(upstream: SocketAddr, rules: Vec<Rule>) -> Self {
        Self::start_with(upstream, rules, None)
    }

    /// Start forwarding with token auth in front (see [`TokenAuth`]).
    pub fn start_with(upstream: SocketAddr, rules: Vec<Rule>, token: Option<TokenAuth>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let addr = listener.local_addr().expect("addr");
        let rules = Arc::new(Mutex::new(rules));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (r, s) = (rules.clone(), seen.clone());
        // (generation of the current token, registry requests it has served)
        let token_state = Arc::new(Mutex::new((1u64, 0usize)));
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let (r, s, t, ts) = (r.clone(), s.clone(), token.clone(), token_state.clone());
                std::thread::spawn(move || {
                    let _ = serve(conn, upstream, addr, &r, &s, t.as_ref().map(|t| (t, &*ts)));
                });
            }
        });
        Self { addr, rules, seen }
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// Requests seen so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("lock").clone()
    }

    /// Rules not yet used up.
    pub fn remaining(&self) -> usize {
        self.rules
            .lock()
            .expect("lock")
            .iter()
            .map(|r| r.times)
            .sum()
    }
}

/// One HTTP/1.1 request over a fresh connection: (status, headers, body).
fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let mut c = TcpStream::connect(addr).expect("connect registry");
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    c.write_all(req.as_bytes()).expect("send");
    c.write_all(body).expect("send body");
    let mut r = BufReader::new(c);
    let head = read_head(&mut r).expect("response head");
    let status = head
        .first()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status");
    let headers = head
        .iter()
        .skip(1)
        .filter_map(|h| {
            h.split_once(':')
                .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        })
        .collect();
    let mut body = Vec::new();
    let _ = r.read_to_end(&mut body);
    (status, headers, body)
}

fn read_head(r: &mut BufReader<TcpStream>) -> std::io::Result<Vec<String>> {
    let mut lines = Vec::new();
    loop {
        let mut l = String::new();
        if r.read_line(&mut l)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let l = l.trim_end_matches(['\r', '\n']).to_owned();
        if l.is_empty() {
            return Ok(lines);
        }
        lines.push(l);
    }
}

/// One request per connection: the response is sent with `Connection: close`.
fn serve(
    client: TcpStream,
    upstream: SocketAddr,
    me: SocketAddr,
    rules: &Mutex<Vec<Rule>>,
    seen: &Mutex<Vec<Seen>>,
    token: Option<(&TokenAuth, &Mutex<(u64, usize)>)>,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(client.try_clone()?);
    let head = read_head(&mut reader)?;
    let line = head.first().cloned().unwrap_or_default();
    let range = head
        .iter()
        .find(|h| h.to_ascii_lowercase().starts_with("range:"))
        .map(|h| h[6..].trim().to_owned());
    seen.lock().expect("lock").push(Seen {
        line: line.clone(),
        range,
        at: Instant::now(),
    });
    let path = line.split(' ').nth(1).unwrap_or("");
    let fault = {
        let mut rules = rules.lock().expect("lock");
        rules
            .iter_mut()
            .find(|r| r.times > 0 && path.contains(&r.path_contains))
            .map(|r| {
                r.times -= 1;
                r.fault.clone()
            })
    };
    let mut client_w = client;
    if let Some((t, state)) = token {
        let current = |st: &(u64, usize)| {
            if st.0 == 1 {
                t.token.clone()
            } else {
                format!("{}-{}", t.token, st.0)
            }
        };
        let header = |name: &str| {
            head.iter()
                .skip(1)
                .find(|h| h.to_ascii_lowercase().starts_with(&format!("{name}:")))
                .map(|h| h[name.len() + 1..].trim().to_owned())
        };
        if path.starts_with("/token") {
            let authorized = match &t.basic {
                None => true,
                Some((u, p)) => header("authorization").is_some_and(|a| {
                    a.strip_prefix("Basic ")
                        .is_some_and(|b| decode_b64(b) == format!("{u}:{p}").into_bytes())
                }),
            };
            let ok = authorized
                && path.contains("scope=repository")
                && path.contains("service=test-registry");
            let body = if ok {
                let mut st = state.lock().expect("lock");
                if t.uses > 0 && st.1 >= t.uses {
                    *st = (st.0 + 1, 0);
                }
                format!(r#"{{"token":"{}"}}"#, current(&st))
            } else {
                "{}".to_owned()
            };
            let status = if ok { "200 OK" } else { "401 Unauthorized" };
            write!(
                client_w,
                "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )?;
            return Ok(());
        }
        let valid = {
            let mut st = state.lock().expect("lock");
            let ok = header("authorization").as_deref()
                == Some(&format!("Bearer {}", current(&st)))
                && (t.uses == 0 || st.1 < t.uses);
            if ok {
                st.1 += 1;
            }
            ok
        };
        if !valid {
            write!(
                client_w,
                "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer realm=\"http://{me}/token\",service=\"test-registry\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            )?;
            return Ok(());
        }
    }
    if let Some(Fault::Stall(d)) = fault {
        std::thread::sleep(d);
        return Ok(());
    }
    if let Some(Fault::Status { code, retry_after }) = fault {
        let mut resp =
            format!("HTTP/1.1 {code} Injected\r\nContent-Length: 0\r\nConnection: close\r\n");
        if let Some(s) = retry_after {
            resp.push_str(&format!("Retry-After: {s}\r\n"));
        }
        resp.push_str("\r\n");
        client_w.write_all(resp.as_bytes())?;
        return Ok(());
    }
    let mut up = TcpStream::connect(upstream)?;
    let mut req = String::new();
    for h in &head {
        let lower = h.to_ascii_lowercase();
        if lower.starts_with("connection:") || lower.starts_with("host:") {
            continue;
        }
        req.push_str(h);
        req.push_str("\r\n");
    }
    req.push_str(&format!("Host: {upstream}\r\nConnection: close\r\n\r\n"));
    up.write_all(req.as_bytes())?;
    let mut up_r = BufReader::new(up);
    let resp_head = read_head(&mut up_r)?;
    let mut out = String::new();
    for h in &resp_head {
        if h.to_ascii_lowercase().starts_with("connection:") {
            continue;
        }
        out.push_str(h);
        out.push_str("\r\n");
    }
    out.push_str("Connection: close\r\n\r\n");
    client_w.write_all(out.as_bytes())?;
    let limit = match fault {
        Some(Fault::ResetAfter(n)) | Some(Fault::TruncateAfter(n)) => Some(n),
        _ => None,
    };
    let mut sent = 0usize;
    let mut buf = [0u8; 16 << 10];
    loop {
        let n = up_r.read(&mut buf)?;
        if n == 0 {
            break;
        }
        let n = match limit {
            Some(l) if sent + n >= l => {
                client_w.write_all(&buf[..l - sent])?;
                client_w.flush()?;
                if matches!(fault, Some(Fault::ResetAfter(_))) {
                    // SO_LINGER 0 turns close() into a RST.
                    let _ = nix::sys::socket::setsockopt(
                        &client_w,
                        nix::sys::socket::sockopt::Linger,
                        &nix::libc::linger {
                            l_onoff: 1,
                            l_linger: 0,
                        },
                    );
                    drop(client_w);
                } else {
                    client_w.shutdown(Shutdown::Both)?;
                }
                return Ok(());
            }
            _ => n,
        };
        if let Some(Fault::Drip(every)) = fault {
            for b in &buf[..n] {
                client_w.write_all(std::slice::from_ref(b))?;
                client_w.flush()?;
                std::thread::sleep(every);
            }
            sent += n;
            continue;
        }
        client_w.write_all(&buf[..n])?;
        sent += n;
    }
    Ok(())
}

fn decode_b64(s: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0);
    for b in s.bytes() {
        let v = match b {
            b'A'..=b'Z' => b - b'A',
            b'a'..=b'z' => b - b'a' + 26,
            b'0'..=b'9' => b - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => break,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

/// A deterministic pseudo-random payload (incompressible enough to make real layers).
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}
