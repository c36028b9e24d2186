//! Where each image volume goes: `--volume PATH=…` answers, `--yes`, or the Python tool's
//! question "1) config 2) data 3) custom path 4) skip", asked until answered.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::path::{Component, Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::UsageError;

/// What to do with one image volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VolumeChoice {
    /// Under the machine's config dir (`Volume=PATH:config`).
    Config,
    /// Under the machine's data dir (`Volume=PATH:data`).
    Data,
    /// A host directory of the user's choosing (`Volume=PATH:/host/path`).
    Host(PathBuf),
    /// Not mounted.
    Skip,
}

/// The answer `--yes` gives: a data volume (it survives updates and is kept by `remove`).
pub const DEFAULT_CHOICE: VolumeChoice = VolumeChoice::Data;

impl VolumeChoice {
    /// The word after `PATH:` in a declaration's `Volume=`, or `None` for [`VolumeChoice::Skip`].
    pub fn declaration_target(&self) -> Option<String> {
        match self {
            VolumeChoice::Config => Some("config".into()),
            VolumeChoice::Data => Some("data".into()),
            VolumeChoice::Host(p) => Some(p.display().to_string()),
            VolumeChoice::Skip => None,
        }
    }
}

/// A container path as a volume key: absolute, no `..`, no trailing slash (`/data/` = `/data`).
pub fn normalise_container_path(path: &str) -> Result<String, String> {
    if !path.starts_with('/') {
        return Err(format!("volume path {path:?} is not absolute"));
    }
    let mut out = String::new();
    for c in Path::new(path).components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(n) => {
                out.push('/');
                out.push_str(&n.to_string_lossy());
            }
            Component::ParentDir | Component::Prefix(_) => {
                return Err(format!("volume path {path:?} contains '..'"));
            }
        }
    }
    if out.is_empty() {
        return Err("volume path \"/\" would cover the whole machine".into());
    }
    if out.contains([':', '\n']) {
        return Err(format!(
            "volume path {path:?} contains ':' or a line break, which a declaration cannot hold"
        ));
    }
    Ok(out)
}

/// Parse one `--volume PATH=WHERE` (WHERE: `config`, `data`, `skip` or an absolute host path).
pub fn parse_volume_arg(arg: &str) -> Result<(String, VolumeChoice), UsageError> {
    let (path, target) = arg.rsplit_once('=').ok_or_else(|| {
        UsageError(format!(
            "--volume {arg:?}: expected PATH=config|data|skip|/host/path"
        ))
    })?;
    let path =
        normalise_container_path(path).map_err(|e| UsageError(format!("--volume {arg:?}: {e}")))?;
    let choice = match target {
        "config" => VolumeChoice::Config,
        "data" => VolumeChoice::Data,
        "skip" => VolumeChoice::Skip,
        p if p.starts_with('/') && !p.contains([':', '\n']) => VolumeChoice::Host(PathBuf::from(p)),
        other => {
            return Err(UsageError(format!(
                "--volume {arg:?}: {other:?} is not config, data, skip or an absolute host path"
            )));
        }
    };
    Ok((path, choice))
}

/// Ask for every volume in `volumes` that `answers` lacks (or use [`DEFAULT_CHOICE`] when
/// `assume_yes`); returns a choice per volume, in image order. Answers for paths the image does
/// not declare are kept too (the user may mount more than the image lists).
pub fn resolve_volumes(
    volumes: &[String],
    answers: &BTreeMap<String, VolumeChoice>,
    assume_yes: bool,
    paths: &man8s::Paths,
    input: &mut dyn BufRead,
    out: &mut dyn Write,
) -> Result<Vec<(String, VolumeChoice)>> {
    let mut result = Vec::new();
    for vol in volumes {
        let choice = match answers.get(vol) {
            Some(c) => c.clone(),
            None if assume_yes => DEFAULT_CHOICE,
            None => ask(vol, paths, input, out)?,
        };
        result.push((vol.clone(), choice));
    }
    for (path, choice) in answers {
        if !volumes.contains(path) {
            result.push((path.clone(), choice.clone()));
        }
    }
    Ok(result)
}

fn read_answer(input: &mut dyn BufRead, volume: &str) -> Result<String> {
    let mut line = String::new();
    let n = input
        .read_line(&mut line)
        .context("cannot read the answer")?;
    if n == 0 {
        bail!(
            "no answer for volume {volume} (input closed); answer with --volume {volume}=config|data|skip|/host/path or use --yes"
        );
    }
    Ok(line.trim().to_owned())
}

