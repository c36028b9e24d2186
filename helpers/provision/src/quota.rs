//! `DiskMax=` (`[Resources]`): how much a layered machine may write into its root.
//!
//! The limit is a btrfs qgroup limit on referenced bytes of the machine's writable layer
//! (`/var/lib/man8s/machines/NAME/rw`, a subvolume on btrfs: [`crate::layered::Root::ensure_rw`]),
//! set before every start, so a layer put back from a snapshot (a new subvolume, a new qgroup)
//! gets it too. Quotas are enabled on that btrfs when they are off. Everything else is refused
//! with one line: ext4 and XFS project quotas are not built (the test kernel has neither
//! `CONFIG_QFMT_V2` nor `CONFIG_XFS_QUOTA`, so they could not be tested), and a full copy has no
//! layer of its own to limit. The ioctls are called directly rather than `btrfs qgroup limit`:
//! no btrfs-progs needed at run time, and errors come back as errno, not text.

// unsafe: the btrfs quota ioctls have no safe wrapper.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::path::Path;

use man8s::machine::Machine;
use man8s::{MachineName, Paths};
use man8s_oci::progress::human;

use crate::layered::{Root, Storage};
use crate::{Error, Result};

/// What [`apply`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// No `DiskMax=` (any earlier limit is taken away).
    Nothing,
    /// The limit is set (bytes); `enabled_quotas` when this call turned quotas on.
    Limited {
        /// The limit.
        bytes: u64,
        /// Quotas were off on that btrfs and are on now.
        enabled_quotas: bool,
        /// A plain writable layer became a subvolume first.
        converted: bool,
    },
}

/// Before a start: set (or clear) the `DiskMax=` limit of `machine`'s writable layer.
pub fn apply(paths: &Paths, machine: &Machine) -> Result<Applied> {
    let name = &machine.name;
    let root = Root::new(paths, name);
    let layered = matches!(root.storage(), Some(Storage::Layered { .. }));
    let Some(bytes) = machine.resources.disk_max else {
        // Limits outlive declarations: take one away once the key is gone.
        if layered {
            clear(&root.rw()).map_err(|e| {
                Error::Other(format!(
                    "machine {name}: cannot take away the disk limit of {} (no DiskMax= now): {e}",
                    root.rw().display()
                ))
            })?;
        }
        return Ok(Applied::Nothing);
    };
    let what = format!("machine {name}: DiskMax={}", human(bytes));
    if !layered {
        return Err(Error::Other(format!(
            "{what}: its root is a full copy, and only a layered machine's writable layer can be \
             limited; `mbctl machines reset --convert {name}` makes it layered"
        )));
    }
    root.ensure_rw()?;
    let rw = root.rw();
    let fs = fs_name(&rw);
    if fs != "btrfs" {
        return Err(Error::Other(format!(
            "{what}: {} is on {fs}: DiskMax= needs btrfs (a qgroup limit); ext4 and XFS project \
             quotas are not supported",
            rw.display()
        )));
    }
    root.unmount()?;
    let converted = man8s_oci::snapshot::into_subvolume(&rw).map_err(|e| {
        Error::Other(format!(
            "{what}: cannot make {} a subvolume: {e}",
            rw.display()
        ))
    })?;
    let dir = open_dir(&rw)?;
    let mut enabled_quotas = false;
    let limited = match btrfs::limit_referenced(&dir, bytes) {
        Err(e) if e.raw_os_error() == Some(nix::libc::ENOTCONN) => {
            btrfs::enable_quotas(&dir).map_err(|e| {
                Error::Other(format!(
                    "{what}: cannot enable btrfs quotas for {}: {e}",
                    rw.display()
                ))
            })?;
            enabled_quotas = true;
            btrfs::limit_referenced(&dir, bytes)
        }
        other => other,
    };
    limited.map_err(|e| {
        Error::Other(format!(
            "{what}: cannot set a qgroup limit on {}: {e}",
            rw.display()
        ))
    })?;
    Ok(Applied::Limited {
        bytes,
        enabled_quotas,
        converted,
    })
}

