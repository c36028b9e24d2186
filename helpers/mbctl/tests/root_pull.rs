//! Root tier: `mbctl machines pull` against a real docker-registry on 127.0.0.1 (Debian's, started
//! by `man8s_testsupport`), with the volume questions answered through a pseudo-terminal; then
//! list, images, update, oci download and remove on the same relocated tree (MAN8S_ROOT, so no
//! systemd is asked).

use std::path::Path;
use std::process::{Command, Output, Stdio};

use man8s_testsupport::stdout_of_success as ok;
use man8s_testsupport::{Canary, Compression, Image, LayerBuilder, Registry, Root};

mod pty;
use pty::OnPty;
use serde_json::json;

/// A relocated tree that mbctl runs in.
struct Tree(Root);

impl std::ops::Deref for Tree {
    type Target = Root;
    fn deref(&self) -> &Root {
        &self.0
    }
}

impl Tree {
    fn new() -> Self {
        Self(Root::new())
    }
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = self.command(env!("CARGO_BIN_EXE_mbctl"));
        c.args(args).env("NO_COLOR", "1");
        c
    }
    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).stdin(Stdio::null()).output().unwrap()
    }
}

/// An image with three volumes, content at two of them, an env and a command.
fn app_image(version: &str) -> Image {
    let layer = LayerBuilder::new()
        .dir("bin", 0o755)
        .file(
            "bin/app",
            0o755,
            format!("#!/bin/sh\necho {version}\n").as_bytes(),
        )
        .dir("etc/app", 0o755)
        .file(
            "etc/app/app.conf",
            0o644,
            format!("version={version}\n").as_bytes(),
        )
        .dir("data", 0o755)
        .file("data/seed.txt", 0o600, b"seed\n")
        .dir("var/cache", 0o755)
        .tar();
    Image::new(vec![(layer, Compression::Gzip)]).runtime(json!({
        "Env": ["PATH=/bin", "APP_MODE=production", "QUOTED=a \"b\" $c"],
        "Cmd": ["/bin/app", "--serve"],
        "Volumes": {"/etc/app": {}, "/data": {}, "/var/cache": {}, "/srv/custom": {}},
    }))
}

fn push(reg: &Registry, tree: &Tree, img: &Image, tag: &str) -> String {
    push_written(reg, tree, img, tag).digest
}

fn push_written(reg: &Registry, tree: &Tree, img: &Image, tag: &str) -> man8s_testsupport::Written {
    reg.push_image(&tree.at(&format!("/layout-{tag}")), img, "test/app", tag)
}

