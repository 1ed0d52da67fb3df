//! The softphone bed (issue 12, item 4): real SIP software on both sides of siplb.
//!
//! ```text
//!  [phone A ns] ph0 198.18.0.10 ─┐   [client ns]     [lb ns]                [switch ns]   [backend ns i]
//!                                pp0 ─ br0 ─ cli0 ── lbf ║ siplb-dataplane ║ lbb ── br0 ── be0 198.18.1.(11+i)
//!  [phone B ns] ph0 198.18.0.11 ─┘                       (af_packet, no IP)                  Kamailio :5060
//!     baresip, tcpdump                                   VIP 198.18.0.2:5060                  rtpengine (media)
//! ```
//!
//! It is the standard [`Topology`] (two backends, one worker) with its client namespace
//! turned into a switch: `cli0` loses its address and joins a bridge that both phone
//! namespaces plug into, so the phones share the balancer's front link as two hosts of
//! one LAN would. Phones route via 198.18.0.1 (the balancer's front address), backends
//! via 198.18.1.1 (its back address). Kamailio and rtpengine of backend i listen on
//! 198.18.1.(11+i) only; the two Kamailios replicate registrations over DMQ on the
//! backend switch, which the balancer never sees.

use crate::capture::Subnet;
use crate::kamailio::{Kamailio, Registrar};
use crate::netns::{veth, Netns};
use crate::rtpengine::Rtpengine;
use crate::topology::{backend_ip, Dataplane, Spec, Topology};
use anyhow::Result;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

/// Phone A and phone B.
pub const PHONE_IPS: [Ipv4Addr; 2] = [Ipv4Addr::new(198, 18, 0, 10), Ipv4Addr::new(198, 18, 0, 11)];
/// The farm's backend network (the balancer's back port subnet): no address of it may
/// reach a phone once the ALG rewrites SIP and SDP.
pub const BACKEND_NET: Subnet = Subnet {
    addr: Ipv4Addr::new(198, 18, 1, 0),
    prefix: 24,
};
/// The phone's link in its namespace.
pub const PHONE_IFACE: &str = "ph0";
/// rtpengine's media ports on each backend.
pub const MEDIA_PORTS: (u16, u16) = (30000, 30099);
/// Every process of the bed stops by itself after this long, whatever the test does.
pub const LIFE: Duration = Duration::from_secs(150);
/// The dataplane's stats line period (drop counters are read from it).
const STATS_EVERY: &str = "0.5";

/// Fields drop in declaration order: processes first, namespaces last.
pub struct PhoneBed {
    pub kamailios: Vec<Kamailio>,
    pub rtpengines: Vec<Rtpengine>,
    pub dp: Dataplane,
    pub phones: Vec<Netns>,
    pub topo: Topology,
}

impl PhoneBed {
    /// Builds the bed and starts siplb (one farm on the VIP over both Kamailios, `nat`,
    /// `call-id` affinity, `farm_extra` lines added to the farm), rtpengine and
    /// Kamailio on each backend. Returns when the Kamailios have found each other.
    pub fn start(nat: &str, farm_extra: &str) -> Result<PhoneBed> {
        Self::start_with(nat, "call-id", true, None, farm_extra, "")
    }

