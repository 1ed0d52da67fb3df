//! The rules a configuration keeps beyond its types, one function per section. The
//! sections are checked in file order and the first rule broken is reported, with the
//! field's path (`error` finds its line).

use super::error::Invalid;
use super::error::Seg::{Index, Key};
use super::{
    BackendConfig, BgpConfig, Config, ControlConfig, DataplaneConfig, FarmConfig, FeedConfig,
    HaConfig, NatMode, PortConfig, Protocol, SecurityConfig, SipLimitsConfig, TableConfig,
    MAX_BACKENDS, MAX_FARMS, MAX_PORTS, MAX_SNAT_ADDRESSES, MAX_WORKERS,
};

type Check = Result<(), Invalid>;

impl Config {
    pub(super) fn validate(&self) -> Check {
        control(&self.control)?;
        dataplane(&self.dataplane)?;
        tables(&self.tables)?;
        sip(&self.sip)?;
        dnsbl(&self.security)?;
        ha(&self.ha, &self.ports)?;
        feeds(&self.security.feed)?;
        bgp(&self.bgp, &self.ports)?;
        ports(&self.ports)?;
        farms(self)
    }
}

fn feeds(feeds: &[FeedConfig]) -> Check {
    for (i, f) in feeds.iter().enumerate() {
        let at = |k| vec![Key("security"), Key("feed"), Index(i), Key(k)];
        if f.file.is_empty() == f.url.is_empty() {
            return Err(Invalid::at(
                at(if f.file.is_empty() { "url" } else { "file" }),
                "a feed has either a `file` or a `url`, not both nor neither",
            ));
        }
        if !(f.url.is_empty() || f.url.starts_with("http://") || f.url.starts_with("https://")) {
            return Err(Invalid::at(
                at("url"),
                format!("`{}` is not an http:// or https:// URL", f.url),
            ));
        }
        if f.refresh_s == 0 {
            return Err(Invalid::at(at("refresh_s"), "expected at least 1 second"));
        }
        if feeds[..i].iter().any(|o| o.label() == f.label()) {
            return Err(Invalid::at(
                at("name"),
                format!(
                    "two feeds are named `{}`: give each its own `name`",
                    f.label()
                ),
            ));
        }
    }
    Ok(())
}

fn control(c: &ControlConfig) -> Check {
    if !c.http.is_empty() && c.http.parse::<std::net::SocketAddr>().is_err() {
        return Err(Invalid::at(
            [Key("control"), Key("http")],
            format!(
                "`{}` is not an address:port (e.g. 127.0.0.1:9060), or \"\" to turn HTTP off",
                c.http
            ),
        ));
    }
    if c.sample_interval_s == 0 {
        return Err(Invalid::at(
            [Key("control"), Key("sample_interval_s")],
            "expected at least 1 second",
        ));
    }
    Ok(())
}

fn dataplane(d: &DataplaneConfig) -> Check {
    let at = |k| [Key("dataplane"), Key(k)];
    if d.workers == 0 || usize::from(d.workers) > MAX_WORKERS {
        return Err(Invalid::at(
            at("workers"),
            format!(
                "expected 1 to {MAX_WORKERS} worker lcores, got {}",
                d.workers
            ),
        ));
    }
    if !(1024..=16384).contains(&d.mbuf_data_size) {
        return Err(Invalid::at(
            at("mbuf_data_size"),
            format!("expected 1024 to 16384 bytes, got {}", d.mbuf_data_size),
        ));
    }
    if d.mbufs < 1024 {
        return Err(Invalid::at(at("mbufs"), "expected at least 1024 mbufs"));
    }
    Ok(())
}

fn tables(t: &TableConfig) -> Check {
    for (k, v) in [
        ("dialogs", t.dialogs),
        ("registrations", t.registrations),
        ("snat_sessions", t.snat_sessions),
        ("tcp_connections", t.tcp_connections),
        ("rate_sources", t.rate_sources),
        ("held_requests", t.held_requests),
    ] {
        if !(1024..=(1u64 << 30)).contains(&v) {
            return Err(Invalid::at(
                [Key("tables"), Key(k)],
                format!("expected a capacity between 1024 and 2^30 entries, got {v}"),
            ));
        }
    }
    Ok(())
}

