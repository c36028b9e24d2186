//! Splitting a string into words and quoting words back, by the two sets of rules man8s meets:
//! systemd's unit-file syntax ([`systemd`]: declarations, unit files, nspawn settings) and POSIX
//! `sh` ([`shell`]: image commands, man8env.env). The other grammars are deliberate: the old
//! tool's `export`+`eval` loader (`envfile::python_mbctl`) and `mbctl machines shell --command`'s
//! plain white-space split, both kept as the Python tool had them.

pub mod shell;
pub mod systemd;
