//! Machine declarations: `NAME.machine` files in systemd's INI dialect, found in
//! `/etc/man8s/machines` > `/run/man8s/machines` > `/usr/lib/man8s/machines` (first found wins),
//! plus drop-ins `NAME.machine.d/*.conf` from all three directories, merged by file name (a drop-in
//! in /etc masks a same-named one in /run or /usr/lib) and applied in lexical order.
//!
//! [`parse`] is pure (text in, [`Machine`] or [`Diagnostics`] out); [`find`], [`load`] and
//! [`discover`] do the file-system part through [`Paths`], so `MAN8S_ROOT` relocates them.
//!
//! Syntax, as in systemd unit files: `[Section]` headers; `Key=Value` (whitespace around both is
//! dropped); lines starting with `#` or `;` are comments; a line ending in `\` continues on the
//! next one (the backslash becomes a space; comment lines inside a continuation are skipped); list
//! keys accumulate when repeated and an empty assignment (`Key=`) resets them; for single-valued
//! keys the last assignment wins and `Key=` restores the default. Keys and sections starting with
//! `X-` are ignored. Everything else unknown is an error, with a "did you mean" hint.

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::io;
use std::net::Ipv6Addr;
use std::path::{Path, PathBuf};

pub use crate::ini::Diagnostic;
use crate::ini::{diag, lex};
use crate::machine::{
    Credential, Machine, Port, Protocol, PullPolicy, SourceFiles, Template, Volume, VolumeSource,
    YggdrasilAddress,
};
use crate::name::NameError;
use crate::{MachineName, Paths};

/// Suffix of declaration files.
pub const SUFFIX: &str = ".machine";
/// Declarations larger than this are refused (they are hostile input).
pub const MAX_FILE_SIZE: u64 = 1024 * 1024;

/// All problems found in one machine's declaration (never empty when returned as an error).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl fmt::Display for Diagnostics {
    /// One diagnostic a line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostics {}

/// Why [`load`] failed.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// No `NAME.machine` in any search directory (or it is masked with a link to /dev/null).
    #[error(
        "no declaration for machine {0} (looked for {0}.machine in /etc/man8s/machines, /run/man8s/machines, /usr/lib/man8s/machines)"
    )]
    NotFound(MachineName),
    /// A file could not be read.
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

/// A `*.machine` file that [`discover`] could not turn into a machine name.
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
}

// ---------------------------------------------------------------------------------------------
// File system

fn is_masked(fs_path: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    // systemd's masking: a symlink to /dev/null (or anything that is a character device).
    fs::metadata(fs_path)
        .map(|m| m.file_type().is_char_device())
        .unwrap_or(false)
}

fn exists(fs_path: &Path) -> bool {
    fs::symlink_metadata(fs_path).is_ok()
}

/// Find the files that declare `name`: the highest-precedence `NAME.machine` and the merged,
/// sorted drop-ins (canonical paths). `Ok(None)` when there is none or it is masked.
pub fn find(paths: &Paths, name: &MachineName) -> Result<Option<SourceFiles>, io::Error> {
    let file_name = format!("{name}{SUFFIX}");
    let mut main = None;
    for dir in crate::paths::DECLARATION_DIRS {
        let canonical = Path::new(dir).join(&file_name);
        let on_fs = paths.fs(&canonical);
        if exists(&on_fs) {
            if is_masked(&on_fs) {
                return Ok(None);
            }
            main = Some(canonical);
            break;
        }
    }
    let Some(main) = main else { return Ok(None) };

    // Drop-ins: file name → canonical path of the highest-precedence one.
    let mut dropins: BTreeMap<String, Option<PathBuf>> = BTreeMap::new();
    for dir in crate::paths::DECLARATION_DIRS {
        let canonical_dir = Path::new(dir).join(format!("{name}{SUFFIX}.d"));
        collect_dropins(paths, &canonical_dir, &mut dropins)?;
    }
    Ok(Some(SourceFiles {
        main,
        dropins: dropins.into_values().flatten().collect(),
    }))
}