#[test]
fn root_pull_asks_about_volumes_on_a_terminal() {
    let tree = Tree::new();
    let reg = Registry::start();
    let written = push_written(&reg, &tree, &app_image("1"), "v1");
    let digest = written.digest.clone();
    let image = format!("{}/test/app:v1", reg.host());
    let layer_blob = tree
        .at("/var/cache/man8s/blobs/sha256")
        .join(written.layer_digests[0].strip_prefix("sha256:").unwrap());

    // Host paths are canonical; MAN8S_ROOT relocates them like every other path.
    let custom = Path::new("/srv/app-custom");
    std::fs::create_dir_all(tree.at("/srv/taken")).unwrap();
    let mut cmd = tree.cmd(&[
        "machines",
        "pull",
        &image,
        "app",
        "--volume",
        "/var/cache=skip",
    ]);
    cmd.env("TERM", "dumb");
    let mut pty = OnPty::spawn(cmd);
    // Image volumes are asked in the image's (sorted) order; /var/cache is answered already.
    pty.expect("The image declares the volume /data.");
    pty.expect("1) config 2) data 3) custom path 4) skip: ");
    // Asked from the image config, before any layer was downloaded.
    assert!(
        tree.at("/var/cache/man8s/blobs/sha256").is_dir(),
        "manifest and config are cached by now"
    );
    assert!(
        !layer_blob.exists(),
        "the layer was downloaded before the questions"
    );
    pty.send("7");
    pty.expect("\"7\" is not one of 1, 2, 3, 4.");
    pty.expect("1) config 2) data 3) custom path 4) skip: ");
    pty.send("2");
    pty.expect("The image declares the volume /etc/app.");
    pty.expect("4) skip: ");
    pty.send("1");
    pty.expect("The image declares the volume /srv/custom.");
    pty.expect("4) skip: ");
    pty.send("3");
    pty.expect("Absolute host path for /srv/custom (must not exist yet): ");
    pty.send("relative/path");
    pty.expect("is not an absolute path");
    pty.expect("Absolute host path for /srv/custom");
    pty.send("/srv/taken");
    pty.expect("/srv/taken already exists; choose a path that does not.");
    pty.expect("Absolute host path for /srv/custom");
    pty.send(custom.to_str().unwrap());
    pty.expect("Machine app created.");
    let (code, rest) = pty.finish();
    assert_eq!(code, 0, "{rest}");
    assert!(
        layer_blob.exists(),
        "the layer is cached after the pull (so the check above looked at the right path)"
    );

    let decl = std::fs::read_to_string(tree.at("/etc/man8s/machines/app.machine")).unwrap();
    assert_eq!(
        decl,
        format!(
            "# Machine app, created by `mbctl machines pull {image}`.\n[Machine]\nImage={image}\n\
             Volume=/data:data\nVolume=/etc/app:config\nVolume=/srv/custom:{}\n",
            custom.display()
        )
    );
    // The same parser the generator uses accepts it (no problem lines; the image's `$c` value is
    // noted because the Python tool's loader would have expanded it).
    let v = tree.run(&["verify"]);
    let out = ok(&v);
    assert!(
        out.lines().all(|l| l.starts_with("note: ")) && out.contains(":6: literal mode: QUOTED="),
        "{out}"
    );

    // Volumes seeded from the image on first creation; the skipped one not created.
    let cfg = tree.at("/var/lib/man8machine_configs/app");
    assert_eq!(
        std::fs::read_to_string(cfg.join("etc/app/app.conf")).unwrap(),
        "version=1\n"
    );
    assert_eq!(
        std::fs::read_to_string(tree.at("/var/lib/man8machine_storage/app/data/seed.txt")).unwrap(),
        "seed\n"
    );
    assert!(tree.at("/srv/app-custom").is_dir());
    assert!(!tree.at("/var/lib/man8machine_storage/app/var").exists());
    // man8env.env as the Python tool wrote it.
    let env = std::fs::read_to_string(cfg.join("man8env.env")).unwrap();
    assert!(
        env.starts_with("MAN8S_CONTAINER_NAME=app\nMAN8S_CONTAINER_TEMPLATE=network_isolated\n"),
        "{env}"
    );
    assert!(
        env.contains(&format!("MAN8S_OCI_IMAGE_URL={image}\n")),
        "{env}"
    );
    assert!(
        env.contains("MAN8S_APPLICATION_ARGS=/bin/app --serve\n"),
        "{env}"
    );
    assert!(
        env.contains("QUOTED=a \"b\" $c\n") && !env.contains("PATH="),
        "{env}"
    );
    // Rootfs installed, machinectl link made.
    assert!(tree.at("/var/lib/man8machines/app/bin/app").exists());
    assert_eq!(
        std::fs::read_link(tree.at("/var/lib/machines/app")).unwrap(),
        Path::new("/var/lib/man8machines/app")
    );

    // Never overwrite an existing machine.
    let again = tree.run(&["machines", "pull", &image, "app", "--yes"]);
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("machine app exists already"));
    assert_eq!(
        std::fs::read_to_string(tree.at("/etc/man8s/machines/app.machine")).unwrap(),
        decl
    );

    // list --json on this tree: no systemd asked, state unknown.
    let list: serde_json::Value =
        serde_json::from_str(&ok(&tree.run(&["machines", "list", "--json"]))).unwrap();
    let m = &list[0];
    assert_eq!(m["name"], "app");
    assert_eq!(m["state"], "unknown");
    assert_eq!(m["image"], image.as_str());
    assert_eq!(m["digest"], digest.as_str());
    assert_eq!(m["rootfs_present"], true);
    assert_eq!(m["volumes"].as_array().unwrap().len(), 3);
    let table = ok(&tree.run(&["machines", "list"]));
    assert!(table.starts_with("NAME  STATE    IMAGE"), "{table}");

    // images list knows which machine uses the image.
    let images: serde_json::Value =
        serde_json::from_str(&ok(&tree.run(&["images", "list", "--json"]))).unwrap();
    assert_eq!(images[0]["used_by"], json!(["app"]));
}