fn sip(s: &SipLimitsConfig) -> Check {
    if s.max_headers.is_some_and(|n| n < 8) || s.max_line_len.is_some_and(|n| n < 128) {
        return Err(Invalid::at(
            [Key("sip")],
            "max_headers must be at least 8 and max_line_len at least 128",
        ));
    }
    Ok(())
}

fn dnsbl(s: &SecurityConfig) -> Check {
    let at = |k| [Key("security"), Key(k)];
    for (i, zone) in s.dnsbl.iter().enumerate() {
        let labels: Vec<&str> = zone.trim_end_matches('.').split('.').collect();
        if labels.iter().any(|l| {
            l.is_empty()
                || l.len() > 63
                || !l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        }) {
            return Err(Invalid::at(
                [Key("security"), Key("dnsbl"), Index(i)],
                format!("`{zone}` is not a DNS zone name (e.g. \"bl.example.org\")"),
            ));
        }
    }
    if !s.dnsbl_resolver.is_empty() && crate::config::resolver_addr(&s.dnsbl_resolver).is_none() {
        return Err(Invalid::at(
            at("dnsbl_resolver"),
            format!(
                "`{}` is not an IPv4 address or address:port (e.g. 198.18.9.2 or 198.18.9.2:53)",
                s.dnsbl_resolver
            ),
        ));
    }
    if !s.dnsbl.is_empty() && (s.dnsbl_qps == 0 || s.dnsbl_queue == 0) {
        return Err(Invalid::at(
            at("dnsbl_qps"),
            "dnsbl_qps and dnsbl_queue must be at least 1 when dnsbl zones are set",
        ));
    }
    Ok(())
}

fn bgp(bgp: &BgpConfig, ports: &[PortConfig]) -> Check {
    if !bgp.enabled {
        return Ok(());
    }
    let Some(router) = bgp.router else {
        return Err(Invalid::at(
            [Key("bgp"), Key("router")],
            "BGP needs the router's address",
        ));
    };
    if !ports.iter().any(|p| p.address.contains(router)) {
        return Err(Invalid::at(
            [Key("bgp"), Key("router")],
            format!("{router} is in no port's subnet: the router must be reachable on a port"),
        ));
    }
    if bgp.local_as == 0 || bgp.router_as == 0 {
        return Err(Invalid::at(
            [Key("bgp"), Key("local_as")],
            "AS numbers must not be 0 (local_as, router_as)",
        ));
    }
    if (1..3).contains(&bgp.hold_s) {
        return Err(Invalid::at(
            [Key("bgp"), Key("hold_s")],
            "the BGP hold time is 0 (no keepalives) or at least 3 s",
        ));
    }
    if bgp.bfd && !(10..=10_000).contains(&bgp.bfd_interval_ms) {
        return Err(Invalid::at(
            [Key("bgp"), Key("bfd_interval_ms")],
            "the BFD interval is 10..=10000 ms",
        ));
    }
    Ok(())
}

fn ha(ha: &HaConfig, ports: &[PortConfig]) -> Check {
    if !ha.enabled {
        return Ok(());
    }
    let Some(peer) = ha.peer else {
        return Err(Invalid::at(
            [Key("ha"), Key("peer")],
            "HA needs the peer unit's address",
        ));
    };
    if !ports.iter().any(|p| p.address.contains(peer)) {
        return Err(Invalid::at(
            [Key("ha"), Key("peer")],
            format!("{peer} is in no port's subnet: the peer must be reachable on a port"),
        ));
    }
    if ha.heartbeat_ms < 20 || ha.dead_after == 0 || ha.sync_ms < 20 {
        return Err(Invalid::at(
            [Key("ha"), Key("heartbeat_ms")],
            "heartbeat_ms and sync_ms must be at least 20 ms, dead_after at least 1",
        ));
    }
    match (&ha.key, &ha.key_file) {
        (None, None) => {
            return Err(Invalid::at(
                [Key("ha"), Key("key")],
                "HA needs a shared secret of at least 16 bytes, the same on both units: set key = \"...\" or key_file",
            ))
        }
        (Some(_), Some(_)) => {
            return Err(Invalid::at(
                [Key("ha"), Key("key")],
                "set key or key_file, not both",
            ))
        }
        (Some(k), None) if k.len() < 16 => {
            return Err(Invalid::at(
                [Key("ha"), Key("key")],
                format!("the key has {} bytes: at least 16 are needed", k.len()),
            ))
        }
        _ => {}
    }
    if ha.sync_rate < 10 {
        return Err(Invalid::at(
            [Key("ha"), Key("sync_rate")],
            "sync_rate (datagrams per second) must be at least 10",
        ));
    }
    Ok(())
}

