//! Benchmark helper (bench/net): run the IPv4-only forwarder in the foreground.
//!
//! `forward-run YGG_ADDRESS PORT...` relays TCP `[YGG_ADDRESS]:PORT` to the IPv4 listener on PORT,
//! exactly as `man8s-init` does inside a machine.

use std::sync::atomic::AtomicBool;

use man8s_init::forward;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: forward-run YGG_ADDRESS PORT...");
        std::process::exit(2);
    }
    let ygg = args[1].parse().expect("IPv6 address");
    let ports: Vec<_> = args[2..]
        .iter()
        .map(|p| (forward::Proto::Tcp, p.parse().expect("port")))
        .collect();
    let opts = forward::Options {
        settle: std::time::Duration::from_millis(200),
        ..Default::default()
    };
    if let Err(e) = forward::run(&ports, ygg, &opts, &AtomicBool::new(false)) {
        eprintln!("forward-run: {e}");
        std::process::exit(1);
    }
}
