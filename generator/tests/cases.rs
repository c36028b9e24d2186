//! Golden and focused cases under `tests/cases/NN-name/`.
//!
//! Each case directory is a relocated root (`etc/`, `run/`, `usr/`, …) given to the real
//! `man8s-generator` binary with `MAN8S_ROOT`, output dir `out/`. Then:
//! - if the case has `expected/`, the trees `out/` and `run/systemd/nspawn/` must equal
//!   `expected/out/` and `expected/run/systemd/nspawn/` exactly (contents and symlink targets), and
//!   `expected/stderr`, when present, the generator's stderr (`MAN8S_UPDATE_GOLDEN=1` rewrites them);
//! - every `## assert-…` line in a declaration or drop-in is checked against that machine's output
//!   (Quadlet style, see `check_assertion`);
//! - a second run leaves the tree byte-for-byte unchanged (idempotence).

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use man8s::words::systemd::{self, Escapes};

const GEN: &str = env!("CARGO_BIN_EXE_man8s-generator");

/// path relative to the root → file contents or `-> target` for symlinks.
type Tree = BTreeMap<String, String>;

fn snapshot(base: &Path, dir: &Path, tree: &mut Tree) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries {
        let e = e.unwrap();
        let p = e.path();
        let rel = p.strip_prefix(base).unwrap().to_string_lossy().into_owned();
        let ft = e.file_type().unwrap();
        if ft.is_symlink() {
            tree.insert(rel, format!("-> {}", fs::read_link(&p).unwrap().display()));
        } else if ft.is_dir() {
            snapshot(base, &p, tree);
        } else {
            tree.insert(rel, fs::read_to_string(&p).unwrap());
        }
    }
}

fn output_tree(root: &Path) -> Tree {
    let mut t = Tree::new();
    snapshot(root, &root.join("out"), &mut t);
    snapshot(root, &root.join("run/systemd/nspawn"), &mut t);
    t
}

fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let name = e.file_name();
        let (src, dst) = (e.path(), to.join(&name));
        let ft = e.file_type().unwrap();
        if ft.is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(&src).unwrap(), &dst).unwrap();
        } else if ft.is_dir() {
            copy_tree(&src, &dst);
        } else {
            fs::copy(&src, &dst).unwrap();
        }
    }
}

fn run_generator(root: &Path) -> String {
    let out = root.join("out");
    let o = Command::new(GEN)
        .args([&out, &root.join("early"), &root.join("late")])
        .env("MAN8S_ROOT", root)
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap();
    let stderr = String::from_utf8(o.stderr).unwrap();
    assert!(
        o.status.success(),
        "generator failed: {:?}\n{stderr}",
        o.status
    );
    stderr
}

// ---------------------------------------------------------------------------------------------
// Reading generated INI back

/// `(section, key) → values` in order.
fn ini(text: &str) -> BTreeMap<(String, String), Vec<String>> {
    let mut out: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    let mut section = String::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(s) = line.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
            section = s.to_owned();
            continue;
        }
        let (k, v) = line.split_once('=').expect("generated line is Key=Value");
        let entry = out.entry((section.clone(), k.to_owned())).or_default();
        if v.is_empty() {
            entry.clear(); // systemd's list reset
        } else {
            entry.push(v.to_owned());
        }
    }
    out
}

/// nspawn's `Parameters=` split: `extract_first_word(EXTRACT_UNQUOTE|EXTRACT_RETAIN_ESCAPE)`.
fn split_parameters(value: &str) -> Vec<String> {
    systemd::split(value, Escapes::Retain).unwrap_or_else(|e| panic!("Parameters={value}: {e}"))
}

/// A unit file's `Environment=` split (`EXTRACT_UNQUOTE|EXTRACT_CUNESCAPE`, then specifiers:
/// `%%` → `%`).
fn split_unit_words(value: &str) -> Vec<String> {
    systemd::split(value, Escapes::CUnescape)
        .and_then(|words| {
            words
                .iter()
                .map(|w| systemd::unescape_specifiers(w))
                .collect()
        })
        .unwrap_or_else(|e| panic!("{value}: {e}"))
}

/// Words of an assertion line: whitespace-separated, `"…"` groups, `\t`, `\\`, `\"` escapes.
fn assertion_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_quote = false;
    let mut has = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                cur.push(match chars.next() {
                    Some('t') => '\t',
                    Some(other) => other,
                    None => '\\',
                });
                has = true;
            }
            '"' => {
                in_quote = !in_quote;
                has = true;
            }
            c if c.is_whitespace() && !in_quote => {
                if has {
                    words.push(std::mem::take(&mut cur));
                    has = false;
                }
            }
            c => {
                cur.push(c);
                has = true;
            }
        }
    }
    if has {
        words.push(cur);
    }
    words
}

