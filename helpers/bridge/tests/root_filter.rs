//! Root tier: the table `inet man8s` against the real nftables, in private network namespaces
//! (`unshare(CLONE_NEWNET)` on a thread of its own, `unshare --net` for the binary), next to a
//! table of someone else's that must come through untouched. These tests FAIL when not root.

use std::process::{Command, Stdio};

use man8s::hostconfig::HostConfig;
use man8s::mesh::{AddressPolicy, MachinePolicy, PolicyFile};
use man8s_bridge::{filter, nft};
use man8s_testsupport::require_root;
use serde_json::Value;

/// Someone else's table, as another firewall would have it.
const OTHER: &str = "table ip other {\n chain filt {\n  type filter hook forward priority 10; policy accept;\n  tcp dport 22 counter accept\n }\n}\n";

fn nft_stdin(script: &str) {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .spawn()
        .expect("nft (nftables) is installed");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success(), "nft -f - of {script:?}");
}

fn list(args: &[&str]) -> Value {
    let out = Command::new("nft").arg("-j").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "nft -j {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The `rule` objects of a listing: (comment, expr).
fn rules(listing: &Value) -> Vec<(String, Value)> {
    listing["nftables"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|o| o.get("rule"))
        .map(|r| {
            (
                r["comment"].as_str().unwrap_or("").to_owned(),
                r["expr"].clone(),
            )
        })
        .collect()
}

fn spec() -> filter::FilterSpec {
    let cfg = HostConfig::parse(
        "[Mesh]\nAllowFrom=@nas 192.0.2.0/24\n[Hosts]\nnas=300:aaaa:bbbb:cccc::/64\n",
        "/etc/man8s/man8s.conf",
    )
    .unwrap();
    let policy = PolicyFile {
        machines: vec![MachinePolicy {
            name: "web".into(),
            address: AddressPolicy::Auto,
            expose: vec!["80".parse().unwrap(), "udp:53".parse().unwrap()],
            allow_from: vec!["300:1:2:3::/64".parse().unwrap()],
            links: vec![],
        }],
    };
    filter::spec(
        &policy,
        &cfg,
        Some("300:2e98:a4b0:1789::/64".parse().unwrap()),
    )
    .0
}

#[test]
fn root_table_applies_replaces_and_goes_away_leaving_other_tables_alone() {
    require_root();
    std::thread::spawn(|| {
        // Only this thread (and the nft processes it starts) is in the new namespace.
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        nft_stdin(OTHER);
        let other_before = list(&["list", "table", "ip", "other"]);
        assert!(nft::list_table().unwrap().is_none());

        let spec = spec();
        nft::apply(&filter::ruleset(&spec)).unwrap();
        let ours = list(&["list", "table", "inet", "man8s"]);
        let got = rules(&ours);
        let comments: Vec<&str> = got.iter().map(|(c, _)| c.as_str()).collect();
        assert_eq!(comments.len(), 15, "{comments:?}");
        assert_eq!(comments[2], "only traffic into the bridge is filtered");
        assert_eq!(
            comments.last().unwrap(),
            &"everything else from outside: refused"
        );
        // The kernel has what we meant: Expose= ports, the fleet's /64, MSS clamping.
        let text = ours.to_string();
        let web =
            man8s::address::machine_address("300:2e98:a4b0:1789::/64".parse().unwrap(), "web");
        assert!(text.contains(&web.to_string()), "{text}");
        assert!(
            text.contains(r#""addr":"300:aaaa:bbbb:cccc::","len":64"#),
            "{text}"
        );
        assert!(
            text.contains(r#""tcp option":{"field":"size","name":"maxseg"}"#),
            "{text}"
        );
        let base = &ours["nftables"]
            .as_array()
            .unwrap()
            .iter()
            .find_map(|o| o.get("chain"))
            .unwrap();
        assert_eq!(
            (base["hook"].as_str(), base["policy"].as_str()),
            (Some("forward"), Some("accept"))
        );

        // Applying again replaces the table as a whole: no doubled rules.
        let mut less = spec.clone();
        less.machines[0].expose.clear();
        nft::apply(&filter::ruleset(&less)).unwrap();
        let again = rules(&list(&["list", "table", "inet", "man8s"]));
        assert_eq!(again.len(), 13, "{again:?}");
        assert!(!again.iter().any(|(c, _)| c.contains("Expose")));

        assert_eq!(list(&["list", "table", "ip", "other"]), other_before);
        nft::apply(&filter::removal()).unwrap();
        assert!(nft::list_table().unwrap().is_none());
        // Removing what is not there is fine (ExecStop= after a failed start).
        nft::apply(&filter::removal()).unwrap();
        assert_eq!(list(&["list", "table", "ip", "other"]), other_before);
        let tables: Vec<String> = list(&["list", "tables"])["nftables"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|o| o.get("table"))
            .map(|t| {
                format!(
                    "{} {}",
                    t["family"].as_str().unwrap(),
                    t["name"].as_str().unwrap()
                )
            })
            .collect();
        assert_eq!(tables, ["ip other"]);
    })
    .join()
    .unwrap();
}

/// A MAN8S_ROOT tree for the binary: a machine ID, no yggdrasil, `extra` appended to man8s.conf.
fn tree(extra: &str) -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    std::fs::create_dir_all(r.join("etc/man8s")).unwrap();
    std::fs::write(
        r.join("etc/machine-id"),
        "0123456789abcdef0123456789abcdef\n",
    )
    .unwrap();
    std::fs::write(
        r.join("etc/man8s/man8s.conf"),
        format!("[Yggdrasil]\nWaitSec=0\nConfigFile=/nonexistent\n{extra}"),
    )
    .unwrap();
    root
}

#[test]
fn root_binary_filters_from_the_policy_file_and_stop_removes_it() {
    require_root();
    // No yggdrasil here: only a fixed address has rules of its own.
    let root = tree("[Mesh]\nAllowFrom=300:aaaa:bbbb:cccc::/64\n");
    let r = root.path();
    std::fs::create_dir_all(r.join("run/man8s")).unwrap();
    let policy = PolicyFile {
        machines: vec![MachinePolicy {
            name: "db".into(),
            address: AddressPolicy::Fixed("300:2e98:a4b0:1789::db".parse().unwrap()),
            expose: vec!["5432".parse().unwrap()],
            allow_from: vec!["@nowhere".parse().unwrap()],
            links: vec![],
        }],
    };
    std::fs::write(r.join("run/man8s/policy.json"), policy.render()).unwrap();
    let out_dir = r.join("out");
    std::fs::create_dir(&out_dir).unwrap();
    let script = format!(
        "set -e\nnft -f - <<'X'\n{OTHER}X\n\
         \"$BRIDGE\" --no-reload --filter\n\
         nft -j list ruleset > '{o}/applied.json'\n\
         cp '{r}/run/man8s/filter.json' '{o}/status.json'\n\
         \"$BRIDGE\" --stop\n\
         nft -j list ruleset > '{o}/stopped.json'\n\
         test ! -e '{r}/run/man8s/filter.json'\n",
        o = out_dir.display(),
        r = r.display(),
    );
    let out = Command::new("unshare")
        .args(["--net", "--", "sh", "-c", &script])
        .env("BRIDGE", env!("CARGO_BIN_EXE_man8s-bridge"))
        .env("MAN8S_ROOT", r)
        .env_remove("JOURNAL_STREAM")
        .env_remove("NOTIFY_SOCKET")
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("man8s-bridge: nftables table inet man8s applied"),
        "{err}"
    );
    assert!(
        err.contains("machine db: AllowFrom=@nowhere ignored: no such host in [Hosts]"),
        "{err}"
    );
    assert!(
        err.contains("man8s-bridge: nftables table inet man8s removed"),
        "{err}"
    );
    let read = |f: &str| -> Value {
        serde_json::from_str(&std::fs::read_to_string(out_dir.join(f)).unwrap()).unwrap()
    };
    let applied = read("applied.json");
    let comments: Vec<String> = rules(&applied).into_iter().map(|(c, _)| c).collect();
    assert!(
        comments.contains(&"db: Expose=tcp:…".to_owned()),
        "{comments:?}"
    );
    assert!(
        comments.iter().any(|c| c.starts_with("the fleet")),
        "{comments:?}"
    );
    let status = read("status.json");
    assert_eq!(status["state"], "filtered");
    assert_eq!(
        status["fleet"],
        serde_json::json!(["300:aaaa:bbbb:cccc::/64"])
    );
    let stopped = read("stopped.json");
    let tables: Vec<&Value> = stopped["nftables"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|o| o.get("table"))
        .collect();
    assert_eq!(tables.len(), 1, "{stopped}");
    assert_eq!(tables[0]["name"], "other");
    // The other table's rule is still there after our start and stop.
    assert_eq!(rules(&stopped).len(), 1);
}

#[test]
fn root_missing_nft_is_loud_and_recorded_as_unfiltered() {
    require_root();
    let root = tree("");
    let r = root.path();
    // A PATH without nft.
    let empty = r.join("bin");
    std::fs::create_dir(&empty).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_man8s-bridge"))
        .args(["--no-reload", "--filter"])
        .env("PATH", &empty)
        .env("MAN8S_ROOT", r)
        .env_remove("JOURNAL_STREAM")
        .env_remove("NOTIFY_SOCKET")
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    // The bridge is still written: a missing filter does not take the machines' network away.
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("machines are UNFILTERED: nft not found (install nftables)"),
        "{err}"
    );
    let status: Value =
        serde_json::from_str(&std::fs::read_to_string(r.join("run/man8s/filter.json")).unwrap())
            .unwrap();
    assert_eq!(status["state"], "unfiltered");
    assert!(status["reason"].as_str().unwrap().contains("nft not found"));
}
