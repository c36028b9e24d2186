//! `verify [FILE…]`: lint declarations with `man8s::declaration` (the generator's own parser).
//! Prints one `FILE:LINE: Key=: why` line per problem on stdout; exit 1 when there is any.

use std::path::{Path, PathBuf};

use anyhow::Result;
use man8s::declaration::{self, LoadError};
use man8s::{MachineName, Paths};

use crate::{EXIT_OK, EXIT_RUNTIME};

/// Problems in one declaration file given on the command line (with its `FILE.d/*.conf`
/// drop-ins), as printable lines; empty when it is valid.
pub fn check_file(path: &Path) -> Vec<String> {
    let display = path.display();
    let Some(file_name) = path.file_name().and_then(|f| f.to_str()) else {
        return vec![format!("{display}: not a file name")];
    };
    let Some(stem) = file_name.strip_suffix(declaration::SUFFIX) else {
        return vec![format!(
            "{display}: not a {} file (the generator would ignore it)",
            declaration::SUFFIX
        )];
    };
    let name = match MachineName::new(stem) {
        Ok(n) => n,
        Err(e) => return vec![format!("{display}: bad machine name: {e}")],
    };
    let mut files = Vec::new();
    let mut problems = Vec::new();
    let mut dropins: Vec<PathBuf> = std::fs::read_dir(format!("{}.d", path.display()))
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "conf"))
                .filter(|p| {
                    !p.file_name()
                        .unwrap_or_default()
                        .to_string_lossy()
                        .starts_with('.')
                })
                .collect()
        })
        .unwrap_or_default();
    dropins.sort();
    for p in std::iter::once(path.to_owned()).chain(dropins) {
        match std::fs::metadata(&p) {
            Ok(m) if m.len() > declaration::MAX_FILE_SIZE => {
                problems.push(format!(
                    "{}: file is larger than {} bytes",
                    p.display(),
                    declaration::MAX_FILE_SIZE
                ));
                continue;
            }
            _ => {}
        }
        match std::fs::read(&p) {
            Ok(bytes) => match String::from_utf8(bytes) {
                Ok(text) => files.push((p, text)),
                Err(_) => problems.push(format!("{}: not valid UTF-8", p.display())),
            },
            Err(e) => problems.push(format!("{}: {e}", p.display())),
        }
    }
    if problems.is_empty()
        && let Err(d) = declaration::parse(&name, &files)
    {
        problems.extend(d.0.iter().map(ToString::to_string));
    }
    problems
}

/// Problems in every declaration on this tree (`MAN8S_ROOT`), and how many were checked.
pub fn check_all(paths: &Paths) -> (usize, Vec<String>) {
    let mut problems = Vec::new();
    let mut checked = 0;
    for d in declaration::discover(paths) {
        checked += 1;
        match d {
            Err(e) => problems.push(e.to_string()),
            Ok(name) => match declaration::load(paths, &name) {
                Ok(_) => {}
                Err(LoadError::Invalid(d)) => problems.extend(d.0.iter().map(ToString::to_string)),
                Err(e) => problems.push(e.to_string()),
            },
        }
    }
    (checked, problems)
}

/// The command.
pub fn verify(files: &[PathBuf]) -> Result<u8> {
    let (checked, problems) = if files.is_empty() {
        check_all(&Paths::from_env())
    } else {
        (
            files.len(),
            files.iter().flat_map(|f| check_file(f)).collect(),
        )
    };
    for p in &problems {
        println!("{p}");
    }
    if checked == 0 {
        eprintln!(
            "mbctl: no declarations found in {}",
            man8s::paths::DECLARATION_DIRS.join(", ")
        );
    }
    Ok(if problems.is_empty() {
        EXIT_OK
    } else {
        EXIT_RUNTIME
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_problems_carry_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("web.machine");
        std::fs::write(&good, "[Machine]\nImage=docker.io/library/redis:7\n").unwrap();
        assert!(check_file(&good).is_empty());
        let bad = dir.path().join("bad.machine");
        std::fs::write(&bad, "[Machine]\nImage=redis\nVolumee=/x:data\n").unwrap();
        let p = check_file(&bad);
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].starts_with(&format!("{}:3: ", bad.display())), "{p:?}");
        assert!(p[0].contains("did you mean Volume=?"), "{p:?}");
        // Drop-ins next to the file are applied.
        std::fs::create_dir(dir.path().join("web.machine.d")).unwrap();
        std::fs::write(
            dir.path().join("web.machine.d/10-port.conf"),
            "[Machine]\nPort=notaport\n",
        )
        .unwrap();
        let p = check_file(&good);
        assert!(p.len() == 1 && p[0].contains("10-port.conf:2: "), "{p:?}");
        assert!(check_file(&dir.path().join("x.conf"))[0].contains("not a .machine file"));
        assert!(check_file(&dir.path().join("missing.machine"))[0].contains("missing.machine: "));
    }
}
