//! Talking to one registry: auth challenges, retries, manifests and resumable blob downloads.
//!
//! Built on `reqwest` directly rather than on `oci_client::Client`: that client hides response
//! headers (so `Retry-After` and `Content-Range` cannot be honoured), has no per-request retry,
//! and sends Docker Hub requests to `index.docker.io`. The protocol part is small: `GET /v2/…`,
//! on 401 follow the `WWW-Authenticate` challenge (Bearer token from the realm, or Basic), retry.
//! Proxies come from `HTTP_PROXY`/`HTTPS_PROXY`/`NO_PROXY` (reqwest's default).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use futures::StreamExt;
use reqwest::StatusCode;
use reqwest::header::{self, HeaderMap};
use sha2::{Digest as _, Sha256};

use crate::auth::Credentials;
use crate::cache::BlobCache;
use crate::error::{Error, IoContext, Result};
use crate::manifest::{self, Descriptor};
use crate::progress::{Event, Progress};
use crate::reference::ImageRef;
use crate::registries::RegistriesConf;

/// How often and how patiently to retry.
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    /// Attempts per request (≥ 1).
    pub attempts: u32,
    /// First backoff delay; doubles each time.
    pub initial_delay: Duration,
    /// Longest backoff delay, and longest `Retry-After` honoured.
    pub max_delay: Duration,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// Longest silence while reading a response.
    pub read_timeout: Duration,
    /// Fewest bytes per second a transfer must move, averaged over [`Self::low_speed_time`]
    /// (`[Pull] LowSpeedLimit=` of man8s.conf): a registry that drips a byte now and then never
    /// hits `read_timeout`, so this is what stops it.
    pub low_speed_limit: u64,
    /// The interval of [`Self::low_speed_limit`] (`LowSpeedTimeSec=`).
    pub low_speed_time: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 6,
            initial_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(15),
            read_timeout: Duration::from_secs(60),
            low_speed_limit: man8s::hostconfig::DEFAULT_LOW_SPEED_LIMIT,
            low_speed_time: man8s::hostconfig::DEFAULT_LOW_SPEED_TIME,
        }
    }
}

/// Settings shared by all registries of a pull.
#[derive(Clone, Debug, Default)]
pub struct RegistryConfig {
    /// Which registries may use plain HTTP.
    pub insecure: RegistriesConf,
    /// Auth files to consult, in order.
    pub auth_files: Vec<PathBuf>,
    /// Retry behaviour.
    pub retry: RetryPolicy,
}

impl RegistryConfig {
    /// The system's configuration (registries.conf, the auth files, man8s.conf's `[Pull]`
    /// limits), relocated by `MAN8S_ROOT`.
    pub fn load(paths: &man8s::Paths) -> Result<Self> {
        let host = man8s::hostconfig::HostConfig::load(paths).map_err(|e| Error::Config {
            path: paths.fs(man8s::paths::MAN8S_CONF),
            reason: e.to_string(),
        })?;
        Ok(Self {
            insecure: RegistriesConf::load(paths)?,
            auth_files: crate::auth::auth_files(paths),
            retry: RetryPolicy {
                low_speed_limit: host.pull.low_speed_limit,
                low_speed_time: host.pull.low_speed_time,
                ..RetryPolicy::default()
            },
        })
    }
}

enum AuthState {
    None,
    Bearer(String),
    Basic(Credentials),
}

/// A connection to the registry of one image.
pub struct Registry {
    http: reqwest::Client,
    image: ImageRef,
    base: String,
    credentials: Option<Credentials>,
    auth: Mutex<AuthState>,
    retry: RetryPolicy,
}

/// A fetched manifest.
#[derive(Debug, Clone)]
pub struct FetchedManifest {
    /// Body.
    pub body: Vec<u8>,
    /// Its sha256 digest.
    pub digest: String,
    /// `Content-Type`.
    pub content_type: Option<String>,
}

/// Whether a failed attempt is worth repeating.
enum Failure {
    Retry {
        cause: String,
        after: Option<Duration>,
    },
    Fatal(Error),
}