fn read_declaration(
    paths: &Paths,
    canonical: &Path,
) -> Result<Result<String, Diagnostic>, io::Error> {
    use std::io::Read;
    let file = fs::File::open(paths.fs(canonical))?;
    let mut bytes = Vec::new();
    file.take(MAX_FILE_SIZE + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_FILE_SIZE {
        return Ok(Err(Diagnostic {
            file: canonical.to_owned(),
            line: 0,
            key: None,
            message: format!("file is larger than {MAX_FILE_SIZE} bytes"),
            hint: None,
        }));
    }
    Ok(String::from_utf8(bytes).map_err(|e| {
        let at = e.utf8_error().valid_up_to();
        let line = e.as_bytes()[..at].iter().filter(|&&b| b == b'\n').count() + 1;
        Diagnostic {
            file: canonical.to_owned(),
            line,
            key: None,
            message: "not valid UTF-8".into(),
            hint: None,
        }
    }))
}

/// Find, read and parse the declaration of `name`.
pub fn load(paths: &Paths, name: &MachineName) -> Result<Machine, LoadError> {
    let source = find(paths, name)
        .map_err(|source| LoadError::Io {
            path: PathBuf::from(crate::paths::DECLARATION_DIRS[0]),
            source,
        })?
        .ok_or_else(|| LoadError::NotFound(name.clone()))?;
    load_sources(paths, name, &source)
}

/// Read and parse the files [`find`] or [`discover_sources`] gave for `name`.
pub fn load_sources(
    paths: &Paths,
    name: &MachineName,
    source: &SourceFiles,
) -> Result<Machine, LoadError> {
    let mut files = Vec::new();
    let mut bad = Vec::new();
    for canonical in std::iter::once(&source.main).chain(&source.dropins) {
        match read_declaration(paths, canonical) {
            Ok(Ok(text)) => files.push((canonical.clone(), text)),
            Ok(Err(diag)) => bad.push(diag),
            Err(source) => {
                return Err(LoadError::Io {
                    path: canonical.clone(),
                    source,
                });
            }
        }
    }
    if !bad.is_empty() {
        return Err(LoadError::Invalid(Diagnostics(bad)));
    }
    parse(name, &files).map_err(LoadError::Invalid)
}

/// All declared machines, sorted by name: one entry per distinct `*.machine` file name across the
/// search directories (masked ones left out), or an error for a file name that is not a valid
/// machine name or a directory that cannot be read.
pub fn discover(paths: &Paths) -> Vec<Result<MachineName, DiscoverError>> {
    discover_sources(paths)
        .into_iter()
        .map(|r| r.map(|(name, _)| name))
        .collect()
}

/// Like [`discover`], with each machine's files (as [`find`] gives them), found with one listing
/// of each search directory: what the generator uses for many machines at once.
pub fn discover_sources(paths: &Paths) -> Vec<Result<(MachineName, SourceFiles), DiscoverError>> {
    // Per search directory (highest precedence first): main files and drop-in dirs it holds.
    struct Listing {
        dir: &'static str,
        mains: BTreeMap<String, std::fs::FileType>,
        dropin_dirs: BTreeMap<String, ()>,
    }
    let mut listings = Vec::new();
    let mut errors = Vec::new();
    for dir in crate::paths::DECLARATION_DIRS {
        let mut l = Listing {
            dir,
            mains: BTreeMap::new(),
            dropin_dirs: BTreeMap::new(),
        };
        let entries = match fs::read_dir(paths.fs(dir)) {
            Ok(e) => e,
            Err(e)
                if e.kind() == io::ErrorKind::NotFound
                    || e.kind() == io::ErrorKind::NotADirectory =>
            {
                continue;
            }
            Err(source) => {
                errors.push(DiscoverError::Io {
                    dir: dir.into(),
                    source,
                });
                continue;
            }
        };
        for entry in entries {
            let entry = match entry {
                Ok(e) => e,
                Err(source) => {
                    errors.push(DiscoverError::Io {
                        dir: dir.into(),
                        source,
                    });
                    break;
                }
            };
            let Some(fname) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if fname.starts_with('.') {
                continue;
            }
            let Ok(ft) = entry.file_type() else { continue };
            if let Some(stem) = fname.strip_suffix(".d") {
                if stem.ends_with(SUFFIX) {
                    l.dropin_dirs.insert(stem.to_owned(), ());
                }
            } else if fname.ends_with(SUFFIX) {
                l.mains.insert(fname, ft);
            }
        }
        listings.push(l);
    }

    let mut names: Vec<&String> = listings.iter().flat_map(|l| l.mains.keys()).collect();
    names.sort();
    names.dedup();
    let mut out: Vec<Result<(MachineName, SourceFiles), DiscoverError>> =
        errors.into_iter().map(Err).collect();
    for fname in names {
        let winner = listings
            .iter()
            .find(|l| l.mains.contains_key(fname))
            .expect("listed");
        let main = Path::new(winner.dir).join(fname);
        // Only a symlink (or a device node) can be a mask; a regular file needs no stat.
        let ft = winner.mains[fname];
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
        let mut dropins: BTreeMap<String, Option<PathBuf>> = BTreeMap::new();
        for l in listings
            .iter()
            .filter(|l| l.dropin_dirs.contains_key(fname))
        {
            let canonical_dir = Path::new(l.dir).join(format!("{fname}.d"));
            if let Err(source) = collect_dropins(paths, &canonical_dir, &mut dropins) {
                out.push(Err(DiscoverError::Io {
                    dir: canonical_dir,
                    source,
                }));
            }
        }
        let source = SourceFiles {
            main,
            dropins: dropins.into_values().flatten().collect(),
        };
        out.push(Ok((name, source)));
    }
    out
}

/// Add the `*.conf` files of one drop-in directory to `dropins` (file name → canonical path, or
/// `None` when masked), unless a directory of higher precedence already had that name.
fn collect_dropins(
    paths: &Paths,
    canonical_dir: &Path,
    dropins: &mut BTreeMap<String, Option<PathBuf>>,
) -> io::Result<()> {
    let entries = match fs::read_dir(paths.fs(canonical_dir)) {
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
        if !fname.ends_with(".conf") || fname.starts_with('.') || dropins.contains_key(&fname) {
            continue;
        }
        let masked = !entry.file_type().is_ok_and(|t| t.is_file()) && is_masked(&entry.path());
        dropins.insert(fname.clone(), (!masked).then(|| canonical_dir.join(&fname)));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The INI layer

const SECTIONS: &[(&str, &[&str])] = &[
    (
        "Machine",
        &[
            "Image",
            "Exec",
            "Environment",
            "EnvironmentFile",
            "WorkingDirectory",
            "User",
            "Volume",
            "Port",
            "Template",
            "Pull",
            "LoadCredential",
            "LoadCredentialEncrypted",
            "SetCredential",
            "SetCredentialEncrypted",
        ],
    ),
    ("Network", &["Bridge", "YggdrasilAddress", "MACVLAN"]),
    ("Resources", &["MemoryMax", "CPUQuota", "TasksMax"]),
    ("Install", &["WantedBy"]),
];

// ---------------------------------------------------------------------------------------------
// Values

/// Split an `Environment=` value the way systemd.exec does: whitespace-separated words, each
/// `NAME=VALUE`, with `"…"`/`'…'` quoting and C-style backslash escapes.
pub fn split_environment(value: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for word in split_words(value)? {
        let Some((name, val)) = word.split_once('=') else {
            return Err(format!("{word:?} is not NAME=VALUE"));
        };
        if !is_env_name(name) {
            return Err(format!(
                "{name:?} is not a valid variable name (letters, digits and '_', not starting with a digit)"
            ));
        }
        out.push((name.to_owned(), val.to_owned()));
    }
    Ok(out)
}

fn is_env_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// systemd's `extract_first_word(EXTRACT_UNQUOTE|EXTRACT_CUNESCAPE)`, repeated.
fn split_words(value: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut chars = value.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            return Ok(words);
        }
        let mut word = String::new();
        let mut quote: Option<char> = None;
        while let Some(c) = chars.next() {
            match (c, quote) {
                ('\\', _) => word.push(unescape(&mut chars)?),
                (q, None) if q == '"' || q == '\'' => quote = Some(q),
                (q, Some(open)) if q == open => quote = None,
                (w, None) if w.is_whitespace() => break,
                (other, _) => word.push(other),
            }
        }
        if let Some(q) = quote {
            return Err(format!("unterminated {q} quote"));
        }
        words.push(word);
    }
}

fn unescape(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) -> Result<char, String> {
    let c = chars.next().ok_or("trailing backslash")?;
    Ok(match c {
        'a' => '\x07',
        'b' => '\x08',
        'f' => '\x0c',
        'n' => '\n',
        'r' => '\r',
        't' => '\t',
        'v' => '\x0b',
        's' => ' ',
        '\\' | '"' | '\'' => c,
        'x' => {
            let hex: String = [chars.next(), chars.next()].into_iter().flatten().collect();
            let v = u8::from_str_radix(&hex, 16).map_err(|_| format!("bad escape \\x{hex}"))?;
            if v == 0 || v > 0x7f {
                return Err(format!("escape \\x{hex} is not a non-NUL ASCII character"));
            }
            char::from(v)
        }
        other => return Err(format!("unknown escape \\{other}")),
    })
}

/// Values that end up on one line of a generated file cannot hold line breaks or NUL.
fn check_single_line(value: &str) -> Result<(), String> {
    if value.contains(['\n', '\r', '\0']) {
        return Err("line breaks and NUL bytes cannot be passed on".into());
    }
    Ok(())
}

fn check_no_control(value: &str) -> Result<(), String> {
    if value.chars().any(|c| c.is_control()) {
        return Err("control characters are not allowed".into());
    }
    Ok(())
}

/// An absolute, normalised path without `.`/`..` components.
fn absolute_path(value: &str) -> Result<String, String> {
    check_no_control(value)?;
    if !value.starts_with('/') {
        return Err(format!("{value:?} is not an absolute path"));
    }
    let mut out = String::new();
    for comp in value.split('/').filter(|c| !c.is_empty()) {
        if comp == "." || comp == ".." {
            return Err(format!("{value:?} contains a '{comp}' component"));
        }
        out.push('/');
        out.push_str(comp);
    }
    if out.is_empty() {
        out.push('/');
    }
    Ok(out)
}

/// Check the syntax of an OCI/Docker image reference (`[host[:port]/]path[:tag][@algo:hex]`).
pub fn validate_image_reference(reference: &str) -> Result<(), String> {
    let bad = |why: &str| Err(format!("{reference:?} is not an image reference: {why}"));
    if reference.is_empty() {
        return bad("empty");
    }
    if reference.len() > 512 {
        return bad("too long");
    }
    let (name_tag, digest) = match reference.split_once('@') {
        Some((n, d)) => (n, Some(d)),
        None => (reference, None),
    };
    if let Some(d) = digest {
        let Some((algo, hex)) = d.split_once(':') else {
            return bad("digest must be ALGORITHM:HEX");
        };
        let algo_ok = !algo.is_empty()
            && algo.split(['+', '.', '_', '-']).all(|p| {
                !p.is_empty()
                    && p.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            });
        if !algo_ok {
            return bad("bad digest algorithm");
        }
        if hex.len() < 32
            || !hex
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        {
            return bad("digest must be at least 32 lowercase hex digits");
        }
        if algo == "sha256" && hex.len() != 64 {
            return bad("a sha256 digest has 64 hex digits");
        }
    }
    // The tag is after the last ':' that follows the last '/'.
    let last_slash = name_tag.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match name_tag[last_slash..].rfind(':') {
        Some(i) => (
            &name_tag[..last_slash + i],
            Some(&name_tag[last_slash + i + 1..]),
        ),
        None => (name_tag, None),
    };
    if let Some(tag) = tag {
        let mut b = tag.bytes();
        let first_ok = matches!(b.next(), Some(c) if c.is_ascii_alphanumeric() || c == b'_');
        if !first_ok
            || tag.len() > 128
            || !b.all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
        {
            return bad("bad tag (letters, digits, '_', '.', '-'; at most 128)");
        }
    }
    let mut components: Vec<&str> = name.split('/').collect();
    if components.len() > 1 {
        let first = components[0];
        if first.contains('.')
            || first.contains(':')
            || first == "localhost"
            || first.bytes().any(|b| b.is_ascii_uppercase())
        {
            if !valid_domain(first) {
                return bad("bad registry host");
            }
            components.remove(0);
        }
    }
    for comp in components {
        if !valid_path_component(comp) {
            return bad(
                "repository path components are lowercase letters and digits separated by '.', '_', '__' or '-'",
            );
        }
    }
    Ok(())
}

fn valid_domain(domain: &str) -> bool {
    let (host, port) = if let Some(rest) = domain.strip_prefix('[') {
        let Some((inner, after)) = rest.split_once(']') else {
            return false;
        };
        if inner.parse::<Ipv6Addr>().is_err() {
            return false;
        }
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p),
            None if after.is_empty() => None,
            None => return false,
        };
        (None, port)
    } else {
        match domain.rsplit_once(':') {
            Some((h, p)) => (Some(h), Some(p)),
            None => (Some(domain), None),
        }
    };
    if let Some(p) = port
        && (p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) || p.parse::<u16>().is_err())
    {
        return false;
    }
    match host {
        None => true,
        Some(h) => {
            !h.is_empty()
                && h.split('.').all(|l| {
                    !l.is_empty()
                        && !l.starts_with('-')
                        && !l.ends_with('-')
                        && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                })
        }
    }
}

