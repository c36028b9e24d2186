//! Builds and tests `helpers/init/src/forward.rs` (the IPv4-only forwarder, written by the bridge
//! engineer for the init) until the init crate declares the module itself. Its unit tests run
//! here, on loopback; `detach` is the init's helper, included the same way.
#![allow(dead_code, unsafe_code)]

#[path = "../../init/src/detach.rs"]
mod detach;

#[path = "../../init/src/forward.rs"]
mod forward;
