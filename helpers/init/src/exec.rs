//! What to run and how: argv, program lookup, user switch, `execve`.

// unsafe: signal() resets dispositions to SIG_DFL before exec.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::fmt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::passwd::Credentials;
use man8s::words::shell;

/// Where the command came from (for messages).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandSource {
    /// `--exec` (declaration `Exec=`), after the Entrypoint.
    ExecOption,
    /// `--entrypoint` (declaration `Entrypoint=`) alone.
    EntrypointOption,
    /// `MAN8S_APPLICATION_ARGS`.
    ApplicationArgs,
    /// The image's Entrypoint + Cmd.
    Image,
}

impl fmt::Display for CommandSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::ExecOption => "--exec",
            Self::EntrypointOption => "--entrypoint",
            Self::ApplicationArgs => "MAN8S_APPLICATION_ARGS",
            Self::Image => "image Entrypoint+Cmd",
        })
    }
}

/// What the declaration and the image say about the command.
#[derive(Debug, Clone, Copy, Default)]
pub struct CommandSpec<'a> {
    /// `--exec` (declaration `Exec=`): a command line that replaces the image's Cmd.
    pub exec: Option<&'a str>,
    /// `--entrypoint` (declaration `Entrypoint=`): replaces the image's Entrypoint; empty clears it.
    pub entrypoint: Option<&'a [String]>,
    /// `MAN8S_APPLICATION_ARGS` of man8env.env: the whole command line (the Python tool's meaning).
    pub application_args: Option<&'a str>,
    /// The image's Entrypoint.
    pub image_entrypoint: &'a [String],
    /// The image's Cmd.
    pub image_cmd: &'a [String],
}

