//! `machines shell NAME [--command CMD | --shell-command STRING]` and `machines exec NAME -- ARGV`:
//! leader PID from machined, then [`crate::nsenter`].

use anyhow::{Result, bail};
use man8s::machine::Machine;
use man8s::{MachineName, Paths, declaration, envfile};
use man8s_init::env::{self, Env};
use man8s_oci::manifest::RuntimeConfig;

use crate::UsageError;
use crate::bus::Bus;
use crate::cli::ExecArgs;
use crate::cmd::machine_name;
use crate::nsenter::Program;

/// Largest environment file read from the host for `exec` (man8env.env, EnvironmentFile=).
const MAX_ENV_FILE: u64 = 1 << 20;

/// The leader of the running machine `name` (`given` in tests); root is needed to enter it.
fn running_leader(name: &MachineName, given: Option<i32>) -> Result<i32> {
    if !nix::unistd::geteuid().is_root() {
        bail!(
            "entering machine {name} needs root (its namespaces belong to root); run mbctl with sudo"
        );
    }
    if let Some(pid) = given {
        return Ok(pid);
    }
    // The bus (and its runtime) must be gone before setns: the process has to be
    // single-threaded to enter a user namespace.
    let leader = {
        let bus = Bus::system()?;
        bus.machine_leader(name.as_str())?
    };
    match leader {
        Some(pid) => Ok(i32::try_from(pid)?),
        None => bail!("machine {name} is not running; start it with: mbctl machines start {name}"),
    }
}

/// Run a shell or a command in the running machine; returns its exit code.
pub fn shell(name: &str, what: crate::nsenter::Run<'_>, leader_pid: Option<i32>) -> Result<u8> {
    let name = machine_name(name)?;
    let leader = running_leader(&name, leader_pid)?;
    crate::nsenter::run_in_machine(name.as_str(), leader, what)
}

/// `machines exec NAME [--user U] [--workdir D] [-e K=V…] -- PROGRAM ARGS…`; returns the program's
/// exit status.
pub fn exec(a: &ExecArgs) -> Result<u8> {
    let name = machine_name(&a.name)?;
    let paths = Paths::from_env();
    // A machine without a (valid) declaration still runs: its image alone then says how.
    let machine = declaration::load(&paths, &name).ok();
    let image = crate::cmd::process::image_runtime_config(&paths, &name)?.unwrap_or_default();
    let files = EnvSources::read(&paths, &name, machine.as_ref());
    let program = plan(machine.as_ref(), &image, &files, a)?;
    let leader = running_leader(&name, a.leader_pid)?;
    crate::nsenter::exec_in_machine(name.as_str(), leader, &program)
}

/// The environment files of a machine as the host has them: man8env.env and EnvironmentFile=.
#[derive(Debug, Default)]
pub struct EnvSources {
    /// man8env.env of the config dir (machine-writable: read bounded, never followed outside).
    pub man8env: Option<String>,
    /// EnvironmentFile= files, in order.
    pub env_files: Vec<String>,
}

impl EnvSources {
    fn read(paths: &Paths, name: &MachineName, machine: Option<&Machine>) -> EnvSources {
        let read =
            |p: &std::path::Path| man8s::untrusted::read_regular_string(p, MAX_ENV_FILE).ok();
        EnvSources {
            man8env: read(&paths.env_file(name)),
            env_files: machine
                .into_iter()
                .flat_map(|m| &m.environment_files)
                .filter_map(|p| read(p))
                .collect(),
        }
    }
}

/// What `exec` runs, from the declaration, the image config, the environment files and the
/// command line: the user, working directory and environment the app itself got (the
/// init's order: image Env, man8env.env, EnvironmentFile=, Environment=; then `--env`), and
/// no more capabilities than the app has.
pub fn plan(
    machine: Option<&Machine>,
    image: &RuntimeConfig,
    files: &EnvSources,
    a: &ExecArgs,
) -> Result<Program> {
    if a.command.first().is_none_or(|c| c.is_empty()) {
        return Err(UsageError(
            "no program given (mbctl machines exec NAME -- PROGRAM ARGS…)".into(),
        )
        .into());
    }
    if let Some(w) = &a.workdir
        && !w.starts_with('/')
    {
        return Err(UsageError(format!("--workdir {w:?} is not an absolute path")).into());
    }
    let mut env_args = Vec::new();
    for e in &a.env {
        match env::split_assignment(e) {
            Some((k, v)) => env_args.push((k.to_owned(), v.to_owned())),
            None => return Err(UsageError(format!("--env {e:?} is not NAME=VALUE")).into()),
        }
    }
    let mode = machine.map(|m| m.environment_compat).unwrap_or_default();
    let before = env::compose(&env::Sources {
        image: &image.env,
        ..Default::default()
    });
    let outer = env::outer_lookup(&before, &[]);
    let man8env = files
        .man8env
        .as_deref()
        .map(|t| envfile::parse_mode(t, mode, &outer));
    let env_files: Vec<_> = files.env_files.iter().map(|t| envfile::parse(t)).collect();
    let mut declared: Vec<(String, String)> =
        machine.map(|m| m.environment.clone()).unwrap_or_default();
    declared.extend(env_args);
    let environment: Env = env::compose(&env::Sources {
        image: &image.env,
        man8env: man8env.as_ref(),
        env_files: &env_files,
        env_args: &declared,
        ..Default::default()
    });
    let user = a
        .user
        .clone()
        .or_else(|| machine.and_then(|m| m.user.clone()))
        .unwrap_or_else(|| image.user.clone());
    let workdir = a
        .workdir
        .clone()
        .or_else(|| machine.and_then(|m| m.working_directory.clone()))
        .or_else(|| (!image.working_dir.is_empty()).then(|| image.working_dir.clone()))
        .unwrap_or_else(|| "/".into());
    let capabilities = match machine {
        Some(m) => man8s::machine::app_capabilities(
            &as_strs(&m.runtime.add_capabilities),
            &as_strs(&m.runtime.drop_capabilities),
        ),
        None => man8s::machine::app_capabilities(&[], &[]),
    };
    Ok(Program {
        argv: a.command.clone(),
        user,
        workdir,
        env: environment,
        capabilities,
        no_new_privileges: machine.is_some_and(|m| m.runtime.no_new_privileges),
    })
}

