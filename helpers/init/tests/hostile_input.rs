//! Property tests: the parsers that see input from outside the init (DHCP servers on the bridge,
//! the kernel, command strings and environment files written by users) never panic, and the
//! shell splitter undoes shell quoting.

use man8s::words::shell;
use man8s_init::{dhcp, netlink, passwd};
use proptest::prelude::*;

/// Quote a word for `sh` with single quotes.
fn sh_quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', r"'\''"))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn dhcp_replies_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..700), xid in any::<u32>()) {
        let _ = dhcp::parse_reply(&bytes, xid, &[2, 0, 0, 0, 0, 1]);
    }

    #[test]
    fn dhcp_replies_with_a_valid_header_never_panic(tail in proptest::collection::vec(any::<u8>(), 0..400)) {
        // A plausible BOOTREPLY header for xid 7 and our MAC, then random options.
        let mut b = vec![0u8; 236];
        b[0] = 2;
        b[1] = 1;
        b[2] = 6;
        b[4..8].copy_from_slice(&7u32.to_be_bytes());
        b[28..34].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
        b.extend_from_slice(&[99, 130, 83, 99]);
        b.extend_from_slice(&tail);
        let _ = dhcp::parse_reply(&b, 7, &[2, 0, 0, 0, 0, 1]);
    }

    #[test]
    fn netlink_replies_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = netlink::parse_replies(&bytes);
    }

    #[test]
    fn passwd_and_group_never_panic(text in "\\PC*") {
        let p = passwd::parse_passwd(&text);
        let g = passwd::parse_group(&text);
        let _ = passwd::resolve("app", &p, &g);
        let _ = passwd::resolve("1000:1000", &p, &g);
    }

    #[test]
    fn split_never_panics(cmd in "\\PC*") {
        let _ = shell::split(&cmd);
    }

    #[test]
    fn split_undoes_single_quoting(words in proptest::collection::vec("\\PC*", 1..6)) {
        let cmd = words.iter().map(|w| sh_quote(w)).collect::<Vec<_>>().join(" ");
        prop_assert_eq!(shell::split(&cmd).unwrap(), words);
    }

    #[test]
    fn split_undoes_backslash_quoting(words in proptest::collection::vec("[^\\n]+", 1..6)) {
        let cmd = words
            .iter()
            .map(|w| w.chars().flat_map(|c| ['\\', c]).collect::<String>())
            .collect::<Vec<_>>()
            .join("\t");
        prop_assert_eq!(shell::split(&cmd).unwrap(), words);
    }
}
