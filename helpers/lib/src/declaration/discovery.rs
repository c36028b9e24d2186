//! Finding and reading declaration files: `NAME.machine` in `/etc` > `/run` > `/usr/lib`
//! (first found wins, a symlink to /dev/null masks), drop-ins `NAME.machine.d/*.conf` from all
//! three merged by file name, and reading each file safely (hostile input: bounded, never blocks,
//! regular files only). Everything goes through [`Paths`], so `MAN8S_ROOT` relocates it.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::Diagnostics;
use crate::ini::{Diagnostic, diag};
use crate::machine::{Machine, SourceFiles};
use crate::name::NameError;
use crate::paths::DECLARATION_DIRS;
use crate::{MachineName, Paths};

/// Suffix of declaration files.
pub const SUFFIX: &str = ".machine";
/// Declarations larger than this are refused (they are hostile input).
pub const MAX_FILE_SIZE: u64 = 1024 * 1024;

/// Why [`load`] failed.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// No `NAME.machine` in any search directory (or it is masked with a link to /dev/null).
    #[error(
        "no declaration for machine {0} (looked for {0}.machine in /etc/man8s/machines, /run/man8s/machines, /usr/lib/man8s/machines)"
    )]
    NotFound(MachineName),
    /// A file or drop-in directory could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// Canonical path.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// The declaration is invalid.
    #[error("{0}")]
    Invalid(Diagnostics),
}