/// Ask where the image volume `volume` goes, until a valid answer comes. A custom host path
/// must not exist yet (checked under `paths`' root, like every other path).
pub fn ask(
    volume: &str,
    paths: &man8s::Paths,
    input: &mut dyn BufRead,
    out: &mut dyn Write,
) -> Result<VolumeChoice> {
    writeln!(out, "The image declares the volume {volume}.")?;
    writeln!(out, "Choose where to keep it:")?;
    loop {
        write!(out, "1) config 2) data 3) custom path 4) skip: ")?;
        out.flush()?;
        match read_answer(input, volume)?.as_str() {
            "1" => return Ok(VolumeChoice::Config),
            "2" => return Ok(VolumeChoice::Data),
            "3" => loop {
                write!(
                    out,
                    "Absolute host path for {volume} (must not exist yet): "
                )?;
                out.flush()?;
                let answer = read_answer(input, volume)?;
                if !answer.starts_with('/') || answer.contains(':') {
                    writeln!(out, "{answer:?} is not an absolute path without ':'.")?;
                } else if paths.fs(&answer).symlink_metadata().is_ok() {
                    writeln!(out, "{answer} already exists; choose a path that does not.")?;
                } else {
                    return Ok(VolumeChoice::Host(PathBuf::from(answer)));
                }
            },
            "4" => return Ok(VolumeChoice::Skip),
            other => writeln!(out, "{other:?} is not one of 1, 2, 3, 4.")?,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volume_args() {
        assert_eq!(
            parse_volume_arg("/data=data").unwrap(),
            ("/data".into(), VolumeChoice::Data)
        );
        assert_eq!(
            parse_volume_arg("/etc/app/=config").unwrap(),
            ("/etc/app".into(), VolumeChoice::Config)
        );
        assert_eq!(
            parse_volume_arg("/x=skip").unwrap(),
            ("/x".into(), VolumeChoice::Skip)
        );
        assert_eq!(
            parse_volume_arg("/x=/srv/x").unwrap(),
            ("/x".into(), VolumeChoice::Host("/srv/x".into()))
        );
        for bad in [
            "/x",
            "x=data",
            "/x=cfg",
            "/../x=data",
            "/=data",
            "/x=relative/p",
            "/a:b=data",
        ] {
            assert!(parse_volume_arg(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn asks_until_valid() {
        let mut input: &[u8] = b"9\n\n3\nrelative\n/nonexistent-mbctl-test/x\n";
        let mut out = Vec::new();
        let c = ask("/data", &man8s::Paths::default(), &mut input, &mut out).unwrap();
        assert_eq!(c, VolumeChoice::Host("/nonexistent-mbctl-test/x".into()));
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text.matches("1) config 2) data 3) custom path 4) skip: ")
                .count(),
            3
        );
        assert!(text.contains("\"9\" is not one of 1, 2, 3, 4."));
        assert!(text.contains("is not an absolute path"));
    }

    #[test]
    fn existing_custom_path_refused() {
        let mut input: &[u8] = b"3\n/\n4\n";
        let mut out = Vec::new();
        // "/" exists, then input ends: the question is repeated, then fails clearly.
        let err = ask("/data", &man8s::Paths::default(), &mut input, &mut out).unwrap_err();
        assert!(String::from_utf8(out).unwrap().contains("/ already exists"));
        assert!(err.to_string().contains("no answer for volume /data"));
    }

    #[test]
    fn resolve_with_answers_and_yes() {
        let vols = vec!["/a".to_owned(), "/b".to_owned()];
        let answers = BTreeMap::from([
            ("/a".to_owned(), VolumeChoice::Config),
            ("/extra".to_owned(), VolumeChoice::Skip),
        ]);
        let mut input: &[u8] = b"";
        let r = resolve_volumes(
            &vols,
            &answers,
            true,
            &man8s::Paths::default(),
            &mut input,
            &mut Vec::new(),
        )
        .unwrap();
        assert_eq!(
            r,
            vec![
                ("/a".into(), VolumeChoice::Config),
                ("/b".into(), VolumeChoice::Data),
                ("/extra".into(), VolumeChoice::Skip)
            ]
        );
        let mut input: &[u8] = b"1\n";
        let mut out = Vec::new();
        let r = resolve_volumes(
            &vols,
            &BTreeMap::new(),
            false,
            &man8s::Paths::default(),
            &mut input,
            &mut out,
        );
        assert!(r.is_err(), "second volume has no answer");
    }
}