#[test]
fn root_pull_yes_update_download_remove() {
    let tree = Tree::new();
    let reg = Registry::start();
    let d1 = push(&reg, &tree, &app_image("1"), "latest");
    let image = format!("{}/test/app:latest", reg.host());

    // --yes: unanswered volumes become data volumes, no terminal needed.
    let o = tree.run(&[
        "machines",
        "pull",
        &image,
        "web",
        "--yes",
        "--volume",
        "/etc/app=config",
    ]);
    ok(&o);
    let decl = std::fs::read_to_string(tree.at("/etc/man8s/machines/web.machine")).unwrap();
    assert!(decl.contains("Volume=/data:data\nVolume=/etc/app:config\nVolume=/srv/custom:data\nVolume=/var/cache:data\n"), "{decl}");

    // Without --yes and without a terminal answer, pull fails before writing anything.
    let o = tree.run(&["machines", "pull", &image, "web2"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("no answer for volume /data"),
        "{o:?}"
    );
    assert!(!tree.at("/etc/man8s/machines/web2.machine").exists());

    // The user edits config; update must keep it.
    let conf = tree.at("/var/lib/man8machine_configs/web/etc/app/app.conf");
    std::fs::write(&conf, "edited\n").unwrap();
    let env = tree.at("/var/lib/man8machine_configs/web/man8env.env");
    let mut env_text = std::fs::read_to_string(&env).unwrap();
    env_text.push_str("MY_SETTING=kept\n");
    std::fs::write(&env, &env_text).unwrap();

    let up = ok(&tree.run(&["machines", "update", "web"]));
    assert!(up.contains("up to date"), "{up}");
    // --force: a fresh rootfs of the same image (drift inside the rootfs is gone), config kept.
    std::fs::write(tree.at("/var/lib/man8machines/web/drift"), "x").unwrap();
    let up = ok(&tree.run(&["machines", "update", "web", "--force"]));
    assert!(up.contains(&format!("Installed {d1} (was {d1})")), "{up}");
    assert!(!tree.at("/var/lib/man8machines/web/drift").exists());
    assert_eq!(std::fs::read_to_string(&conf).unwrap(), "edited\n");
    let d2 = push(&reg, &tree, &app_image("2"), "latest");
    assert_ne!(d1, d2);
    let o = tree.run(&["machines", "update", "web"]);
    let out = ok(&o);
    assert!(out.contains(&format!("Installed {d2} (was {d1})")), "{out}");
    assert_eq!(
        std::fs::read_to_string(tree.at("/var/lib/man8machines/web/bin/app")).unwrap(),
        "#!/bin/sh\necho 2\n"
    );
    assert_eq!(
        std::fs::read_to_string(tree.at("/var/lib/man8machines/.web.previous/bin/app")).unwrap(),
        "#!/bin/sh\necho 1\n"
    );
    assert_eq!(std::fs::read_to_string(&conf).unwrap(), "edited\n");
    assert_eq!(std::fs::read_to_string(&env).unwrap(), env_text);

    // oci download: rootfs + config, no protected-dir renames.
    let dl = tree.path().join("download");
    ok(&tree.run(&["oci", "download", &image, dl.to_str().unwrap()]));
    assert!(dl.join("bin/app").exists() && dl.join(".man8s/image.json").exists());
    let o = tree.run(&["oci", "download", &image, dl.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "refuses a non-empty dir");
    // Without DIR (as the Python tool's README shows): ./NAME of the image.
    let o = tree
        .cmd(&["oci", "download", &image])
        .current_dir(tree.path())
        .output()
        .unwrap();
    ok(&o);
    assert!(tree.path().join("app/bin/app").exists());

    // remove keeps config and data, removes rootfs, previous rootfs, declaration and link.
    ok(&tree.run(&["machines", "remove", "web"]));
    for gone in [
        "/etc/man8s/machines/web.machine",
        "/var/lib/man8machines/web",
        "/var/lib/man8machines/.web.previous",
        "/var/lib/machines/web",
    ] {
        assert!(
            tree.at(gone).symlink_metadata().is_err(),
            "{gone} still there"
        );
    }
    assert_eq!(std::fs::read_to_string(&conf).unwrap(), "edited\n");
    assert!(
        tree.at("/var/lib/man8machine_storage/web/data/seed.txt")
            .exists()
    );
    // A new pull of the same name reuses the kept config (the user's edits win).
    let o = tree.run(&["machines", "pull", &image, "web", "--yes"]);
    ok(&o);
    assert!(
        String::from_utf8_lossy(&o.stderr)
            .contains("Reusing the kept /var/lib/man8machine_configs/web"),
        "{o:?}"
    );
    assert_eq!(std::fs::read_to_string(&env).unwrap(), env_text);
    ok(&tree.run(&["machines", "remove", "web", "--purge"]));
    assert!(!tree.at("/var/lib/man8machine_configs/web").exists());
    assert!(!tree.at("/var/lib/man8machine_storage/web").exists());

    // prune: nothing installed any more, so every blob goes; clear empties the rest.
    let pr = ok(&tree.run(&["images", "prune"]));
    assert!(pr.starts_with("Removed "), "{pr}");
    ok(&tree.run(&["cache", "clear"]));
    assert_eq!(ok(&tree.run(&["images", "list", "--json"])).trim(), "[]");
}

/// `import` of every kind of archive, then a machine from one of them with no registry at all.
#[test]
fn root_import_archives_and_make_a_machine() {
    let tree = Tree::new();
    let layout = tree.path().join("layout");
    let w = app_image("3").write(&layout);
    man8s_testsupport::tag(&layout, &w, "v3", false);

    // OCI layout directory.
    let out = ok(&tree.run(&[
        "import",
        layout.to_str().unwrap(),
        "--reference",
        "localhost/app:dir",
    ]));
    assert!(
        out.contains("(OCI image layout) as localhost/app:dir → ") && out.contains(&w.digest),
        "{out}"
    );
    // OCI layout tarball.
    let oci_tar = tree.path().join("oci.tar");
    let st = Command::new("tar")
        .arg("-C")
        .arg(&layout)
        .arg("-cf")
        .arg(&oci_tar)
        .arg(".")
        .status()
        .unwrap();
    assert!(st.success());
    let out = ok(&tree.run(&[
        "import",
        oci_tar.to_str().unwrap(),
        "--reference",
        "localhost/app:tar",
    ]));
    assert!(out.contains(&w.digest), "{out}");
    // docker save format, written by skopeo (legacy manifest.json, HEX.tar layers).
    let save = tree.path().join("save.tar");
    let o = Command::new("skopeo")
        .args(["copy", "--quiet"])
        .arg(format!("oci:{}:v3", layout.display()))
        .arg(format!(
            "docker-archive:{}:localhost/app:v3",
            save.display()
        ))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = ok(&tree.run(&[
        "import",
        save.to_str().unwrap(),
        "--reference",
        "localhost/app:save",
    ]));
    assert!(out.contains("(docker save archive)"), "{out}");
    // docker export: a plain root file system tarball.
    let rootfs_tar = tree.path().join("export.tar");
    let layer = LayerBuilder::new()
        .dir("bin", 0o755)
        .file("bin/tool", 0o755, b"x")
        .tar();
    std::fs::write(&rootfs_tar, &layer).unwrap();
    let out = ok(&tree.run(&[
        "import",
        rootfs_tar.to_str().unwrap(),
        "--reference",
        "localhost/tool:1",
    ]));
    assert!(
        out.contains("(root file system tarball (docker export))") && out.contains("set Exec="),
        "{out}"
    );

    let images: serde_json::Value =
        serde_json::from_str(&ok(&tree.run(&["images", "list", "--json"]))).unwrap();
    let refs: Vec<&str> = images
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["reference"].as_str().unwrap())
        .collect();
    assert_eq!(refs.len(), 4, "{refs:?}");

    // A machine from an imported image: no registry exists in this test.
    let out = ok(&tree.run(&[
        "import",
        save.to_str().unwrap(),
        "--reference",
        "localhost/app:save",
        "--machine",
        "offline",
    ]));
    assert!(out.contains("Machine offline created."), "{out}");
    let decl = std::fs::read_to_string(tree.at("/etc/man8s/machines/offline.machine")).unwrap();
    assert!(
        decl.contains("Image=localhost/app:save\nPull=never\n"),
        "{decl}"
    );
    assert_eq!(
        std::fs::read_to_string(tree.at("/var/lib/man8machines/offline/bin/app")).unwrap(),
        "#!/bin/sh\necho 3\n"
    );
    assert!(
        tree.at("/var/lib/man8machine_storage/offline/data/seed.txt")
            .exists()
    );

    // A new archive under the same reference, then `update`: the imported image replaces the rootfs
    // (no registry is asked: the machine is Pull=never).
    let layout4 = tree.path().join("layout4");
    let w4 = app_image("4").write(&layout4);
    man8s_testsupport::tag(&layout4, &w4, "v4", false);
    ok(&tree.run(&[
        "import",
        layout4.to_str().unwrap(),
        "--reference",
        "localhost/app:save",
    ]));
    let out = ok(&tree.run(&["machines", "update", "offline"]));
    assert!(out.contains(&format!("Installed {}", w4.digest)), "{out}");
    assert_eq!(
        std::fs::read_to_string(tree.at("/var/lib/man8machines/offline/bin/app")).unwrap(),
        "#!/bin/sh\necho 4\n"
    );

    // A tampered OCI layout is refused, naming the blob.
    let blob = layout
        .join("blobs/sha256")
        .join(w.layer_digests[0].strip_prefix("sha256:").unwrap());
    std::fs::write(&blob, b"tampered").unwrap();
    let o = tree.run(&[
        "import",
        layout.to_str().unwrap(),
        "--reference",
        "localhost/app:bad",
    ]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&format!("blob {} hashes to", w.layer_digests[0])),
        "{err}"
    );
    // Not an archive at all.
    let o = tree.run(&["import", "/nonexistent.tar", "--reference", "localhost/x:1"]);
    assert_eq!(o.status.code(), Some(1));
}

