//! The /etc/man8s/man8s.conf the package ships must parse, and must change nothing: every value in
//! it is a commented-out default.

use man8s::hostconfig::HostConfig;

#[test]
fn shipped_man8s_conf_is_all_defaults() {
    let text = include_str!("../../../packaging/etc/man8s.conf");
    let parsed =
        HostConfig::parse(text, "packaging/etc/man8s.conf").expect("shipped man8s.conf parses");
    assert_eq!(parsed, HostConfig::default());
    // The defaults it documents are the real ones.
    assert!(text.contains(&format!("#Name={}\n", parsed.bridge.name)));
}
