//! The nftables table `inet man8s`: who may reach the machines on the bridge from outside the host.
//!
//! One base chain on the forward hook, policy accept, that only ever decides about packets
//! routed *into* the bridge from another interface (the mesh, the LAN). Everything else —
//! the host's own traffic (output hook), machines talking to each other on the bridge (bridged,
//! not routed), machines' outbound traffic — passes untouched. Inbound it accepts replies
//! (conntrack), `Port=` host ports (nspawn's DNAT), ping, the fleet (`[Mesh] AllowFrom=`), each
//! machine's `AllowFrom=` peers and `Expose=` ports, and rejects the rest. An accept here does
//! not override a drop in another table; we never touch another table.
//!
//! Pure: [`FilterSpec`] in, an nftables JSON document out; [`crate::nft`] hands it to `nft`.

use std::borrow::Cow;
use std::net::Ipv6Addr;

use ipnet::{IpNet, Ipv6Net};
use man8s::hostconfig::HostConfig;
use man8s::machine::Protocol;
use man8s::mesh::{AddressPolicy, Exposed, MachinePolicy, PolicyFile};
use nftables::expr::{
    CT, Expression, Meta, MetaKey, NamedExpression, Payload, PayloadField, Prefix, RT, RTKey,
    SetItem, TcpOption,
};
use nftables::schema::{Chain, NfCmd, NfListObject, NfObject, Nftables, Rule, Table};
use nftables::stmt::{Mangle, Match, Operator, Reject, RejectType, Statement};
use nftables::types::{NfChainPolicy, NfChainType, NfFamily, NfHook, RejectCode};

/// The table's name (family `inet`).
pub const TABLE: &str = "man8s";
/// The one chain.
pub const CHAIN: &str = "forward";

/// What the table says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FilterSpec {
    /// The bridge machines are on.
    pub bridge: String,
    /// `[Mesh] AllowFrom=` of man8s.conf, resolved: reach every machine.
    pub fleet: Vec<IpNet>,
    /// Machines with a Yggdrasil address, sorted by name.
    pub machines: Vec<MachineRules>,
    /// Clamp the TCP MSS of connections through the bridge to the route's MTU, so a bridge MTU
    /// above the LAN's does not break IPv4 (whose routers may not send "fragmentation needed").
    pub clamp_mss: bool,
}

/// One machine's exceptions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MachineRules {
    /// The machine name (rule comments).
    pub name: String,
    /// Its Yggdrasil address.
    pub address: Ipv6Addr,
    /// `Expose=`.
    pub expose: Vec<Exposed>,
    /// `AllowFrom=`, resolved (IPv6 only: machines' IPv4 addresses are DHCP leases).
    pub allow_from: Vec<Ipv6Net>,
}

/// Build the spec from the generator's policy file, man8s.conf and the host's subnet (`None`
/// without yggdrasil: no machine has a Yggdrasil address then). Returns the warnings for
/// entries that were left out (an `@HOST` not in `[Hosts]`, IPv4 in a machine's `AllowFrom=`).
pub fn spec(
    policy: &PolicyFile,
    cfg: &HostConfig,
    subnet: Option<Ipv6Net>,
) -> (FilterSpec, Vec<String>) {
    let mut warnings = Vec::new();
    let fleet = cfg
        .mesh
        .allow_from
        .iter()
        .flat_map(|s| cfg.resolve(s))
        .collect();
    let mut machines = Vec::new();
    for m in &policy.machines {
        let Some(address) = machine_address(m, subnet) else {
            continue;
        };
        let mut allow_from = Vec::new();
        for source in &m.allow_from {
            let nets = cfg.resolve(source);
            if nets.is_empty() {
                warnings.push(format!(
                    "machine {}: AllowFrom={source} ignored: no such host in [Hosts] of /etc/man8s/man8s.conf",
                    m.name
                ));
            }
            for net in nets {
                match net {
                    IpNet::V6(n) => allow_from.push(n),
                    IpNet::V4(_) => warnings.push(format!(
                        "machine {}: AllowFrom={source} ignored: machines' IPv4 addresses are DHCP leases; \
                         allow IPv4 peers host-wide in [Mesh] of /etc/man8s/man8s.conf",
                        m.name
                    )),
                }
            }
        }
        machines.push(MachineRules {
            name: m.name.clone(),
            address,
            expose: m.expose.clone(),
            allow_from,
        });
    }
    machines.sort_by(|a, b| a.name.cmp(&b.name));
    let spec = FilterSpec {
        bridge: cfg.bridge.name.clone(),
        fleet,
        machines,
        clamp_mss: true,
    };
    (spec, warnings)
}

