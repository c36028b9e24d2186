//! `man8s-bridge`: write the machines' networkd bridge from the host's Yggdrasil subnet.

use std::process::ExitCode;

use clap::Parser;
use man8s::Paths;
use man8s::hostconfig::HostConfig;
use man8s_bridge::apply::{Report, apply};
use man8s_bridge::firewall::{self, FilterState, FilterStatus};
use man8s_bridge::reload::{Reloaded, reload_networkd, wait_for_link};

/// How long to wait for networkd to create the bridge after a reload.
const LINK_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Write the systemd-networkd bridge for man8s machines from the host's Yggdrasil subnet, and
/// reload networkd when it changed. See man8s-bridge(8).
#[derive(Parser)]
#[command(name = "man8s-bridge", version)]
struct Args {
    /// Write the files but do not ask networkd to reload.
    #[arg(long, conflicts_with = "force_reload")]
    no_reload: bool,
    /// Reload networkd even when no file changed.
    #[arg(long)]
    force_reload: bool,
    /// Apply the nftables filter even though MAN8S_ROOT relocates the files (tests in a private
    /// network namespace); without MAN8S_ROOT it is always applied.
    #[arg(long)]
    filter: bool,
    /// Remove the nftables table `inet man8s` and exit (ExecStop= of man8s-bridge.service).
    #[arg(long, conflicts_with_all = ["no_reload", "force_reload", "filter"])]
    stop: bool,
}

/// journald reads a `<N>` syslog priority at the start of each line on a service's stderr.
fn log(priority: u8, msg: &str) {
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        eprintln!("<{priority}>{msg}");
    } else {
        eprintln!("man8s-bridge: {msg}");
    }
}
const ERR: u8 = 3;
const WARNING: u8 = 4;
const NOTICE: u8 = 5;
const INFO: u8 = 6;

fn report(r: &Report) {
    match &r.yggdrasil {
        Ok(s) => log(
            INFO,
            &format!("yggdrasil: address {}, subnet {}", s.address, s.subnet),
        ),
        Err(e) => log(
            WARNING,
            &format!(
                "{e}; bridge {} gets IPv4 and the IPv6 ULA {} only, machines start without Yggdrasil addresses",
                r.bridge, r.ula
            ),
        ),
    }
    for p in &r.written {
        log(INFO, &format!("wrote {}", p.display()));
    }
    for p in &r.removed {
        log(INFO, &format!("removed {}", p.display()));
    }
    if r.written.is_empty() && r.removed.is_empty() {
        log(
            INFO,
            &format!("bridge {}: up to date, nothing written", r.bridge),
        );
    }
    for (iface, net) in &r.ipv4_overlaps {
        log(
            WARNING,
            &format!(
                "{iface} already routes {net}, which overlaps the bridge's IPv4 subnet; machines may not reach it. \
                 Set IPv4Address= in [Bridge] of /etc/man8s/man8s.conf"
            ),
        );
    }
    if r.enabled_ipv6_forwarding {
        log(
            NOTICE,
            "enabled IPv6 forwarding (net.ipv6.conf.all.forwarding=1) for machines' Yggdrasil traffic",
        );
    }
    if let Ok(s) = &r.yggdrasil {
        for c in &r.collisions {
            log(
                WARNING,
                &format!(
                    "Yggdrasil address collision in {}: {} and {} both get {}; rename one or set YggdrasilAddress= in its declaration",
                    s.subnet, c.first, c.second, c.address
                ),
            );
        }
    }
}

/// Say how the filter went, in the journal and in `systemctl status` (STATUS=).
fn report_filter(status: &FilterStatus) {
    for w in &status.warnings {
        log(WARNING, w);
    }
    let summary = match status.state {
        FilterState::Filtered => {
            log(INFO, "nftables table inet man8s applied");
            if status.fleet.is_empty() {
                let w = firewall::no_fleet_warning();
                log(WARNING, &w);
                format!("filtered; {w}")
            } else {
                format!("filtered; fleet {}", status.fleet.join(" "))
            }
        }
        FilterState::Unfiltered => {
            let reason = status.reason.as_deref().unwrap_or("unknown");
            log(ERR, &format!("machines are UNFILTERED: {reason}"));
            format!("UNFILTERED: {reason}")
        }
    };
    use libsystemd::daemon::{NotifyState, notify};
    let _ = notify(false, &[NotifyState::Status(summary)]);
}

fn main() -> ExitCode {
    let args = Args::parse();
    let paths = Paths::from_env();
    if args.stop {
        return match firewall::remove(&paths) {
            Ok(()) => {
                log(INFO, "nftables table inet man8s removed");
                ExitCode::SUCCESS
            }
            Err(e) => {
                log(ERR, &e.to_string());
                ExitCode::from(1)
            }
        };
    }
    let r = match apply(&paths) {
        Ok(r) => r,
        Err(e) => {
            log(ERR, &e.to_string());
            return ExitCode::from(1);
        }
    };
    report(&r);
    let subnet = r.yggdrasil.as_ref().ok().map(|s| s.subnet);
    // Taken up now: man8s-bridge.path fires again only when the generator changes the policy.
    let _ = std::fs::remove_file(paths.fs(man8s::mesh::POLICY_CHANGED));
    let names = HostConfig::load(&paths)
        .map_err(|e| e.to_string())
        .and_then(|cfg| {
            let policy = firewall::read_policy(&paths)?;
            man8s_bridge::names::write_all(&paths, &policy, &cfg, subnet).map_err(|e| e.to_string())
        });
    match names {
        Ok(written) => {
            for p in written {
                log(INFO, &format!("wrote {}", p.display()));
            }
        }
        Err(e) => log(WARNING, &format!("machines' names not written: {e}")),
    }
    // A relocated tree is not this host: leave its kernel alone unless asked.
    if args.filter || paths.root() == std::path::Path::new("/") {
        let status = HostConfig::load(&paths)
            .map_err(|e| e.to_string())
            .and_then(|cfg| firewall::apply(&paths, &cfg, subnet).map_err(|e| e.to_string()));
        match status {
            Ok(status) => report_filter(&status),
            Err(e) => {
                log(ERR, &format!("machines' filter not applied: {e}"));
                return ExitCode::from(1);
            }
        }
    }
    if args.no_reload || !(r.networkd_changed || args.force_reload) {
        return ExitCode::SUCCESS;
    }
    match reload_networkd() {
        Ok(Reloaded::Done) => {
            log(INFO, "systemd-networkd reloaded");
            // Machines ordered after this unit attach to the bridge at once: let it exist first.
            if !wait_for_link(&paths, &r.bridge, LINK_WAIT) {
                log(
                    WARNING,
                    &format!(
                        "systemd-networkd did not create {} within {} s; see networkctl status {}",
                        r.bridge,
                        LINK_WAIT.as_secs(),
                        r.bridge
                    ),
                );
            }
        }
        Ok(Reloaded::NotRunning) => log(
            NOTICE,
            "systemd-networkd is not running; it will apply the files when it starts",
        ),
        Err(e) => {
            log(
                ERR,
                &format!(
                    "files written, but systemd-networkd was not reloaded: {e}; run 'networkctl reload'"
                ),
            );
            return ExitCode::from(1);
        }
    }
    ExitCode::SUCCESS
}