fn valid_path_component(comp: &str) -> bool {
    // [a-z0-9]+ ((\.|_|__|-+) [a-z0-9]+)*
    let b = comp.as_bytes();
    if b.is_empty() {
        return false;
    }
    let alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    if !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &comp[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|c| c == b'-');
        if !ok {
            return false;
        }
    }
    true
}

/// `name`, `uid`, `name:group` or `uid:gid`.
fn validate_user(value: &str) -> Result<(), String> {
    let part_ok = |p: &str| {
        if p.is_empty() || p.len() > 256 {
            return false;
        }
        if p.bytes().all(|b| b.is_ascii_digit()) {
            return p.parse::<u32>().is_ok_and(|n| n != u32::MAX);
        }
        let mut b = p.bytes();
        matches!(b.next(), Some(c) if c.is_ascii_alphabetic() || c == b'_')
            && p.trim_end_matches('$')
                .bytes()
                .skip(1)
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
    };
    let mut parts = value.splitn(2, ':');
    let user = parts.next().unwrap_or_default();
    let group = parts.next();
    if part_ok(user) && group.is_none_or(part_ok) {
        Ok(())
    } else {
        Err(format!(
            "{value:?} is not a user: expected NAME, UID, NAME:GROUP or UID:GID"
        ))
    }
}

