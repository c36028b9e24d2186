//! Health checks: what to run, how often, and what to do when it fails — the model shared by the
//! declaration (`HealthCmd=`… keys, as Quadlet's), the image's Docker `Healthcheck` and the check
//! runner. Parsing only; running checks is `mbctl`'s.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Docker's defaults, which podman and Quadlet share.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);
/// Default time one check may take.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Default consecutive failures before the machine counts as unhealthy.
pub const DEFAULT_RETRIES: u32 = 3;

/// What one check does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind", content = "value")]
pub enum HealthTest {
    /// `tcp:PORT`: a TCP connection to 127.0.0.1:PORT (or [::1]) in the machine's network
    /// namespace is accepted. Runs from the host side; needs nothing in the image.
    Tcp(u16),
    /// `http://127.0.0.1:PORT/PATH`: a GET in the machine's network namespace answers 2xx or 3xx.
    Http {
        /// The loopback address as written (`127.0.0.1`, `[::1]`, `localhost`).
        host: String,
        /// The port.
        port: u16,
        /// Path and query, starting with `/`.
        path: String,
    },
    /// Docker's `CMD`: this argv, run inside the machine as the image's user; exit 0 is healthy.
    Exec(Vec<String>),
    /// Docker's `CMD-SHELL` (and a plain `HealthCmd=` string): `/bin/sh -c STRING` inside.
    Shell(String),
}

impl std::fmt::Display for HealthTest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HealthTest::Tcp(p) => write!(f, "tcp:{p}"),
            HealthTest::Http { host, port, path } => write!(f, "http://{host}:{port}{path}"),
            HealthTest::Exec(argv) => write!(f, "{}", argv.join(" ")),
            HealthTest::Shell(s) => write!(f, "/bin/sh -c {s:?}"),
        }
    }
}

/// `HealthOnFailure=`: what happens when the machine turns unhealthy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnFailure {
    /// Only report it (default).
    #[default]
    None,
    /// Restart the unit.
    Restart,
    /// Stop the unit.
    Stop,
    /// Kill the unit's processes (SIGKILL); the unit fails.
    Kill,
}

impl OnFailure {
    /// Parses `none|restart|stop|kill`.
    pub fn parse(s: &str) -> Result<OnFailure, String> {
        match s {
            "none" => Ok(OnFailure::None),
            "restart" => Ok(OnFailure::Restart),
            "stop" => Ok(OnFailure::Stop),
            "kill" => Ok(OnFailure::Kill),
            _ => Err(format!("{s:?} is not one of none, restart, stop, kill")),
        }
    }

    /// The keyword.
    pub fn as_str(self) -> &'static str {
        match self {
            OnFailure::None => "none",
            OnFailure::Restart => "restart",
            OnFailure::Stop => "stop",
            OnFailure::Kill => "kill",
        }
    }
}

/// What a declaration says about health (every key optional; `None` = the image's, else default).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HealthSettings {
    /// `HealthCmd=`: `Some(None)` is `HealthCmd=none` (turn the image's check off).
    pub cmd: Option<Option<HealthTest>>,
    /// `HealthInterval=`; `Some(None)` is `disable` (no checks after the first passing one).
    pub interval: Option<Option<Duration>>,
    /// `HealthTimeout=`.
    pub timeout: Option<Duration>,
    /// `HealthRetries=`.
    pub retries: Option<u32>,
    /// `HealthStartPeriod=`.
    pub start_period: Option<Duration>,
    /// `HealthOnFailure=`.
    pub on_failure: Option<OnFailure>,
    /// `Notify=healthy`: the unit is started only once the first check passes.
    pub notify_healthy: bool,
}

/// The check a machine actually runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthCheck {
    /// What to run.
    pub test: HealthTest,
    /// Time between checks; `None`: no periodic checks (`HealthInterval=disable`).
    pub interval: Option<Duration>,
    /// Longest a check may take; it fails then.
    pub timeout: Duration,
    /// Consecutive failures that make the machine unhealthy.
    pub retries: u32,
    /// Failures during this time after start do not count (the app is still starting).
    pub start_period: Duration,
    /// What to do when it turns unhealthy.
    pub on_failure: OnFailure,
    /// Where the check came from: `declaration` or `image`.
    pub source: String,
}