fn as_strs(list: &[String]) -> Vec<&str> {
    list.iter().map(String::as_str).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn args(line: &[&str]) -> ExecArgs {
        let argv = ["mbctl", "machines", "exec"].iter().chain(line);
        match crate::cli::Cli::try_parse_from(argv).unwrap().command {
            crate::cli::Command::Machines(crate::cli::MachinesCommand::Exec(a)) => a,
            other => panic!("{other:?}"),
        }
    }

    fn machine(text: &str) -> Machine {
        let name = MachineName::new("app").unwrap();
        declaration::parse(
            &name,
            &[("/etc/man8s/machines/app.machine".into(), text.into())],
        )
        .unwrap()
    }

    fn image() -> RuntimeConfig {
        serde_json::from_str(
            r#"{"Env":["PATH=/usr/local/bin:/bin","A=image","B=image"],"User":"node","WorkingDir":"/home/node/app"}"#,
        )
        .unwrap()
    }

    fn env_of(p: &Program) -> Vec<String> {
        p.env.to_strings()
    }

    #[test]
    fn runs_as_the_app_would() {
        let files = EnvSources {
            man8env: Some("MAN8S_CONTAINER_NAME=app\nB=man8env\n".into()),
            env_files: vec!["C=file\n".into()],
        };
        let m = machine(
            "[Machine]\nImage=x\nEnvironment=C=declared D=declared\nDropCapability=CAP_CHOWN\n",
        );
        let p = plan(
            Some(&m),
            &image(),
            &files,
            &args(&["app", "--", "env", "-0", "--x"]),
        )
        .unwrap();
        assert_eq!(p.argv, ["env", "-0", "--x"]);
        assert_eq!(
            (p.user.as_str(), p.workdir.as_str()),
            ("node", "/home/node/app")
        );
        let env = env_of(&p);
        for want in [
            "A=image",
            "B=man8env",
            "C=declared",
            "D=declared",
            "MAN8S_CONTAINER_NAME=app",
            "PATH=/usr/local/bin:/bin",
        ] {
            assert!(env.contains(&want.to_owned()), "{want} not in {env:?}");
        }
        // Docker's set less CAP_CHOWN (0), and never CAP_SYS_ADMIN (21).
        assert!(
            !p.capabilities.contains(&0) && !p.capabilities.contains(&21),
            "{:?}",
            p.capabilities
        );
        assert!(
            p.capabilities.contains(&6),
            "CAP_SETGID: {:?}",
            p.capabilities
        );

        // The declaration's User=/WorkingDirectory= win over the image's, the command line over both.
        let m = machine("[Machine]\nImage=x\nUser=0\nWorkingDirectory=/srv\nNoNewPrivileges=yes\n");
        let p = plan(
            Some(&m),
            &image(),
            &EnvSources::default(),
            &args(&["app", "id"]),
        )
        .unwrap();
        assert_eq!(
            (p.user.as_str(), p.workdir.as_str(), p.no_new_privileges),
            ("0", "/srv", true)
        );
        let p = plan(
            Some(&m),
            &image(),
            &EnvSources::default(),
            &args(&[
                "-u",
                "nobody:nogroup",
                "-w",
                "/tmp",
                "-e",
                "A=cli",
                "app",
                "--",
                "sh",
            ]),
        )
        .unwrap();
        assert_eq!(
            (p.user.as_str(), p.workdir.as_str()),
            ("nobody:nogroup", "/tmp")
        );
        assert!(env_of(&p).contains(&"A=cli".to_owned()));

        // Without a declaration or image settings: root in /.
        let p = plan(
            None,
            &RuntimeConfig::default(),
            &EnvSources::default(),
            &args(&["app", "ls"]),
        )
        .unwrap();
        assert_eq!((p.user.as_str(), p.workdir.as_str()), ("", "/"));
    }

    #[test]
    fn refuses_bad_arguments() {
        let none = EnvSources::default();
        for (line, why) in [
            (&["-w", "rel", "app", "ls"][..], "absolute"),
            (&["-e", "NOEQUALS", "app", "ls"][..], "NAME=VALUE"),
            (&["app", "--", ""][..], "no program"),
        ] {
            let e = plan(None, &image(), &none, &args(line)).unwrap_err();
            assert!(e.downcast_ref::<UsageError>().is_some(), "{line:?}: {e}");
            assert!(e.to_string().contains(why), "{line:?}: {e}");
        }
        assert!(crate::cli::Cli::try_parse_from(["mbctl", "machines", "exec", "app"]).is_err());
    }
}