fn parse_port_number(s: &str) -> Result<u16, String> {
    match s.parse::<u32>() {
        Ok(n) if (1..=65535).contains(&n) && s.bytes().all(|b| b.is_ascii_digit()) => Ok(n as u16),
        _ => Err(format!("{s:?} is not a port number (1-65535)")),
    }
}

/// `[tcp:|udp:]HOSTPORT:CONTAINERPORT`.
pub fn parse_port(value: &str) -> Result<Port, String> {
    let parts: Vec<&str> = value.split(':').collect();
    let (protocol, host, container) = match parts.as_slice() {
        [proto, h, c] => {
            let p = match *proto {
                "tcp" => Protocol::Tcp,
                "udp" => Protocol::Udp,
                other => return Err(format!("protocol {other:?} is neither tcp nor udp")),
            };
            (p, *h, *c)
        }
        [h, c] => (Protocol::Tcp, *h, *c),
        _ => {
            return Err(format!(
                "{value:?} is not [tcp:|udp:]HOSTPORT:CONTAINERPORT"
            ));
        }
    };
    Ok(Port {
        protocol,
        host: parse_port_number(host)?,
        container: parse_port_number(container)?,
    })
}

/// `CONTAINER_PATH:config|data|/host/path[:ro|:rw]`.
pub fn parse_volume(value: &str) -> Result<Volume, String> {
    let parts: Vec<&str> = value.split(':').collect();
    let (path, source, read_only) = match parts.as_slice() {
        [p, s] => (*p, *s, false),
        [p, s, "ro"] => (*p, *s, true),
        [p, s, "rw"] => (*p, *s, false),
        [_, _, opt] => return Err(format!("option {opt:?} is neither ro nor rw")),
        _ => {
            return Err(format!(
                "{value:?} is not CONTAINER_PATH:config|data|/host/path[:ro]"
            ));
        }
    };
    let container_path = absolute_path(path).map_err(|e| format!("container path: {e}"))?;
    if container_path == "/" {
        return Err("the container path may not be /".into());
    }
    let source = match source {
        "config" => VolumeSource::Config,
        "data" => VolumeSource::Data,
        host if host.starts_with('/') => VolumeSource::Host(PathBuf::from(
            absolute_path(host).map_err(|e| format!("host path: {e}"))?,
        )),
        other => {
            return Err(format!(
                "volume source {other:?} is not config, data or an absolute host path"
            ));
        }
    };
    Ok(Volume {
        container_path,
        source,
        read_only,
    })
}