impl Registry {
    /// Prepare access to `image`'s registry (no network yet).
    pub fn new(image: &ImageRef, config: &RegistryConfig) -> Result<Self> {
        let scheme = if config.insecure.allows_http(image.registry()) {
            "http"
        } else {
            "https"
        };
        let credentials = crate::auth::lookup(&config.auth_files, image.registry())?;
        let mut builder = reqwest::Client::builder()
            .connect_timeout(config.retry.connect_timeout)
            .read_timeout(config.retry.read_timeout)
            .user_agent(concat!("man8s/", env!("CARGO_PKG_VERSION")));
        if scheme == "http" {
            // Plain HTTP needs no trust store: a host without CA certificates (a minimal
            // install) must still reach its loopback registry.
            builder = builder.tls_certs_only(std::iter::empty());
        }
        let http = builder.build().map_err(|e| {
            Error::Other(format!(
                "cannot set up HTTPS for {}: {e} (is a CA certificate store, e.g. ca-certificates, installed?)",
                image.registry()
            ))
        })?;
        Ok(Self {
            http,
            image: image.clone(),
            base: format!("{scheme}://{}/v2/{}", image.api_host(), image.repository()),
            credentials,
            auth: Mutex::new(AuthState::None),
            retry: config.retry.clone(),
        })
    }

    fn registry_err(&self, reason: impl Into<String>) -> Error {
        Error::Registry {
            image: self.image.to_string(),
            registry: self.image.registry().into(),
            reason: reason.into(),
        }
    }

    fn authorize(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &*self.auth.lock().unwrap_or_else(|p| p.into_inner()) {
            AuthState::None => req,
            AuthState::Bearer(t) => req.bearer_auth(t),
            AuthState::Basic(c) => req.basic_auth(&c.username, Some(&c.password)),
        }
    }

