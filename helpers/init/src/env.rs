//! The app's environment, composed from its sources in a fixed order (later wins).
//!
//! 1. From the init's own environment only `PATH`, `TERM` (which nspawn sets itself or from the
//!    `.nspawn` file's `Environment=`) and nspawn's container interface: `container=`,
//!    `container_uuid=` and the host's os-release IDs `container_host_*=` (`container_host_id`,
//!    `…_version_id`, `…_build_id`, `…_variant_id`; apps of the Python tool's machines saw them,
//!    and some use them to detect a container or the host's OS). Everything else of nspawn's is
//!    dropped: its bookkeeping for the payload (`NOTIFY_SOCKET`, `LISTEN_*`, …) and the host's
//!    locale (`LANG`, `LC_*`, `TZ`), which systemd hands to every service: as under Docker, an app
//!    sees the image's locale, not the host's (Redis 8, for one, exits on a locale its image lacks).
//! 2. The image config's `Env`.
//! 3. `/man8env.env`: literal, or with `--env-compat=python-mbctl` as the Python tool's loader
//!    read it (`man8s::envfile::python_mbctl`), expanding from 1–2 and the rest of the init's own
//!    environment ([`outer_lookup`]).
//! 4. `--env-file` files, in order (same literal format).
//! 5. `--env` arguments, in order.
//!
//! Then `HOME` when still unset: the user's passwd home, else (for root) nspawn's `HOME`, else `/`; and
//! `PATH` when still unset: [`DEFAULT_PATH`].

use man8s::envfile::EnvFile;

/// PATH when no source sets one (Docker's default).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// An ordered set of variables: each key once, at the position where it first appeared.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Env {
    vars: Vec<(String, String)>,
}

impl Env {
    /// Set `key`, replacing an earlier value in place.
    pub fn set(&mut self, key: &str, value: &str) {
        match self.vars.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => slot.1 = value.to_owned(),
            None => self.vars.push((key.to_owned(), value.to_owned())),
        }
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.vars
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Variables in order.
    pub fn vars(&self) -> &[(String, String)] {
        &self.vars
    }

    /// `KEY=VALUE` strings, as `execve` wants them.
    pub fn to_strings(&self) -> Vec<String> {
        self.vars.iter().map(|(k, v)| format!("{k}={v}")).collect()
    }
}

/// Whether a variable of the init's own environment is passed on to the app.
pub fn inherited_is_kept(key: &str) -> bool {
    matches!(key, "PATH" | "TERM" | "container" | "container_uuid")
        || key.starts_with("container_host_")
}

/// What a python-mbctl man8env.env expands `$VAR` from: the environment composed so far (image
/// `Env` over the kept variables), then the rest of the init's own environment (nspawn's `HOME`,
/// …), which the old loader's shell saw as well.
pub fn outer_lookup<'a>(
    so_far: &'a Env,
    inherited: &'a [(String, String)],
) -> impl Fn(&str) -> Option<String> + 'a {
    move |key| {
        so_far.get(key).map(str::to_owned).or_else(|| {
            inherited
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.clone())
        })
    }
}

/// Split a `KEY=VALUE` string (image `Env`, `--env`); `None` without `=` or with an empty key.
pub fn split_assignment(s: &str) -> Option<(&str, &str)> {
    let (k, v) = s.split_once('=')?;
    (!k.is_empty()).then_some((k, v))
}

/// All sources of the environment, lowest precedence first.
#[derive(Debug, Default, Clone)]
pub struct Sources<'a> {
    /// The init's own environment (`std::env::vars()`).
    pub inherited: &'a [(String, String)],
    /// The image config's `Env` (`KEY=VALUE` strings).
    pub image: &'a [String],
    /// `/man8env.env`, when present.
    pub man8env: Option<&'a EnvFile>,
    /// `--env-file` files in order.
    pub env_files: &'a [EnvFile],
    /// `--env` arguments in order.
    pub env_args: &'a [(String, String)],
}