/// A rootfs with a mount inside (a running machine that systemd could not tell us about) is
/// never deleted: `remove` refuses before removing anything.
#[test]
fn root_remove_refuses_a_tree_with_mounts() {
    let tree = Tree::new();
    std::fs::create_dir_all(tree.at("/etc/man8s/machines")).unwrap();
    std::fs::write(
        tree.at("/etc/man8s/machines/busy.machine"),
        "[Machine]\nImage=redis\n",
    )
    .unwrap();
    let proc_dir = tree.at("/var/lib/man8machines/busy/proc");
    std::fs::create_dir_all(&proc_dir).unwrap();
    std::fs::write(tree.at("/var/lib/man8machines/busy/keep"), "x").unwrap();
    // A private mount namespace, so the tmpfs is gone with the command.
    let o = Command::new("unshare")
        .args([
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            r#"mount -t tmpfs t "$1" && exec "$2" machines remove busy"#,
            "sh",
        ])
        .arg(&proc_dir)
        .arg(env!("CARGO_BIN_EXE_mbctl"))
        .env("MAN8S_ROOT", tree.path())
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("has a mount at") && err.contains("nothing removed"),
        "{err}"
    );
    assert!(
        tree.at("/etc/man8s/machines/busy.machine").exists(),
        "declaration kept"
    );
    assert!(
        tree.at("/var/lib/man8machines/busy/keep").exists(),
        "rootfs kept"
    );
    // Without the mount it goes.
    ok(&tree.run(&["machines", "remove", "busy"]));
    assert!(!tree.at("/var/lib/man8machines/busy").exists());
}