    /// Answer a 401 challenge. Returns false when there is nothing new to try.
    async fn answer_challenge(&self, headers: &HeaderMap) -> std::result::Result<bool, Failure> {
        let Some(challenge) = headers
            .get(header::WWW_AUTHENTICATE)
            .and_then(|h| h.to_str().ok())
        else {
            return Ok(false);
        };
        let (scheme, params) = parse_challenge(challenge);
        if scheme.eq_ignore_ascii_case("basic") {
            let Some(c) = &self.credentials else {
                return Ok(false);
            };
            let mut auth = self.auth.lock().unwrap_or_else(|p| p.into_inner());
            if matches!(*auth, AuthState::Basic(_)) {
                return Ok(false);
            }
            *auth = AuthState::Basic(c.clone());
            return Ok(true);
        }
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Ok(false);
        }
        if matches!(
            *self.auth.lock().unwrap_or_else(|p| p.into_inner()),
            AuthState::Bearer(_)
        ) {
            return Ok(false); // a token we already got was refused
        }
        let realm = params
            .iter()
            .find(|(k, _)| k == "realm")
            .map(|(_, v)| v.clone())
            .ok_or_else(|| {
                Failure::Fatal(self.registry_err(format!(
                    "authentication challenge without realm: {challenge}"
                )))
            })?;
        let scope = params
            .iter()
            .find(|(k, _)| k == "scope")
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| format!("repository:{}:pull", self.image.repository()));
        let mut query = vec![("scope", scope)];
        if let Some((_, s)) = params.iter().find(|(k, _)| k == "service") {
            query.push(("service", s.clone()));
        }
        let mut req = self.http.get(&realm).query(&query);
        // Credentials go to the token realm only over TLS (or to a plain-HTTP registry already trusted).
        if let Some(c) = &self.credentials
            && (realm.starts_with("https://") || self.base.starts_with("http://"))
        {
            req = req.basic_auth(&c.username, Some(&c.password));
        }
        let resp = req.send().await.map_err(|e| Failure::Retry {
            cause: describe(&e),
            after: None,
        })?;
        let status = resp.status();
        if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
            return Err(Failure::Retry {
                cause: format!("token endpoint: HTTP {status}"),
                after: retry_after(resp.headers()),
            });
        }
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            return Err(Failure::Fatal(self.denied(status.as_u16())));
        }
        if !status.is_success() {
            return Err(Failure::Fatal(
                self.registry_err(format!("token endpoint {realm}: HTTP {status}")),
            ));
        }
        let body = read_limited(resp, 1 << 20, &self.retry)
            .await
            .map_err(|cause| Failure::Retry { cause, after: None })?;
        #[derive(serde::Deserialize)]
        struct Token {
            token: Option<String>,
            access_token: Option<String>,
        }
        let t: Token = serde_json::from_slice(&body).map_err(|e| {
            Failure::Fatal(self.registry_err(format!("token endpoint answered no token: {e}")))
        })?;
        let token = t
            .token
            .or(t.access_token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                Failure::Fatal(self.registry_err("token endpoint answered an empty token"))
            })?;
        *self.auth.lock().unwrap_or_else(|p| p.into_inner()) = AuthState::Bearer(token);
        Ok(true)
    }

    fn denied(&self, status: u16) -> Error {
        let hint = match &self.credentials {
            None => format!(
                " (no credentials for {} in the auth files; is the image private?)",
                self.image.registry()
            ),
            Some(c) => format!(
                " (credentials of user {:?} from the auth files were refused)",
                c.username
            ),
        };
        Error::Denied {
            image: self.image.to_string(),
            registry: self.image.registry().into(),
            status,
            hint,
        }
    }

    /// One GET with auth handling; classifies the outcome.
    async fn get_once(
        &self,
        url: &str,
        extra: &[(header::HeaderName, String)],
        what: &str,
    ) -> std::result::Result<reqwest::Response, Failure> {
        let mut refreshed = false;
        for _round in 0..3 {
            let mut req = self.authorize(self.http.get(url));
            for (k, v) in extra {
                req = req.header(k, v);
            }
            let resp = req.send().await.map_err(|e| Failure::Retry {
                cause: describe(&e),
                after: None,
            })?;
            let status = resp.status();
            if status == StatusCode::UNAUTHORIZED {
                // Tokens expire (Docker Hub's after 5 minutes, shorter than a big pull): a token that
                // worked before is replaced once; a fresh one that is refused means denied.
                {
                    let mut auth = self.auth.lock().unwrap_or_else(|p| p.into_inner());
                    if matches!(*auth, AuthState::Bearer(_)) && !refreshed {
                        *auth = AuthState::None;
                        refreshed = true;
                    }
                }
                if self.answer_challenge(resp.headers()).await? {
                    continue;
                }
                return Err(Failure::Fatal(self.denied(401)));
            }
            if status == StatusCode::FORBIDDEN {
                return Err(Failure::Fatal(self.denied(403)));
            }
            if status == StatusCode::NOT_FOUND {
                return Err(Failure::Fatal(Error::NotFound {
                    image: self.image.to_string(),
                    registry: self.image.registry().into(),
                    what: what.to_owned(),
                }));
            }
            if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
                return Err(Failure::Retry {
                    cause: format!("HTTP {status}"),
                    after: retry_after(resp.headers()),
                });
            }
            if status.is_success() || status == StatusCode::RANGE_NOT_SATISFIABLE {
                return Ok(resp);
            }
            let body = read_limited(resp, 4096, &self.retry)
                .await
                .unwrap_or_default();
            let first = String::from_utf8_lossy(&body);
            let first = first.lines().next().unwrap_or("").trim();
            return Err(Failure::Fatal(
                self.registry_err(format!("{what}: HTTP {status} {first}")),
            ));
        }
        Err(Failure::Fatal(self.denied(401)))
    }

    fn backoff(&self, attempt: u32, after: Option<Duration>) -> Duration {
        let exp = self
            .retry
            .initial_delay
            .saturating_mul(1 << (attempt - 1).min(16));
        after.unwrap_or(exp).min(self.retry.max_delay)
    }

    /// Run `op` with retries; the closure gets the attempt number (1-based).
    async fn with_retries<T, F, Fut>(
        &self,
        what: &str,
        progress: &dyn Progress,
        mut op: F,
    ) -> Result<T>
    where
        F: FnMut(u32) -> Fut,
        Fut: std::future::Future<Output = std::result::Result<T, Failure>>,
    {
        let mut attempt = 1;
        loop {
            match op(attempt).await {
                Ok(v) => return Ok(v),
                Err(Failure::Fatal(e)) => return Err(e),
                Err(Failure::Retry { cause, after }) => {
                    if attempt >= self.retry.attempts {
                        return Err(Error::Network {
                            image: self.image.to_string(),
                            registry: self.image.registry().into(),
                            reason: format!("{what}: {cause} (gave up after {attempt} attempts)"),
                        });
                    }
                    let delay = self.backoff(attempt, after);
                    progress.event(Event::Retry {
                        what,
                        attempt,
                        delay,
                        cause: &cause,
                    });
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
            }
        }
    }

    /// Fetch a manifest by tag or digest. When `reference` is a digest, the body must hash to it.
    pub async fn manifest(
        &self,
        reference: &str,
        progress: &dyn Progress,
    ) -> Result<FetchedManifest> {
        let url = format!("{}/manifests/{reference}", self.base);
        let what = if reference.starts_with("sha256:") {
            format!("manifest {reference}")
        } else {
            format!("tag {reference:?}")
        };
        let accept = manifest::ACCEPT.join(", ");
        let fetched = self
            .with_retries(&what, progress, |_| async {
                let resp = self
                    .get_once(&url, &[(header::ACCEPT, accept.clone())], &what)
                    .await?;
                if !resp.status().is_success() {
                    return Err(Failure::Fatal(
                        self.registry_err(format!("{what}: HTTP {}", resp.status())),
                    ));
                }
                let content_type = resp
                    .headers()
                    .get(header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                let body = read_limited(resp, manifest::MAX_MANIFEST_BYTES, &self.retry)
                    .await
                    .map_err(|cause| Failure::Retry { cause, after: None })?;
                Ok((body, content_type))
            })
            .await?;
        let (body, content_type) = fetched;
        let digest = crate::cache::sha256_digest(&body);
        if reference.starts_with("sha256:") && digest != reference {
            return Err(Error::Corrupt {
                image: self.image.to_string(),
                registry: self.image.registry().into(),
                digest: reference.into(),
                reason: format!("manifest hashes to {digest}"),
            });
        }
        Ok(FetchedManifest {
            body,
            digest,
            content_type,
        })
    }

    /// Make sure blob `desc` is in `cache`: download it (resuming a partial download), verify
    /// size and digest while streaming, and move it into place. Returns its path.
    pub async fn fetch_blob(
        &self,
        desc: &Descriptor,
        index: Option<usize>,
        cache: &BlobCache,
        progress: &dyn Progress,
    ) -> Result<PathBuf> {
        let final_path = cache
            .blob_path(&desc.digest)
            .ok_or_else(|| self.registry_err(format!("invalid digest {:?}", desc.digest)))?;
        if cache.has_blob(&desc.digest, desc.size) {
            return Ok(final_path);
        }
        let image = self.image.to_string();
        let partial_path = cache
            .partial_path(&desc.digest)
            .expect("digest checked above");
        // The lock is held until this function returns; a concurrent fetch of the same blob waits.
        let lock = {
            let cache = cache.clone();
            let d = desc.digest.clone();
            tokio::task::spawn_blocking(move || cache.lock_partial(&d))
                .await
                .map_err(|e| Error::Other(format!("lock task failed: {e}")))??
        };
        if cache.has_blob(&desc.digest, desc.size) {
            return Ok(final_path);
        }
        let mut file: &File = &lock;
        let mut have = file.metadata().at(&partial_path)?.len();
        if have > desc.size {
            file.set_len(0).at(&partial_path)?;
            have = 0;
        }
        if let Some(i) = index {
            progress.event(Event::Downloading {
                index: i,
                digest: &desc.digest,
                size: desc.size,
                resumed_at: have,
            });
        }
        let url = format!("{}/blobs/{}", self.base, desc.digest);
        let what = format!("blob {}", desc.digest);
        let registry = self.image.registry().to_owned();
        let corrupt = |reason: String| Error::Corrupt {
            image: image.clone(),
            registry: registry.clone(),
            digest: desc.digest.clone(),
            reason,
        };
        let written = std::cell::Cell::new(have);
        // Hashed as it streams in; bytes of an earlier, interrupted run are hashed from disk first.
        let hasher = std::cell::RefCell::new(Sha256::new());
        if have > 0 {
            hash_prefix(&partial_path, have, &mut hasher.borrow_mut()).at(&partial_path)?;
        }
        let reset = || {
            written.set(0);
            *hasher.borrow_mut() = Sha256::new();
        };
        // A resumed download joins bytes from several responses (maybe from an earlier run); if the
        // whole does not verify, fetch it once more from the start before calling the blob corrupt.
        let used_range = std::cell::Cell::new(false);
        let mut full_retry_done = false;
        loop {
            self.with_retries(&what, progress, |_| {
                let url = url.clone();
                let what = what.clone();
                let written = &written;
                let hasher = &hasher;
                let reset = &reset;
                let partial_path = &partial_path;
                let corrupt = &corrupt;
                let image = &image;
                let used_range = &used_range;
                async move {
                    let mut have = written.get();
                    let mut extra = Vec::new();
                    if have > 0 {
                        extra.push((header::RANGE, format!("bytes={have}-")));
                        used_range.set(true);
                    }
                    let resp = self.get_once(&url, &extra, &what).await?;
                    let status = resp.status();
                    if status == StatusCode::RANGE_NOT_SATISFIABLE {
                        file.set_len(0)
                            .map_err(|e| Failure::Fatal(Error::io_for(image, partial_path, e)))?;
                        reset();
                        return Err(Failure::Retry {
                            cause: "range not satisfiable, restarting".into(),
                            after: Some(Duration::ZERO),
                        });
                    }
                    if status == StatusCode::PARTIAL_CONTENT {
                        let start = resp
                            .headers()
                            .get(header::CONTENT_RANGE)
                            .and_then(|v| v.to_str().ok())
                            .and_then(content_range_start);
                        if start != Some(have) {
                            file.set_len(0).map_err(|e| {
                                Failure::Fatal(Error::io_for(image, partial_path, e))
                            })?;
                            reset();
                            return Err(Failure::Retry {
                                cause: "bad Content-Range, restarting".into(),
                                after: Some(Duration::ZERO),
                            });
                        }
                    } else if have > 0 {
                        // The server ignored Range: start over.
                        file.set_len(0)
                            .map_err(|e| Failure::Fatal(Error::io_for(image, partial_path, e)))?;
                        have = 0;
                        reset();
                    }
                    file.seek(SeekFrom::Start(have))
                        .map_err(|e| Failure::Fatal(Error::io_for(image, partial_path, e)))?;
                    let mut stream = resp.bytes_stream();
                    let mut watch = SpeedWatch::new(&self.retry);
                    while let Some(chunk) = watch.next(&mut stream).await.map_err(|reason| {
                        // Not worth retrying: the same registry will be as slow again.
                        Failure::Fatal(Error::Network {
                            image: image.clone(),
                            registry: self.image.registry().into(),
                            reason: format!("{what} after {have} of {} bytes: {reason}", desc.size),
                        })
                    })? {
                        let chunk = chunk.map_err(|e| Failure::Retry {
                            cause: format!(
                                "connection broke after {have} of {} bytes: {}",
                                desc.size,
                                describe(&e)
                            ),
                            after: None,
                        })?;
                        if have + chunk.len() as u64 > desc.size {
                            file.set_len(0).ok();
                            reset();
                            return Err(Failure::Fatal(corrupt(format!(
                                "more than the {} bytes the manifest declares",
                                desc.size
                            ))));
                        }
                        file.write_all(&chunk)
                            .map_err(|e| Failure::Fatal(Error::io_for(image, partial_path, e)))?;
                        hasher.borrow_mut().update(&chunk);
                        have += chunk.len() as u64;
                        written.set(have);
                        if index.is_some() {
                            // Only layers count: the bar's total is their size.
                            progress.event(Event::Bytes(chunk.len() as u64));
                        }
                    }
                    if have < desc.size {
                        return Err(Failure::Retry {
                            cause: format!("connection ended after {have} of {} bytes", desc.size),
                            after: None,
                        });
                    }
                    Ok(())
                }
            })
            .await?;
            let actual = format!(
                "sha256:{}",
                hex::encode(hasher.replace(Sha256::new()).finalize())
            );
            if actual == desc.digest {
                break;
            }
            file.set_len(0)
                .map_err(|e| Error::io_for(&image, &partial_path, e))?;
            reset();
            if used_range.get() && !full_retry_done {
                full_retry_done = true;
                used_range.set(false);
                continue;
            }
            return Err(corrupt(format!("content hashes to {actual}")));
        }
        let path = cache.commit_partial(&desc.digest)?;
        drop(lock);
        Ok(path)
    }
}

fn hash_prefix(path: &std::path::Path, len: u64, h: &mut Sha256) -> std::io::Result<()> {
    let mut f = File::open(path)?.take(len);
    let mut buf = vec![0u8; 256 << 10];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        h.update(&buf[..n]);
    }
}

