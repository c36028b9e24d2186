//! `mbctl import` of hostile or broken archives: nothing is ever written by an archive's own path
//! names (only content-addressed blobs in the cache), and every refusal names the reason.
//! Archives are built with Python's tarfile, which writes whatever names it is given.

use std::path::Path;
use std::process::{Command, Output};

fn mbctl(root: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mbctl"))
        .args(args)
        .env("MAN8S_ROOT", root)
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap()
}

/// Write a tar at `out` with `(name, content)` regular files, names taken literally.
fn tar(out: &Path, files: &[(&str, &[u8])]) {
    let mut script = String::from("import io, sys, tarfile\nt = tarfile.open(sys.argv[1], 'w')\n");
    for (name, content) in files {
        script.push_str(&format!(
            "i = tarfile.TarInfo({name:?}); d = bytes({content:?}); i.size = len(d); t.addfile(i, io.BytesIO(d))\n",
            content = content.to_vec()
        ));
    }
    script.push_str("t.close()\n");
    let st = Command::new("python3")
        .arg("-c")
        .arg(&script)
        .arg(out)
        .status()
        .unwrap();
    assert!(st.success());
}

fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                todo.push(p);
            } else {
                out.push(p.strip_prefix(dir).unwrap().display().to_string());
            }
        }
    }
    out.sort();
    out
}

#[test]
fn traversal_names_write_nothing_outside_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir(&root).unwrap();
    let archive = dir.path().join("evil.tar");
    let config =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    tar(
        &archive,
        &[
            ("manifest.json", br#"[{"Config":"../../c.json","RepoTags":["x:1"],"Layers":["../../../escape/layer.tar"]}]"#),
            ("../../c.json", config),
            ("../../../escape/layer.tar", b"not really a tar"),
            ("/etc/absolute", b"absolute name"),
        ],
    );
    let o = mbctl(
        &root,
        &[
            "import",
            archive.to_str().unwrap(),
            "--reference",
            "localhost/evil:1",
        ],
    );
    // Whatever the outcome, the only files are content-addressed blobs and refs in the cache.
    for f in files_under(dir.path()) {
        assert!(
            f == "evil.tar"
                || f.starts_with("root/var/cache/man8s/blobs/sha256/")
                || f.starts_with("root/var/cache/man8s/refs/"),
            "{f} written ({o:?})"
        );
    }
    // The layer is taken by its name in manifest.json, as data; diff_ids are checked at install.
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn broken_archives_are_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir(&root).unwrap();
    let run = |archive: &Path| {
        let o = mbctl(
            &root,
            &[
                "import",
                archive.to_str().unwrap(),
                "--reference",
                "localhost/x:1",
            ],
        );
        assert_eq!(o.status.code(), Some(1), "{o:?}");
        String::from_utf8_lossy(&o.stderr).into_owned()
    };

    let two = dir.path().join("two.tar");
    tar(
        &two,
        &[(
            "manifest.json",
            br#"[{"Config":"a.json","Layers":[]},{"Config":"b.json","Layers":[]}]"#,
        )],
    );
    assert!(run(&two).contains("the archive holds 2 images; import needs exactly one"));

    let missing = dir.path().join("missing.tar");
    tar(
        &missing,
        &[
            (
                "manifest.json",
                br#"[{"Config":"c.json","Layers":["l/layer.tar"]}]"#,
            ),
            ("c.json", b"{}"),
        ],
    );
    assert!(run(&missing).contains("the archive has no layer l/layer.tar"));

    let bad_index = dir.path().join("index.tar");
    let digest = format!("sha256:{}", "ab".repeat(32));
    let index = format!(r#"{{"schemaVersion":2,"manifests":[{{"digest":"{digest}","size":1}}]}}"#);
    tar(
        &bad_index,
        &[
            ("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#),
            ("index.json", index.as_bytes()),
        ],
    );
    assert!(run(&bad_index).contains(&format!("does not contain {digest}")));

    let tampered = dir.path().join("tampered.tar");
    let name = format!("blobs/sha256/{}", "cd".repeat(32));
    tar(
        &tampered,
        &[
            ("oci-layout", b"{}"),
            ("index.json", b"{\"manifests\":[]}"),
            (name.as_str(), b"x"),
        ],
    );
    assert!(run(&tampered).contains("hashes to sha256:"));

    let not_gzip = dir.path().join("broken.tar.gz");
    std::fs::write(&not_gzip, [0x1f, 0x8b, 0, 0, 1, 2, 3]).unwrap();
    let err = run(&not_gzip);
    assert!(err.starts_with("mbctl: cannot import "), "{err}");

    let big_json = dir.path().join("big.tar");
    let big = vec![b' '; 5 * 1024 * 1024];
    let mut b = tar::Builder::new(std::fs::File::create(&big_json).unwrap());
    let mut h = tar::Header::new_gnu();
    h.set_size(big.len() as u64);
    h.set_mode(0o644);
    h.set_cksum();
    b.append_data(&mut h, "manifest.json", &big[..]).unwrap();
    b.finish().unwrap();
    drop(b);
    assert!(run(&big_json).contains("manifest.json is larger than"));
}