    /// `start` with the farm's `affinity`, registrations shared between the
    /// Kamailios (`shared`, over DMQ) or not (two independent registrars), and
    /// REGISTERs authenticated with `password` (digest) or not, and `security` as the
    /// configuration's `[security]` section (empty: the defaults).
    pub fn start_with(
        nat: &str,
        affinity: &str,
        shared: bool,
        password: Option<&str>,
        farm_extra: &str,
        security: &str,
    ) -> Result<PhoneBed> {
        let topo = Topology::up(Spec {
            backends: 2,
            workers: 1,
        })?;
        // IPv6 off on the phones' side: no router solicitations or MLD reports in the
        // balancer's drop counters or the captures.
        topo.client
            .run("sysctl", &["-qw", "net.ipv6.conf.all.disable_ipv6=1"])?;
        topo.client.ip(&["addr", "flush", "dev", "cli0"])?;
        topo.client.ip(&["link", "add", "br0", "type", "bridge"])?;
        topo.client.ip(&["link", "set", "br0", "up"])?;
        topo.client
            .ip(&["link", "set", "cli0", "master", "br0", "up"])?;
        let mut phones = Vec::new();
        for (i, ip) in PHONE_IPS.iter().enumerate() {
            let ns = Netns::create(&format!("{}-ph{i}", topo.tag))?;
            ns.run("sysctl", &["-qw", "net.ipv6.conf.all.disable_ipv6=1"])?;
            ns.run("sysctl", &["-qw", "net.ipv6.conf.default.disable_ipv6=1"])?;
            let port = format!("pp{i}");
            veth(&ns, PHONE_IFACE, &topo.client, &port)?;
            topo.client
                .ip(&["link", "set", &port, "master", "br0", "up"])?;
            ns.iface_up(PHONE_IFACE, Some(&format!("{ip}/24")))?;
            ns.ip(&["route", "add", "default", "via", "198.18.0.1"])?;
            phones.push(ns);
        }
        let mut cfg = topo.base_config() + &topo.farm_config(nat, affinity, &[1, 1], farm_extra);
        if !security.is_empty() {
            cfg += &format!("\n[security]\n{security}\n");
        }
        let dp = topo.start_dataplane(
            &cfg,
            &[
                "--stats-interval",
                STATS_EVERY,
                "--duration",
                &LIFE.as_secs().to_string(),
            ],
        )?;
        let mut rtpengines = Vec::new();
        for (i, ns) in topo.backends.iter().enumerate() {
            rtpengines.push(Rtpengine::start(
                ns,
                &topo.dir,
                &format!("rtpengine{i}"),
                backend_ip(i),
                MEDIA_PORTS,
                LIFE,
            )?);
        }
        let mut kamailios = Vec::new();
        for (i, ns) in topo.backends.iter().enumerate() {
            kamailios.push(Kamailio::start(
                ns,
                &topo.dir,
                &format!("kamailio{i}"),
                backend_ip(i),
                rtpengines[i].ng,
                Registrar {
                    dmq_peer: shared.then(|| backend_ip(1 - i)),
                    password,
                },
                LIFE,
            )?);
        }
        for (i, k) in kamailios.iter_mut().enumerate().filter(|_| shared) {
            k.wait_dmq_peer(backend_ip(1 - i), Duration::from_secs(10))?;
        }
        Ok(PhoneBed {
            kamailios,
            rtpengines,
            dp,
            phones,
            topo,
        })
    }

    /// The dataplane's drop counters by reason, from a stats line printed after this
    /// call (so everything before the call is counted).
    pub fn drops(&self) -> BTreeMap<String, u64> {
        let count = |s: &str| s.lines().filter(|l| l.starts_with("stats:")).count();
        let before = count(&self.dp.proc.output());
        let deadline = Instant::now() + Duration::from_secs(3);
        let mut out = self.dp.proc.output();
        while count(&out) < before + 2 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
            out = self.dp.proc.output();
        }
        let line = out
            .lines()
            .rev()
            .find(|l| l.starts_with("stats:"))
            .unwrap_or("");
        drops_of(line)
    }
}

/// `reason=n` pairs after `| drops` in a dataplane stats line.
pub fn drops_of(line: &str) -> BTreeMap<String, u64> {
    line.split_once("| drops ")
        .map(|(_, d)| {
            d.split_whitespace()
                .filter_map(|t| t.split_once('='))
                .filter_map(|(k, v)| Some((k.to_string(), v.parse().ok()?)))
                .collect()
        })
        .unwrap_or_default()
}

/// `after - before`, the reasons that moved only.
pub fn delta(
    before: &BTreeMap<String, u64>,
    after: &BTreeMap<String, u64>,
) -> BTreeMap<String, u64> {
    after
        .iter()
        .filter_map(|(k, v)| {
            let d = v - before.get(k).copied().unwrap_or(0);
            (d > 0).then(|| (k.clone(), d))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drop_counters_parse_and_subtract() {
        let a = drops_of(
            "stats: rx=1 | 198.18.1.11:5060 to=1 from=2 | drops not_balanced=3 vip_port_closed=1",
        );
        let b = drops_of("stats: rx=9 | drops not_balanced=7 vip_port_closed=1 sip_no_call_id=2");
        assert_eq!(a["not_balanced"], 3);
        let d = delta(&a, &b);
        assert_eq!(d.len(), 2);
        assert_eq!((d["not_balanced"], d["sip_no_call_id"]), (4, 2));
        assert!(drops_of("stats: rx=1").is_empty());
    }
}
