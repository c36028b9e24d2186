//! Pure handling of the paths written in layer tar entries: lexical checks and whiteout classification.
//!
//! Nothing here touches the file system. The kernel (`RESOLVE_IN_ROOT`) is what keeps resolution inside the
//! root; these checks refuse hostile names early so that the error names the entry and says why.

/// The prefix of a whiteout entry: `DIR/.wh.NAME` deletes `DIR/NAME` of lower layers.
pub const WHITEOUT_PREFIX: &[u8] = b".wh.";
/// The name of an opaque marker: `DIR/.wh..wh..opq` hides all lower-layer content of `DIR`.
pub const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";
/// Prefix of AUFS bookkeeping entries (`.wh..wh.plnk`, `.wh..wh.aufs`): not part of the image, skipped.
const AUFS_META_PREFIX: &[u8] = b".wh..wh.";

/// A path relative to the root, lexically clean: every component is a normal name (no empty component, no
/// `.`, no `..`, no `/`, no NUL). No components means the root itself.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct RelPath(Vec<Vec<u8>>);

impl RelPath {
    /// The components, outermost first.
    pub fn components(&self) -> &[Vec<u8>] {
        &self.0
    }

    /// True for the root itself.
    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    /// The parent directory and the last component, or `None` for the root.
    pub fn split_last(&self) -> Option<(RelPath, &[u8])> {
        let (last, parent) = self.0.split_last()?;
        Some((RelPath(parent.to_vec()), last))
    }

    /// This path with one more (already checked) component.
    pub fn join(&self, name: &[u8]) -> RelPath {
        let mut components = self.0.clone();
        components.push(name.to_vec());
        RelPath(components)
    }

    /// The components joined with `/`; empty for the root.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.0.join(&b'/')
    }

    /// Every proper ancestor except the root, outermost first (`a`, `a/b` for `a/b/c`).
    pub fn ancestors(&self) -> impl Iterator<Item = RelPath> + '_ {
        (1..self.0.len()).map(|n| RelPath(self.0[..n].to_vec()))
    }
}

/// Parses an entry path (or hard link target) as written in the tar into a [`RelPath`].
///
/// Leading `./` and repeated or trailing slashes are accepted (tar writers emit them); absolute paths, `..`
/// components and NUL bytes are refused with the reason.
pub fn parse_entry_path(raw: &[u8]) -> Result<RelPath, String> {
    if raw.contains(&0) {
        return Err("path contains a NUL byte".into());
    }
    if raw.first() == Some(&b'/') {
        return Err("absolute path (layer paths must be relative to the root)".into());
    }
    let mut components = Vec::new();
    for component in raw.split(|&b| b == b'/') {
        match component {
            b"" | b"." => {}
            b".." => return Err("path has a `..` component".into()),
            name => components.push(name.to_vec()),
        }
    }
    Ok(RelPath(components))
}

/// What a (lexically clean) entry path means for the layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryRole {
    /// An ordinary entry to create at this path.
    Normal,
    /// `DIR/.wh..wh..opq`: hide lower-layer content of `DIR`.
    Opaque {
        /// The directory made opaque.
        dir: RelPath,
    },
    /// `DIR/.wh.NAME`: delete `DIR/NAME` of lower layers.
    Whiteout {
        /// The path deleted.
        target: RelPath,
    },
    /// AUFS bookkeeping (`.wh..wh.*` other than the opaque marker): ignored, as container runtimes do.
    AufsMeta,
}

/// Classifies an entry path; refuses whiteouts that name nothing, `.` or `..`.
pub fn classify(path: &RelPath) -> Result<EntryRole, String> {
    let Some((parent, name)) = path.split_last() else {
        return Ok(EntryRole::Normal);
    };
    if name == OPAQUE_MARKER {
        return Ok(EntryRole::Opaque { dir: parent });
    }
    if name.starts_with(AUFS_META_PREFIX) {
        return Ok(EntryRole::AufsMeta);
    }
    if let Some(target) = name.strip_prefix(WHITEOUT_PREFIX) {
        return match target {
            b"" => Err("whiteout names nothing".into()),
            b"." | b".." => Err(format!(
                "whiteout names `{}`",
                String::from_utf8_lossy(target)
            )),
            target => Ok(EntryRole::Whiteout {
                target: parent.join(target),
            }),
        };
    }
    Ok(EntryRole::Normal)
}

