//! Root tier: the layer store against a real `docker-registry` on 127.0.0.1: two images that
//! share a base layer store it once; whiteouts and opaque directories of an upper layer hide
//! lower content under overlayfs (the kernel's, mounted here); gc keeps every layer in use.

use std::path::Path;

use man8s_oci::ImageRef;
use man8s_oci::cache::BlobCache;
use man8s_oci::layers::{LayerSet, LayerStore, Merged, chain_ids};
use man8s_oci::progress::Silent;
use man8s_oci::pull::{Policy, Puller, ResolvedImage};
use man8s_oci::registry::RegistryConfig;
use man8s_oci::unpack::UnpackOptions;
use man8s_testsupport::{
    self as ts, Compression, Format, Image, LayerBuilder, Registry, require_root,
};

fn base() -> Vec<u8> {
    LayerBuilder::new()
        .dir("etc", 0o755)
        .file("etc/keep", 0o644, b"keep\n")
        .file("etc/gone", 0o644, b"gone\n")
        .dir("opq", 0o750)
        .file("opq/old", 0o644, b"old")
        .dir("run", 0o755)
        .file("run/marker", 0o644, b"run-content")
        .file_owned("home/u/f", 0o600, 1000, 1000, b"u")
        .tar()
}

fn app(tag: &str) -> Vec<u8> {
    LayerBuilder::new()
        .whiteout("etc/gone")
        .dir("opq", 0o750)
        .file("opq/.wh..wh..opq", 0o644, b"")
        .file("opq/new", 0o644, b"new")
        .file("app", 0o755, tag.as_bytes())
        .tar()
}

struct Env {
    dir: tempfile::TempDir,
    cache: BlobCache,
    store: LayerStore,
    config: RegistryConfig,
}

impl Env {
    fn new() -> Self {
        require_root();
        let dir = tempfile::tempdir().unwrap();
        let cache = BlobCache::at(dir.path().join("cache"));
        let store = LayerStore::at(dir.path().join("cache/layers"));
        let config = RegistryConfig {
            auth_files: vec![dir.path().join("auth.json")],
            ..RegistryConfig::default()
        };
        Env {
            dir,
            cache,
            store,
            config,
        }
    }

    fn push_and_pull(&self, reg: &Registry, layers: Vec<Vec<u8>>, tag: &str) -> ResolvedImage {
        let layout = self.dir.path().join("layout");
        let img = Image::new(layers.into_iter().map(|l| (l, Compression::Gzip)).collect());
        let w = img.write(&layout);
        ts::tag(&layout, &w, tag, false);
        reg.push(&layout, tag, "team/app", tag, Format::Oci);
        let puller = Puller {
            cache: &self.cache,
            config: &self.config,
            progress: &Silent,
            platform: "linux/amd64".parse().unwrap(),
        };
        let image = ImageRef::parse(&format!("{}/team/app:{tag}", reg.host())).unwrap();
        man8s_oci::pull::block_on(puller.pull(&image, Policy::Missing))
            .unwrap()
            .unwrap()
    }

    fn ensure(&self, image: &ResolvedImage) -> LayerSet {
        let (set, _pin) = self
            .store
            .ensure(
                image,
                &self.cache,
                &UnpackOptions::default(),
                &Silent,
                &|_| Ok(()),
            )
            .unwrap();
        set
    }
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn root_layers_are_shared_and_overlay_sees_whiteouts_across_layers() {
    let env = Env::new();
    let reg = Registry::start();
    let one = env.push_and_pull(&reg, vec![base(), app("one")], "1");
    let two = env.push_and_pull(&reg, vec![base(), app("two")], "2");
    let set1 = env.ensure(&one);
    let set2 = env.ensure(&two);
    assert_eq!(set1.chain_ids, chain_ids(&one.config.rootfs.diff_ids));
    assert_eq!(
        set1.chain_ids[0], set2.chain_ids[0],
        "one base layer for both"
    );
    assert_ne!(set1.chain_ids[1], set2.chain_ids[1]);
    // Three layers on disk, not four: the base was unpacked once.
    assert_eq!(env.store.count(), 3);
    let base_dir = env.store.layer_dir(&set1.chain_ids[0]).unwrap();
    let inode = |p: &Path| std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(p).unwrap());
    let before = inode(&base_dir.join("etc/keep"));
    env.ensure(&one);
    assert_eq!(
        inode(&base_dir.join("etc/keep")),
        before,
        "not unpacked again"
    );

    // In the store, the upper layer keeps its whiteout and opaque marker for overlayfs.
    let upper = env.store.layer_dir(&set1.chain_ids[1]).unwrap();
    let wh = std::fs::symlink_metadata(upper.join("etc/gone")).unwrap();
    use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
    assert!(
        wh.file_type().is_char_device() && wh.rdev() == 0,
        "0:0 whiteout"
    );
    let opaque = nix_getxattr(&upper.join("opq"), "trusted.overlay.opaque");
    assert_eq!(opaque.as_deref(), Some(&b"y"[..]));
    assert!(
        base_dir.join("etc/gone").is_file(),
        "the base layer is untouched"
    );

    // What a machine sees: the layers (top layer first) merged by the kernel.
    let lowers = env.store.lowers(&set1).unwrap();
    let merged = Merged::mount(&lowers, env.dir.path()).unwrap();
    let m = merged.path();
    assert_eq!(read(&m.join("etc/keep")), "keep\n");
    assert!(!m.join("etc/gone").exists(), "whiteout of a lower file");
    assert!(
        !m.join("opq/old").exists(),
        "opaque dir hides lower content"
    );
    assert_eq!(read(&m.join("opq/new")), "new");
    assert_eq!(read(&m.join("app")), "one");
    let home = std::fs::metadata(m.join("home/u/f")).unwrap();
    assert_eq!((home.uid(), home.gid()), (1000, 1000), "owners kept");
    // The top layer: image config, /run kept aside and emptied, /usr made for nspawn.
    assert_eq!(read(&m.join("run.man8sprotected/marker")), "run-content");
    assert_eq!(std::fs::read_dir(m.join("run")).unwrap().count(), 0);
    assert_eq!(
        std::fs::metadata(m.join("tmp"))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777,
        0o1777
    );
    assert!(m.join("usr").is_dir());
    let config: serde_json::Value =
        serde_json::from_str(&read(&m.join(".man8s/image.json"))).unwrap();
    assert!(config["rootfs"]["diff_ids"].is_array());
    drop(merged);

    // gc: only the layers of sets in use stay.
    let report = env.store.gc(std::slice::from_ref(&set1)).unwrap();
    assert_eq!(report.removed, 2, "app:2's own layer and top layer go");
    assert!(env.store.has(&set1));
    assert!(!env.store.has(&set2));
    assert!(
        base_dir.is_dir(),
        "the shared base stays while one image uses it"
    );
    let report = env.store.gc(&[]).unwrap();
    assert_eq!(report.removed, 3);
    assert_eq!(env.store.count(), 0);
}

fn nix_getxattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 256];
    let n = xattr_get(path, name, &mut buf)?;
    buf.truncate(n);
    Some(buf)
}

#[allow(unsafe_code)] // lgetxattr has no safe wrapper in nix.
fn xattr_get(path: &Path, name: &str, buf: &mut [u8]) -> Option<usize> {
    use std::os::unix::ffi::OsStrExt;
    let p = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    let k = std::ffi::CString::new(name).unwrap();
    // SAFETY: NUL-terminated strings and a buffer of the given length, all alive for the call.
    let n =
        unsafe { nix::libc::lgetxattr(p.as_ptr(), k.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    usize::try_from(n).ok()
}