/// The image config's `Healthcheck` (Docker's keys; durations in nanoseconds).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DockerHealthcheck {
    /// `["CMD", argv…]`, `["CMD-SHELL", string]`, `["NONE"]`; empty inherits (nothing).
    #[serde(default)]
    pub test: Option<Vec<String>>,
    /// Nanoseconds; 0 = default.
    #[serde(default)]
    pub interval: Option<i64>,
    /// Nanoseconds; 0 = default.
    #[serde(default)]
    pub timeout: Option<i64>,
    /// Nanoseconds.
    #[serde(default)]
    pub start_period: Option<i64>,
    /// 0 = default.
    #[serde(default)]
    pub retries: Option<i64>,
}

impl DockerHealthcheck {
    /// The test it names: `Ok(None)` for none/`NONE`, an error for a malformed one.
    pub fn health_test(&self) -> Result<Option<HealthTest>, String> {
        let Some(test) = self.test.as_ref().filter(|t| !t.is_empty()) else {
            return Ok(None);
        };
        match test[0].as_str() {
            "NONE" => Ok(None),
            "CMD" if test.len() > 1 => Ok(Some(HealthTest::Exec(test[1..].to_vec()))),
            "CMD-SHELL" if test.len() == 2 => Ok(Some(HealthTest::Shell(test[1].clone()))),
            other => Err(format!(
                "image Healthcheck Test {test:?} is not [\"CMD\", ARGS…], [\"CMD-SHELL\", STRING] or [\"NONE\"] (starts with {other:?})"
            )),
        }
    }
}

fn nanos(v: Option<i64>) -> Option<Duration> {
    v.filter(|n| *n > 0).map(|n| Duration::from_nanos(n as u64))
}

/// The check of a machine: the declaration's keys win one by one over the image's
/// `Healthcheck`, as with `podman run --health-*`. `None` when neither names a test, or the
/// declaration says `HealthCmd=none`. A malformed image check is an error naming it.
pub fn effective(
    decl: &HealthSettings,
    image: Option<&DockerHealthcheck>,
) -> Result<Option<HealthCheck>, String> {
    let (test, source) = match &decl.cmd {
        Some(None) => return Ok(None),
        Some(Some(t)) => (t.clone(), "declaration"),
        None => match image.map(DockerHealthcheck::health_test).transpose()? {
            Some(Some(t)) => (t, "image"),
            _ => return Ok(None),
        },
    };
    let img = image.cloned().unwrap_or_default();
    Ok(Some(HealthCheck {
        test,
        interval: decl
            .interval
            .unwrap_or_else(|| Some(nanos(img.interval).unwrap_or(DEFAULT_INTERVAL))),
        timeout: decl
            .timeout
            .or(nanos(img.timeout))
            .unwrap_or(DEFAULT_TIMEOUT),
        retries: decl
            .retries
            .or(img
                .retries
                .filter(|r| *r > 0)
                .map(|r| r.min(i64::from(u32::MAX)) as u32))
            .unwrap_or(DEFAULT_RETRIES),
        start_period: decl
            .start_period
            .or(nanos(img.start_period))
            .unwrap_or_default(),
        on_failure: decl.on_failure.unwrap_or_default(),
        source: source.into(),
    }))
}

/// Parses a `HealthCmd=` value: `none`; `tcp:PORT`; `http://127.0.0.1:PORT/PATH` (loopback only:
/// the check runs in the machine's own network namespace); a JSON array (`["CMD", "pg_isready"]`,
/// `["CMD-SHELL", "…"]`, or a bare argv as podman takes it); anything else is a shell command
/// (`CMD-SHELL`), as podman's `--health-cmd`.
pub fn parse_health_cmd(value: &str) -> Result<Option<HealthTest>, String> {
    let value = value.trim();
    if value.is_empty() {
        return Err("empty; use none to turn the image's check off".into());
    }
    if value == "none" {
        return Ok(None);
    }
    if let Some(port) = value.strip_prefix("tcp:") {
        return parse_port(port).map(|p| Some(HealthTest::Tcp(p)));
    }
    if let Some(rest) = value.strip_prefix("http://") {
        return parse_http(rest).map(Some);
    }
    if value.starts_with("https://") {
        return Err(
            "https:// checks are not supported; check the plain port with http:// or tcp:".into(),
        );
    }
    if value.starts_with('[') {
        let argv: Vec<String> =
            serde_json::from_str(value).map_err(|e| format!("not a JSON array of strings: {e}"))?;
        let test = match argv.first().map(String::as_str) {
            None => return Err("empty JSON array".into()),
            Some("NONE") => return Ok(None),
            Some("CMD") | Some("CMD-SHELL") => argv,
            Some(_) => std::iter::once("CMD".to_owned()).chain(argv).collect(),
        };
        return DockerHealthcheck {
            test: Some(test),
            ..Default::default()
        }
        .health_test()
        .map_err(|e| e.replace("image Healthcheck Test", "JSON array"));
    }
    Ok(Some(HealthTest::Shell(value.to_owned())))
}