/// A machine's Yggdrasil address, when it has one (`subnet` is `None` without yggdrasil).
pub fn machine_address(m: &MachinePolicy, subnet: Option<Ipv6Net>) -> Option<Ipv6Addr> {
    match (m.address, subnet) {
        (AddressPolicy::Fixed(a), _) => Some(a),
        (AddressPolicy::Auto, Some(subnet)) => {
            Some(man8s::address::machine_address(subnet, &m.name))
        }
        (AddressPolicy::None, _) | (AddressPolicy::Auto, None) => None,
    }
}

/// One nft transaction that replaces the table with `spec` as a whole: `add` (so that the
/// `delete` cannot fail on a first run), `delete`, then the new table. Readers never see half.
pub fn ruleset(spec: &FilterSpec) -> Nftables<'static> {
    let mut objects = removal_commands();
    objects.push(add(NfListObject::Table(table())));
    objects.push(add(NfListObject::Chain(Chain {
        family: NfFamily::INet,
        table: TABLE.into(),
        name: CHAIN.into(),
        _type: Some(NfChainType::Filter),
        hook: Some(NfHook::Forward),
        prio: Some(0),
        policy: Some(NfChainPolicy::Accept),
        ..Chain::default()
    })));
    for (comment, expr) in rules(spec) {
        objects.push(add(NfListObject::Rule(Rule {
            family: NfFamily::INet,
            table: TABLE.into(),
            chain: CHAIN.into(),
            expr: expr.into(),
            comment: Some(comment.into()),
            ..Rule::default()
        })));
    }
    Nftables {
        objects: objects.into(),
    }
}

/// One nft transaction that removes the table if it is there, and nothing else.
pub fn removal() -> Nftables<'static> {
    Nftables {
        objects: removal_commands().into(),
    }
}

fn removal_commands() -> Vec<NfObject<'static>> {
    vec![
        add(NfListObject::Table(table())),
        NfObject::CmdObject(NfCmd::Delete(NfListObject::Table(table()))),
    ]
}

fn table() -> Table<'static> {
    Table {
        family: NfFamily::INet,
        name: TABLE.into(),
        handle: None,
    }
}

