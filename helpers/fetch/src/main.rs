//! `man8s-fetch NAME`: make machine NAME's rootfs exist and match its declaration.
//!
//! Runs as `ExecStartPre=` of `man8@NAME.service`. A thin shim: argv → declaration →
//! [`man8s_provision::ensure_machine`]. Exit 0 ok, 1 runtime failure, 2 usage.

use std::process::ExitCode;

use man8s::{MachineName, Paths};
use man8s_oci::install::InstallOptions;
use man8s_oci::registry::RegistryConfig;
use man8s_provision::{EnsureOptions, Outcome};

const USAGE: &str = "usage: man8s-fetch [--platform OS/ARCH[/VARIANT]] NAME\n\
       man8s-fetch --unmount NAME\n\
Pulls (per Pull=) and installs the image of machine NAME at /var/lib/man8machines/NAME\n\
(mounting it there when its root is layered); --unmount undoes that mount after a stop.";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut name = None;
    let mut platform = None;
    let mut unmount = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "-h" | "--help" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            "--version" => {
                println!("man8s-fetch {}", env!("CARGO_PKG_VERSION"));
                return ExitCode::SUCCESS;
            }
            "--unmount" => unmount = true,
            "--platform" => match it.next() {
                Some(p) => platform = Some(p.clone()),
                None => return usage("--platform needs a value"),
            },
            s if s.starts_with("--platform=") => {
                platform = Some(s["--platform=".len()..].to_owned())
            }
            s if s.starts_with('-') => return usage(&format!("unknown option {s}")),
            s if name.is_none() => name = Some(s.to_owned()),
            s => return usage(&format!("unexpected argument {s:?}")),
        }
    }
    let Some(name) = name else {
        return usage("missing machine NAME");
    };
    let name = match MachineName::new(&name) {
        Ok(n) => n,
        Err(e) => return usage(&format!("invalid machine name {name:?}: {e}")),
    };
    let platform = match platform.map(|p| p.parse()) {
        None => man8s_oci::Platform::host(),
        Some(Ok(p)) => p,
        Some(Err(e)) => return usage(&e.to_string()),
    };
    if unmount {
        let root = man8s_provision::layered::Root::new(&Paths::from_env(), &name);
        return match root.unmount() {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("man8s-fetch: {name}: {e}");
                ExitCode::from(1)
            }
        };
    }
    match run(&name, platform) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("man8s-fetch: {name}: {e}");
            ExitCode::from(1)
        }
    }
}

fn usage(msg: &str) -> ExitCode {
    eprintln!("man8s-fetch: {msg}\n{USAGE}");
    ExitCode::from(2)
}

fn run(name: &MachineName, platform: man8s_oci::Platform) -> Result<(), String> {
    let paths = Paths::from_env();
    let (machine, fingerprint) = man8s::declaration::load_fingerprinted(&paths, name)
        .map_err(|e| e.to_string().replace('\n', "; "))?;
    check_rendered(
        std::env::var(man8s::paths::DECLARATION_FINGERPRINT_ENV).ok(),
        &fingerprint,
    )?;
    let registry = RegistryConfig::load(&paths).map_err(|e| e.to_string())?;
    let progress = man8s_oci::progress::auto();
    let opts = EnsureOptions {
        policy: machine.pull.into(),
        platform,
        registry: &registry,
        install: InstallOptions::default(),
        progress: progress.as_ref(),
    };
    let outcome =
        man8s_oci::pull::block_on(man8s_provision::ensure_machine(&paths, &machine, &opts))
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
    if let Outcome::Installed { digest } = outcome {
        eprintln!("{name}: installed {} ({digest})", machine.image);
    }
    Ok(())
}

/// Under `man8@NAME.service`, act only on the declaration the generator rendered: the unit's
/// `.nspawn` and drop-in follow the files as they were at the last daemon-reload, so a rootfs or
/// volumes made from an edited file would not match them. Run by hand (no recorded
/// fingerprint), the current files are used.
fn check_rendered(recorded: Option<String>, current: &str) -> Result<(), String> {
    match recorded {
        Some(r) if r != current => Err(
            "declaration changed since the last daemon-reload; run systemctl daemon-reload and start again"
                .into(),
        ),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::check_rendered;

    #[test]
    fn refuses_a_declaration_changed_since_the_generator_ran() {
        assert!(check_rendered(None, "sha256:aa").is_ok());
        assert!(check_rendered(Some("sha256:aa".into()), "sha256:aa").is_ok());
        let e = check_rendered(Some("sha256:aa".into()), "sha256:bb").unwrap_err();
        assert!(
            e.starts_with("declaration changed since the last daemon-reload"),
            "{e}"
        );
    }
}