/// Watches the progress of one transfer: fewer than `low_speed_limit` bytes per second over a
/// `low_speed_time` window fails it, whether the bytes stopped or only trickle.
struct SpeedWatch {
    limit: u64,
    time: Duration,
    window_start: tokio::time::Instant,
    window_bytes: u64,
}

impl SpeedWatch {
    fn new(policy: &RetryPolicy) -> Self {
        Self {
            limit: policy.low_speed_limit,
            time: policy.low_speed_time.max(Duration::from_millis(1)),
            window_start: tokio::time::Instant::now(),
            window_bytes: 0,
        }
    }

    /// The next item of `stream`, or why the transfer is too slow.
    async fn next<S, B>(&mut self, stream: &mut S) -> std::result::Result<Option<S::Item>, String>
    where
        S: futures::Stream<Item = reqwest::Result<B>> + Unpin,
        B: AsRef<[u8]>,
    {
        loop {
            let deadline = self.window_start + self.time;
            match tokio::time::timeout_at(deadline, stream.next()).await {
                Ok(item) => {
                    if let Some(Ok(chunk)) = &item {
                        self.window_bytes += chunk.as_ref().len() as u64;
                    }
                    self.check()?;
                    return Ok(item);
                }
                Err(_) => self.check()?,
            }
        }
    }