fn parse_port(s: &str) -> Result<u16, String> {
    match s.parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(format!("{s:?} is not a port (1-65535)")),
    }
}

fn parse_http(rest: &str) -> Result<HealthTest, String> {
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (h, p) = v6
            .split_once(']')
            .ok_or_else(|| format!("{authority:?}: unclosed ["))?;
        (format!("[{h}]"), p.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_owned(), Some(p)),
            None => (authority.to_owned(), None),
        }
    };
    if !matches!(host.as_str(), "127.0.0.1" | "[::1]" | "localhost") {
        return Err(format!(
            "http checks run inside the machine's network namespace: the host must be 127.0.0.1, [::1] or localhost, not {host:?}"
        ));
    }
    let port = match port {
        Some(p) => parse_port(p)?,
        None => 80,
    };
    if path.bytes().any(|b| b.is_ascii_control() || b == b' ') {
        return Err("the path has spaces or control characters".into());
    }
    Ok(HealthTest::Http {
        host,
        port,
        path: path.to_owned(),
    })
}

/// Parses a time span as systemd (`90`, `1min 30s`, `5 s`) and Go/podman (`1m30s`, `500ms`)
/// write them. A bare number is seconds.
pub fn parse_duration(value: &str) -> Result<Duration, String> {
    let bad = || format!("{value:?} is not a time span (e.g. 30s, 1m30s, 1min 30s, 500ms)");
    let s = value.trim();
    if s.is_empty() {
        return Err(bad());
    }
    if let Ok(n) = s.parse::<u64>() {
        return Ok(Duration::from_secs(n));
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        rest = rest.trim_start();
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number: f64 = rest[..num_len].parse().map_err(|_| bad())?;
        rest = rest[num_len..].trim_start();
        let unit_len = rest
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let secs = match unit {
            "ns" | "nsec" => 1e-9,
            "us" | "usec" | "µs" => 1e-6,
            "ms" | "msec" => 1e-3,
            "" | "s" | "sec" | "second" | "seconds" => 1.0,
            "m" | "min" | "minute" | "minutes" => 60.0,
            "h" | "hr" | "hour" | "hours" => 3600.0,
            "d" | "day" | "days" => 86_400.0,
            _ => return Err(bad()),
        };
        total += Duration::try_from_secs_f64(number * secs).map_err(|_| bad())?;
    }
    Ok(total)
}

/// Parses `HealthInterval=`: a positive time span, or `disable`.
pub fn parse_interval(value: &str) -> Result<Option<Duration>, String> {
    if value.trim() == "disable" {
        return Ok(None);
    }
    positive(value).map(Some)
}

