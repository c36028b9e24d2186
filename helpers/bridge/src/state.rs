//! The state file `/run/man8s/yggdrasil.json` this helper writes: its one reader and writer live
//! in [`man8s::yggdrasil`], shared with the fetch helper and `mbctl`.

pub use man8s::yggdrasil::{STATE_FILE, SelfInfo, StateError, parse, read, render};
