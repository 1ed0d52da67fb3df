//! The balancer's first line of defence, applied to what clients send to the VIPs:
//! deny and allow lists of source prefixes (a blocklist feed can be a file), SIP
//! scanners recognised by their User-Agent, token buckets per source, farm and method
//! class with a ban list for sources that keep overrunning them (`limits`), and TCP
//! rules: bogus flag combinations (`tcp_flags`), SYN and RST rates and connections per
//! source, and priority for known sources under a SYN flood. Everything dropped here
//! is counted by reason.
//!
//! Admission: only what the tables do not know is metered — requests that match no
//! dialog (new work, and in-dialog-looking requests whose dialog is unknown), every
//! REGISTER, and TCP SYNs. Messages of admitted dialogs and connections pass without
//! a lookup here, but a banned source is dropped whatever it sends.

mod admission;
mod brute;
pub mod dnsbl;
pub mod feed;
pub mod limits;
mod lpm;
pub mod tcp_flags;

use super::counters::{DropReason, WorkerCounters};
use crate::config::{Bucket, FarmLimits, Ipv4Net, SecurityConfig};
use crate::sip::Method;
use crate::table::flow::FlowTable;
use limits::{BanReason, Kind};
pub use lpm::PrefixSet;
use memchr::memmem::Finder;
use std::net::Ipv4Addr;
use std::sync::LazyLock;

/// The method classes that have a token bucket each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Class {
    Register = 0,
    Invite = 1,
    Options = 2,
    Other = 3,
}

impl Class {
    pub const COUNT: usize = 4;

    #[inline]
    pub fn of(m: Method) -> Class {
        match m {
            Method::Register => Self::Register,
            Method::Invite => Self::Invite,
            Method::Options => Self::Options,
            _ => Self::Other,
        }
    }
}

/// The token buckets of a farm, by `Class`.
pub type Buckets = [Bucket; Class::COUNT];

/// TCP rules (`[security] tcp_*`).
#[derive(Debug, Clone, Copy, Default)]
pub struct TcpRules {
    pub drop_bogus_flags: bool,
    pub max_connections_per_source: u32,
    pub syn: Bucket,
    pub rst: Bucket,
    pub untrusted_syn_per_s: u32,
}

/// The security policy in force (part of the services snapshot).
#[derive(Debug, Clone, Default)]
pub struct Policy {
    pub deny: PrefixSet,
    pub allow: PrefixSet,
    /// The feeds' prefixes, denied like `deny` (`feed.rs`: the dataplane reads them
    /// from the control plane's file; `Services::build` leaves this empty).
    pub feeds: PrefixSet,
    /// Lower-case User-Agent substrings of scanners.
    pub scanners: Vec<Vec<u8>>,
    /// `[security]`'s buckets, for farms that set none of their own.
    pub buckets: Buckets,
    /// Overruns within `ban_window_s` that ban a source for `ban_s` (0 = never).
    pub ban_overruns: u32,
    pub ban_window_s: u32,
    pub ban_s: u32,
    /// Authentication failures within `auth_window_s` that ban a source for
    /// `auth_ban_s` (0 = never; `brute.rs`).
    pub auth_failures: u32,
    pub auth_window_s: u32,
    pub auth_ban_s: u32,
    pub tcp: TcpRules,
    /// DNSBL lookups of new sources (`dnsbl.rs`).
    pub dnsbl: dnsbl::Lookups,
    /// Some limit that can ban is on (`Services::build` sets it): then every packet
    /// from a client is checked against the ban list.
    pub check_bans: bool,
}

/// Whether `hay` contains `lower` (lower-case ASCII) in any case: candidates found
/// by their first byte in either case (SIMD), then compared.
fn contains_caseless(hay: &[u8], lower: &[u8]) -> bool {
    let Some(&first) = lower.first() else {
        return false;
    };
    memchr::memchr2_iter(first, first.to_ascii_uppercase(), hay).any(|i| {
        hay.get(i..i + lower.len())
            .is_some_and(|w| w.eq_ignore_ascii_case(lower))
    })
}

/// The prefixes of a deny file: one address or prefix per line, `#` comments. Errors
/// name the file and line.
pub fn read_deny_file(path: &str) -> Result<Vec<Ipv4Net>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    feed::parse_lines(&text, path)
}

