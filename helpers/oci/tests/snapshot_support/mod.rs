//! What the snapshot tests compare: a listing of a tree with everything a restore must bring back.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use man8s_oci::unpack::rootdir::lxattrs_at;

/// Every path under `root` with its type, mode, owner, device number, content or target, and
/// xattrs: everything a restore must bring back.
pub fn tree(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut todo = vec![root.to_owned()];
    while let Some(dir) = todo.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            let m = std::fs::symlink_metadata(&p).unwrap();
            let what = if m.file_type().is_symlink() {
                format!("-> {}", std::fs::read_link(&p).unwrap().display())
            } else if m.is_dir() {
                todo.push(p.clone());
                "dir".into()
            } else if m.is_file() {
                format!("{:?}", String::from_utf8_lossy(&std::fs::read(&p).unwrap()))
            } else {
                format!("rdev {}", m.rdev())
            };
            let parent = std::fs::File::open(p.parent().unwrap()).unwrap();
            let name = p.file_name().unwrap().as_encoded_bytes();
            let mut xattrs: Vec<String> = lxattrs_at(&parent, name)
                .unwrap()
                .into_iter()
                .map(|(k, v)| {
                    format!(
                        "{}={}",
                        String::from_utf8_lossy(&k),
                        String::from_utf8_lossy(&v)
                    )
                })
                .collect();
            xattrs.sort();
            out.insert(
                rel,
                format!(
                    "{:o} {}:{} {what} [{}]",
                    m.mode(),
                    m.uid(),
                    m.gid(),
                    xattrs.join(" ")
                ),
            );
        }
    }
    out
}