// ---------------------------------------------------------------------------------------------
// Assertions

struct Assertion {
    machine: String,
    source: PathBuf,
    words: Vec<String>,
}

fn collect_assertions(case: &Path) -> Vec<Assertion> {
    let mut out = Vec::new();
    let mut files = Tree::new();
    for top in ["etc", "run", "usr"] {
        snapshot(case, &case.join(top), &mut files);
    }
    for (rel, text) in files {
        let p = Path::new(&rel);
        let fname = p.file_name().unwrap().to_string_lossy().into_owned();
        let machine = if let Some(stem) = fname.strip_suffix(".machine") {
            stem.to_owned()
        } else if fname.ends_with(".conf") {
            let parent = p
                .parent()
                .unwrap()
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned();
            match parent.strip_suffix(".machine.d") {
                Some(m) => m.to_owned(),
                None => continue,
            }
        } else {
            continue;
        };
        for line in text.lines() {
            if let Some(rest) = line.trim().strip_prefix("## ") {
                out.push(Assertion {
                    machine: machine.clone(),
                    source: p.to_owned(),
                    words: assertion_words(rest),
                });
            }
        }
    }
    out
}

fn check_assertion(root: &Path, stderr: &str, a: &Assertion) -> Result<(), String> {
    let nspawn_path = root
        .join("run/systemd/nspawn")
        .join(format!("{}.nspawn", a.machine));
    let dropin_path = root
        .join("out")
        .join(format!("man8@{}.service.d/50-man8s.conf", a.machine));
    let nspawn =
        || fs::read_to_string(&nspawn_path).map_err(|e| format!("{}: {e}", nspawn_path.display()));
    let dropin =
        || fs::read_to_string(&dropin_path).map_err(|e| format!("{}: {e}", dropin_path.display()));
    let w = &a.words;
    let want_values = |from: usize| w[from..].to_vec();
    let values = |text: &str, section: &str, key: &str| {
        ini(text)
            .get(&(section.to_owned(), key.to_owned()))
            .cloned()
            .unwrap_or_default()
    };
    let expect_eq = |got: Vec<String>, want: Vec<String>| {
        if got == want {
            Ok(())
        } else {
            Err(format!("got {got:?}, want {want:?}"))
        }
    };
    match w[0].as_str() {
        "assert-key-is" => expect_eq(values(&nspawn()?, &w[1], &w[2]), want_values(3)),
        "assert-dropin-key-is" => {
            let mut got = values(&dropin()?, &w[1], &w[2]);
            if w[2] == "Environment" {
                // The declaration's fingerprint covers the file holding this very line, so it
                // cannot be asserted here; the golden `expected/` trees and the focused test
                // `fingerprint_follows_the_declaration_files` check it.
                got = got
                    .iter()
                    .flat_map(|v| split_unit_words(v))
                    .filter(|v| !v.starts_with("MAN8S_DECLARATION_SHA256="))
                    .collect();
            }
            expect_eq(got, want_values(3))
        }
        "assert-parameters" => {
            let params = values(&nspawn()?, "Exec", "Parameters");
            let got = params.iter().flat_map(|p| split_parameters(p)).collect();
            expect_eq(got, want_values(1))
        }
        "assert-dropin-contains" => {
            let d = dropin()?;
            if d.contains(&w[1]) {
                Ok(())
            } else {
                Err(format!("drop-in does not contain {:?}:\n{d}", w[1]))
            }
        }
        "assert-stderr-contains" => {
            if stderr.contains(&w[1]) {
                Ok(())
            } else {
                Err(format!("stderr does not contain {:?}:\n{stderr}", w[1]))
            }
        }
        "assert-stderr-empty" => {
            if stderr.is_empty() {
                Ok(())
            } else {
                Err(format!("stderr is not empty:\n{stderr}"))
            }
        }
        "assert-failed" => {
            let d = dropin()?;
            let pre = values(&d, "Service", "ExecStartPre");
            if nspawn_path.exists() {
                return Err("a failed machine has a .nspawn file".into());
            }
            if pre.len() != 1 || !pre[0].starts_with("/bin/sh -c ") {
                return Err(format!("ExecStartPre= is not the failing command: {pre:?}"));
            }
            expect_eq(values(&d, "Service", "Restart"), vec!["no".into()])
        }
        "assert-no-nspawn" => {
            if nspawn_path.exists() {
                Err("the .nspawn file exists".into())
            } else {
                Ok(())
            }
        }
        "assert-wanted-by" => {
            let link = root
                .join("out")
                .join(format!("{}.wants/man8@{}.service", w[1], a.machine));
            match fs::read_link(&link) {
                Ok(t) if t == Path::new("/usr/lib/systemd/system/man8@.service") => Ok(()),
                other => Err(format!("{}: {other:?}", link.display())),
            }
        }
        "assert-not-wanted" => {
            let mut t = Tree::new();
            snapshot(root, &root.join("out"), &mut t);
            let hits: Vec<_> = t
                .keys()
                .filter(|k| k.ends_with(&format!(".wants/man8@{}.service", a.machine)))
                .collect();
            if hits.is_empty() {
                Ok(())
            } else {
                Err(format!("enabled by {hits:?}"))
            }
        }
        other => Err(format!("unknown assertion {other}")),
    }
}