fn ports(ports: &[PortConfig]) -> Check {
    if ports.is_empty() {
        return Err(Invalid::at(
            [Key("port")],
            "at least one [[port]] is needed: name and address (e.g. address = \"198.18.0.1/24\")",
        ));
    }
    if ports.len() > MAX_PORTS {
        return Err(Invalid::at(
            [Key("port")],
            format!("at most {MAX_PORTS} ports"),
        ));
    }
    for (i, p) in ports.iter().enumerate() {
        port(i, p)?;
        if ports[..i].iter().any(|q| q.name == p.name) {
            return Err(Invalid::at(
                [Key("port"), Index(i), Key("name")],
                format!("port name `{}` is used twice", p.name),
            ));
        }
    }
    Ok(())
}

/// Port `i` on its own.
fn port(i: usize, p: &PortConfig) -> Check {
    let at = |k| [Key("port"), Index(i), Key(k)];
    if !(576..=9000).contains(&p.mtu) {
        return Err(Invalid::at(
            at("mtu"),
            format!("expected an MTU between 576 and 9000, got {}", p.mtu),
        ));
    }
    if let Some(g) = p.gateway {
        if !p.address.contains(g) {
            return Err(Invalid::at(
                at("gateway"),
                format!("gateway {g} is outside the port's subnet {}", p.address),
            ));
        }
    }
    if let Some(k) = &p.kernel_iface {
        if k.is_empty() || k.len() > 15 || k.contains(['/', ' ', ',', '=']) {
            return Err(Invalid::at(
                at("kernel_iface"),
                format!(
                    "`{k}` is not an interface name (1-15 characters, no '/', ' ', ',' or '=')"
                ),
            ));
        }
    }
    if let Some(f) = p
        .floating
        .iter()
        .find(|f| !p.address.contains(**f) || **f == p.address.addr)
    {
        return Err(Invalid::at(
            at("floating"),
            format!(
                "{f} must be another address of the port's subnet {}",
                p.address
            ),
        ));
    }
    Ok(())
}

fn farms(cfg: &Config) -> Check {
    if cfg.farms.is_empty() {
        return Err(Invalid::at(
            [Key("farm")],
            "at least one [[farm]] is needed: name, vip, port and backends",
        ));
    }
    if cfg.farms.len() > MAX_FARMS {
        return Err(Invalid::at(
            [Key("farm")],
            format!("at most {MAX_FARMS} farms"),
        ));
    }
    for (i, f) in cfg.farms.iter().enumerate() {
        farm(cfg, i, f)?;
    }
    dnat_backends_apart(&cfg.farms)?;
    let total: usize = cfg.farms.iter().map(|f| f.backends.len()).sum();
    if total > MAX_BACKENDS {
        return Err(Invalid::at(
            [Key("farm")],
            format!("at most {MAX_BACKENDS} backends in all farms together, got {total}"),
        ));
    }
    let pool = cfg.snat_pool_addresses().len();
    if pool > MAX_SNAT_ADDRESSES {
        return Err(Invalid::at(
            [Key("farm")],
            format!(
                "at most {MAX_SNAT_ADDRESSES} SNAT addresses in all farms together, got {pool}"
            ),
        ));
    }
    media_pools(cfg)
}

