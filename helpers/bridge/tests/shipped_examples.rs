//! The files under `networkd/` (installed to /usr/share/man8s/networkd/) document what
//! `man8s-bridge` writes; they must be exactly what the renderer produces for the README's
//! example subnet. `MAN8S_UPDATE_EXAMPLES=1 cargo nextest run -p man8s-bridge shipped` rewrites them.

use std::path::Path;

use man8s_bridge::apply::render_networkd_conf_dropin;
use man8s_bridge::networkd::{
    BridgeSpec, derive_ula, render_netdev, render_network, render_port_dropin,
};

fn check(name: &str, want: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../networkd")
        .join(name);
    if std::env::var_os("MAN8S_UPDATE_EXAMPLES").is_some() {
        std::fs::write(&path, want).unwrap();
    }
    let have = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(
        have,
        want,
        "{} differs from the renderer's output",
        path.display()
    );
}

#[test]
fn shipped_examples_match_the_renderer() {
    let spec = BridgeSpec {
        name: "srvgrp0".into(),
        ipv4: "172.17.0.1/16".parse().unwrap(),
        // The machine ID of machine-id(5)'s example.
        ula: derive_ula("b08dfa6083e7567a1921a715000001fb", "srvgrp0"),
        yggdrasil: Some("300:2e98:a4b0:1789::/64".parse().unwrap()),
        domain: "man8s".into(),
        ntp: vec![],
        timezone: None,
        mtu: man8s::hostconfig::DEFAULT_MTU,
    };
    check("10-man8s-srvgrp0.netdev", &render_netdev(&spec));
    check(
        "80-container-vb.network.d-10-man8s-mtu.conf",
        &render_port_dropin(&spec),
    );
    check("10-man8s-srvgrp0.network", &render_network(&spec));
    check(
        "networkd.conf.d-10-man8s.conf",
        &render_networkd_conf_dropin(),
    );
}

#[test]
fn man_page_configuration_example_parses() {
    let page = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/man/man8s-bridge.8.scd"),
    )
    .unwrap();
    let start = page
        .find("```\n[Bridge]")
        .expect("example in man8s-bridge.8.scd")
        + 4;
    let end = start + page[start..].find("```").unwrap();
    let cfg =
        man8s::hostconfig::HostConfig::parse(&page[start..end], "man8s-bridge.8.scd").unwrap();
    assert_eq!(cfg.bridge.name, "srvgrp0");
    assert_eq!(cfg.bridge.ntp, vec!["ntp.example.org"]);
    assert_eq!(
        cfg.yggdrasil.admin_endpoint.as_deref(),
        Some("unix:///run/yggdrasil/yggdrasil.sock")
    );
}

#[test]
fn units_pass_systemd_analyze_verify() {
    // The units as `make install` lays them out (@LIBEXECDIR@ replaced), checked by systemd itself:
    // any unknown key, bad value or missing binary makes it complain on stderr.
    let units = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../units");
    let dir = tempfile::tempdir().unwrap();
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_man8s-bridge"))
        .parent()
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    let mut files = Vec::new();
    for name in [
        "man8s-bridge.service",
        "man8s-bridge.path",
        "man8s-dns.service",
    ] {
        let text = std::fs::read_to_string(units.join(name))
            .unwrap()
            .replace("@LIBEXECDIR@", &bin_dir);
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        files.push(path);
    }
    let out = std::process::Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .args(&files)
        .output()
        .expect("systemd-analyze (package systemd) is installed");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.trim().is_empty(),
        "systemd-analyze verify: {stderr}"
    );
}