/// Compose the environment without the `HOME`/`PATH` fallbacks (see [`finish`]).
pub fn compose(sources: &Sources<'_>) -> Env {
    let mut env = Env::default();
    for (k, v) in sources
        .inherited
        .iter()
        .filter(|(k, _)| inherited_is_kept(k))
    {
        env.set(k, v);
    }
    // An image never sets man8s's own variables (its mesh address, its name): man8s's win even
    // where man8env.env lacks them (a `YggdrasilAddress=auto` host without a subnet yet).
    for (k, v) in sources
        .image
        .iter()
        .filter_map(|s| split_assignment(s))
        .filter(|(k, _)| !k.starts_with(man8s::envfile::RESERVED_PREFIX))
    {
        env.set(k, v);
    }
    for file in sources.man8env.into_iter().chain(sources.env_files) {
        for (k, v) in &file.vars {
            env.set(k, v);
        }
    }
    for (k, v) in sources.env_args {
        env.set(k, v);
    }
    env
}

/// Fill in `HOME` (passwd home; else, for root, nspawn's; else `/`, as Docker does) and `PATH`
/// when no source set them.
pub fn finish(env: &mut Env, passwd_home: Option<&str>, uid: u32, inherited: &[(String, String)]) {
    if env.get("HOME").is_none() {
        let nspawn_home = inherited
            .iter()
            .find(|(k, _)| k == "HOME" && uid == 0)
            .map(|(_, v)| v.as_str());
        env.set("HOME", passwd_home.or(nspawn_home).unwrap_or("/"));
    }
    if env.get("PATH").is_none() {
        env.set("PATH", DEFAULT_PATH);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use man8s::envfile;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn image_env_never_sets_man8s_variables() {
        let image = vec![
            "MAN8S_YGGDRASIL_ADDRESS=300::bad".to_string(),
            "MAN8S_CONTAINER_NAME=other".into(),
            "APP=1".into(),
        ];
        let sources = Sources {
            image: &image,
            ..Default::default()
        };
        let env = compose(&sources);
        assert_eq!(env.vars(), pairs(&[("APP", "1")]));
        // man8s's own value (from man8env.env or --env) still arrives.
        let man8env = envfile::parse("MAN8S_CONTAINER_NAME=me\n");
        let sources = Sources {
            image: &image,
            man8env: Some(&man8env),
            ..Default::default()
        };
        assert_eq!(compose(&sources).get("MAN8S_CONTAINER_NAME"), Some("me"));
    }

    #[test]
    fn precedence_and_dropping() {
        let inherited = pairs(&[
            ("container", "systemd-nspawn"),
            ("container_uuid", "abc"),
            ("container_host_id", "debian"),
            ("NOTIFY_SOCKET", "/run/host/notify"),
            ("LISTEN_FDS", "1"),
            ("PATH", "/nspawn/bin"),
            ("TERM", "vt220"),
            ("HOME", "/root"),
            ("LC_ALL", "C.UTF-8"),
        ]);
        let image = vec![
            "PATH=/image/bin".to_string(),
            "A=image".into(),
            "B=image".into(),
            "NOEQ".into(),
            "=x".into(),
        ];
        let man8env = envfile::parse("B=man8env\nC=man8env\nD=man8env\n");
        let files = vec![
            envfile::parse("C=file1\nD=file1\n"),
            envfile::parse("D=file2\n"),
        ];
        let args = pairs(&[("E", "arg"), ("D", "arg")]);
        let sources = Sources {
            inherited: &inherited,
            image: &image,
            man8env: Some(&man8env),
            env_files: &files,
            env_args: &args,
        };
        let mut env = compose(&sources);
        finish(&mut env, Some("/home/app"), 1000, &inherited);
        assert_eq!(
            env.vars(),
            pairs(&[
                ("container", "systemd-nspawn"),
                ("container_uuid", "abc"),
                ("container_host_id", "debian"),
                ("PATH", "/image/bin"),
                ("TERM", "vt220"),
                ("A", "image"),
                ("B", "man8env"),
                ("C", "file1"),
                ("D", "arg"),
                ("E", "arg"),
                ("HOME", "/home/app"),
            ])
        );
    }

    #[test]
    fn fallbacks() {
        let inherited = pairs(&[("HOME", "/root")]);
        let mut env = compose(&Sources {
            inherited: &inherited,
            ..Default::default()
        });
        finish(&mut env, None, 0, &inherited);
        assert_eq!(env.get("HOME"), Some("/root"));
        assert_eq!(env.get("PATH"), Some(DEFAULT_PATH));
        let mut env = Env::default();
        finish(&mut env, None, 4242, &inherited);
        assert_eq!(
            env.get("HOME"),
            Some("/"),
            "a uid without passwd entry gets no root home"
        );
        let mut env = Env::default();
        finish(&mut env, None, 0, &[]);
        assert_eq!(env.get("HOME"), Some("/"));
        let mut env = Env::default();
        env.set("HOME", "/explicit");
        finish(&mut env, Some("/home/app"), 1000, &[]);
        assert_eq!(env.get("HOME"), Some("/explicit"));
    }

    #[test]
    fn bitwarden_seed_comes_through_byte_for_byte() {
        let text = include_str!("../tests/data/bitwarden.man8env.env");
        let file = envfile::parse(text);
        assert!(file.errors.is_empty());
        assert_eq!(file.vars.len(), 40);
        let env = compose(&Sources {
            man8env: Some(&file),
            ..Default::default()
        });
        let rendered: String = env.to_strings().iter().map(|l| format!("{l}\n")).collect();
        assert_eq!(rendered, text);
        assert_eq!(
            env.get("globalSettings__baseServiceUri__internalAdmin"),
            Some("http://localhost:5000")
        );
    }

    #[test]
    fn hostile_lines() {
        let text = "A==x=\nQ=\"quoted\" 'single'\nD=$HOME ${X} `id`\nT=trailing  \t\nW=crlf\r\nnoequals\n=empty key\n  # comment\n\
                    \t\nexport E=1\nU=grüße\nA=second\n";
        let file = envfile::parse(text);
        assert_eq!(
            file.errors.iter().map(|e| e.line).collect::<Vec<_>>(),
            [6, 7]
        );
        let env = compose(&Sources {
            man8env: Some(&file),
            ..Default::default()
        });
        assert_eq!(
            env.vars(),
            pairs(&[
                ("A", "second"),
                ("Q", "\"quoted\" 'single'"),
                ("D", "$HOME ${X} `id`"),
                ("T", "trailing  \t"),
                ("W", "crlf"),
                ("E", "1"),
                ("U", "grüße"),
            ])
        );
    }

    #[test]
    fn python_mbctl_mode_expands_from_image_and_nspawn() {
        let inherited = pairs(&[("HOME", "/root"), ("NOTIFY_SOCKET", "/run/host/notify")]);
        let image = vec!["APP=/opt/app".to_string()];
        let base = compose(&Sources {
            inherited: &inherited,
            image: &image,
            ..Default::default()
        });
        let file = envfile::python_mbctl::parse(
            "CONF=$APP/conf\\x
H=${HOME}
export N=$NOTIFY_SOCKET
",
            &outer_lookup(&base, &inherited),
        );
        assert_eq!(
            file.vars,
            pairs(&[
                ("CONF", "/opt/app/conf\\x"),
                ("H", "/root"),
                ("N", "/run/host/notify")
            ])
        );
    }

    #[test]
    fn assignment_splitting() {
        assert_eq!(split_assignment("A=b=c"), Some(("A", "b=c")));
        assert_eq!(split_assignment("A="), Some(("A", "")));
        assert_eq!(split_assignment("=b"), None);
        assert_eq!(split_assignment("A"), None);
    }
}