/// True when a relative symlink `target` stored in directory `dir` climbs above the root lexically
/// (`../../etc/passwd` from `a/`). Absolute targets count as inside: in an image, `/` is the root.
pub fn symlink_climbs_out(dir: &RelPath, target: &[u8]) -> bool {
    if target.first() == Some(&b'/') {
        return false;
    }
    let mut depth = dir.components().len();
    for component in target.split(|&b| b == b'/') {
        match component {
            b"" | b"." => {}
            b".." => {
                if depth == 0 {
                    return true;
                }
                depth -= 1;
            }
            _ => depth += 1,
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rel(s: &str) -> RelPath {
        parse_entry_path(s.as_bytes()).unwrap()
    }

    #[test]
    fn clean_paths_keep_their_names() {
        assert_eq!(rel("usr/bin/env").to_bytes(), b"usr/bin/env");
        assert_eq!(rel("./usr//bin/./env/").to_bytes(), b"usr/bin/env");
        assert!(rel("./").is_root());
        assert!(rel(".").is_root());
        assert!(rel("").is_root());
        assert_eq!(
            rel("a/..b/c..").to_bytes(),
            b"a/..b/c..",
            "dots inside names are fine"
        );
    }

    #[test]
    fn hostile_paths_are_refused_with_a_reason() {
        for (path, why) in [
            ("../etc/passwd", "`..`"),
            ("a/../../b", "`..`"),
            ("a/b/..", "`..`"),
            ("/etc/passwd", "absolute"),
            ("//etc", "absolute"),
            ("a\0/../../b", "NUL"),
        ] {
            let err = parse_entry_path(path.as_bytes()).unwrap_err();
            assert!(err.contains(why), "{path:?}: {err}");
        }
    }

    #[test]
    fn whiteouts_and_opaque_markers_are_recognised() {
        assert_eq!(
            classify(&rel("etc/.wh.passwd")).unwrap(),
            EntryRole::Whiteout {
                target: rel("etc/passwd")
            }
        );
        assert_eq!(
            classify(&rel(".wh.etc")).unwrap(),
            EntryRole::Whiteout { target: rel("etc") }
        );
        assert_eq!(
            classify(&rel("var/.wh..wh..opq")).unwrap(),
            EntryRole::Opaque { dir: rel("var") }
        );
        assert_eq!(
            classify(&rel(".wh..wh..opq")).unwrap(),
            EntryRole::Opaque {
                dir: RelPath::default()
            }
        );
        assert_eq!(
            classify(&rel(".wh..wh.plnk/123")).unwrap(),
            EntryRole::Normal,
            "only the last name counts"
        );
        assert_eq!(
            classify(&rel("x/.wh..wh.aufs")).unwrap(),
            EntryRole::AufsMeta
        );
        assert_eq!(classify(&rel("etc/a.wh.b")).unwrap(), EntryRole::Normal);
        assert_eq!(classify(&rel("etc/passwd")).unwrap(), EntryRole::Normal);
        assert_eq!(classify(&RelPath::default()).unwrap(), EntryRole::Normal);
    }

    #[test]
    fn whiteouts_naming_dot_dotdot_or_nothing_are_refused() {
        assert!(classify(&rel("a/.wh...")).unwrap_err().contains("`..`"));
        assert!(classify(&rel("a/.wh..")).unwrap_err().contains("`.`"));
        assert!(classify(&rel(".wh.")).unwrap_err().contains("nothing"));
    }

    #[test]
    fn ancestors_and_split() {
        let p = rel("a/b/c");
        let ancestors: Vec<_> = p.ancestors().map(|a| a.to_bytes()).collect();
        assert_eq!(ancestors, vec![b"a".to_vec(), b"a/b".to_vec()]);
        let (parent, name) = p.split_last().unwrap();
        assert_eq!((parent.to_bytes(), name), (b"a/b".to_vec(), &b"c"[..]));
        assert!(RelPath::default().split_last().is_none());
    }

    proptest::proptest! {
        /// Whatever the bytes, a parsed path has only normal components, and a whiteout never names `.`,
        /// `..` or nothing.
        #[test]
        fn parsed_paths_are_always_clean(raw in proptest::collection::vec(proptest::prop_oneof![
            proptest::sample::select(vec![b'/', b'.', b'a', b'\0']),
            proptest::prelude::any::<u8>(),
        ], 0..40)) {
            if let Ok(path) = parse_entry_path(&raw) {
                for component in path.components() {
                    proptest::prop_assert!(!component.is_empty());
                    proptest::prop_assert!(component != b"." && component != b"..");
                    proptest::prop_assert!(!component.contains(&b'/') && !component.contains(&0));
                }
                if let Ok(EntryRole::Whiteout { target }) = classify(&path) {
                    let name = target.components().last().unwrap();
                    proptest::prop_assert!(!name.is_empty() && name != b"." && name != b"..");
                }
            } else {
                proptest::prop_assert!(
                    raw.first() == Some(&b'/') || raw.contains(&0) || raw.split(|&b| b == b'/').any(|c| c == b"..")
                );
            }
        }
    }

    #[test]
    fn symlink_climbing_is_lexical() {
        assert!(symlink_climbs_out(&rel(""), b"../x"));
        assert!(symlink_climbs_out(&rel("a"), b"../../x"));
        assert!(symlink_climbs_out(&rel("a"), b"b/../../../x"));
        assert!(!symlink_climbs_out(&rel("a"), b"../x"));
        assert!(!symlink_climbs_out(&rel("a/b"), b"./../../x"));
        assert!(
            !symlink_climbs_out(&rel(""), b"/../../etc/passwd"),
            "absolute = inside the root"
        );
    }
}