    fn check(&mut self) -> std::result::Result<(), String> {
        let elapsed = self.window_start.elapsed();
        if elapsed < self.time {
            return Ok(());
        }
        let needed = (self.limit as f64 * elapsed.as_secs_f64()) as u64;
        if self.window_bytes < needed {
            return Err(format!(
                "transfer too slow: {} bytes in {:.0} s, below {} bytes/s \
                 (LowSpeedLimit=/LowSpeedTimeSec= in /etc/man8s/man8s.conf)",
                self.window_bytes,
                elapsed.as_secs_f64(),
                self.limit
            ));
        }
        self.window_start = tokio::time::Instant::now();
        self.window_bytes = 0;
        Ok(())
    }
}

async fn read_limited(
    resp: reqwest::Response,
    limit: u64,
    policy: &RetryPolicy,
) -> std::result::Result<Vec<u8>, String> {
    if resp.content_length().is_some_and(|l| l > limit) {
        return Err(format!("response larger than {limit} bytes"));
    }
    let mut out = Vec::new();
    let mut stream = resp.bytes_stream();
    let mut watch = SpeedWatch::new(policy);
    while let Some(chunk) = watch.next(&mut stream).await? {
        let chunk = chunk.map_err(|e| describe(&e))?;
        if out.len() as u64 + chunk.len() as u64 > limit {
            return Err(format!("response larger than {limit} bytes"));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// A reqwest error with its causes, on one line.
fn describe(e: &reqwest::Error) -> String {
    let mut s = if e.is_timeout() {
        "timed out".to_owned()
    } else {
        e.to_string()
    };
    let mut src = std::error::Error::source(e);
    while let Some(inner) = src {
        let t = inner.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        src = inner.source();
    }
    s
}

/// `Retry-After: <seconds>` (HTTP-date forms are treated as absent: backoff applies).
fn retry_after(h: &HeaderMap) -> Option<Duration> {
    h.get(header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

/// `bytes 100-199/200` → 100.
fn content_range_start(v: &str) -> Option<u64> {
    v.trim()
        .strip_prefix("bytes ")?
        .split('-')
        .next()?
        .trim()
        .parse()
        .ok()
}

/// `Bearer realm="…",service="…"` → ("Bearer", [(realm, …), (service, …)]).
fn parse_challenge(h: &str) -> (String, Vec<(String, String)>) {
    let h = h.trim();
    let (scheme, rest) = h.split_once(' ').unwrap_or((h, ""));
    let mut params = Vec::new();
    let mut chars = rest.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let key: String = chars
            .by_ref()
            .take_while(|c| *c != '=')
            .collect::<String>()
            .trim()
            .to_ascii_lowercase();
        if key.is_empty() {
            break;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            while let Some(c) = chars.peek().copied() {
                if c == ',' {
                    break;
                }
                value.push(c);
                chars.next();
            }
            value = value.trim().to_owned();
        }
        params.push((key, value));
    }
    (scheme.to_owned(), params)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenge_parsing() {
        let (s, p) = parse_challenge(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/redis:pull,push""#,
        );
        assert_eq!(s, "Bearer");
        assert_eq!(
            p[0],
            ("realm".into(), "https://auth.docker.io/token".into())
        );
        assert_eq!(p[1], ("service".into(), "registry.docker.io".into()));
        assert_eq!(
            p[2],
            ("scope".into(), "repository:library/redis:pull,push".into())
        );
        let (s, p) = parse_challenge(r#"Basic realm="Registry Realm""#);
        assert_eq!((s.as_str(), p.len()), ("Basic", 1));
    }

    #[test]
    fn headers() {
        assert_eq!(content_range_start("bytes 100-199/200"), Some(100));
        assert_eq!(content_range_start("items 1-2"), None);
        let mut h = HeaderMap::new();
        h.insert(header::RETRY_AFTER, "3".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(3)));
    }
}
