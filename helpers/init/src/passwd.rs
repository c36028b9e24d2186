//! The image's own `/etc/passwd` and `/etc/group`, parsed without glibc NSS.
//!
//! NSS would consult the *init's* view of the world (and a static glibc cannot load NSS modules
//! anyway); the app's user exists only in the image, so its files are read directly. Malformed
//! lines are skipped, as `getpwent` does.

use std::fmt;

/// One `/etc/passwd` entry (the fields the init needs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswdEntry {
    /// Login name.
    pub name: String,
    /// Numeric user id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Home directory.
    pub home: String,
}

/// One `/etc/group` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupEntry {
    /// Group name.
    pub name: String,
    /// Numeric group id.
    pub gid: u32,
    /// Member login names.
    pub members: Vec<String>,
}

/// The `:`-separated fields of each usable line of an `/etc/passwd`-style file with at least
/// `min_fields` fields and a name; comments and NIS `+`/`-` lines are skipped.
fn records(text: &str, min_fields: usize) -> impl Iterator<Item = Vec<&str>> {
    text.lines().filter_map(move |line| {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.starts_with(['#', '+', '-']) {
            return None;
        }
        let f: Vec<&str> = line.split(':').collect();
        (f.len() >= min_fields && !f[0].is_empty()).then_some(f)
    })
}

/// Parse `/etc/passwd` text: `name:password:uid:gid:gecos:home:shell`.
pub fn parse_passwd(text: &str) -> Vec<PasswdEntry> {
    records(text, 7)
        .filter_map(|f| {
            Some(PasswdEntry {
                name: f[0].to_owned(),
                uid: f[2].parse().ok()?,
                gid: f[3].parse().ok()?,
                home: f[5].to_owned(),
            })
        })
        .collect()
}

/// Parse `/etc/group` text: `name:password:gid:member,member`.
pub fn parse_group(text: &str) -> Vec<GroupEntry> {
    records(text, 4)
        .filter_map(|f| {
            Some(GroupEntry {
                name: f[0].to_owned(),
                gid: f[2].parse().ok()?,
                members: f[3]
                    .split(',')
                    .map(str::trim)
                    .filter(|m| !m.is_empty())
                    .map(str::to_owned)
                    .collect(),
            })
        })
        .collect()
}

/// Who the app runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Supplementary groups (sorted, without duplicates; includes `gid`).
    pub groups: Vec<u32>,
    /// Home directory from the passwd entry, when there is one.
    pub home: Option<String>,
    /// Login name, when the user has a passwd entry.
    pub name: Option<String>,
}

/// Why a `User=` value could not be resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserError {
    /// A user name that the image's /etc/passwd does not have.
    UnknownUser(String),
    /// A group name that the image's /etc/group does not have.
    UnknownGroup(String),
    /// Empty user part (`:100`) or other malformed value.
    Malformed(String),
}

impl fmt::Display for UserError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnknownUser(u) => write!(f, "no user {u:?} in the image's /etc/passwd"),
            Self::UnknownGroup(g) => write!(f, "no group {g:?} in the image's /etc/group"),
            Self::Malformed(v) => write!(f, "{v:?} is not USER, UID, USER:GROUP or UID:GID"),
        }
    }
}

impl std::error::Error for UserError {}

