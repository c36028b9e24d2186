//! `machines stats [NAME…]`: CPU, memory and tasks from the unit's cgroup (cgroup v2 files that
//! the kernel writes), network bytes from the machine's network namespace (`/proc/LEADER/net/dev`,
//! also the kernel's). One sample now and one a second later give the CPU %.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use man8s::{MachineName, Paths};
use man8s_oci::progress::human;
use serde::Serialize;

use crate::EXIT_OK;
use crate::bus::{Bus, unit_name};
use crate::cmd::machine_name;

/// Where the unified cgroup hierarchy is mounted.
const CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// Most read from one cgroup or proc file.
const MAX_STAT_FILE: u64 = 1 << 20;

/// Counters of one machine at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sample {
    /// `cpu.stat` `usage_usec`.
    pub cpu_usec: u64,
    /// `memory.current` (`None` where the memory controller is not enabled).
    pub memory: Option<u64>,
    /// `memory.max` (`None` for `max`, or without the memory controller).
    pub memory_max: Option<u64>,
    /// `pids.current`, else the threads listed in the subtree's `cgroup.threads`.
    pub tasks: u64,
    /// Bytes received on every interface but `lo`.
    pub rx: u64,
    /// Bytes sent on every interface but `lo`.
    pub tx: u64,
}

/// One machine's line of `machines stats`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Stats {
    /// Machine name.
    pub name: String,
    /// CPU time over the sampling second, in % of one CPU.
    pub cpu_percent: f64,
    /// CPU time used since the start, in seconds.
    pub cpu_seconds: f64,
    /// Memory in use (bytes); `null` where the memory controller is not enabled.
    pub memory_bytes: Option<u64>,
    /// The limit: `MemoryMax=`, else the host's memory (bytes).
    pub memory_limit_bytes: u64,
    /// `memory_bytes` in % of the limit.
    pub memory_percent: Option<f64>,
    /// Tasks (processes and threads) of the unit.
    pub tasks: u64,
    /// Network bytes received.
    pub net_rx_bytes: u64,
    /// Network bytes sent.
    pub net_tx_bytes: u64,
}

/// `usage_usec` of a `cpu.stat`.
pub fn parse_cpu_stat(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("usage_usec "))
        .and_then(|v| v.trim().parse().ok())
}

/// A single-number cgroup file (`memory.current`); `max` is `None`.
pub fn parse_counter(text: &str) -> Option<u64> {
    text.trim().parse().ok()
}

/// Received and sent bytes of every interface but `lo` in `/proc/net/dev`.
pub fn parse_net_dev(text: &str) -> (u64, u64) {
    let mut rx = 0u64;
    let mut tx = 0u64;
    for line in text.lines().skip(2) {
        let Some((iface, counters)) = line.split_once(':') else {
            continue;
        };
        if iface.trim() == "lo" {
            continue;
        }
        let n: Vec<u64> = counters
            .split_whitespace()
            .filter_map(|v| v.parse().ok())
            .collect();
        if n.len() >= 9 {
            rx = rx.saturating_add(n[0]);
            tx = tx.saturating_add(n[8]);
        }
    }
    (rx, tx)
}

/// `MemTotal` of `/proc/meminfo`, in bytes.
pub fn parse_mem_total(text: &str) -> Option<u64> {
    let kib: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse()
        .ok()?;
    kib.checked_mul(1024)
}

/// The line of one machine from two samples `elapsed` apart (`host_memory` is the limit
/// without `MemoryMax=`).
pub fn stats_of(
    name: &str,
    first: &Sample,
    last: &Sample,
    elapsed: Duration,
    host_memory: u64,
) -> Stats {
    let micros = elapsed.as_micros().max(1) as f64;
    let limit = last.memory_max.unwrap_or(host_memory).max(1);
    Stats {
        name: name.to_owned(),
        cpu_percent: last.cpu_usec.saturating_sub(first.cpu_usec) as f64 * 100.0 / micros,
        cpu_seconds: last.cpu_usec as f64 / 1e6,
        memory_bytes: last.memory,
        memory_limit_bytes: limit,
        memory_percent: last.memory.map(|m| m as f64 * 100.0 / limit as f64),
        tasks: last.tasks,
        net_rx_bytes: last.rx,
        net_tx_bytes: last.tx,
    }
}

