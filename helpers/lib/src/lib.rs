//! The shared model of a man8s machine.
//!
//! Every binary (generator, fetch helper, init, bridge helper, `mbctl`) is a thin shim over this
//! crate and its siblings. Parsing here is pure (`&str` in, value or error out); file-system access
//! goes through [`paths::Paths`], which honours `MAN8S_ROOT` so that tests can relocate everything.

pub mod address;
pub mod declaration;
pub mod envfile;
pub mod health;
pub mod hostconfig;
pub mod image_config;
pub mod ini;
pub mod machine;
pub mod mesh;
pub mod name;
pub mod paths;
pub mod reference;
pub mod signal;
pub mod untrusted;
pub mod words;
pub mod yggdrasil;

pub use name::MachineName;
pub use paths::Paths;
