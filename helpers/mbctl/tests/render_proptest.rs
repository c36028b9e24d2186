//! Property: every declaration mbctl writes reads back, through the parser the generator uses, as
//! exactly the machine it was rendered from — for arbitrary environment values (quotes,
//! backslashes, `$`, `%`, `#`, `;`, unicode, runs of spaces), commands, paths and volumes; or the
//! renderer refuses it (never a file that means something else).

use std::path::PathBuf;

use man8s::MachineName;
use man8s::declaration::parse;
use man8s::machine::{Machine, SourceFiles, Volume, VolumeSource};
use mbctl::render::render;
use proptest::prelude::*;

fn machine() -> Machine {
    let source = SourceFiles {
        main: PathBuf::from("/etc/man8s/machines/p.machine"),
        dropins: vec![],
    };
    Machine::new(
        MachineName::new("p").unwrap(),
        source,
        "docker.io/library/redis:7".into(),
    )
}

/// Printable text with the characters quoting and comment handling care about.
fn tricky() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![
            Just("\"".to_owned()),
            Just("'".to_owned()),
            Just("\\".to_owned()),
            Just("$".to_owned()),
            Just("%".to_owned()),
            Just("#".to_owned()),
            Just(";".to_owned()),
            Just("=".to_owned()),
            Just(" ".to_owned()),
            Just("  ".to_owned()),
            Just("ü".to_owned()),
            Just("語".to_owned()),
            "[a-zA-Z0-9/._:-]{1,6}",
        ],
        0..12,
    )
    .prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn environment_round_trips(vars in proptest::collection::vec(("[A-Za-z_][A-Za-z0-9_]{0,8}", tricky()), 0..6)) {
        let mut m = machine();
        m.environment = vars;
        let text = render(&m, "prop").unwrap();
        let back = parse(&m.name, &[(m.source.main.clone(), text.clone())]);
        prop_assert_eq!(back, Ok(m), "{}", text);
    }

    #[test]
    fn exec_round_trips_or_is_refused(exec in tricky()) {
        let mut m = machine();
        m.exec = Some(exec).filter(|e| !e.is_empty());
        match render(&m, "prop") {
            Ok(text) => {
                let back = parse(&m.name, &[(m.source.main.clone(), text.clone())]);
                prop_assert_eq!(back, Ok(m), "{}", text);
            }
            // Only what the syntax cannot hold: edge white space or a trailing backslash.
            Err(e) => {
                let exec = m.exec.unwrap();
                prop_assert!(exec.trim() != exec || exec.ends_with('\\'), "{}: {:?}", e, exec);
            }
        }
    }

    #[test]
    fn volumes_round_trip(paths in proptest::collection::btree_set("/[a-z0-9._-]{1,8}(/[a-z0-9._-]{1,8}){0,2}", 0..5),
                          kinds in proptest::collection::vec(0u8..3, 5), ro in proptest::collection::vec(any::<bool>(), 5)) {
        let mut m = machine();
        for (i, p) in paths.into_iter().enumerate() {
            if p.split('/').any(|c| c == "." || c == "..") {
                continue;
            }
            let source = match kinds[i] {
                0 => VolumeSource::Config,
                1 => VolumeSource::Data,
                _ => VolumeSource::Host(PathBuf::from(format!("/srv{p}"))),
            };
            m.volumes.push(Volume { container_path: p, source, read_only: ro[i] });
        }
        let text = render(&m, "prop").unwrap();
        let back = parse(&m.name, &[(m.source.main.clone(), text.clone())]);
        prop_assert_eq!(back, Ok(m), "{}", text);
    }
}