fn read_small(path: &Path) -> Result<String> {
    man8s::untrusted::read_regular_string(path, MAX_STAT_FILE)
        .with_context(|| format!("cannot read {}", path.display()))
}

/// Threads of the cgroup `dir` and every cgroup below it (`cgroup.threads`, which exists without
/// any controller).
fn threads_below(dir: &Path, depth: usize) -> u64 {
    let own = read_small(&dir.join("cgroup.threads"))
        .map(|t| t.lines().filter(|l| !l.is_empty()).count() as u64)
        .unwrap_or(0);
    if depth == 0 {
        return own;
    }
    let below: u64 = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| threads_below(&e.path(), depth - 1))
        .sum();
    own + below
}

/// Counters of the machine whose unit cgroup is `cgroup` and whose leader is `leader`. The
/// memory and pids controllers may be off (a cgroup-v1 hybrid host); `cpu.stat` is always there.
fn sample(cgroup: &Path, leader: i32) -> Result<Sample> {
    let file = |f: &str| read_small(&cgroup.join(f));
    let optional = |f: &str| file(f).ok().and_then(|t| parse_counter(&t));
    let (rx, tx) = parse_net_dev(&read_small(Path::new(&format!("/proc/{leader}/net/dev")))?);
    Ok(Sample {
        cpu_usec: parse_cpu_stat(&file("cpu.stat")?).unwrap_or(0),
        memory: optional("memory.current"),
        memory_max: optional("memory.max"),
        tasks: optional("pids.current").unwrap_or_else(|| threads_below(cgroup, 8)),
        rx,
        tx,
    })
}

/// A running machine: its name, unit cgroup and leader.
struct Running {
    name: MachineName,
    cgroup: PathBuf,
    leader: i32,
}

fn running(bus: &Bus, name: &MachineName) -> Result<Option<Running>> {
    let Some(leader) = bus.machine_leader(name.as_str())? else {
        return Ok(None);
    };
    let group = bus.unit_control_group(&unit_name(name.as_str()))?;
    if group.is_empty() {
        return Ok(None);
    }
    Ok(Some(Running {
        name: name.clone(),
        cgroup: Path::new(CGROUP_ROOT).join(group.trim_start_matches('/')),
        leader: i32::try_from(leader)?,
    }))
}

/// `machines stats [NAME…] [--json]`.
pub fn stats(names: &[String], json: bool) -> Result<u8> {
    let bus = Bus::system()?;
    let mut machines = Vec::new();
    if names.is_empty() {
        let (all, _) = crate::cmd::info::collect(&Paths::from_env(), Some(&bus));
        for info in all.iter().filter(|i| i.state == "active") {
            if let Ok(n) = MachineName::new(&info.name)
                && let Some(r) = running(&bus, &n)?
            {
                machines.push(r);
            }
        }
    } else {
        for n in names {
            let n = machine_name(n)?;
            match running(&bus, &n)? {
                Some(r) => machines.push(r),
                None => bail!("machine {n} is not running"),
            }
        }
    }
    let started = Instant::now();
    let first: Vec<Sample> = machines
        .iter()
        .map(|m| sample(&m.cgroup, m.leader).with_context(|| format!("machine {}", m.name)))
        .collect::<Result<_>>()?;
    std::thread::sleep(Duration::from_secs(1));
    let host_memory = read_small(Path::new("/proc/meminfo"))
        .ok()
        .and_then(|t| parse_mem_total(&t))
        .unwrap_or(0);
    let mut lines = Vec::new();
    for (m, first) in machines.iter().zip(&first) {
        // A machine that stopped within the second is left out.
        let Ok(last) = sample(&m.cgroup, m.leader) else {
            continue;
        };
        lines.push(stats_of(
            m.name.as_str(),
            first,
            &last,
            started.elapsed(),
            host_memory,
        ));
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&lines)?);
    } else {
        print!("{}", table(&lines));
    }
    Ok(EXIT_OK)
}