/// A pull that fails after the rootfs is in place (a volume cannot be created) leaves no machine
/// behind, so the next attempt is not refused as "exists already".
#[test]
fn root_failed_pull_leaves_nothing_half_made() {
    let tree = Tree::new();
    let reg = Registry::start();
    push(&reg, &tree, &app_image("1"), "v1");
    let image = format!("{}/test/app:v1", reg.host());
    std::fs::create_dir_all(tree.at("/srv")).unwrap();
    std::fs::write(tree.at("/srv/blocker"), "a file where a directory must go").unwrap();
    let o = tree.run(&[
        "machines",
        "pull",
        &image,
        "app",
        "--yes",
        "--volume",
        "/data=/srv/blocker/data",
    ]);
    assert_eq!(
        o.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("machine app not created"),
        "{o:?}"
    );
    for gone in [
        "/etc/man8s/machines/app.machine",
        "/var/lib/man8machines/app",
        "/var/lib/machines/app",
    ] {
        assert!(
            tree.at(gone).symlink_metadata().is_err(),
            "{gone} left behind"
        );
    }
    ok(&tree.run(&["machines", "pull", &image, "app", "--yes"]));
    assert!(tree.at("/var/lib/man8machines/app/bin/app").exists());
}

// ---- Issue 10: hostile images. Every case runs against a canary directory outside the tree that
// the image aims at (absolute symlinks to its real path, relative ones climbing to it), and
// asserts by a before/after snapshot that nothing there changed.