/// Farm `i`'s media ports: whole RTP/RTCP pairs, clear of its SIP ports on the VIP and
/// of the SNAT ports on SNAT addresses.
fn media(i: usize, f: &FarmConfig) -> Check {
    let at = |k| [Key("farm"), Index(i), Key(k)];
    let Some(m) = f.media_ports() else {
        return Ok(());
    };
    if f.media_timeout == 0 {
        return Err(Invalid::at(
            at("media_timeout"),
            "expected idle seconds above 0 (default 120)",
        ));
    }
    let need = if f.nat == NatMode::Dnat { 8 } else { 4 };
    if f.media_ports.len() < need || m.client.len() < 2 || m.backend.len() < 2 {
        return Err(Invalid::at(
            at("media_ports"),
            format!(
                "{}: at least {need} ports are needed (RTP/RTCP pairs from an even port{})",
                f.media_ports,
                if f.nat == NatMode::Dnat {
                    "; in dnat half the range faces clients, half backends"
                } else {
                    ""
                }
            ),
        ));
    }
    let sip = [
        Some(f.port),
        f.protocols.contains(&Protocol::Tls).then_some(f.tls_port),
    ];
    if let Some(p) = sip
        .into_iter()
        .flatten()
        .find(|p| f.media_ports.contains(*p))
    {
        return Err(Invalid::at(
            at("media_ports"),
            format!(
                "{} holds the VIP's SIP port {p}: give media a range of its own",
                f.media_ports
            ),
        ));
    }
    let snat = crate::lb::snat::FIRST_PORT..=crate::lb::snat::LAST_PORT;
    if f.nat == NatMode::Snat && m.backend.overlaps(snat.clone()) {
        return Err(Invalid::at(
            at("media_ports"),
            format!(
                "{} overlaps the SNAT ports {}-{} of the SNAT addresses, where snat puts the backend legs: use ports above {}",
                f.media_ports,
                snat.start(),
                snat.end(),
                snat.end()
            ),
        ));
    }
    Ok(())
}

/// All farms' media pools together: ranges on one address are the same (shared) or
/// apart.
fn media_pools(cfg: &Config) -> Check {
    let pools = cfg.media_pools();
    crate::table::media::layout(&pools).map(drop).map_err(|e| {
        let i = cfg
            .farms
            .iter()
            .rposition(|f| f.media_on())
            .unwrap_or_default();
        Invalid::at([Key("farm"), Index(i), Key("media_ports")], e.to_string())
    })
}

/// Farm `i`: its own fields, how it sits beside the ports and the farms before it, and
/// its backends.
fn farm(cfg: &Config, i: usize, f: &FarmConfig) -> Check {
    let at = |k| [Key("farm"), Index(i), Key(k)];
    if f.name.is_empty() || f.name.len() > 31 {
        return Err(Invalid::at(
            at("name"),
            "expected a name of 1 to 31 characters",
        ));
    }
    let before = &cfg.farms[..i];
    if before.iter().any(|g| g.name == f.name) {
        return Err(Invalid::at(
            at("name"),
            format!("farm name `{}` is used twice", f.name),
        ));
    }
    if f.port == 0 {
        return Err(Invalid::at(at("port"), "expected a port number 1-65535"));
    }
    if f.protocols.contains(&Protocol::Tls) && f.tls_port == f.port {
        return Err(Invalid::at(
            at("tls_port"),
            format!("TLS needs a port of its own, not {} (usually 5061)", f.port),
        ));
    }
    if f.protocols.is_empty() {
        return Err(Invalid::at(
            at("protocols"),
            "expected at least one of udp, tcp, tls",
        ));
    }
    if cfg.ports.iter().any(|p| p.address.addr == f.vip) {
        return Err(Invalid::at(
            at("vip"),
            format!(
                "{} is a port's own address; a VIP needs an address of its own",
                f.vip
            ),
        ));
    }
    if before.iter().any(|g| g.vip == f.vip && g.port == f.port) {
        return Err(Invalid::at(
            at("port"),
            format!("{}:{} is already served by another farm", f.vip, f.port),
        ));
    }
    if f.snat_address.is_some() && !f.snat_addresses.is_empty() {
        return Err(Invalid::at(
            at("snat_addresses"),
            "give either snat_address or snat_addresses (the pool), not both",
        ));
    }
    if f.backends.is_empty() {
        return Err(Invalid::at(
            at("backends"),
            "expected at least one backend: { address = \"198.18.1.11\", port = 5060, weight = 1 }",
        ));
    }
    for (j, b) in f.backends.iter().enumerate() {
        backend(cfg, i, f, j, b)?;
    }
    if let Some((field, message)) = f.health.problem() {
        return Err(Invalid::at(
            [Key("farm"), Index(i), Key("health"), Key(field)],
            message,
        ));
    }
    failover(i, &f.failover)?;
    if f.backends.iter().all(|b| b.weight == 0) {
        return Err(Invalid::at(
            at("backends"),
            "every backend has weight 0: nothing can take calls",
        ));
    }
    media(i, f)
}