fn add(obj: NfListObject<'static>) -> NfObject<'static> {
    NfObject::CmdObject(NfCmd::Add(obj))
}

/// The chain's rules, in order, each with the comment `nft list` shows.
fn rules(spec: &FilterSpec) -> Vec<(String, Vec<Statement<'static>>)> {
    let into_bridge = || eq(meta(MetaKey::Oifname), s(&spec.bridge));
    let mut out = Vec::new();
    if spec.clamp_mss {
        // Both directions: the bridge may carry a larger MTU than the LAN or the mesh.
        for (key, what) in [(MetaKey::Oifname, "into"), (MetaKey::Iifname, "out of")] {
            out.push((
                format!("TCP MSS of connections {what} the bridge follows the route's MTU"),
                vec![
                    eq(meta(key), s(&spec.bridge)),
                    Statement::Match(Match {
                        left: payload("tcp", "flags"),
                        right: s("syn"),
                        op: Operator::IN,
                    }),
                    Statement::Mangle(Mangle {
                        key: Expression::Named(NamedExpression::TcpOption(TcpOption {
                            name: "maxseg".into(),
                            field: Some("size".into()),
                        })),
                        value: Expression::Named(NamedExpression::RT(RT {
                            key: RTKey::MTU,
                            family: None,
                        })),
                    }),
                ],
            ));
        }
    }
    out.push((
        "only traffic into the bridge is filtered".into(),
        vec![
            Statement::Match(Match {
                left: meta(MetaKey::Oifname),
                right: s(&spec.bridge),
                op: Operator::NEQ,
            }),
            accept(),
        ],
    ));
    out.push((
        "replies to machines' own connections".into(),
        vec![
            Statement::Match(Match {
                left: ct("state"),
                right: Expression::List(vec![s("established"), s("related")]),
                op: Operator::IN,
            }),
            accept(),
        ],
    ));
    out.push((
        "machine to machine through the bridge".into(),
        vec![eq(meta(MetaKey::Iifname), s(&spec.bridge)), accept()],
    ));
    out.push((
        "Port= host ports (nspawn's DNAT)".into(),
        vec![
            Statement::Match(Match {
                left: ct("status"),
                right: s("dnat"),
                op: Operator::IN,
            }),
            accept(),
        ],
    ));
    for (proto, ty) in [("icmpv6", "echo-request"), ("icmp", "echo-request")] {
        out.push((
            format!("ping ({proto})"),
            vec![eq(payload(proto, "type"), s(ty)), accept()],
        ));
    }
    let (v6, v4): (Vec<IpNet>, Vec<IpNet>) = spec.fleet.iter().partition(|n| n.addr().is_ipv6());
    for (proto, nets) in [("ip6", v6), ("ip", v4)] {
        if !nets.is_empty() {
            out.push((
                "the fleet: [Mesh] AllowFrom= of man8s.conf".into(),
                vec![
                    into_bridge(),
                    eq(payload(proto, "saddr"), net_set(&nets)),
                    accept(),
                ],
            ));
        }
    }
    for m in &spec.machines {
        let to_machine = || eq(payload("ip6", "daddr"), s(&m.address.to_string()));
        if !m.allow_from.is_empty() {
            let nets: Vec<IpNet> = m.allow_from.iter().map(|n| IpNet::V6(*n)).collect();
            out.push((
                format!("{}: AllowFrom=", m.name),
                vec![
                    to_machine(),
                    eq(payload("ip6", "saddr"), net_set(&nets)),
                    accept(),
                ],
            ));
        }
        for proto in [Protocol::Tcp, Protocol::Udp] {
            let ports: Vec<u16> = m
                .expose
                .iter()
                .filter(|e| e.protocol == proto)
                .map(|e| e.port)
                .collect();
            if ports.is_empty() {
                continue;
            }
            let list = ports
                .iter()
                .map(|p| SetItem::Element(Expression::Number(u32::from(*p))))
                .collect();
            out.push((
                format!("{}: Expose={proto}:…", m.name),
                vec![
                    to_machine(),
                    eq(
                        payload(&proto.to_string(), "dport"),
                        Expression::Named(NamedExpression::Set(list)),
                    ),
                    accept(),
                ],
            ));
        }
    }
    out.push((
        "everything else from outside: refused".into(),
        vec![
            eq(meta(MetaKey::L4proto), s("tcp")),
            Statement::Reject(Some(Reject::new(Some(RejectType::TCPReset), None))),
        ],
    ));
    out.push((
        "everything else from outside: refused".into(),
        vec![Statement::Reject(Some(Reject::new(
            Some(RejectType::ICMPX),
            Some(RejectCode::AdminProhibited),
        )))],
    ));
    out
}

fn s(v: &str) -> Expression<'static> {
    Expression::String(Cow::Owned(v.to_owned()))
}

fn meta(key: MetaKey) -> Expression<'static> {
    Expression::Named(NamedExpression::Meta(Meta { key }))
}

fn ct(key: &'static str) -> Expression<'static> {
    Expression::Named(NamedExpression::CT(CT {
        key: key.into(),
        family: None,
        dir: None,
    }))
}

fn payload(protocol: &str, field: &'static str) -> Expression<'static> {
    Expression::Named(NamedExpression::Payload(Payload::PayloadField(
        PayloadField {
            protocol: Cow::Owned(protocol.to_owned()),
            field: field.into(),
        },
    )))
}

fn eq(left: Expression<'static>, right: Expression<'static>) -> Statement<'static> {
    Statement::Match(Match {
        left,
        right,
        op: Operator::EQ,
    })
}

fn accept() -> Statement<'static> {
    Statement::Accept(None)
}