fn push_repo(reg: &Registry, tree: &Tree, img: &Image, repo: &str) -> String {
    let layout = tree.at(&format!("/layout-{}", repo.replace('/', "-")));
    reg.push_image(&layout, img, repo, "1");
    format!("{}/{repo}:1", reg.host())
}

fn failed(o: &Output) -> String {
    assert_eq!(
        o.status.code(),
        Some(1),
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Cases 1 and 2: nested image volumes whose outer volume carries a symlink out (absolute, or
/// relative and climbing), and a bind source that is such a symlink.
#[test]
fn root_hostile_nested_volumes_never_write_or_bind_through_an_image_symlink() {
    let tree = Tree::new();
    let canary = Canary::new();
    let reg = Registry::start();
    let target = canary.path().join("etc/systemd/system");
    let climb = format!(
        "{}{}",
        "../".repeat(40),
        target.to_str().unwrap().trim_start_matches('/')
    );
    let layer = LayerBuilder::new()
        .dir("a", 0o755)
        .symlink("a/link", target.to_str().unwrap())
        .symlink("a/up", &climb)
        .symlink("a/root", "/")
        .dir("x", 0o755)
        .file("x/payload", 0o4755, b"#!/bin/sh\nid\n")
        .tar();
    let cases = [
        (
            "nested-abs",
            json!({"/a": {}, "/a/link/x": {}}),
            "is a symlink",
        ),
        (
            "nested-rel",
            json!({"/a": {}, "/a/up/x": {}}),
            "is a symlink",
        ),
        ("bind-root", json!({"/a": {}, "/a/root": {}}), "bind source"),
    ];
    let before = canary.snapshot();
    for (name, volumes, why) in cases {
        let img = Image::new(vec![(layer.clone(), Compression::Gzip)])
            .runtime(json!({"Cmd": ["/x/payload"], "Volumes": volumes}));
        let image = push_repo(&reg, &tree, &img, &format!("hostile/{name}"));
        let err = failed(&tree.run(&["machines", "pull", &image, name, "--yes"]));
        // Progress lines come first; the error is the one last line.
        let last = err.trim_end().lines().last().unwrap_or_default();
        assert!(
            last.starts_with("mbctl: ") && last.contains(why),
            "{name}: {err}"
        );
        assert_eq!(canary.snapshot(), before, "{name}: the canary changed");
        // Nothing half-made blocks a retry; the declaration is gone again.
        assert!(
            !tree
                .at(&format!("/etc/man8s/machines/{name}.machine"))
                .exists()
        );
    }
    // The host's / was never bound: no declaration, so no nspawn file can name it.
    assert!(std::fs::metadata("/").unwrap().is_dir());
}

/// Case 3: private parents for rootfs, config and storage; `oci download` defuses setuid files
/// and device nodes unless --keep-special.
#[test]
fn root_hostile_special_files_stay_out_of_reach_of_other_users() {
    use std::os::unix::fs::PermissionsExt;
    let tree = Tree::new();
    let reg = Registry::start();
    let layer = LayerBuilder::new()
        .dir("bin", 0o755)
        .file("bin/sh-suid", 0o4755, b"x")
        .file("bin/sgid", 0o2755, b"x")
        .dir("data", 0o755)
        .file("data/suid", 0o4755, b"x")
        .dir("dev", 0o755)
        .char_device("dev/mem", 0o666, 1, 1)
        .tar();
    let img = Image::new(vec![(layer, Compression::Gzip)])
        .runtime(json!({"Cmd": ["/bin/sh-suid"], "Volumes": {"/data": {}}}));
    let image = push_repo(&reg, &tree, &img, "hostile/special");
    ok(&tree.run(&["machines", "pull", &image, "sp", "--yes"]));
    for dir in [
        "/var/lib/man8machines",
        "/var/lib/man8machine_configs",
        "/var/lib/man8machine_storage",
        "/var/lib/man8s/machines",
    ] {
        let mode = std::fs::metadata(tree.at(dir))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o700, "{dir}");
    }
    // Inside the private parents the image's modes are kept (the machine needs them).
    let mode = |p: &Path| std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777;
    assert_eq!(
        mode(&tree.at("/var/lib/man8machine_storage/sp/data/suid")),
        0o4755
    );

    let dl = tree.path().join("dl");
    let o = tree.run(&["oci", "download", &image, dl.to_str().unwrap()]);
    ok(&o);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("setuid/setgid bits of 3 files") && err.contains("1 device nodes"),
        "{err}"
    );
    assert_eq!(mode(&dl.join("bin/sh-suid")), 0o755);
    assert_eq!(mode(&dl.join("bin/sgid")), 0o755);
    assert_eq!(mode(&dl.join("dev/mem")), 0o600);
    let kept = tree.path().join("kept");
    let o = tree.run(&[
        "oci",
        "download",
        "--keep-special",
        &image,
        kept.to_str().unwrap(),
    ]);
    ok(&o);
    assert!(String::from_utf8_lossy(&o.stderr).contains("mode 0700"));
    assert_eq!(mode(&kept.join("bin/sh-suid")), 0o4755);
    assert_eq!(mode(&kept), 0o700);
}

/// Case 4: an image's Env never sets MAN8S_* (its mesh address, another machine's name).
#[test]
fn root_hostile_image_env_cannot_set_man8s_variables() {
    let tree = Tree::new();
    let reg = Registry::start();
    let img = app_image("1").runtime(json!({
        "Env": ["MAN8S_YGGDRASIL_ADDRESS=300:6666::1", "MAN8S_CONTAINER_NAME=victim", "OK=1"],
        "Cmd": ["/bin/app"],
    }));
    let image = push_repo(&reg, &tree, &img, "hostile/env");
    let o = tree.run(&["machines", "pull", &image, "envy", "--yes"]);
    ok(&o);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("MAN8S_YGGDRASIL_ADDRESS, MAN8S_CONTAINER_NAME") && err.contains("ignored"),
        "{err}"
    );
    let env =
        std::fs::read_to_string(tree.at("/var/lib/man8machine_configs/envy/man8env.env")).unwrap();
    assert!(
        env.contains("MAN8S_CONTAINER_NAME=envy\n") && env.contains("OK=1\n"),
        "{env}"
    );
    assert!(!env.contains("victim") && !env.contains("6666"), "{env}");
}

