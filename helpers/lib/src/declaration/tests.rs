use super::*;

fn name(n: &str) -> MachineName {
    MachineName::new(n).unwrap()
}

fn one(text: &str) -> Result<Machine, Diagnostics> {
    parse(
        &name("web"),
        &[(
            PathBuf::from("/etc/man8s/machines/web.machine"),
            text.to_owned(),
        )],
    )
}

#[test]
fn minimal() {
    let m = one("[Machine]\nImage=redis\n").unwrap();
    assert_eq!(m.image, "redis");
    assert_eq!(m.network.bridge, "srvgrp0");
}
