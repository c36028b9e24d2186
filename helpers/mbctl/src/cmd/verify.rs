//! `verify [FILE…]`: lint declarations with `man8s::declaration` (the generator's own parser).
//! Prints one `FILE:LINE: Key=: why` line per problem on stdout; exit 1 when there is any. Then,
//! as notes that do not change the exit status, every line of the machines' man8env.env whose
//! meaning differs between the literal and the python-mbctl reading (`EnvironmentCompat=`).

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
    let dropins = match declaration::discovery::dropins_next_to(path) {
        Ok(d) => d,
        Err(e) => return vec![format!("{display}.d: {e}")],
    };
    let list: Vec<PathBuf> = std::iter::once(path.to_owned()).chain(dropins).collect();
    let files = match declaration::discovery::read_files(&list, Path::to_owned) {
        Ok(files) => files,
        Err(LoadError::Invalid(d)) => return d.0.iter().map(ToString::to_string).collect(),
        Err(e) => return vec![e.to_string()],
    };
    let mut problems = Vec::new();
    if let Err(d) = declaration::parse(&name, &files) {
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

/// Notes on machine `name`'s man8env.env: the lines the two `EnvironmentCompat=` modes read
/// differently (variables from outside the file count as unset here).
pub fn env_notes(paths: &Paths, name: &MachineName) -> Vec<String> {
    let Ok(text) = std::fs::read_to_string(paths.env_file(name)) else {
        return Vec::new();
    };
    let display = Paths::config_dir_canonical(name).join(man8s::paths::ENV_FILE_NAME);
    crate::cmd::migrate::env_mode_report(&display.display().to_string(), &text, &[])
        .into_iter()
        .map(|r| format!("note: {r}"))
        .collect()
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
    let paths = Paths::from_env();
    let names: Vec<MachineName> = if files.is_empty() {
        declaration::discover(&paths)
            .into_iter()
            .flatten()
            .collect()
    } else {
        files
            .iter()
            .filter_map(|f| f.file_name()?.to_str()?.strip_suffix(declaration::SUFFIX))
            .filter_map(|stem| MachineName::new(stem).ok())
            .collect()
    };
    for name in &names {
        for note in env_notes(&paths, name) {
            println!("{note}");
        }
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

    /// A FIFO named on the command line or as a drop-in is refused with a line naming it, and
    /// never blocks (issue 10 item 8).
    #[test]
    fn fifos_are_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("pipe.machine");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
        let good = dir.path().join("web.machine");
        std::fs::write(&good, "[Machine]\nImage=docker.io/library/redis:7\n").unwrap();
        std::fs::create_dir(dir.path().join("web.machine.d")).unwrap();
        let dropin = dir.path().join("web.machine.d/10-x.conf");
        nix::unistd::mkfifo(&dropin, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || tx.send((check_file(&fifo), check_file(&good))));
        let (p, q) = rx
            .recv_timeout(std::time::Duration::from_secs(20))
            .expect("verify blocked on a FIFO");
        let fifo = dir.path().join("pipe.machine");
        assert_eq!(
            p,
            [format!("{}: not a regular file (a FIFO)", fifo.display())]
        );
        assert_eq!(
            q,
            [format!("{}: not a regular file (a FIFO)", dropin.display())]
        );
    }
}
