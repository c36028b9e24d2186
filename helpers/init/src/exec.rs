//! What to run and how: argv, program lookup, user switch, `execve`.

use std::ffi::CString;
use std::fmt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::passwd::Credentials;
use crate::shell;

/// Where the command came from (for messages).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandSource {
    /// `--exec` (declaration `Exec=`).
    ExecOption,
    /// `MAN8S_APPLICATION_ARGS`.
    ApplicationArgs,
    /// The image's Entrypoint + Cmd.
    Image,
}

impl fmt::Display for CommandSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::ExecOption => "--exec",
            Self::ApplicationArgs => "MAN8S_APPLICATION_ARGS",
            Self::Image => "image Entrypoint+Cmd",
        })
    }
}

/// Choose the argv: `--exec` > non-empty `MAN8S_APPLICATION_ARGS` > image Entrypoint+Cmd. A
/// command string goes through `/bin/sh -c "exec …"` when the image has a shell (what the Python
/// tool did), else it is split shell-style and run directly.
pub fn plan_argv(
    exec_option: Option<&str>,
    application_args: Option<&str>,
    image_argv: &[String],
    has_shell: bool,
) -> Result<(Vec<String>, CommandSource), String> {
    let command = match (exec_option, application_args) {
        (Some(c), _) => Some((c, CommandSource::ExecOption)),
        (None, Some(c)) if !c.trim().is_empty() => Some((c, CommandSource::ApplicationArgs)),
        _ => None,
    };
    if let Some((command, source)) = command {
        if command.trim().is_empty() {
            return Err(format!("{source} is empty"));
        }
        if has_shell {
            return Ok((
                vec!["/bin/sh".into(), "-c".into(), format!("exec {command}")],
                source,
            ));
        }
        let words = shell::split(command).map_err(|e| format!("{source} {command:?}: {e}"))?;
        if words.is_empty() {
            return Err(format!("{source} is empty"));
        }
        return Ok((words, source));
    }
    if image_argv.is_empty() || image_argv[0].is_empty() {
        return Err("nothing to run: no --exec, no MAN8S_APPLICATION_ARGS and the image has no Entrypoint or Cmd".into());
    }
    Ok((image_argv.to_vec(), CommandSource::Image))
}

/// Whether `path` is a regular file with an execute bit (following symlinks).
pub fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Resolve argv[0] like `execvp`: a name with a `/` as is (relative to `cwd`), else the first
/// executable match in `path_var`.
pub fn find_program(argv0: &str, path_var: &str, cwd: &Path) -> Result<PathBuf, String> {
    if argv0.contains('/') {
        let p = cwd.join(argv0);
        return if is_executable(&p) {
            Ok(PathBuf::from(argv0))
        } else if p.exists() {
            Err(format!("{argv0} is not an executable file"))
        } else {
            Err(format!("{argv0} does not exist in the image"))
        };
    }
    path_var
        .split(':')
        .map(|dir| {
            if dir.is_empty() {
                Path::new(".")
            } else {
                Path::new(dir)
            }
        })
        .map(|dir| dir.join(argv0))
        .find(|p| is_executable(&cwd.join(p)))
        .ok_or_else(|| format!("{argv0:?} not found in PATH={path_var}"))
}

/// Drop to the app's user: supplementary groups, then gid, then uid.
pub fn switch_user(creds: &Credentials) -> nix::Result<()> {
    use nix::unistd::{Gid, Uid, setgid, setgroups, setuid};
    let groups: Vec<Gid> = creds.groups.iter().map(|g| Gid::from_raw(*g)).collect();
    setgroups(&groups)?;
    setgid(Gid::from_raw(creds.gid))?;
    setuid(Uid::from_raw(creds.uid))?;
    Ok(())
}

