//! `mbctl address getsuffix NAME [--prefix P/LEN] [--labelled]`, over `man8s::address`.

use anyhow::Result;
use ipnet::Ipv6Net;

use crate::usage;

/// The suffix (`::1d44:bc13:a177:c4d`, for a /64), or with `prefix` the full address alone.
pub fn getsuffix(name: &str, prefix: Option<&str>) -> Result<String> {
    match prefix {
        None => Ok(man8s::address::suffix_address(name, 64).to_string()),
        Some(p) => {
            let Ok(net) = p.parse::<Ipv6Net>() else {
                return usage(format!(
                    "--prefix {p:?} is not an IPv6 prefix like 300:2e98:a4b0:1789::/64"
                ));
            };
            Ok(man8s::address::machine_address(net, name).to_string())
        }
    }
}

/// What the Python mbctl printed for `address getsuffix NAME` (two labelled lines, which old
/// scripts parse; its labels were Chinese: "container name" and "IPv6 suffix address").
pub fn labelled(name: &str, suffix: &str) -> String {
    format!("容器名字: {name}\nIPv6 后缀地址: {suffix}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labelled_as_the_python_tool() {
        let suffix = getsuffix("TestBWContainer3", None).unwrap();
        assert_eq!(
            labelled("TestBWContainer3", &suffix),
            "容器名字: TestBWContainer3\nIPv6 后缀地址: ::1d44:bc13:a177:c4d"
        );
    }

    #[test]
    fn readme_example() {
        assert_eq!(
            getsuffix("TestBWContainer3", None).unwrap(),
            "::1d44:bc13:a177:c4d"
        );
        assert_eq!(
            getsuffix("TestBWContainer3", Some("300:2e98:a4b0:1789::/64")).unwrap(),
            "300:2e98:a4b0:1789:1d44:bc13:a177:c4d"
        );
        assert!(getsuffix("x", Some("300::")).is_err());
        assert!(getsuffix("x", Some("10.0.0.0/8")).is_err());
    }
}