impl Policy {
    /// Builds the policy, reading `deny_file` if set. Errors name the file and line.
    pub fn build(cfg: &SecurityConfig) -> Result<Policy, String> {
        let mut deny = cfg.deny.clone();
        if !cfg.deny_file.is_empty() {
            deny.extend(read_deny_file(&cfg.deny_file)?);
        }
        Ok(Policy {
            deny: PrefixSet::new(&deny),
            allow: PrefixSet::new(&cfg.allow),
            feeds: PrefixSet::default(),
            scanners: cfg
                .scanner_user_agents
                .iter()
                .filter(|s| !s.is_empty())
                .map(|s| s.to_ascii_lowercase().into_bytes())
                .collect(),
            buckets: [cfg.register, cfg.invite, cfg.options, cfg.other].map(|b| {
                if b == Bucket::default() {
                    Bucket {
                        rate: cfg.max_new_per_source,
                        burst: cfg.max_new_per_source,
                    }
                } else {
                    b
                }
            }),
            ban_overruns: cfg.ban_overruns,
            ban_window_s: cfg.ban_window_s,
            ban_s: cfg.ban_s,
            auth_failures: cfg.auth_failures,
            auth_window_s: cfg.auth_window_s,
            auth_ban_s: cfg.auth_ban_s,
            tcp: TcpRules {
                drop_bogus_flags: cfg.tcp_drop_bogus_flags,
                max_connections_per_source: cfg.tcp_max_connections_per_source,
                syn: if cfg.tcp_syn == Bucket::default() {
                    Bucket {
                        rate: cfg.max_new_per_source,
                        burst: cfg.max_new_per_source,
                    }
                } else {
                    cfg.tcp_syn
                },
                rst: cfg.tcp_rst,
                untrusted_syn_per_s: cfg.tcp_untrusted_syn_per_s,
            },
            dnsbl: dnsbl::Lookups::of(cfg),
            check_bans: false,
        })
    }

    /// A farm's buckets: its own `[farm.limits]`, else `[security]`'s.
    pub fn farm_buckets(&self, own: &FarmLimits) -> Buckets {
        let b = &self.buckets;
        [
            own.register.unwrap_or(b[0]),
            own.invite.unwrap_or(b[1]),
            own.options.unwrap_or(b[2]),
            own.other.unwrap_or(b[3]),
        ]
    }

    /// Sets `check_bans` from the farms' buckets and the TCP rules.
    pub fn enable_bans(&mut self, farms: &[Buckets]) {
        let limits_on = farms.iter().flatten().any(|b| !b.is_off())
            || !self.tcp.syn.is_off()
            || !self.tcp.rst.is_off();
        self.check_bans = self.ban_overruns > 0 && limits_on
            || self.auth_failures > 0
            || self.dnsbl != dnsbl::Lookups::Off;
    }

    /// Is `src` on the ban list? Checked for every packet to a VIP when bans are on.
    #[inline]
    pub fn banned(&self, rates: &FlowTable<'_>, src: Ipv4Addr, now: u32) -> bool {
        self.check_bans && limits::banned(rates, src, now)
    }

    /// May this source talk to the VIPs at all?
    #[inline]
    pub fn admits(&self, src: Ipv4Addr) -> bool {
        if self.deny.contains(src) || self.feeds.contains(src) {
            return false;
        }
        self.allow.is_empty() || self.allow.contains(src)
    }