fn parse_decimal_percent(s: &str) -> Option<f64> {
    let num = s.strip_suffix('%')?;
    let (int, frac) = num.split_once('.').unwrap_or((num, ""));
    let ok = !int.is_empty()
        && int.len() <= 9
        && int.bytes().all(|b| b.is_ascii_digit())
        && frac.len() <= 2
        && frac.bytes().all(|b| b.is_ascii_digit())
        && (num.contains('.') != frac.is_empty());
    ok.then(|| num.parse().ok()).flatten()
}

/// `MemoryMax=`: `infinity`, bytes with an optional K/M/G/T/P/E (base 1024) suffix, or a percentage.
fn validate_memory(value: &str) -> Result<(), String> {
    if value == "infinity" {
        return Ok(());
    }
    if value.ends_with('%') {
        return match parse_decimal_percent(value) {
            Some(p) if p <= 100.0 => Ok(()),
            _ => Err(format!("{value:?} is not a percentage between 0% and 100%")),
        };
    }
    let digits_end = value
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(value.len());
    let (num, suffix) = value.split_at(digits_end);
    let num_ok = !num.is_empty()
        && !num.starts_with('.')
        && !num.ends_with('.')
        && num.matches('.').count() <= 1;
    let exp = match suffix {
        "" | "B" => 0,
        "K" => 1,
        "M" => 2,
        "G" => 3,
        "T" => 4,
        "P" => 5,
        "E" => 6,
        _ => -1,
    };
    let fits = num
        .parse::<f64>()
        .is_ok_and(|n| exp >= 0 && n * 1024f64.powi(exp) < u64::MAX as f64);
    if num_ok && exp >= 0 && fits {
        Ok(())
    } else {
        Err(format!(
            "{value:?} is not a size: bytes with an optional K, M, G, T, P or E suffix, a percentage, or infinity"
        ))
    }
}

