//! `man8s-init`: a thin shim over the library (see `man8s-init(8)`).

fn main() {
    // A bug must still end as one line in the journal, not a backtrace dump (the init is built with
    // panic=abort).
    std::panic::set_hook(Box::new(|info| {
        eprintln!("man8s-init: internal error: {info}")
    }));
    let args = match man8s_init::args::parse(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("man8s-init: args: {e}");
            std::process::exit(2);
        }
    };
    if args.help {
        print!("{}", man8s_init::args::USAGE);
        return;
    }
    if args.version {
        println!("man8s-init {}", env!("CARGO_PKG_VERSION"));
        return;
    }
    let failure = man8s_init::run(args);
    eprintln!("{failure}");
    std::process::exit(failure.code);
}