/// Take the limit off `rw` where there can be one (a subvolume on btrfs with quotas on).
fn clear(rw: &Path) -> io::Result<()> {
    let dir = match std::fs::File::open(rw) {
        Ok(d) => d,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if !man8s_oci::snapshot::is_subvolume(&dir) {
        return Ok(());
    }
    match btrfs::limit_referenced(&dir, btrfs::NO_LIMIT) {
        // Quotas are off: there is no limit.
        Err(e) if e.raw_os_error() == Some(nix::libc::ENOTCONN) => Ok(()),
        r => r,
    }
}

fn open_dir(p: &Path) -> Result<std::fs::File> {
    std::fs::File::open(p).map_err(|e| Error::io(p, e))
}

/// The file system `p` is on, by name where we know it.
fn fs_name(p: &Path) -> String {
    use nix::sys::statfs::{
        BTRFS_SUPER_MAGIC, EXT4_SUPER_MAGIC, OVERLAYFS_SUPER_MAGIC, TMPFS_MAGIC, XFS_SUPER_MAGIC,
        statfs,
    };
    match statfs(p) {
        Ok(s) => match s.filesystem_type() {
            BTRFS_SUPER_MAGIC => "btrfs".into(),
            EXT4_SUPER_MAGIC => "ext4".into(),
            XFS_SUPER_MAGIC => "xfs".into(),
            TMPFS_MAGIC => "tmpfs".into(),
            OVERLAYFS_SUPER_MAGIC => "overlayfs".into(),
            t => format!("a file system of type {:#x}", t.0),
        },
        Err(e) => format!("an unreadable file system ({e})"),
    }
}

/// One line for man8s-fetch's log about what [`apply`] did, when it did something.
pub fn describe(name: &MachineName, applied: &Applied) -> Option<String> {
    match applied {
        Applied::Nothing => None,
        Applied::Limited {
            bytes,
            enabled_quotas,
            converted,
        } => {
            let mut line = format!("{name}: writable layer limited to {}", human(*bytes));
            if *converted {
                line.push_str(" (made a btrfs subvolume)");
            }
            if *enabled_quotas {
                line.push_str("; btrfs quotas were off and are on now");
            }
            Some(line)
        }
    }
}

/// The two btrfs quota ioctls used here (`linux/btrfs.h`).
mod btrfs {
    use super::*;

    /// `max_rfer` that takes a limit away (`CLEAR_VALUE` in the kernel).
    pub const NO_LIMIT: u64 = u64::MAX;

    /// `struct btrfs_ioctl_quota_ctl_args`.
    #[repr(C)]
    pub(super) struct QuotaCtl {
        cmd: u64,
        status: u64,
    }

    /// `struct btrfs_ioctl_qgroup_limit_args` (with `struct btrfs_qgroup_limit` inline).
    #[repr(C)]
    pub(super) struct QgroupLimit {
        qgroupid: u64,
        flags: u64,
        max_rfer: u64,
        max_excl: u64,
        rsv_rfer: u64,
        rsv_excl: u64,
    }

    /// `_IOWR(0x94, 40, struct btrfs_ioctl_quota_ctl_args)`.
    pub(super) const QUOTA_CTL: nix::libc::Ioctl = 0xC010_9428;
    /// `_IOR(0x94, 43, struct btrfs_ioctl_qgroup_limit_args)`.
    pub(super) const QGROUP_LIMIT: nix::libc::Ioctl = 0x8030_942B;
    const QUOTA_CTL_ENABLE: u64 = 1;
    const LIMIT_MAX_RFER: u64 = 1;

    /// Limit what the subvolume of `dir` references to `bytes` (qgroup 0 is "this subvolume's").
    /// ENOTCONN when quotas are off.
    pub fn limit_referenced(dir: &impl AsFd, bytes: u64) -> io::Result<()> {
        let args = QgroupLimit {
            qgroupid: 0,
            flags: LIMIT_MAX_RFER,
            max_rfer: bytes,
            max_excl: 0,
            rsv_rfer: 0,
            rsv_excl: 0,
        };
        // SAFETY: `args` is a live, correctly laid out struct for the whole call; `dir` is open.
        let rc = unsafe {
            nix::libc::ioctl(
                dir.as_fd().as_raw_fd(),
                QGROUP_LIMIT,
                &args as *const QgroupLimit,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// Turn quotas on for the btrfs of `dir` (the kernel rescans existing data).
    pub fn enable_quotas(dir: &impl AsFd) -> io::Result<()> {
        let mut args = QuotaCtl {
            cmd: QUOTA_CTL_ENABLE,
            status: 0,
        };
        // SAFETY: as above; the kernel may write `status`.
        let rc = unsafe {
            nix::libc::ioctl(
                dir.as_fd().as_raw_fd(),
                QUOTA_CTL,
                &mut args as *mut QuotaCtl,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioctl_numbers_match_linux_btrfs_h() {
        // _IOC(dir, type, nr, size) = dir << 30 | size << 16 | type << 8 | nr; _IOWR 3, _IOR 2.
        let ioc = |dir: u64, nr: u64, size: usize| dir << 30 | (size as u64) << 16 | 0x94 << 8 | nr;
        let quota_ctl = ioc(3, 40, std::mem::size_of::<btrfs::QuotaCtl>());
        let limit = ioc(2, 43, std::mem::size_of::<btrfs::QgroupLimit>());
        assert_eq!(quota_ctl, btrfs::QUOTA_CTL);
        assert_eq!(limit, btrfs::QGROUP_LIMIT);
    }
}