/// `CPUQuota=`: a positive percentage (may exceed 100%, one CPU = 100%).
fn validate_cpu_quota(value: &str) -> Result<(), String> {
    match parse_decimal_percent(value) {
        Some(p) if p > 0.0 => Ok(()),
        _ => Err(format!(
            "{value:?} is not a positive percentage (100% = one CPU)"
        )),
    }
}

/// `TasksMax=`: a number, a percentage, or `infinity`.
fn validate_tasks_max(value: &str) -> Result<(), String> {
    if value == "infinity" {
        return Ok(());
    }
    if value.ends_with('%') {
        return match parse_decimal_percent(value) {
            Some(p) if p <= 100.0 => Ok(()),
            _ => Err(format!("{value:?} is not a percentage between 0% and 100%")),
        };
    }
    match value.parse::<u64>() {
        Ok(n) if n > 0 && value.bytes().all(|b| b.is_ascii_digit()) => Ok(()),
        _ => Err(format!(
            "{value:?} is not a positive number, a percentage, or infinity"
        )),
    }
}

/// A network interface name as the kernel accepts it.
/// A Linux network interface name: 1–15 printable ASCII characters, no `/`, `:` or `%`, not `.`
/// or `..` (what the kernel and networkd accept).
pub(crate) fn validate_ifname(value: &str) -> Result<(), String> {
    let ok = !value.is_empty()
        && value.len() < 16
        && value != "."
        && value != ".."
        && value
            .bytes()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b'/' | b':' | b'%'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{value:?} is not a network interface name (1-15 characters, no '/', ':', '%' or spaces)"
        ))
    }
}

const UNIT_SUFFIXES: &[&str] = &[
    ".target",
    ".service",
    ".socket",
    ".device",
    ".mount",
    ".automount",
    ".swap",
    ".path",
    ".timer",
    ".slice",
    ".scope",
];

fn validate_unit_name(value: &str) -> Result<(), String> {
    let ok = value.len() <= 255
        && UNIT_SUFFIXES
            .iter()
            .any(|s| value.len() > s.len() && value.ends_with(s))
        && value.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b':' | b'-' | b'_' | b'.' | b'\\' | b'@')
        });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{value:?} is not a unit name (e.g. machines.target)"
        ))
    }
}

/// A credential name as systemd accepts it.
fn validate_credential_id(id: &str) -> Result<(), String> {
    let ok = !id.is_empty()
        && id.len() <= 255
        && id != "."
        && id != ".."
        && !id.contains('/')
        && id.chars().all(|c| !c.is_control() && !c.is_whitespace());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{id:?} is not a credential name (no '/', spaces or control characters)"
        ))
    }
}

fn parse_credential(key: &str, value: &str) -> Result<Credential, String> {
    check_no_control(value)?;
    let Some((id, rest)) = value.split_once(':') else {
        return Err(format!(
            "{value:?} is not ID:{}",
            if key.starts_with("Load") {
                "PATH"
            } else {
                "VALUE"
            }
        ));
    };
    validate_credential_id(id)?;
    let id = id.to_owned();
    Ok(match key {
        "LoadCredential" | "LoadCredentialEncrypted" => {
            let path = PathBuf::from(absolute_path(rest)?);
            if key == "LoadCredential" {
                Credential::Load { id, path }
            } else {
                Credential::LoadEncrypted { id, path }
            }
        }
        "SetCredential" => Credential::Set {
            id,
            value: rest.to_owned(),
        },
        _ => {
            if rest.is_empty()
                || !rest
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=' | b' '))
            {
                return Err(
                    "the value must be base64 (from systemd-creds encrypt --pretty)".into(),
                );
            }
            Credential::SetEncrypted {
                id,
                value: rest.to_owned(),
            }
        }
    })
}

// ---------------------------------------------------------------------------------------------
// Assignments → Machine

