//! Arbitrary bytes as a layer tar stream, applied twice (so the second pass meets the first one's symlinks)
//! onto a root beside canaries: no panic, and nothing outside the root appears or changes.
#![no_main]

use std::fs;
use std::path::Path;

use libfuzzer_sys::fuzz_target;
use man8s_oci::unpack::{UnpackOptions, apply_layer};

fuzz_target!(|data: &[u8]| {
    let scratch = tempfile::tempdir().unwrap();
    let root = scratch.path().join("up/root");
    fs::create_dir_all(&root).unwrap();
    fs::create_dir(scratch.path().join("outside")).unwrap();
    fs::write(scratch.path().join("outside/secret"), b"canary").unwrap();
    let before = outside(scratch.path(), &root);
    // Small files only: the fuzzer should explore names, not fill the disk.
    let opts = UnpackOptions {
        max_file_size: 1 << 20,
        ..UnpackOptions::default()
    };
    for _ in 0..2 {
        let _ = apply_layer(&root, &mut &data[..], &opts);
    }
    assert_eq!(
        outside(scratch.path(), &root),
        before,
        "something changed outside the root"
    );
});

/// Every path outside `root` under `dir`, with file contents.
fn outside(dir: &Path, root: &Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut seen = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(path) = stack.pop() {
        if path == root {
            continue;
        }
        let meta = fs::symlink_metadata(&path).unwrap();
        let content = if meta.is_file() {
            fs::read(&path).unwrap()
        } else {
            Vec::new()
        };
        if meta.is_dir() {
            for entry in fs::read_dir(&path).unwrap() {
                stack.push(entry.unwrap().path());
            }
        }
        seen.push((path, content));
    }
    seen.sort();
    seen
}