/// A `*.machine` file that [`discover`] could not turn into a machine, or a directory it could
/// not read.
#[derive(Debug, thiserror::Error)]
pub enum DiscoverError {
    /// The file name is not a valid machine name.
    #[error("{}: bad machine name: {source}", file.display())]
    BadName {
        /// Canonical path of the file.
        file: PathBuf,
        /// Why.
        source: NameError,
    },
    /// A search directory could not be read.
    #[error("{}: {source}", dir.display())]
    Io {
        /// Canonical path of the directory.
        dir: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// A drop-in directory of machine `name` could not be read: its declaration is unknown, so
    /// the machine must not start with only part of it.
    #[error("{}: {source}", dir.display())]
    Dropins {
        /// The machine.
        name: MachineName,
        /// Canonical path of the drop-in directory.
        dir: PathBuf,
        /// The error.
        source: io::Error,
    },
}

impl DiscoverError {
    /// The machine this error makes unusable, when it names one.
    pub fn machine(&self) -> Option<&MachineName> {
        match self {
            Self::Dropins { name, .. } => Some(name),
            Self::BadName { .. } | Self::Io { .. } => None,
        }
    }
}

impl From<DiscoverError> for LoadError {
    fn from(e: DiscoverError) -> Self {
        match e {
            DiscoverError::BadName { file, source } => LoadError::Io {
                path: file,
                source: io::Error::new(io::ErrorKind::InvalidInput, source),
            },
            DiscoverError::Io { dir, source } | DiscoverError::Dropins { dir, source, .. } => {
                LoadError::Io { path: dir, source }
            }
        }
    }
}

/// systemd's masking: a symlink to /dev/null (or anything that is a character device).
fn is_masked(fs_path: &Path) -> bool {
    fs::metadata(fs_path)
        .map(|m| m.file_type().is_char_device())
        .unwrap_or(false)
}

/// Find the files that declare `name`: the highest-precedence `NAME.machine` and its drop-ins
/// (canonical paths, see [`dropins`]). `Ok(None)` when there is none or it is masked.
pub fn find(paths: &Paths, name: &MachineName) -> Result<Option<SourceFiles>, DiscoverError> {
    let file_name = format!("{name}{SUFFIX}");
    let Some(main) = DECLARATION_DIRS
        .iter()
        .map(|dir| Path::new(dir).join(&file_name))
        .find(|canonical| fs::symlink_metadata(paths.fs(canonical)).is_ok())
    else {
        return Ok(None);
    };
    if is_masked(&paths.fs(&main)) {
        return Ok(None);
    }
    Ok(Some(SourceFiles {
        main,
        dropins: dropins(paths, name)?,
    }))
}

/// The drop-ins of machine `name`: `NAME.machine.d/*.conf` from every search directory, merged by
/// file name (the highest-precedence directory's file wins, a link to /dev/null masks it), in
/// lexical order of file names. A drop-in directory that exists but cannot be read is an error:
/// without it the declaration is unknown.
///
/// The one drop-in discovery: [`find`] (fetch, `mbctl`) and [`discover_sources`] (generator) both
/// use it.
pub fn dropins(paths: &Paths, name: &MachineName) -> Result<Vec<PathBuf>, DiscoverError> {
    let mut found = BTreeMap::new();
    for dir in DECLARATION_DIRS {
        let canonical_dir = Path::new(dir).join(format!("{name}{SUFFIX}.d"));
        collect_dropins(&paths.fs(&canonical_dir), &canonical_dir, &mut found).map_err(
            |source| DiscoverError::Dropins {
                name: name.clone(),
                dir: canonical_dir,
                source,
            },
        )?;
    }
    Ok(found.into_values().flatten().collect())
}

/// The drop-ins `FILE.d/*.conf` of a declaration file named directly (`mbctl verify FILE`), by
/// the same rules as [`dropins`] for one directory; paths as given.
pub fn dropins_next_to(file: &Path) -> io::Result<Vec<PathBuf>> {
    let mut dir = file.as_os_str().to_owned();
    dir.push(".d");
    let dir = PathBuf::from(dir);
    let mut found = BTreeMap::new();
    collect_dropins(&dir, &dir, &mut found)?;
    Ok(found.into_values().flatten().collect())
}

/// Add the `*.conf` files of one drop-in directory to `found` (file name → canonical path, or
/// `None` when masked), unless a directory of higher precedence already had that name. A
/// directory that does not exist has none.
fn collect_dropins(
    fs_dir: &Path,
    canonical_dir: &Path,
    found: &mut BTreeMap<String, Option<PathBuf>>,
) -> io::Result<()> {
    let entries = match fs::read_dir(fs_dir) {
        Ok(e) => e,
        Err(e)
            if e.kind() == io::ErrorKind::NotFound || e.kind() == io::ErrorKind::NotADirectory =>
        {
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let Some(fname) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if !fname.ends_with(".conf") || fname.starts_with('.') || found.contains_key(&fname) {
            continue;
        }
        // Only a symlink (or a device node) can be a mask; a regular file needs no stat.
        let masked = !entry.file_type().is_ok_and(|t| t.is_file()) && is_masked(&entry.path());
        found.insert(fname.clone(), (!masked).then(|| canonical_dir.join(&fname)));
    }
    Ok(())
}

/// Read one declaration file (`fs_path` on this tree, `canonical` for messages). Opened with
/// `O_NONBLOCK`, so a FIFO or device never blocks the reader (a hung generator loses every
/// machine's units at boot); anything but a regular file, a file over [`MAX_FILE_SIZE`] or one
/// that is not UTF-8 is a [`Diagnostic`] naming it. `Err` only for I/O errors (e.g. not found).
pub fn read_file(fs_path: &Path, canonical: &Path) -> io::Result<Result<String, Diagnostic>> {
    let not_regular = |t: fs::FileType| {
        Ok(Err(diag(
            canonical,
            0,
            None,
            format!(
                "not a regular file ({})",
                crate::untrusted::describe_type(&t)
            ),
        )))
    };
    let file = match fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NONBLOCK | nix::libc::O_NOCTTY)
        .open(fs_path)
    {
        Ok(f) => f,
        // A socket cannot be opened at all (ENXIO): say what it is.
        Err(e) => match fs::metadata(fs_path) {
            Ok(m) if !m.is_file() => return not_regular(m.file_type()),
            _ => return Err(e),
        },
    };
    let file_type = file.metadata()?.file_type();
    if !file_type.is_file() {
        return not_regular(file_type);
    }
    let mut bytes = Vec::new();
    file.take(MAX_FILE_SIZE + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_FILE_SIZE {
        return Ok(Err(diag(
            canonical,
            0,
            None,
            format!("file is larger than {MAX_FILE_SIZE} bytes"),
        )));
    }
    Ok(String::from_utf8(bytes).map_err(|e| {
        let at = e.utf8_error().valid_up_to();
        let line = e.as_bytes()[..at].iter().filter(|&&b| b == b'\n').count() + 1;
        diag(canonical, line, None, "not valid UTF-8")
    }))
}

/// Read every file of a declaration (main first, then drop-ins): (path, text) pairs for
/// [`super::parse`], or every file-level problem. `fs_of` maps a listed path to the file to open.
pub fn read_files(
    files: &[PathBuf],
    fs_of: impl Fn(&Path) -> PathBuf,
) -> Result<Vec<(PathBuf, String)>, LoadError> {
    let mut texts = Vec::new();
    let mut bad = Vec::new();
    for canonical in files {
        match read_file(&fs_of(canonical), canonical) {
            Ok(Ok(text)) => texts.push((canonical.clone(), text)),
            Ok(Err(diag)) => bad.push(diag),
            Err(source) => {
                return Err(LoadError::Io {
                    path: canonical.clone(),
                    source,
                });
            }
        }
    }
    if bad.is_empty() {
        Ok(texts)
    } else {
        Err(LoadError::Invalid(Diagnostics(bad)))
    }
}

/// Find, read and parse the declaration of `name`.
pub fn load(paths: &Paths, name: &MachineName) -> Result<Machine, LoadError> {
    load_fingerprinted(paths, name).map(|(m, _)| m)
}

/// Like [`load`], with the [`fingerprint`] of the files it read.
pub fn load_fingerprinted(
    paths: &Paths,
    name: &MachineName,
) -> Result<(Machine, String), LoadError> {
    let source = find(paths, name)?.ok_or_else(|| LoadError::NotFound(name.clone()))?;
    load_sources_fingerprinted(paths, name, &source)
}

/// Read and parse the files [`find`] or [`discover_sources`] gave for `name`.
pub fn load_sources(
    paths: &Paths,
    name: &MachineName,
    source: &SourceFiles,
) -> Result<Machine, LoadError> {
    load_sources_fingerprinted(paths, name, source).map(|(m, _)| m)
}

/// Like [`load_sources`], with the [`fingerprint`] of the files it read.
pub fn load_sources_fingerprinted(
    paths: &Paths,
    name: &MachineName,
    source: &SourceFiles,
) -> Result<(Machine, String), LoadError> {
    let list: Vec<PathBuf> = std::iter::once(&source.main)
        .chain(&source.dropins)
        .cloned()
        .collect();
    let files = read_files(&list, |c| paths.fs(c))?;
    let machine = super::parse(name, &files).map_err(LoadError::Invalid)?;
    Ok((machine, fingerprint(&files)))
}

/// What a declaration was read from, as `sha256:HEX` over each file's path and text in order:
/// the generator records it in the unit drop-in, and `man8s-fetch` refuses to act on a
/// declaration whose files changed since (an edit without `systemctl daemon-reload` would give
/// a rootfs and volumes that follow the new file and a `.nspawn` that follows the old one).
pub fn fingerprint(files: &[(PathBuf, String)]) -> String {
    use sha2::{Digest, Sha256};
    use std::fmt::Write as _;
    let mut h = Sha256::new();
    for (path, text) in files {
        let path = path.as_os_str().as_encoded_bytes();
        h.update((path.len() as u64).to_le_bytes());
        h.update(path);
        h.update((text.len() as u64).to_le_bytes());
        h.update(text.as_bytes());
    }
    let mut out = String::from("sha256:");
    for b in h.finalize() {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// All declared machines, sorted by name: one entry per distinct `*.machine` file name across the
/// search directories (masked ones left out), or an error for a file name that is not a valid
/// machine name or a directory that cannot be read.
pub fn discover(paths: &Paths) -> Vec<Result<MachineName, DiscoverError>> {
    discover_sources(paths)
        .into_iter()
        .map(|r| match r {
            Ok((name, _)) => Ok(name),
            Err(e) => match e.machine() {
                Some(name) => Ok(name.clone()),
                None => Err(e),
            },
        })
        .collect()
}

/// Like [`discover`], with each machine's files (as [`find`] gives them), found with one listing
/// of each search directory: what the generator uses for many machines at once. A machine whose
/// drop-ins cannot be listed is a [`DiscoverError::Dropins`].
pub fn discover_sources(paths: &Paths) -> Vec<Result<(MachineName, SourceFiles), DiscoverError>> {
    // File name → (canonical main file, its file type), highest precedence first.
    let mut mains: BTreeMap<String, (PathBuf, fs::FileType)> = BTreeMap::new();
    let mut out = Vec::new();
    for dir in DECLARATION_DIRS {
        let entries = match fs::read_dir(paths.fs(dir)) {
            Ok(e) => e,
            Err(e)
                if e.kind() == io::ErrorKind::NotFound
                    || e.kind() == io::ErrorKind::NotADirectory =>
            {
                continue;
            }
            Err(source) => {
                out.push(Err(DiscoverError::Io {
                    dir: dir.into(),
                    source,
                }));
                continue;
            }
        };
        for entry in entries {
            let entry = match entry {
                Ok(e) => e,
                Err(source) => {
                    out.push(Err(DiscoverError::Io {
                        dir: dir.into(),
                        source,
                    }));
                    break;
                }
            };
            let Some(fname) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if fname.starts_with('.') || !fname.ends_with(SUFFIX) || mains.contains_key(&fname) {
                continue;
            }
            let Ok(ft) = entry.file_type() else { continue };
            mains.insert(fname.clone(), (Path::new(dir).join(&fname), ft));
        }
    }

    for (fname, (main, ft)) in mains {
        // Only a symlink (or a device node) can be a mask; a regular file needs no stat.
        if !ft.is_file() && is_masked(&paths.fs(&main)) {
            continue;
        }
        let stem = &fname[..fname.len() - SUFFIX.len()];
        let name = match MachineName::new(stem) {
            Ok(n) => n,
            Err(source) => {
                out.push(Err(DiscoverError::BadName { file: main, source }));
                continue;
            }
        };
        out.push(dropins(paths, &name).map(|dropins| (name, SourceFiles { main, dropins })));
    }
    out
}