/// A time span that must not be zero (`HealthTimeout=`, `HealthInterval=`).
pub fn positive(value: &str) -> Result<Duration, String> {
    let d = parse_duration(value)?;
    if d.is_zero() {
        return Err(format!("{value:?}: must be longer than 0"));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_as_systemd_and_go_write_them() {
        for (s, ms) in [
            ("30", 30_000),
            ("30s", 30_000),
            ("1m30s", 90_000),
            ("1min 30s", 90_000),
            ("1 min", 60_000),
            ("500ms", 500),
            ("1.5s", 1500),
            ("2h", 7_200_000),
            ("1h1m1s", 3_661_000),
            ("0", 0),
        ] {
            assert_eq!(parse_duration(s), Ok(Duration::from_millis(ms)), "{s}");
        }
        for s in ["", "x", "5 parsecs", "1..5s", "-3s", "s"] {
            assert!(parse_duration(s).is_err(), "{s}");
        }
        assert!(positive("0s").unwrap_err().contains("longer than 0"));
        assert_eq!(parse_interval("disable"), Ok(None));
    }

    #[test]
    fn health_cmd_forms() {
        assert_eq!(parse_health_cmd("none"), Ok(None));
        assert_eq!(
            parse_health_cmd("tcp:6379"),
            Ok(Some(HealthTest::Tcp(6379)))
        );
        assert_eq!(
            parse_health_cmd("http://127.0.0.1:8080/healthz?x=1"),
            Ok(Some(HealthTest::Http {
                host: "127.0.0.1".into(),
                port: 8080,
                path: "/healthz?x=1".into()
            }))
        );
        assert_eq!(
            parse_health_cmd("http://[::1]:81"),
            Ok(Some(HealthTest::Http {
                host: "[::1]".into(),
                port: 81,
                path: "/".into()
            }))
        );
        assert_eq!(
            parse_health_cmd("http://localhost/"),
            Ok(Some(HealthTest::Http {
                host: "localhost".into(),
                port: 80,
                path: "/".into()
            }))
        );
        assert_eq!(
            parse_health_cmd(r#"["CMD", "pg_isready", "-U", "x"]"#),
            Ok(Some(HealthTest::Exec(vec![
                "pg_isready".into(),
                "-U".into(),
                "x".into()
            ])))
        );
        assert_eq!(
            parse_health_cmd(r#"["redis-cli", "ping"]"#),
            Ok(Some(HealthTest::Exec(vec![
                "redis-cli".into(),
                "ping".into()
            ])))
        );
        assert_eq!(
            parse_health_cmd("curl -f http://localhost/ || exit 1"),
            Ok(Some(HealthTest::Shell(
                "curl -f http://localhost/ || exit 1".into()
            )))
        );
        for (bad, why) in [
            ("tcp:0", "not a port"),
            ("tcp:x", "not a port"),
            ("http://10.0.0.1:80/", "must be 127.0.0.1"),
            ("http://example.org/", "must be 127.0.0.1"),
            ("https://127.0.0.1/", "not supported"),
            ("[1,2]", "JSON array"),
            ("[]", "empty JSON"),
            (r#"["CMD"]"#, "JSON array"),
            ("", "empty"),
        ] {
            let e = parse_health_cmd(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn docker_healthcheck_json() {
        let h: DockerHealthcheck = serde_json::from_str(
            r#"{"Test":["CMD-SHELL","wget -q -O- http://localhost/ || exit 1"],"Interval":5000000000,"Timeout":2000000000,"StartPeriod":10000000000,"Retries":2}"#,
        )
        .unwrap();
        let c = effective(&HealthSettings::default(), Some(&h))
            .unwrap()
            .unwrap();
        assert_eq!(
            c.test,
            HealthTest::Shell("wget -q -O- http://localhost/ || exit 1".into())
        );
        assert_eq!(c.interval, Some(Duration::from_secs(5)));
        assert_eq!(c.timeout, Duration::from_secs(2));
        assert_eq!(c.start_period, Duration::from_secs(10));
        assert_eq!(c.retries, 2);
        assert_eq!(c.source, "image");

        // Zero means default, as in Docker.
        let h: DockerHealthcheck =
            serde_json::from_str(r#"{"Test":["CMD","/ok"],"Interval":0,"Retries":0}"#).unwrap();
        let c = effective(&HealthSettings::default(), Some(&h))
            .unwrap()
            .unwrap();
        assert_eq!(c.interval, Some(DEFAULT_INTERVAL));
        assert_eq!(c.retries, DEFAULT_RETRIES);

        let none: DockerHealthcheck = serde_json::from_str(r#"{"Test":["NONE"]}"#).unwrap();
        assert_eq!(effective(&HealthSettings::default(), Some(&none)), Ok(None));
        let bad: DockerHealthcheck = serde_json::from_str(r#"{"Test":["SHELL","x"]}"#).unwrap();
        assert!(effective(&HealthSettings::default(), Some(&bad)).is_err());
    }

    #[test]
    fn declaration_keys_win_one_by_one() {
        let image: DockerHealthcheck =
            serde_json::from_str(r#"{"Test":["CMD","/ok"],"Interval":5000000000,"Retries":7}"#)
                .unwrap();
        let decl = HealthSettings {
            retries: Some(1),
            on_failure: Some(OnFailure::Restart),
            ..Default::default()
        };
        let c = effective(&decl, Some(&image)).unwrap().unwrap();
        assert_eq!(c.test, HealthTest::Exec(vec!["/ok".into()]));
        assert_eq!((c.interval, c.retries), (Some(Duration::from_secs(5)), 1));
        assert_eq!(c.on_failure, OnFailure::Restart);

        let off = HealthSettings {
            cmd: Some(None),
            ..Default::default()
        };
        assert_eq!(effective(&off, Some(&image)), Ok(None), "HealthCmd=none");
        let own = HealthSettings {
            cmd: Some(Some(HealthTest::Tcp(80))),
            ..Default::default()
        };
        let c = effective(&own, None).unwrap().unwrap();
        assert_eq!(
            (c.source.as_str(), c.interval),
            ("declaration", Some(DEFAULT_INTERVAL))
        );
        assert_eq!(effective(&HealthSettings::default(), None), Ok(None));
    }
}