/// Signal dispositions the app starts with (ignored ones survive `execve`):
/// - SIGPIPE back to the default (Rust's runtime ignores it in the init; apps expect the default);
/// - SIGHUP ignored: nspawn's stub PID 1 stops the app with SIGTERM *and then SIGHUP*, and an app
///   that handles SIGTERM but not SIGHUP would die by SIGHUP before shutting down cleanly. Apps
///   that install their own SIGHUP handler are not affected.
pub fn prepare_signals() -> nix::Result<()> {
    use nix::sys::signal::{SigHandler, Signal, signal};
    // SAFETY: no handler functions are installed, only SIG_DFL/SIG_IGN.
    unsafe {
        signal(Signal::SIGPIPE, SigHandler::SigDfl)?;
        signal(Signal::SIGHUP, SigHandler::SigIgn)?;
    }
    Ok(())
}

/// `execve`; returns only on failure.
pub fn exec(program: &Path, argv: &[String], env: &[String]) -> String {
    let to_c = |s: &str| CString::new(s).map_err(|_| format!("{s:?} contains a NUL byte"));
    let program_c = match to_c(&program.to_string_lossy()) {
        Ok(p) => p,
        Err(e) => return e,
    };
    let argv_c: Result<Vec<CString>, String> = argv.iter().map(|a| to_c(a)).collect();
    let env_c: Result<Vec<CString>, String> = env.iter().map(|a| to_c(a)).collect();
    let (argv_c, env_c) = match (argv_c, env_c) {
        (Ok(a), Ok(e)) => (a, e),
        (Err(e), _) | (_, Err(e)) => return e,
    };
    match nix::unistd::execve(&program_c, &argv_c, &env_c) {
        Err(e) => format!("{}: {e}", program.display()),
        Ok(never) => match never {},
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn precedence_of_commands() {
        let image = v(&["/entry", "arg"]);
        let (argv, src) = plan_argv(Some("app --x"), Some("/entrypoint.sh"), &image, true).unwrap();
        assert_eq!(
            (argv, src),
            (
                v(&["/bin/sh", "-c", "exec app --x"]),
                CommandSource::ExecOption
            )
        );
        let (argv, src) = plan_argv(None, Some("/entrypoint.sh"), &image, true).unwrap();
        assert_eq!(
            (argv, src),
            (
                v(&["/bin/sh", "-c", "exec /entrypoint.sh"]),
                CommandSource::ApplicationArgs
            )
        );
        let (argv, src) = plan_argv(None, Some("  "), &image, true).unwrap();
        assert_eq!((argv, src), (image.clone(), CommandSource::Image));
        let (argv, _) = plan_argv(None, None, &image, false).unwrap();
        assert_eq!(argv, image);
    }

    #[test]
    fn without_shell_commands_are_split() {
        let (argv, _) = plan_argv(
            None,
            Some(r#"/app --greeting "held out" 'a b'"#),
            &[],
            false,
        )
        .unwrap();
        assert_eq!(argv, v(&["/app", "--greeting", "held out", "a b"]));
        let err = plan_argv(Some("/app 'oops"), None, &[], false).unwrap_err();
        assert!(
            err.contains("--exec") && err.contains("unbalanced"),
            "{err}"
        );
    }

    #[test]
    fn nothing_to_run() {
        assert!(
            plan_argv(None, None, &[], true)
                .unwrap_err()
                .contains("nothing to run")
        );
        assert!(
            plan_argv(Some(" "), None, &v(&["/x"]), true)
                .unwrap_err()
                .contains("empty")
        );
    }

    #[test]
    fn program_lookup() {
        let t = tempfile::tempdir().unwrap();
        let bin = t.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        std::fs::write(bin.join("tool"), "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(bin.join("tool"), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(bin.join("data"), "").unwrap();
        let root = t.path();
        assert_eq!(
            find_program("tool", "/nope:bin", root).unwrap(),
            Path::new("bin/tool")
        );
        assert_eq!(
            find_program("bin/tool", "", root).unwrap(),
            Path::new("bin/tool")
        );
        assert!(
            find_program("data", "bin", root)
                .unwrap_err()
                .contains("not found")
        );
        assert!(
            find_program("bin/data", "bin", root)
                .unwrap_err()
                .contains("not an executable")
        );
        assert!(
            find_program("bin/absent", "bin", root)
                .unwrap_err()
                .contains("does not exist")
        );
    }
}