/// `[farm.failover]` of farm `i`.
fn failover(i: usize, f: &crate::config::FailoverConfig) -> Check {
    let at = |k| [Key("farm"), Index(i), Key("failover"), Key(k)];
    if !(1..=crate::lb::failover::MAX_TRIES as u32).contains(&f.tries) {
        return Err(Invalid::at(
            at("tries"),
            format!(
                "expected 1 (off) to {} backends per call, got {}",
                crate::lb::failover::MAX_TRIES,
                f.tries
            ),
        ));
    }
    if !(100..=32_000).contains(&f.timeout_ms) {
        return Err(Invalid::at(
            at("timeout_ms"),
            format!(
                "expected 100 to 32000 ms (a client gives up after 32 s), got {}",
                f.timeout_ms
            ),
        ));
    }
    if let Some(c) = f.on.iter().find(|c| !(300..=699).contains(*c)) {
        return Err(Invalid::at(
            at("on"),
            format!("expected final failure codes 300-699, got {c}"),
        ));
    }
    Ok(())
}

/// Backend `j` of farm `i`.
fn backend(cfg: &Config, i: usize, f: &FarmConfig, j: usize, b: &BackendConfig) -> Check {
    let at = |k| [Key("farm"), Index(i), Key("backends"), Index(j), Key(k)];
    if b.weight > 65535 {
        return Err(Invalid::at(
            at("weight"),
            format!("expected a weight 0-65535, got {}", b.weight),
        ));
    }
    if b.port == 0 {
        return Err(Invalid::at(at("port"), "expected a port number 1-65535"));
    }
    if f.backends[..j]
        .iter()
        .any(|c| c.address == b.address && c.port == b.port)
    {
        return Err(Invalid::at(
            at("address"),
            format!("backend {}:{} is listed twice", b.address, b.port),
        ));
    }
    if cfg.route(b.address).is_none() {
        return Err(Invalid::at(
            at("address"),
            format!(
                "{} is in no port's subnet and no port has a gateway: add a [[port]] for it or a gateway",
                b.address
            ),
        ));
    }
    Ok(())
}

/// In dnat mode a backend's answers are told apart by its address and port only, so
/// no backend may serve two farms where either is dnat.
fn dnat_backends_apart(farms: &[FarmConfig]) -> Check {
    for (i, f) in farms.iter().enumerate() {
        for (j, b) in f.backends.iter().enumerate() {
            let shared = farms[..i].iter().find(|g| {
                (g.nat == NatMode::Dnat || f.nat == NatMode::Dnat)
                    && g.backends
                        .iter()
                        .any(|c| c.address == b.address && c.port == b.port)
            });
            if let Some(g) = shared {
                return Err(Invalid::at(
                    [Key("farm"), Index(i), Key("backends"), Index(j), Key("address")],
                    format!(
                        "{}:{} is also a backend of farm `{}`: in dnat mode its answers could not be told apart; give it another port per farm or use snat in both",
                        b.address, b.port, g.name
                    ),
                ));
            }
        }
    }
    Ok(())
}
