//! Property test (unit tier, runs in CI): random layers of files, dirs, symlinks, hard links, fifos, whiteouts
//! and opaque markers with names full of `..`, `/`, `.` and symlink targets pointing out of the root. Whatever
//! the outcome (applied or refused), nothing outside the root changes and nothing panics.

mod unpack_support;

use proptest::prelude::*;
use unpack_support::{Layer, Scratch};

/// Name components: mostly ordinary names (so that symlinks get written through), some hostile ones.
const NAMES: &[&str] = &["a", "b", "up", "outside", "secret"];
const HOSTILE_NAMES: &[&str] = &[
    "..",
    ".",
    "",
    ".wh.a",
    ".wh.outside",
    ".wh..wh..opq",
    ".wh..",
    "canary",
    "root",
];

/// Symlink and hard link targets; `SCRATCH` is replaced by the scratch dir (an absolute host path).
const TARGETS: &[&str] = &[
    "a",
    "a/b",
    "..",
    "../..",
    "../../outside",
    "../../outside/secret",
    "/",
    "/..",
    "/../../outside",
    "SCRATCH",
    "SCRATCH/outside",
    "SCRATCH/outside/secret",
    "/proc/self/root",
    "/proc/self/cwd",
    "up/../../..",
];

#[derive(Debug, Clone)]
enum Op {
    File(String),
    Dir(String),
    Symlink(String, String),
    Hardlink(String, String),
    Fifo(String),
}

fn path() -> impl Strategy<Value = String> {
    let component =
        prop_oneof![4 => prop::sample::select(NAMES), 1 => prop::sample::select(HOSTILE_NAMES)];
    (
        prop::bool::weighted(0.1),
        prop::collection::vec(component, 1..4),
    )
        .prop_map(|(absolute, parts)| {
            format!("{}{}", if absolute { "/" } else { "" }, parts.join("/"))
        })
}

fn op() -> impl Strategy<Value = Op> {
    let target = prop::sample::select(TARGETS).prop_map(str::to_owned);
    prop_oneof![
        3 => path().prop_map(Op::File),
        2 => path().prop_map(Op::Dir),
        3 => (path(), target.clone()).prop_map(|(p, t)| Op::Symlink(p, t)),
        2 => (path(), prop_oneof![target, path()]).prop_map(|(p, t)| Op::Hardlink(p, t)),
        1 => path().prop_map(Op::Fifo),
    ]
}

fn build(ops: &[Op], scratch: &str) -> Vec<u8> {
    let fix = |t: &str| t.replace("SCRATCH", scratch);
    ops.iter()
        .fold(Layer::new(), |layer, op| match op {
            Op::File(p) => layer.file(p, b"evil"),
            Op::Dir(p) => layer.dir(p),
            Op::Symlink(p, t) => layer.symlink(p, &fix(t)),
            Op::Hardlink(p, t) => layer.hardlink(p, &fix(t)),
            Op::Fifo(p) => layer.fifo(p, 0o644),
        })
        .bytes()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn random_layers_never_escape_the_root(layers in prop::collection::vec(prop::collection::vec(op(), 1..12), 1..4)) {
        let s = Scratch::new();
        let scratch = s.path().display().to_string();
        for ops in &layers {
            // Refusals are fine (and expected for most hostile names); escapes and panics are not.
            let _ = s.apply(build(ops, &scratch));
        }
        s.assert_outside_untouched();
    }
}