/// Choose the argv, as Docker and Quadlet do for the same settings:
/// - `--exec` and/or `--entrypoint`: the Entrypoint (`--entrypoint`, else the image's) followed by
///   the command (`--exec`; with only `--entrypoint`, nothing: like `docker run --entrypoint`, it
///   drops the image's Cmd);
/// - else a non-empty `MAN8S_APPLICATION_ARGS` (the whole command line);
/// - else the image's Entrypoint + Cmd.
///
/// A command line goes through `/bin/sh -c "exec …"` when the image has a shell (what the Python
/// tool did, with the Entrypoint's words quoted in front), else it is split shell-style and run
/// directly.
pub fn plan_argv(
    spec: &CommandSpec<'_>,
    has_shell: bool,
) -> Result<(Vec<String>, CommandSource), String> {
    if spec.exec.is_some() || spec.entrypoint.is_some() {
        let source = if spec.exec.is_some() {
            CommandSource::ExecOption
        } else {
            CommandSource::EntrypointOption
        };
        let entrypoint = spec.entrypoint.unwrap_or(spec.image_entrypoint);
        let Some(command) = spec.exec else {
            if entrypoint.is_empty() || entrypoint[0].is_empty() {
                return Err("--entrypoint is empty and there is no --exec: nothing to run".into());
            }
            return Ok((entrypoint.to_vec(), source));
        };
        if command.trim().is_empty() {
            return Err(format!("{source} is empty"));
        }
        if has_shell {
            let line = if entrypoint.is_empty() {
                format!("exec {command}")
            } else {
                format!("exec {} {command}", shell::join(entrypoint))
            };
            return Ok((vec!["/bin/sh".into(), "-c".into(), line], source));
        }
        let words = shell::split(command).map_err(|e| format!("{source} {command:?}: {e}"))?;
        let argv: Vec<String> = entrypoint.iter().cloned().chain(words).collect();
        if argv.is_empty() {
            return Err(format!("{source} is empty"));
        }
        return Ok((argv, source));
    }
    if let Some(command) = spec.application_args.filter(|c| !c.trim().is_empty()) {
        let source = CommandSource::ApplicationArgs;
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
    let image_argv: Vec<String> = spec
        .image_entrypoint
        .iter()
        .chain(spec.image_cmd)
        .cloned()
        .collect();
    if image_argv.is_empty() || image_argv[0].is_empty() {
        return Err("nothing to run: no --exec, no MAN8S_APPLICATION_ARGS and the image has no Entrypoint or Cmd".into());
    }
    Ok((image_argv, CommandSource::Image))
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

/// Keep only `keep` in the bounding set, so the app's root never has more (the init's helpers,
/// forked earlier, keep theirs). Capabilities the kernel does not know end the loop.
pub fn limit_bounding_set(keep: &[u8]) -> Result<(), String> {
    for cap in 0u8..64 {
        if keep.contains(&cap) {
            continue;
        }
        // SAFETY: prctl(PR_CAPBSET_DROP, cap) takes integers and touches no memory.
        let r = unsafe {
            nix::libc::prctl(
                nix::libc::PR_CAPBSET_DROP,
                nix::libc::c_ulong::from(cap),
                0,
                0,
                0,
            )
        };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(nix::libc::EINVAL) {
                break; // past the last capability this kernel knows
            }
            return Err(format!(
                "dropping capability {cap} from the bounding set: {e}"
            ));
        }
    }
    // nspawn hands its payload a full inheritable set, and for root execve() grants
    // inheritable | bounding: the inheritable set must shrink too, and no ambient set survives.
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    let mut header = Header {
        version: 0x2008_0522, // _LINUX_CAPABILITY_VERSION_3
        pid: 0,
    };
    let mut data = [Data::default(); 2];
    // SAFETY: capget/capset with a v3 header and two data words, as the kernel expects.
    let r = unsafe { nix::libc::syscall(nix::libc::SYS_capget, &mut header, data.as_mut_ptr()) };
    if r < 0 {
        return Err(format!("capget: {}", std::io::Error::last_os_error()));
    }
    for (i, d) in data.iter_mut().enumerate() {
        let mask = keep
            .iter()
            .filter(|c| usize::from(**c) / 32 == i)
            .fold(0u32, |m, c| m | 1 << (c % 32));
        d.inheritable &= mask;
    }
    // SAFETY: as above.
    let r = unsafe { nix::libc::syscall(nix::libc::SYS_capset, &mut header, data.as_ptr()) };
    if r < 0 {
        return Err(format!("capset: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: prctl with integer arguments only.
    unsafe {
        nix::libc::prctl(
            nix::libc::PR_CAP_AMBIENT,
            nix::libc::PR_CAP_AMBIENT_CLEAR_ALL as nix::libc::c_ulong,
            0,
            0,
            0,
        )
    };
    Ok(())
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

/// Signal dispositions the app starts with (ignored ones survive `execve`): every signal at its
/// default, as under Docker. SIGPIPE needs resetting (Rust's runtime ignores it in the init);
/// SIGHUP stays at its default so that `systemctl reload` (ExecReload= sends it) reaches apps,
/// shell scripts included (a shell cannot trap a signal ignored on entry). The stop path does not
/// go through nspawn's stub, whose SIGTERM-then-SIGHUP would otherwise cut a TERM handler short
/// (see man8s-init(8), STOPPING).
pub fn prepare_signals() -> nix::Result<()> {
    use nix::sys::signal::{SigHandler, Signal, signal};
    // SAFETY: no handler functions are installed, only SIG_DFL.
    unsafe {
        signal(Signal::SIGPIPE, SigHandler::SigDfl)?;
        // man8@.service starts nspawn with these ignored; the app gets them at their default.
        for sig in crate::detach::APP_SIGNALS {
            signal(sig, SigHandler::SigDfl)?;
        }
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

    fn spec<'a>(
        exec: Option<&'a str>,
        app_args: Option<&'a str>,
        image_entrypoint: &'a [String],
        image_cmd: &'a [String],
    ) -> CommandSpec<'a> {
        CommandSpec {
            exec,
            entrypoint: None,
            application_args: app_args,
            image_entrypoint,
            image_cmd,
        }
    }

    #[test]
    fn precedence_of_commands() {
        let (ep, cmd) = (v(&["/entry"]), v(&["arg"]));
        let (argv, src) = plan_argv(
            &spec(Some("app --x"), Some("/entrypoint.sh"), &ep, &cmd),
            true,
        )
        .unwrap();
        assert_eq!(
            (argv, src),
            (
                v(&["/bin/sh", "-c", "exec /entry app --x"]),
                CommandSource::ExecOption
            )
        );
        let (argv, src) = plan_argv(&spec(None, Some("/entrypoint.sh"), &ep, &cmd), true).unwrap();
        assert_eq!(
            (argv, src),
            (
                v(&["/bin/sh", "-c", "exec /entrypoint.sh"]),
                CommandSource::ApplicationArgs
            )
        );
        let (argv, src) = plan_argv(&spec(None, Some("  "), &ep, &cmd), true).unwrap();
        assert_eq!((argv, src), (v(&["/entry", "arg"]), CommandSource::Image));
        let (argv, _) = plan_argv(&spec(None, None, &ep, &cmd), false).unwrap();
        assert_eq!(argv, v(&["/entry", "arg"]));
    }

    #[test]
    fn exec_keeps_the_entrypoint_and_entrypoint_replaces_it() {
        // The man page's example: Exec=redis-server --appendonly yes on the Redis image.
        let (ep, cmd) = (v(&["docker-entrypoint.sh"]), v(&["redis-server"]));
        let s = spec(Some("redis-server --appendonly yes"), None, &ep, &cmd);
        assert_eq!(
            plan_argv(&s, true).unwrap().0,
            v(&[
                "/bin/sh",
                "-c",
                "exec docker-entrypoint.sh redis-server --appendonly yes"
            ])
        );
        assert_eq!(
            plan_argv(&s, false).unwrap().0,
            v(&[
                "docker-entrypoint.sh",
                "redis-server",
                "--appendonly",
                "yes"
            ])
        );
        // Entrypoint words with spaces or quotes survive the shell.
        let odd = v(&["/my entry", "it's"]);
        let s = spec(Some("run"), None, &odd, &cmd);
        assert_eq!(
            plan_argv(&s, true).unwrap().0[2],
            r#"exec '/my entry' 'it'"'"'s' run"#
        );
        // Entrypoint= replaces it; alone, it drops the image's Cmd (docker run --entrypoint).
        let mine = v(&["/bin/tini", "--"]);
        let s = CommandSpec {
            entrypoint: Some(&mine),
            ..spec(None, Some("ignored app args"), &ep, &cmd)
        };
        assert_eq!(
            plan_argv(&s, true).unwrap(),
            (mine.clone(), CommandSource::EntrypointOption)
        );
        let s = CommandSpec {
            entrypoint: Some(&mine),
            ..spec(Some("app"), None, &ep, &cmd)
        };
        assert_eq!(
            plan_argv(&s, false).unwrap().0,
            v(&["/bin/tini", "--", "app"])
        );
        // Entrypoint= empty clears it: Exec= alone runs.
        let none: Vec<String> = Vec::new();
        let s = CommandSpec {
            entrypoint: Some(&none),
            ..spec(Some("app --x"), None, &ep, &cmd)
        };
        assert_eq!(
            plan_argv(&s, true).unwrap().0,
            v(&["/bin/sh", "-c", "exec app --x"])
        );
        let s = CommandSpec {
            entrypoint: Some(&none),
            ..spec(None, None, &ep, &cmd)
        };
        assert!(plan_argv(&s, true).unwrap_err().contains("nothing to run"));
    }

    #[test]
    fn without_shell_commands_are_split() {
        let s = spec(None, Some(r#"/app --greeting "held out" 'a b'"#), &[], &[]);
        let (argv, _) = plan_argv(&s, false).unwrap();
        assert_eq!(argv, v(&["/app", "--greeting", "held out", "a b"]));
        let err = plan_argv(&spec(Some("/app 'oops"), None, &[], &[]), false).unwrap_err();
        assert!(
            err.contains("--exec") && err.contains("unbalanced"),
            "{err}"
        );
    }

    #[test]
    fn nothing_to_run() {
        assert!(
            plan_argv(&spec(None, None, &[], &[]), true)
                .unwrap_err()
                .contains("nothing to run")
        );
        let x = v(&["/x"]);
        assert!(
            plan_argv(&spec(Some(" "), None, &[], &x), true)
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