    /// Does a User-Agent field of this header section name a scanner? Field names in
    /// any case, white space before the colon allowed, every such field looked at.
    /// Only lines that start with `u`/`U` are read, found with two SIMD searches
    /// (`memmem`), not with the SIP scanner's header iterator, which would parse every
    /// field's name on the new-work path.
    pub fn has_scanner_agent(&self, header_section: &[u8]) -> bool {
        static LINE_U: LazyLock<[Finder<'static>; 2]> =
            LazyLock::new(|| [Finder::new(b"\nU"), Finder::new(b"\nu")]);
        if self.scanners.is_empty() {
            return false;
        }
        let hs = header_section;
        let starts = LINE_U
            .iter()
            .flat_map(|f| f.find_iter(hs).map(|i| i + 1))
            .chain([0]);
        for start in starts {
            let line = &hs[start..];
            let line = &line[..memchr::memchr(b'\n', line).unwrap_or(line.len())];
            if self.is_scanner_agent_line(line) {
                return true;
            }
        }
        false
    }

    /// Is `line` a User-Agent field naming a scanner?
    fn is_scanner_agent_line(&self, line: &[u8]) -> bool {
        const NAME: &[u8] = b"user-agent";
        if line.len() <= NAME.len() || !line[..NAME.len()].eq_ignore_ascii_case(NAME) {
            return false;
        }
        let rest = &line[NAME.len()..];
        let colon = rest.iter().position(|b| !matches!(b, b' ' | b'\t'));
        colon
            .filter(|i| rest[*i] == b':')
            .is_some_and(|i| self.is_scanner(&rest[i + 1..]))
    }

    /// Is this User-Agent one of a scanner's?
    pub fn is_scanner(&self, user_agent: &[u8]) -> bool {
        self.scanners
            .iter()
            .any(|s| contains_caseless(user_agent, s))
    }

    /// Admits a request of `class` from `src` to farm `farm` (with `buckets`) that the
    /// tables do not know, or a REGISTER: takes a token from its bucket, counting an
    /// overrun (the one too many bans the source). A full rates table refuses the
    /// request (counted) unless the source is trusted.
    #[inline]
    pub fn admit_request(
        &self,
        rates: &FlowTable<'_>,
        c: &WorkerCounters,
        (farm, buckets): (u8, &Buckets),
        src: Ipv4Addr,
        class: Class,
        now: u32,
    ) -> Result<(), DropReason> {
        let b = buckets[class as usize];
        if b.is_off() {
            return Ok(());
        }
        let sub = (u32::from(farm) << 8) | class as u32;
        self.take(
            rates,
            c,
            limits::key(src, Kind::Bucket, sub),
            b,
            src,
            BanReason::Flood,
            now,
        )
        .map_err(|full| full.unwrap_or(DropReason::Flood))
    }

    /// Takes a token of `b` under `key` for `src`: `Err(None)` when the bucket is
    /// empty (an overrun, counted toward a ban for `reason`), `Err(Some(reason))` when
    /// the table is full and the source not trusted.
    #[allow(clippy::too_many_arguments)]
    fn take(
        &self,
        rates: &FlowTable<'_>,
        c: &WorkerCounters,
        key: u64,
        b: Bucket,
        src: Ipv4Addr,
        reason: BanReason,
        now: u32,
    ) -> Result<(), Option<DropReason>> {
        match limits::take(rates, key, b, now) {
            Ok(true) => Ok(()),
            Ok(false) => {
                self.overrun(rates, c, src, reason, now);
                Err(None)
            }
            Err(_) => {
                c.rate_table_full.inc();
                if limits::trusted(rates, src, now) {
                    Ok(())
                } else {
                    Err(Some(DropReason::RateTableFull))
                }
            }
        }
    }

    /// Counts an overrun of `src`'s buckets; bans it on the one too many.
    fn overrun(
        &self,
        rates: &FlowTable<'_>,
        c: &WorkerCounters,
        src: Ipv4Addr,
        reason: BanReason,
        now: u32,
    ) {
        if self.ban_overruns == 0 {
            return;
        }
        match limits::overrun(rates, src, self.ban_overruns, self.ban_window_s, now) {
            Ok(false) => {}
            Ok(true) => match limits::ban(rates, src, reason, self.ban_s, now) {
                Ok(()) => c.sources_banned.inc(),
                Err(_) => c.rate_table_full.inc(),
            },
            Err(_) => c.rate_table_full.inc(),
        }
    }

    /// Notes that `src` holds a registration, dialog or connection a backend answered,
    /// until `until`: it keeps its priority for new TCP connections under a SYN flood
    /// and passes when the rates table is full.
    #[inline]
    pub fn trust(&self, rates: &FlowTable<'_>, src: Ipv4Addr, until: u32, now: u32) {
        if self.check_bans || self.tcp.untrusted_syn_per_s > 0 {
            limits::trust(rates, src, until, now);
        }
    }

    /// The TCP rules for a client's segment that opens no connection the table knows
    /// of, or carries RST: bogus flags, the RST rate. `Ok` lets it on.
    #[inline]
    pub fn check_segment(
        &self,
        rates: &FlowTable<'_>,
        c: &WorkerCounters,
        src: Ipv4Addr,
        flags: u8,
        now: u32,
    ) -> Result<(), DropReason> {
        if self.tcp.drop_bogus_flags && tcp_flags::bogus(flags) {
            return Err(DropReason::TcpBogusFlags);
        }
        if flags & crate::wire::tcp::RST != 0 && !self.tcp.rst.is_off() {
            let k = limits::key(src, Kind::Bucket, limits::SUB_RST);
            self.take(rates, c, k, self.tcp.rst, src, BanReason::TcpFlood, now)
                .map_err(|full| full.unwrap_or(DropReason::TcpRstRate))?;
        }
        Ok(())
    }

    /// Admits a SYN that opens a new connection from `src`: the SYN rate per source,
    /// then, beyond `untrusted_syn_per_s` SYNs a second from sources the balancer does
    /// not know, only known ones (a flood of spoofed sources does not lock customers
    /// out), then the cap on connections per source (`lifetime`: how long the count
    /// lives after its last new connection).
    pub fn admit_syn(
        &self,
        rates: &FlowTable<'_>,
        c: &WorkerCounters,
        src: Ipv4Addr,
        lifetime: u32,
        now: u32,
    ) -> Result<(), DropReason> {
        let t = &self.tcp;
        if !t.syn.is_off() {
            let k = limits::key(src, Kind::Bucket, limits::SUB_SYN);
            self.take(rates, c, k, t.syn, src, BanReason::TcpFlood, now)
                .map_err(|full| full.unwrap_or(DropReason::TcpSynRate))?;
        }
        if t.untrusted_syn_per_s > 0 && !limits::trusted(rates, src, now) {
            let all = Bucket {
                rate: t.untrusted_syn_per_s,
                burst: t.untrusted_syn_per_s,
            };
            let k = limits::key(
                Ipv4Addr::UNSPECIFIED,
                Kind::Bucket,
                limits::SUB_UNTRUSTED_SYN,
            );
            match limits::take(rates, k, all, now) {
                Ok(true) => {}
                Ok(false) => return Err(DropReason::TcpSynFlood),
                Err(_) => {
                    c.rate_table_full.inc();
                    return Err(DropReason::RateTableFull);
                }
            }
        }
        if t.max_connections_per_source > 0 {
            match limits::open_connection(rates, src, t.max_connections_per_source, lifetime, now) {
                Ok(true) => {}
                Ok(false) => return Err(DropReason::TcpConnectionLimit),
                Err(_) => {
                    c.rate_table_full.inc();
                    if !limits::trusted(rates, src, now) {
                        return Err(DropReason::RateTableFull);
                    }
                }
            }
        }
        Ok(())
    }

    /// One of `src`'s connections ended (its first FIN or RST).
    #[inline]
    pub fn connection_closed(&self, rates: &FlowTable<'_>, src: Ipv4Addr, now: u32) {
        if self.tcp.max_connections_per_source > 0 {
            limits::close_connection(rates, src, now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::flow::Slot;

    fn p(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    #[test]
    fn prefixes_match_by_length() {
        let s = PrefixSet::new(&[p("198.18.5.0/24"), p("198.19.1.1"), p("198.18.128.0/17")]);
        assert!(s.contains("198.18.5.77".parse().unwrap()));
        assert!(s.contains("198.19.1.1".parse().unwrap()));
        assert!(!s.contains("198.19.1.2".parse().unwrap()));
        assert!(s.contains("198.18.200.1".parse().unwrap()));
        assert!(!s.contains("198.18.6.1".parse().unwrap()));
        assert_eq!(s.len(), 3);
    }

    #[test]
    fn allow_list_and_scanners() {
        let cfg = SecurityConfig {
            allow: vec![p("198.18.0.0/24")],
            deny: vec![p("198.18.0.66")],
            ..Default::default()
        };
        let pol = Policy::build(&cfg).unwrap();
        assert!(pol.admits("198.18.0.10".parse().unwrap()));
        assert!(!pol.admits("198.18.0.66".parse().unwrap()));
        assert!(!pol.admits("198.18.1.10".parse().unwrap()));
        assert!(pol.is_scanner(b"Friendly-Scanner 1.0"));
        assert!(pol.is_scanner(b"sipvicious"));
        assert!(!pol.is_scanner(b"Linphone/5.2"));
    }

    #[test]
    fn buckets_per_source_and_class_then_a_ban() {
        let slots: Vec<Slot> = (0..1024).map(|_| Slot::default()).collect();
        let t = FlowTable::new(&slots, 8);
        let c: Box<WorkerCounters> = Box::default();
        let cfg = SecurityConfig {
            invite: Bucket { rate: 3, burst: 3 },
            ban_overruns: 4,
            ..Default::default()
        };
        let mut pol = Policy::build(&cfg).unwrap();
        let bk = pol.farm_buckets(&FarmLimits::default());
        pol.enable_bans(&[bk]);
        assert!(pol.check_bans);
        let a: Ipv4Addr = "198.18.0.10".parse().unwrap();
        let b: Ipv4Addr = "198.18.0.11".parse().unwrap();
        let inv = |src, now| pol.admit_request(&t, &c, (0, &bk), src, Class::Invite, now);
        let passed = (0..7).filter(|_| inv(a, 100).is_ok()).count();
        assert_eq!(passed, 3);
        assert_eq!(inv(a, 100), Err(DropReason::Flood));
        assert!(inv(b, 100).is_ok(), "other sources are not affected");
        assert!(
            pol.admit_request(&t, &c, (0, &bk), a, Class::Register, 100)
                .is_ok(),
            "nor other classes (REGISTER has no bucket here)"
        );
        assert!(inv(a, 101).is_ok(), "a new second, new tokens");
        assert_eq!(c.sources_banned.get(), 1, "the 5th overrun banned it");
        assert!(pol.banned(&t, a, 101));
        assert!(!pol.banned(&t, b, 101));
        // The old shorthand sets every class.
        let old = Policy::build(&SecurityConfig {
            max_new_per_source: 5,
            ..Default::default()
        })
        .unwrap();
        assert_eq!(old.buckets, [Bucket { rate: 5, burst: 5 }; 4]);
    }

    #[test]
    fn a_full_rates_table_refuses_and_counts_but_trusted_sources_pass() {
        // One bucket of four slots, probed alone: four sources fill it.
        let slots: Vec<Slot> = (0..4).map(|_| Slot::default()).collect();
        let t = FlowTable::new(&slots, 1);
        let c: Box<WorkerCounters> = Box::default();
        let pol = Policy::build(&SecurityConfig {
            max_new_per_source: 10,
            ban_overruns: 0,
            ..Default::default()
        })
        .unwrap();
        let bk = pol.buckets;
        let mut refused = 0;
        for i in 0..10u32 {
            let src = Ipv4Addr::from(0xC612_0000 + i);
            match pol.admit_request(&t, &c, (0, &bk), src, Class::Invite, 5) {
                Ok(()) => {}
                Err(r) => {
                    assert_eq!(r, DropReason::RateTableFull);
                    refused += 1;
                }
            }
        }
        assert_eq!(refused, 6);
        assert_eq!(c.rate_table_full.get(), 6);
    }

    #[test]
    fn deny_file_errors_name_the_line() {
        let dir = std::env::temp_dir().join(format!("siplb-deny-{}", std::process::id()));
        std::fs::write(&dir, "# feed\n198.18.9.0/24\nnot-an-address\n").unwrap();
        let cfg = SecurityConfig {
            deny_file: dir.display().to_string(),
            ..Default::default()
        };
        let e = Policy::build(&cfg).unwrap_err();
        assert!(e.contains(":3:"), "{e}");
        std::fs::write(&dir, "# feed\n198.18.9.0/24 # a block\n").unwrap();
        let pol = Policy::build(&cfg).unwrap();
        assert!(!pol.admits("198.18.9.9".parse().unwrap()));
        let _ = std::fs::remove_file(&dir);
    }

    #[test]
    fn scanner_agents_are_found_in_any_spelling_of_the_field_name() {
        let p = Policy {
            scanners: vec![b"friendly-scanner".to_vec()],
            ..Policy::default()
        };
        let h = |ua_line: &str| {
            format!(
                "INVITE sip:a@x SIP/2.0\r\nVia: SIP/2.0/UDP x\r\n{ua_line}\r\nCall-ID: 1\r\n\r\n"
            )
        };
        for line in [
            "User-Agent: friendly-scanner",
            "user-agent:Friendly-Scanner 1.0",
            "USER-AGENT \t: x friendly-scanner",
        ] {
            assert!(p.has_scanner_agent(h(line).as_bytes()), "{line}");
        }
        for line in [
            "User-Agent: baresip",
            "User-Agents: friendly-scanner",
            "X-User-Agent: friendly-scanner",
            "Subject: friendly-scanner",
        ] {
            assert!(!p.has_scanner_agent(h(line).as_bytes()), "{line}");
        }
        assert!(!Policy::default().has_scanner_agent(h("User-Agent: friendly-scanner").as_bytes()));
    }
}