/// Resolve a Docker-style user spec (`name`, `uid`, `name:group`, `uid:gid`, mixes; empty = root)
/// against the image's passwd and group entries.
///
/// A numeric uid without a passwd entry is valid (group = the given gid, else 0, like Docker).
/// Supplementary groups are the groups that list the user's name as a member, plus the primary
/// group, unless an explicit group was given for a user without a passwd entry.
pub fn resolve(
    spec: &str,
    passwd: &[PasswdEntry],
    groups: &[GroupEntry],
) -> Result<Credentials, UserError> {
    let spec = spec.trim();
    let (user_part, group_part) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    if user_part.is_empty() && group_part.is_some() {
        return Err(UserError::Malformed(spec.to_owned()));
    }
    let user_part = if user_part.is_empty() { "0" } else { user_part };
    let entry = match user_part.parse::<u32>() {
        Ok(uid) => passwd
            .iter()
            .find(|e| e.uid == uid)
            .cloned()
            .map(Ok)
            .unwrap_or(Err(uid)),
        Err(_) => Ok(passwd
            .iter()
            .find(|e| e.name == user_part)
            .cloned()
            .ok_or_else(|| UserError::UnknownUser(user_part.to_owned()))?),
    };
    let explicit_gid = match group_part {
        None => None,
        Some("") => return Err(UserError::Malformed(spec.to_owned())),
        Some(g) => Some(match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => groups
                .iter()
                .find(|e| e.name == g)
                .map(|e| e.gid)
                .ok_or_else(|| UserError::UnknownGroup(g.to_owned()))?,
        }),
    };
    let (uid, gid, home, name) = match &entry {
        Ok(e) => (
            e.uid,
            explicit_gid.unwrap_or(e.gid),
            Some(e.home.clone()),
            Some(e.name.clone()),
        ),
        Err(uid) => (*uid, explicit_gid.unwrap_or(0), None, None),
    };
    let mut supplementary = vec![gid];
    if let Some(name) = &name {
        supplementary.extend(
            groups
                .iter()
                .filter(|g| g.members.iter().any(|m| m == name))
                .map(|g| g.gid),
        );
    }
    supplementary.sort_unstable();
    supplementary.dedup();
    Ok(Credentials {
        uid,
        gid,
        groups: supplementary,
        home,
        name,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/bash\n\
        # comment\n\
        daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n\
        broken line\n\
        bad:x:notanumber:1::/:/bin/sh\n\
        nginx:x:101:101:nginx user:/nonexistent:/bin/false\r\n\
        app:x:1654:1654::/home/app:/bin/sh\n";
    const GROUP: &str = "root:x:0:\n\
        nginx:x:101:\n\
        app:x:1654:\n\
        www:x:33:nginx, app\n\
        audio:x:29:app\n\
        junk\n";

    fn r(spec: &str) -> Result<Credentials, UserError> {
        resolve(spec, &parse_passwd(PASSWD), &parse_group(GROUP))
    }

    #[test]
    fn parses_and_skips_bad_lines() {
        let p = parse_passwd(PASSWD);
        assert_eq!(
            p.iter().map(|e| e.name.as_str()).collect::<Vec<_>>(),
            ["root", "daemon", "nginx", "app"]
        );
        assert_eq!(p[2].home, "/nonexistent");
        let g = parse_group(GROUP);
        assert_eq!(g[3].members, ["nginx", "app"]);
        assert_eq!(g.len(), 5);
    }

    #[test]
    fn by_name() {
        let c = r("app").unwrap();
        assert_eq!((c.uid, c.gid), (1654, 1654));
        assert_eq!(c.groups, [29, 33, 1654]);
        assert_eq!(c.home.as_deref(), Some("/home/app"));
        assert_eq!(c.name.as_deref(), Some("app"));
    }

    #[test]
    fn by_uid_with_and_without_entry() {
        let c = r("101").unwrap();
        assert_eq!((c.uid, c.gid, c.groups.clone()), (101, 101, vec![33, 101]));
        let c = r("4242").unwrap();
        assert_eq!(
            (c.uid, c.gid, c.groups.clone(), c.home.clone()),
            (4242, 0, vec![0], None)
        );
        let c = r("4242:4343").unwrap();
        assert_eq!((c.uid, c.gid, c.groups), (4242, 4343, vec![4343]));
    }

    #[test]
    fn explicit_groups() {
        let c = r("nginx:www").unwrap();
        assert_eq!((c.uid, c.gid), (101, 33));
        assert_eq!(c.groups, [33]);
        let c = r("app:0").unwrap();
        assert_eq!(c.groups, [0, 29, 33]);
    }

    #[test]
    fn defaults_to_root() {
        let c = r("").unwrap();
        assert_eq!((c.uid, c.gid, c.home.as_deref()), (0, 0, Some("/root")));
    }

    #[test]
    fn errors() {
        assert_eq!(r("nobody"), Err(UserError::UnknownUser("nobody".into())));
        assert_eq!(
            r("app:nogroup"),
            Err(UserError::UnknownGroup("nogroup".into()))
        );
        assert!(matches!(r(":12"), Err(UserError::Malformed(_))));
        assert!(matches!(r("app:"), Err(UserError::Malformed(_))));
        assert!(r("nobody").unwrap_err().to_string().contains("/etc/passwd"));
    }
}