/// Case 5: the machine's root replaces the rootfs's own records with a FIFO and a link to
/// /dev/zero; host tools read the host-owned state and neither hang nor eat memory.
#[test]
fn root_hostile_rootfs_records_are_never_trusted_or_blocking() {
    let tree = Tree::new();
    let reg = Registry::start();
    let image = push_repo(&reg, &tree, &app_image("1"), "hostile/records");
    ok(&tree.run(&["machines", "pull", &image, "rec", "--yes"]));
    let meta = tree.at("/var/lib/man8machines/rec/.man8s");
    std::fs::remove_file(meta.join("source.json")).unwrap();
    nix::unistd::mkfifo(
        &meta.join("source.json"),
        nix::sys::stat::Mode::from_bits_truncate(0o644),
    )
    .unwrap();
    std::fs::remove_file(meta.join("image.json")).unwrap();
    std::os::unix::fs::symlink("/dev/zero", meta.join("image.json")).unwrap();
    let digest = serde_json::from_slice::<serde_json::Value>(
        &std::fs::read(tree.at("/var/lib/man8s/machines/rec/source.json")).unwrap(),
    )
    .unwrap()["manifest_digest"]
        .as_str()
        .unwrap()
        .to_owned();
    for args in [
        &["machines", "list"][..],
        &["machines", "status", "rec"],
        &["images", "list"],
        &["machines", "update", "rec"],
    ] {
        let mut child = tree
            .cmd(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while child.try_wait().unwrap().is_none() {
            assert!(std::time::Instant::now() < deadline, "{args:?} hangs");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{args:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        if args[0] == "images" || args[1] == "status" {
            assert!(text.contains(&digest), "{args:?}: {text}");
        }
        if args[1] == "update" {
            assert!(text.contains("up to date"), "{text}");
        }
    }
}

/// Case 7 (through man8s.conf) and case 10: a per-image unpacked-size cap, and temp names of
/// machine `a` that never match anything of machine `a.tmp-x`.
#[test]
fn root_hostile_unpacked_size_cap_and_temp_names_of_other_machines() {
    let tree = Tree::new();
    let canary = Canary::new();
    let before = canary.snapshot();
    let reg = Registry::start();
    std::fs::create_dir_all(tree.at("/etc/man8s")).unwrap();
    std::fs::write(
        tree.at("/etc/man8s/man8s.conf"),
        "[Pull]\nMaxUnpackedSize=64K\n",
    )
    .unwrap();
    let big = LayerBuilder::new()
        .file("big", 0o644, &vec![7u8; 100 << 10])
        .tar();
    let img = Image::new(vec![(big, Compression::Gzip)]).runtime(json!({"Cmd": ["/big"]}));
    let image = push_repo(&reg, &tree, &img, "hostile/big");
    let err = failed(&tree.run(&["machines", "pull", &image, "big", "--yes"]));
    let last = err.trim_end().lines().last().unwrap_or_default();
    assert!(
        last.contains("MaxUnpackedSize=") && last.contains("\"big\""),
        "{err}"
    );
    assert!(!tree.at("/var/lib/man8machines/big").exists());
    assert_eq!(canary.snapshot(), before);

    // Machine `a.tmp-x`'s kept rootfs and its debris survive installing machine `a`.
    std::fs::write(tree.at("/etc/man8s/man8s.conf"), "").unwrap();
    let others = [".a.tmp-x.previous", ".a.tmp-x.lock", ".a.tmp-x+tmp-abc"];
    for o in others {
        std::fs::create_dir_all(tree.at("/var/lib/man8machines").join(o).join("etc")).unwrap();
    }
    let image = push_repo(&reg, &tree, &app_image("1"), "hostile/names");
    ok(&tree.run(&["machines", "pull", &image, "a", "--yes"]));
    for o in others {
        assert!(
            tree.at("/var/lib/man8machines")
                .join(o)
                .join("etc")
                .is_dir(),
            "{o}"
        );
    }
}