/// The `machines stats` table.
pub fn table(lines: &[Stats]) -> String {
    let mut rows = vec![
        [
            "NAME",
            "CPU %",
            "MEM USAGE / LIMIT",
            "MEM %",
            "NET I/O",
            "PIDS",
            "CPU TIME",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for s in lines {
        rows.push(vec![
            s.name.clone(),
            format!("{:.2}%", s.cpu_percent),
            match s.memory_bytes {
                Some(m) => format!("{} / {}", human(m), human(s.memory_limit_bytes)),
                None => "- (no memory controller)".to_owned(),
            },
            s.memory_percent
                .map_or_else(|| "-".to_owned(), |p| format!("{p:.2}%")),
            format!("{} / {}", human(s.net_rx_bytes), human(s.net_tx_bytes)),
            s.tasks.to_string(),
            format!("{:.2}s", s.cpu_seconds),
        ]);
    }
    crate::output::table(&rows, |_, c| c.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_and_proc_files() {
        assert_eq!(
            parse_cpu_stat("usage_usec 1500000\nuser_usec 1000000\nsystem_usec 500000\n"),
            Some(1_500_000)
        );
        assert_eq!(parse_cpu_stat("user_usec 1\n"), None);
        assert_eq!(parse_counter("4096\n"), Some(4096));
        assert_eq!(parse_counter("max\n"), None);
        let dev = "Inter-|   Receive                                                |  Transmit\n \
                   face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    \
                   lo:    1000      10    0    0    0     0          0         0     1000      10    0    0    0     0       0          0\n  \
                   host0:  5000      40    0    0    0     0          0         0     7000      50    0    0    0     0       0          0\n";
        assert_eq!(parse_net_dev(dev), (5000, 7000));
        assert_eq!(
            parse_mem_total("MemTotal:       24683520 kB\nMemFree: 1 kB\n"),
            Some(24683520 * 1024)
        );
    }

    #[test]
    fn tasks_without_the_pids_controller_are_the_subtrees_threads() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("payload/inner")).unwrap();
        std::fs::write(dir.path().join("cgroup.threads"), "10\n").unwrap();
        std::fs::write(dir.path().join("payload/cgroup.threads"), "11\n12\n").unwrap();
        std::fs::write(dir.path().join("payload/inner/cgroup.threads"), "13\n").unwrap();
        assert_eq!(threads_below(dir.path(), 8), 4);
        assert_eq!(threads_below(dir.path(), 0), 1);
    }

    #[test]
    fn percentages_and_limits() {
        let first = Sample {
            cpu_usec: 1_000_000,
            ..Default::default()
        };
        let last = Sample {
            cpu_usec: 1_500_000,
            memory: Some(256 << 20),
            memory_max: Some(1 << 30),
            tasks: 3,
            rx: 10,
            tx: 20,
        };
        let s = stats_of("pg", &first, &last, Duration::from_secs(1), 8 << 30);
        assert!((s.cpu_percent - 50.0).abs() < 1e-9, "{s:?}");
        assert!((s.memory_percent.unwrap() - 25.0).abs() < 1e-9, "{s:?}");
        assert_eq!(
            (
                s.memory_limit_bytes,
                s.tasks,
                s.net_rx_bytes,
                s.net_tx_bytes
            ),
            (1 << 30, 3, 10, 20)
        );
        let unlimited = Sample {
            memory_max: None,
            memory: Some(1 << 30),
            ..last
        };
        let s = stats_of("pg", &first, &unlimited, Duration::from_secs(1), 4 << 30);
        assert_eq!(s.memory_limit_bytes, 4 << 30);
        assert!(table(&[s]).contains("1.0 GiB / 4.0 GiB"));
        // Without the memory controller: no number rather than a made-up one.
        let bare = Sample {
            memory: None,
            memory_max: None,
            ..last
        };
        let s = stats_of("pg", &first, &bare, Duration::from_secs(1), 4 << 30);
        assert_eq!((s.memory_bytes, s.memory_percent), (None, None));
        assert!(table(&[s]).contains("- (no memory controller)"));
    }
}
