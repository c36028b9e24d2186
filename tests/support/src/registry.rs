//! Debian's `docker-registry` on loopback, with its own storage dir, optionally behind htpasswd
//! basic auth; images are pushed into it with `skopeo`.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::image::{Image, Written};
use crate::proxy::http;

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

    /// Write `image` into the OCI layout `layout`, tag it there and push it as `repo:tag`
    /// (OCI media types): what most root tests do with an image.
    pub fn push_image(&self, layout: &Path, image: &Image, repo: &str, tag: &str) -> Written {
        let written = image.write(layout);
        crate::tag(layout, &written, tag, false);
        self.push(layout, tag, repo, tag, Format::Oci);
        written
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