/// An anonymous set of addresses and prefixes.
fn net_set(nets: &[IpNet]) -> Expression<'static> {
    let items = nets
        .iter()
        .map(|n| {
            let addr = s(&n.addr().to_string());
            SetItem::Element(if n.prefix_len() == n.max_prefix_len() {
                addr
            } else {
                Expression::Named(NamedExpression::Prefix(Prefix {
                    addr: Box::new(addr),
                    len: u32::from(n.prefix_len()),
                }))
            })
        })
        .collect();
    Expression::Named(NamedExpression::Set(items))
}

/// Where a machine can be reached from, in words, for `mbctl machines status`.
pub fn describe(spec: &FilterSpec, machine: &str) -> Vec<String> {
    let mut out = vec!["from this host and machines on the same bridge: every port".to_owned()];
    if !spec.fleet.is_empty() {
        let fleet: Vec<String> = spec.fleet.iter().map(ToString::to_string).collect();
        out.push(format!("from the fleet ({}): every port", fleet.join(" ")));
    }
    let m = spec.machines.iter().find(|m| m.name == machine);
    let allow: Vec<String> = m
        .map(|m| m.allow_from.iter().map(ToString::to_string).collect())
        .unwrap_or_default();
    if !allow.is_empty() {
        out.push(format!("from {}: every port", allow.join(" ")));
    }
    let exposed: Vec<String> = m
        .map(|m| m.expose.iter().map(ToString::to_string).collect())
        .unwrap_or_default();
    if exposed.is_empty() {
        out.push("from everyone else: nothing (no Expose=)".into());
    } else {
        out.push(format!("from everyone: {}", exposed.join(" ")));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> (FilterSpec, Vec<String>) {
        let cfg = HostConfig::parse(
            "[Bridge]\nName=srvgrp0\n[Mesh]\nAllowFrom=@nas 192.0.2.0/24\n[Hosts]\nnas=300:aaaa:bbbb:cccc::/64\n",
            "/etc/man8s/man8s.conf",
        )
        .unwrap();
        let policy = PolicyFile {
            machines: vec![
                MachinePolicy {
                    name: "web".into(),
                    address: AddressPolicy::Auto,
                    expose: vec![
                        "80".parse().unwrap(),
                        "udp:53".parse().unwrap(),
                        "443".parse().unwrap(),
                    ],
                    allow_from: vec![
                        "300:1:2:3::7".parse().unwrap(),
                        "@gone".parse().unwrap(),
                        "10.0.0.0/8".parse().unwrap(),
                    ],
                    links: vec![],
                },
                MachinePolicy {
                    name: "db".into(),
                    address: AddressPolicy::Fixed("300:2e98:a4b0:1789::db".parse().unwrap()),
                    expose: vec![],
                    allow_from: vec![],
                    links: vec![],
                },
                MachinePolicy {
                    name: "quiet".into(),
                    address: AddressPolicy::None,
                    expose: vec!["22".parse().unwrap()],
                    allow_from: vec![],
                    links: vec![],
                },
            ],
        };
        spec(
            &policy,
            &cfg,
            Some("300:2e98:a4b0:1789::/64".parse().unwrap()),
        )
    }

    #[test]
    fn spec_resolves_hosts_and_skips_what_it_cannot_filter() {
        let (spec, warnings) = sample();
        assert_eq!(spec.bridge, "srvgrp0");
        let fleet: Vec<String> = spec.fleet.iter().map(ToString::to_string).collect();
        assert_eq!(
            fleet,
            [
                "300:aaaa:bbbb:cccc::/64",
                "200:aaaa:bbbb:cccc::/64",
                "192.0.2.0/24"
            ]
        );
        // Sorted; `quiet` has no Yggdrasil address, so nothing to open for it.
        let names: Vec<&str> = spec.machines.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["db", "web"]);
        let web = &spec.machines[1];
        assert_eq!(
            web.address,
            man8s::address::machine_address("300:2e98:a4b0:1789::/64".parse().unwrap(), "web")
        );
        assert_eq!(
            web.allow_from,
            ["300:1:2:3::7/128".parse::<Ipv6Net>().unwrap()]
        );
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(
            warnings[0].contains("machine web: AllowFrom=@gone ignored: no such host"),
            "{}",
            warnings[0]
        );
        assert!(
            warnings[1].contains("AllowFrom=10.0.0.0/8 ignored: machines' IPv4"),
            "{}",
            warnings[1]
        );
        // Without yggdrasil only fixed addresses remain.
        let (spec2, _) = filter_without_subnet();
        assert_eq!(spec2.machines.len(), 1);
        assert_eq!(spec2.machines[0].name, "db");
    }

    fn filter_without_subnet() -> (FilterSpec, Vec<String>) {
        let policy = PolicyFile {
            machines: vec![
                MachinePolicy {
                    name: "web".into(),
                    address: AddressPolicy::Auto,
                    expose: vec![],
                    allow_from: vec![],
                    links: vec![],
                },
                MachinePolicy {
                    name: "db".into(),
                    address: AddressPolicy::Fixed("300::db".parse().unwrap()),
                    expose: vec![],
                    allow_from: vec![],
                    links: vec![],
                },
            ],
        };
        spec(&policy, &HostConfig::default(), None)
    }

    /// The rules as (comment, JSON of the statements), for readable assertions.
    fn rendered(spec: &FilterSpec) -> Vec<(String, String)> {
        let doc = serde_json::to_value(ruleset(spec)).unwrap();
        doc["nftables"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|o| o.get("add").and_then(|a| a.get("rule")))
            .map(|r| {
                (
                    r["comment"].as_str().unwrap().to_owned(),
                    r["expr"].to_string(),
                )
            })
            .collect()
    }

    #[test]
    fn ruleset_replaces_only_our_table_in_one_document() {
        let (spec, _) = sample();
        let doc = serde_json::to_value(ruleset(&spec)).unwrap();
        let objs = doc["nftables"].as_array().unwrap();
        // add table, delete table, add table, add chain, rules…
        assert_eq!(
            objs[0],
            serde_json::json!({"add": {"table": {"family": "inet", "name": "man8s"}}})
        );
        assert_eq!(
            objs[1],
            serde_json::json!({"delete": {"table": {"family": "inet", "name": "man8s"}}})
        );
        assert_eq!(objs[2], objs[0]);
        assert_eq!(
            objs[3],
            serde_json::json!({"add": {"chain": {"family": "inet", "table": "man8s", "name": "forward",
                "type": "filter", "hook": "forward", "prio": 0, "policy": "accept"}}})
        );
        // Every object names our table and nothing else.
        for o in objs {
            let inner = o.as_object().unwrap().values().next().unwrap();
            let obj = inner.as_object().unwrap().values().next().unwrap();
            let table = obj.get("table").or_else(|| obj.get("name")).unwrap();
            assert_eq!(table, "man8s", "{o}");
            assert_eq!(obj["family"], "inet", "{o}");
        }
        assert_eq!(
            serde_json::to_value(removal()).unwrap()["nftables"]
                .as_array()
                .unwrap()[..],
            objs[..2]
        );
    }

    #[test]
    fn rules_in_order() {
        let (spec, _) = sample();
        let web = spec.machines[1].address;
        let rules = rendered(&spec);
        let comments: Vec<&str> = rules.iter().map(|(c, _)| c.as_str()).collect();
        assert_eq!(
            comments,
            [
                "TCP MSS of connections into the bridge follows the route's MTU",
                "TCP MSS of connections out of the bridge follows the route's MTU",
                "only traffic into the bridge is filtered",
                "replies to machines' own connections",
                "machine to machine through the bridge",
                "Port= host ports (nspawn's DNAT)",
                "ping (icmpv6)",
                "ping (icmp)",
                "the fleet: [Mesh] AllowFrom= of man8s.conf",
                "the fleet: [Mesh] AllowFrom= of man8s.conf",
                "web: AllowFrom=",
                "web: Expose=tcp:…",
                "web: Expose=udp:…",
                "everything else from outside: refused",
                "everything else from outside: refused",
            ]
        );
        let by = |c: &str| {
            rules
                .iter()
                .filter(|(k, _)| k == c)
                .map(|(_, e)| e.as_str())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            by("only traffic into the bridge is filtered"),
            [
                r#"[{"match":{"left":{"meta":{"key":"oifname"}},"op":"!=","right":"srvgrp0"}},{"accept":null}]"#
            ]
        );
        assert_eq!(
            by("the fleet: [Mesh] AllowFrom= of man8s.conf"),
            [
                r#"[{"match":{"left":{"meta":{"key":"oifname"}},"op":"==","right":"srvgrp0"}},{"match":{"left":{"payload":{"field":"saddr","protocol":"ip6"}},"op":"==","right":{"set":[{"prefix":{"addr":"300:aaaa:bbbb:cccc::","len":64}},{"prefix":{"addr":"200:aaaa:bbbb:cccc::","len":64}}]}}},{"accept":null}]"#,
                r#"[{"match":{"left":{"meta":{"key":"oifname"}},"op":"==","right":"srvgrp0"}},{"match":{"left":{"payload":{"field":"saddr","protocol":"ip"}},"op":"==","right":{"set":[{"prefix":{"addr":"192.0.2.0","len":24}}]}}},{"accept":null}]"#,
            ]
        );
        assert_eq!(
            by("web: Expose=tcp:…"),
            [format!(
                r#"[{{"match":{{"left":{{"payload":{{"field":"daddr","protocol":"ip6"}}}},"op":"==","right":"{web}"}}}},{{"match":{{"left":{{"payload":{{"field":"dport","protocol":"tcp"}}}},"op":"==","right":{{"set":[80,443]}}}}}},{{"accept":null}}]"#
            )]
        );
        assert_eq!(
            by("web: AllowFrom="),
            [format!(
                r#"[{{"match":{{"left":{{"payload":{{"field":"daddr","protocol":"ip6"}}}},"op":"==","right":"{web}"}}}},{{"match":{{"left":{{"payload":{{"field":"saddr","protocol":"ip6"}}}},"op":"==","right":{{"set":["300:1:2:3::7"]}}}}}},{{"accept":null}}]"#
            )]
        );
    }

    #[test]
    fn no_fleet_and_no_clamp_leave_those_rules_out() {
        let (mut spec, _) = filter_without_subnet();
        spec.clamp_mss = false;
        let comments: Vec<String> = rendered(&spec).into_iter().map(|(c, _)| c).collect();
        assert!(
            !comments
                .iter()
                .any(|c| c.contains("fleet") || c.contains("MSS")),
            "{comments:?}"
        );
        // db has neither Expose= nor AllowFrom=: no rule of its own.
        assert!(
            !comments.iter().any(|c| c.starts_with("db")),
            "{comments:?}"
        );
        assert_eq!(
            comments.last().unwrap(),
            "everything else from outside: refused"
        );
    }

    #[test]
    fn describe_says_where_from() {
        let (spec, _) = sample();
        let web = describe(&spec, "web");
        assert_eq!(
            web[0],
            "from this host and machines on the same bridge: every port"
        );
        assert_eq!(
            web[1],
            "from the fleet (300:aaaa:bbbb:cccc::/64 200:aaaa:bbbb:cccc::/64 192.0.2.0/24): every port"
        );
        assert_eq!(web[2], "from 300:1:2:3::7/128: every port");
        assert_eq!(web[3], "from everyone: tcp:80 udp:53 tcp:443");
        assert_eq!(
            describe(&spec, "db").last().unwrap(),
            "from everyone else: nothing (no Expose=)"
        );
        // No Yggdrasil address: only the fleet's rule (by interface) reaches it.
        let quiet = describe(&spec, "quiet");
        assert_eq!(quiet.len(), 3, "{quiet:?}");
        assert_eq!(quiet[2], "from everyone else: nothing (no Expose=)");
    }
}