/// Parse the declaration of `name` from its files (main file first, then drop-ins in order), each
/// given as (canonical path, text). Pure: no file-system access.
pub fn parse(name: &MachineName, files: &[(PathBuf, String)]) -> Result<Machine, Diagnostics> {
    let mut errs = Vec::new();
    let mut assignments = Vec::new();
    for (path, text) in files {
        lex(
            path,
            text,
            SECTIONS,
            "[Machine]",
            &mut assignments,
            &mut errs,
        );
    }
    let main = files.first().map(|(p, _)| p.clone()).unwrap_or_default();
    let source = SourceFiles {
        main: main.clone(),
        dropins: files.iter().skip(1).map(|(p, _)| p.clone()).collect(),
    };
    let mut m = Machine::new(name.clone(), source, String::new());
    let mut image_at: Option<(PathBuf, usize)> = None;
    let mut template_at: Option<(PathBuf, usize)> = None;
    let mut macvlan_at: Option<(PathBuf, usize)> = None;
    let mut port_at: Vec<(PathBuf, usize)> = Vec::new();
    let mut volume_at: Vec<(PathBuf, usize)> = Vec::new();
    let mut credentials: Vec<(Credential, (PathBuf, usize))> = Vec::new();

    for a in &assignments {
        let v = a.value.as_str();
        let empty = v.is_empty();
        let here = || (a.file.to_owned(), a.line);
        let result: Result<(), String> = (|| {
            match (a.section, a.key) {
                ("Machine", "Image") => {
                    if empty {
                        m.image.clear();
                        image_at = None;
                    } else {
                        validate_image_reference(v)?;
                        m.image = v.to_owned();
                        image_at = Some(here());
                    }
                }
                ("Machine", "Exec") => {
                    check_single_line(v)?;
                    m.exec = (!empty).then(|| v.to_owned());
                }
                ("Machine", "Environment") => {
                    if empty {
                        m.environment.clear();
                    } else {
                        let vars = split_environment(v)?;
                        for (_, val) in &vars {
                            check_single_line(val).map_err(|e| format!("value: {e}"))?;
                        }
                        m.environment.extend(vars);
                    }
                }
                ("Machine", "EnvironmentFile") => {
                    if empty {
                        m.environment_files.clear();
                    } else {
                        if v.starts_with('-') {
                            return Err("optional environment files ('-' prefix) are not supported; the file must exist".into());
                        }
                        m.environment_files.push(PathBuf::from(absolute_path(v)?));
                    }
                }
                ("Machine", "WorkingDirectory") => {
                    m.working_directory = if empty { None } else { Some(absolute_path(v)?) };
                }
                ("Machine", "User") => {
                    if empty {
                        m.user = None;
                    } else {
                        validate_user(v)?;
                        m.user = Some(v.to_owned());
                    }
                }
                ("Machine", "Volume") => {
                    if empty {
                        m.volumes.clear();
                        volume_at.clear();
                    } else {
                        let vol = parse_volume(v)?;
                        if let Some(i) = m
                            .volumes
                            .iter()
                            .position(|x| x.container_path == vol.container_path)
                        {
                            let (f, l) = &volume_at[i];
                            return Err(format!(
                                "{} is already a volume (at {}:{l})",
                                vol.container_path,
                                f.display()
                            ));
                        }
                        m.volumes.push(vol);
                        volume_at.push(here());
                    }
                }
                ("Machine", "Port") => {
                    if empty {
                        m.ports.clear();
                        port_at.clear();
                    } else {
                        let port = parse_port(v)?;
                        if let Some(i) = m
                            .ports
                            .iter()
                            .position(|p| p.protocol == port.protocol && p.host == port.host)
                        {
                            let (f, l) = &port_at[i];
                            return Err(format!(
                                "host port {}:{} is already forwarded (at {}:{l})",
                                port.protocol,
                                port.host,
                                f.display()
                            ));
                        }
                        m.ports.push(port);
                        port_at.push(here());
                    }
                }
                ("Machine", "Template") => {
                    m.template = match v {
                        "" | "network_isolated" => Template::NetworkIsolated,
                        "macvlan" => Template::Macvlan,
                        other => {
                            return Err(format!(
                                "unknown template {other:?} (network_isolated or macvlan)"
                            ));
                        }
                    };
                    template_at = Some(here());
                }
                ("Machine", "Pull") => {
                    m.pull = match v {
                        "" | "missing" => PullPolicy::Missing,
                        "always" => PullPolicy::Always,
                        "never" => PullPolicy::Never,
                        other => return Err(format!("{other:?} is not missing, always or never")),
                    };
                }
                (
                    "Machine",
                    key @ ("LoadCredential"
                    | "LoadCredentialEncrypted"
                    | "SetCredential"
                    | "SetCredentialEncrypted"),
                ) => {
                    if empty {
                        // Resets only the credentials of this one kind, like systemd.
                        credentials.retain(|(c, _)| c.unit_key() != key);
                    } else {
                        let c = parse_credential(key, v)?;
                        if let Some((_, (f, l))) =
                            credentials.iter().find(|(x, _)| x.id() == c.id())
                        {
                            return Err(format!(
                                "credential {:?} is already defined (at {}:{l})",
                                c.id(),
                                f.display()
                            ));
                        }
                        credentials.push((c, here()));
                    }
                }
                ("Network", "Bridge") => {
                    if empty {
                        m.network.bridge = None;
                    } else {
                        validate_ifname(v)?;
                        m.network.bridge = Some(v.to_owned());
                    }
                }
                ("Network", "YggdrasilAddress") => {
                    m.network.yggdrasil = match v {
                        "" | "auto" => YggdrasilAddress::Auto,
                        "no" => YggdrasilAddress::No,
                        addr => {
                            let ip: Ipv6Addr = addr.parse().map_err(|_| {
                                format!("{addr:?} is not auto, no or an IPv6 address")
                            })?;
                            if ip.octets()[0] & 0xfe != 0x02 {
                                return Err(format!("{ip} is not a Yggdrasil address (200::/7)"));
                            }
                            YggdrasilAddress::Fixed(ip)
                        }
                    };
                }
                ("Network", "MACVLAN") => {
                    if empty {
                        m.network.macvlan = None;
                        macvlan_at = None;
                    } else {
                        validate_ifname(v)?;
                        m.network.macvlan = Some(v.to_owned());
                        macvlan_at = Some(here());
                    }
                }
                ("Resources", "MemoryMax") => {
                    if !empty {
                        validate_memory(v)?;
                    }
                    m.resources.memory_max = (!empty).then(|| v.to_owned());
                }
                ("Resources", "CPUQuota") => {
                    if !empty {
                        validate_cpu_quota(v)?;
                    }
                    m.resources.cpu_quota = (!empty).then(|| v.to_owned());
                }
                ("Resources", "TasksMax") => {
                    if !empty {
                        validate_tasks_max(v)?;
                    }
                    m.resources.tasks_max = (!empty).then(|| v.to_owned());
                }
                ("Install", "WantedBy") => {
                    if empty {
                        m.install.wanted_by.clear();
                    } else {
                        for unit in v.split_whitespace() {
                            validate_unit_name(unit)?;
                            if !m.install.wanted_by.iter().any(|u| u == unit) {
                                m.install.wanted_by.push(unit.to_owned());
                            }
                        }
                    }
                }
                (s, k) => return Err(format!("internal: unhandled [{s}] {k}=")),
            }
            Ok(())
        })();
        if let Err(message) = result {
            errs.push(diag(a.file, a.line, Some(a.key), message));
        }
    }

    m.credentials = credentials.into_iter().map(|(c, _)| c).collect();
    // Not "missing" when it was there but invalid, or misspelt (those already have an error).
    let image_mentioned = assignments
        .iter()
        .any(|a| a.key == "Image" && !a.value.is_empty())
        || errs.iter().any(|d| d.hint.as_deref() == Some("Image="));
    if m.image.is_empty() && image_at.is_none() && !image_mentioned {
        errs.push(diag(
            &main,
            0,
            Some("Image"),
            "missing: [Machine] Image= is required",
        ));
    }
    match m.template {
        Template::Macvlan if m.network.macvlan.is_none() => {
            let (f, l) = template_at.clone().unwrap_or((main.clone(), 0));
            errs.push(diag(
                &f,
                l,
                Some("Template"),
                "Template=macvlan needs [Network] MACVLAN=HOST_INTERFACE",
            ));
        }
        Template::NetworkIsolated if m.network.macvlan.is_some() => {
            let (f, l) = macvlan_at.clone().unwrap_or((main.clone(), 0));
            errs.push(diag(
                &f,
                l,
                Some("MACVLAN"),
                "MACVLAN= is only used with [Machine] Template=macvlan",
            ));
        }
        _ => {}
    }
    if m.template == Template::Macvlan
        && let Some((f, l)) = port_at.first()
    {
        errs.push(diag(f, *l, Some("Port"), "Port= forwarding needs Template=network_isolated (a macvlan machine is reachable at its own address)"));
    }
    // Report in reading order: file by file, line by line; whole-file problems last.
    let file_index = |f: &Path| files.iter().position(|(p, _)| p == f).unwrap_or(usize::MAX);
    errs.sort_by_key(|d| (d.line == 0, file_index(&d.file), d.line));
    if errs.is_empty() {
        Ok(m)
    } else {
        Err(Diagnostics(errs))
    }
}

#[cfg(test)]
mod tests;