// ---------------------------------------------------------------------------------------------

fn case_dirs() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cases");
    let mut cases: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    cases.sort();
    cases
}

fn run_case(case: &Path) -> Result<usize, String> {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    for e in fs::read_dir(case).unwrap() {
        let e = e.unwrap();
        if e.file_name() != "expected" {
            let dst = root.join(e.file_name());
            if e.file_type().unwrap().is_dir() {
                copy_tree(&e.path(), &dst);
            } else {
                fs::copy(e.path(), dst).unwrap();
            }
        }
    }
    let stderr = run_generator(root);
    let produced = output_tree(root);
    let mut checks = 0;

    let expected_dir = case.join("expected");
    if expected_dir.is_dir() {
        if std::env::var_os("MAN8S_UPDATE_GOLDEN").is_some() {
            fs::remove_dir_all(&expected_dir).unwrap();
            fs::create_dir_all(&expected_dir).unwrap();
            for (rel, content) in &produced {
                let p = expected_dir.join(rel);
                fs::create_dir_all(p.parent().unwrap()).unwrap();
                match content.strip_prefix("-> ") {
                    Some(target) => std::os::unix::fs::symlink(target, &p).unwrap(),
                    None => fs::write(&p, content).unwrap(),
                }
            }
            fs::write(expected_dir.join("stderr"), &stderr).unwrap();
        }
        let mut expected = Tree::new();
        snapshot(&expected_dir, &expected_dir.join("out"), &mut expected);
        snapshot(
            &expected_dir,
            &expected_dir.join("run/systemd/nspawn"),
            &mut expected,
        );
        if expected != produced {
            let mut diff = String::new();
            for k in expected
                .keys()
                .chain(produced.keys())
                .collect::<std::collections::BTreeSet<_>>()
            {
                match (expected.get(k), produced.get(k)) {
                    (Some(a), Some(b)) if a == b => {}
                    (a, b) => {
                        diff.push_str(&format!("--- {k}\nexpected: {a:?}\nproduced: {b:?}\n"))
                    }
                }
            }
            return Err(format!("output differs from expected/:\n{diff}"));
        }
        checks += 1;
        if let Ok(want) = fs::read_to_string(expected_dir.join("stderr")) {
            if want != stderr {
                return Err(format!(
                    "stderr differs:\nexpected:\n{want}\nproduced:\n{stderr}"
                ));
            }
            checks += 1;
        }
    }

    for a in collect_assertions(case) {
        check_assertion(root, &stderr, &a)
            .map_err(|e| format!("{}: ## {}: {e}", a.source.display(), a.words.join(" ")))?;
        checks += 1;
    }

    // Idempotence: a second run changes nothing.
    let stderr2 = run_generator(root);
    let again = output_tree(root);
    if again != produced {
        return Err("a second run changed the output".into());
    }
    if stderr2 != stderr {
        return Err(format!(
            "a second run logged differently:\n{stderr}\n---\n{stderr2}"
        ));
    }
    if checks == 0 {
        return Err("case checks nothing (add expected/ or ## assertions)".into());
    }
    Ok(checks)
}

#[test]
fn golden_and_focused_cases() {
    let cases = case_dirs();
    assert!(cases.len() >= 5, "cases missing");
    let mut failures = Vec::new();
    for case in &cases {
        match run_case(case) {
            Ok(n) => eprintln!(
                "ok   {} ({n} checks)",
                case.file_name().unwrap().to_string_lossy()
            ),
            Err(e) => failures.push(format!(
                "FAIL {}: {e}",
                case.file_name().unwrap().to_string_lossy()
            )),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn parameters_splitter_matches_systemd_examples() {
    // The splitter above is what the assertions trust; pin it on systemd's documented behaviour.
    assert_eq!(
        split_parameters(r#"a "b c" 'd"e' f"g"'h' \x"#),
        ["a", "b c", "d\"e", "fgh", "\\x"]
    );
}
