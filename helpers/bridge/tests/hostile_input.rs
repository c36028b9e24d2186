//! The parsers of outside input never panic, whatever they are fed: yggdrasil's admin answers,
//! yggdrasil's configuration, man8s.conf, the state file, /proc/net/route.

use man8s_bridge::{apply, state, yggdrasil};
use proptest::prelude::*;

/// Strings made of the characters these formats are built from, so that the parsers get deep.
fn soup() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![
            Just("\"".to_owned()),
            Just("{".to_owned()),
            Just("}".to_owned()),
            Just(":".to_owned()),
            Just("\n".to_owned()),
            Just("#".to_owned()),
            Just("//".to_owned()),
            Just("AdminListen".to_owned()),
            Just("unix://".to_owned()),
            Just("[Bridge]".to_owned()),
            Just("[Yggdrasil]".to_owned()),
            Just("=".to_owned()),
            Just("\"status\":\"success\"".to_owned()),
            Just("\"response\":".to_owned()),
            Just("\"address\":\"201::1\"".to_owned()),
            Just("\"subnet\":\"301::/64\"".to_owned()),
            Just("\"self\":".to_owned()),
            Just(",".to_owned()),
            "[ -~]{0,8}",
            "\\PC{0,3}",
        ],
        0..40,
    )
    .prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn getself_answers(s in soup()) {
        let _ = yggdrasil::parse_getself(s.as_bytes());
    }

    #[test]
    fn getself_bytes(b in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = yggdrasil::parse_getself(&b);
    }

    #[test]
    fn yggdrasil_config(s in soup()) {
        if let Some(l) = yggdrasil::parse_admin_listen(&s) {
            let _ = yggdrasil::parse_endpoint(&l);
        }
    }

    #[test]
    fn man8s_conf(s in soup()) {
        let _ = man8s::hostconfig::HostConfig::parse(&s, "man8s.conf");
    }

    #[test]
    fn state_file(s in soup()) {
        let _ = state::parse(&s);
    }

    #[test]
    fn route_table(s in "[0-9A-Fa-f\t\n a-z]{0,300}") {
        let _ = apply::ipv4_overlaps(&s, "srvgrp0", "172.17.0.1/16".parse().unwrap());
    }
}
