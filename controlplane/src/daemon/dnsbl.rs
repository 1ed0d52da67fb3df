//! DNSBL lookups of new sources (`[security] dnsbl`), on a thread of their own so the
//! daemon's main loop never waits for DNS.
//!
//! The workers push each source they have no verdict for onto the new-sources ring
//! (`siplb_core::lb::security::dnsbl`); this thread takes them, answers from its cache
//! when it can, else queues them (at most `dnsbl_queue`, the rest counted) and asks the
//! resolver `d.c.b.a.<zone>` for each zone, at most `dnsbl_qps` queries a second. An A
//! record in 127.0.0.0/8 means listed (RFC 5782), NXDOMAIN or no A record not listed;
//! either answer is cached for its TTL (a negative one for its SOA's minimum, RFC
//! 2308, else `dnsbl_negative_ttl_s`) and written into the rates table as the source's
//! verdict; a listed source is banned (reason `dnsbl`) for `dnsbl_ban_s` or the TTL.
//! A lookup that fails (timeout, SERVFAIL, no resolver) leaves the source admitted for
//! `ERROR_TTL_S` and is not cached: a broken resolver never locks customers out.

use crate::api::DnsblView;
use runtime::shm::Header;
use simple_dns::rdata::RData;
use simple_dns::{Name, Packet, Question, CLASS, QCLASS, QTYPE, RCODE, TYPE};
use siplb_core::config::{resolver_addr, SecurityConfig};
use siplb_core::lb::security::dnsbl::judge;
use siplb_core::lb::Tables;
use siplb_core::table::FlowTable;
use std::collections::{HashMap, HashSet, VecDeque};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A query unanswered this long has failed.
const TIMEOUT: Duration = Duration::from_secs(2);
/// How long a source whose lookup failed is admitted before it is looked up again.
const ERROR_TTL_S: u32 = 60;
/// TTLs are kept at most a day (a zone's typo must not ban for years).
const MAX_TTL_S: u32 = 86_400;
/// A clean source's mark stays in the rates table at most this long (its answer stays
/// cached for its whole TTL): spoofed sources at `dnsbl_qps` hold at most
/// `dnsbl_qps` × 300 marks (15,000 at the default) however long the zone's negative
/// TTL, where a TTL of an hour could fill the table's default 65,536 sources.
const CLEAN_MARK_MAX_S: u32 = 300;
/// Answers cached at most: spoofed sources at `dnsbl_qps` with day-long TTLs would
/// otherwise grow the cache to millions. Past it answers are not cached until the
/// sweep (every second) forgets expired ones; the dataplane's marks still hold them
/// for their TTL.
const CACHE_MAX: usize = 1 << 16;
/// How long the thread waits for an answer before it looks at the ring again: the
/// most a new source waits to be taken.
const POLL: Duration = Duration::from_millis(5);

/// `[security]`'s DNSBL settings as the thread uses them.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub zones: Vec<String>,
    pub resolver: Option<SocketAddrV4>,
    pub qps: u32,
    pub queue: usize,
    pub ban_s: u32,
    pub negative_ttl_s: u32,
}

impl Settings {
    pub fn of(cfg: &SecurityConfig) -> Settings {
        let resolver = if cfg.dnsbl_resolver.is_empty() {
            system_resolver()
        } else {
            resolver_addr(&cfg.dnsbl_resolver)
        };
        Settings {
            zones: cfg
                .dnsbl
                .iter()
                .map(|z| z.trim_end_matches('.').to_ascii_lowercase())
                .collect(),
            resolver,
            qps: cfg.dnsbl_qps.max(1),
            queue: cfg.dnsbl_queue.max(1) as usize,
            ban_s: cfg.dnsbl_ban_s,
            negative_ttl_s: cfg.dnsbl_negative_ttl_s,
        }
    }
}

/// The first IPv4 `nameserver` of /etc/resolv.conf.
fn system_resolver() -> Option<SocketAddrV4> {
    let text = std::fs::read_to_string("/etc/resolv.conf").ok()?;
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .find_map(|a| a.trim().parse::<Ipv4Addr>().ok())
        .map(|ip| SocketAddrV4::new(ip, 53))
}

/// What the thread did, for `siplb stats` and `/metrics`.
#[derive(Default)]
pub struct Counts {
    queries: AtomicU64,
    listed: AtomicU64,
    clean: AtomicU64,
    errors: AtomicU64,
    timeouts: AtomicU64,
    cache_hits: AtomicU64,
    queue_full: AtomicU64,
    verdicts: AtomicU64,
    latency_us_sum: AtomicU64,
    latency_us_max: AtomicU64,
    pending: AtomicU64,
    cached: AtomicU64,
}

/// The lookup thread's handle.
pub struct Dnsbl {
    settings: Arc<Mutex<Arc<Settings>>>,
    counts: Arc<Counts>,
}

impl Dnsbl {
    /// Starts the thread (idle while no zone is configured).
    pub fn start(
        cfg: &SecurityConfig,
        tables: &'static Tables<'static>,
        header: &'static Header,
    ) -> std::io::Result<Dnsbl> {
        let off = SecurityConfig {
            dnsbl: Vec::new(),
            ..cfg.clone()
        };
        let settings = Arc::new(Mutex::new(Arc::new(Settings::of(&off))));
        let counts = Arc::<Counts>::default();
        let mut engine = Engine::new(counts.clone())?;
        let s = settings.clone();
        std::thread::Builder::new()
            .name("dnsbl".into())
            .spawn(move || loop {
                let cur = s.lock().unwrap_or_else(|p| p.into_inner()).clone();
                if cur.zones.is_empty() {
                    std::thread::sleep(Duration::from_millis(100));
                    continue;
                }
                engine.step(&cur, tables, || header.clock.now());
            })?;
        let d = Dnsbl { settings, counts };
        d.configure(cfg);
        Ok(d)
    }

    /// Takes `[security]`'s settings (at start and after a reload).
    pub fn configure(&self, cfg: &SecurityConfig) {
        let new = Settings::of(cfg);
        let mut cur = self.settings.lock().unwrap_or_else(|p| p.into_inner());
        if **cur != new {
            if !new.zones.is_empty() && new.resolver.is_none() {
                eprintln!("siplb: dnsbl: no resolver: set [security] dnsbl_resolver or a nameserver in /etc/resolv.conf; lookups fail (sources admitted)");
            }
            *cur = Arc::new(new);
        }
    }

    /// The counts, when lookups are on.
    pub fn view(&self) -> Option<DnsblView> {
        let s = self.settings.lock().unwrap_or_else(|p| p.into_inner());
        if s.zones.is_empty() {
            return None;
        }
        let c = &self.counts;
        let g = |a: &AtomicU64| a.load(Relaxed);
        Some(DnsblView {
            zones: s.zones.clone(),
            resolver: s.resolver.map(|r| r.to_string()).unwrap_or_default(),
            queries: g(&c.queries),
            listed: g(&c.listed),
            clean: g(&c.clean),
            errors: g(&c.errors),
            timeouts: g(&c.timeouts),
            cache_hits: g(&c.cache_hits),
            queue_full: g(&c.queue_full),
            verdicts: g(&c.verdicts),
            latency_us_sum: g(&c.latency_us_sum),
            latency_us_max: g(&c.latency_us_max),
            pending: g(&c.pending),
            cached: g(&c.cached),
        })
    }
}

/// A source being looked up in every zone.
struct Lookup {
    since: Instant,
    /// Zones not answered yet.
    left: usize,
    listed_ttl: Option<u32>,
    clean_ttl: u32,
    failed: bool,
}

struct Query {
    src: Ipv4Addr,
    name: String,
    sent: Instant,
}

struct Cached {
    listed: bool,
    until: Instant,
}

/// One zone's answer.
#[derive(Debug, PartialEq)]
enum Answer {
    Listed(u32),
    Clean(u32),
    Failed(String),
}

/// The lookups' state, owned by the thread.
struct Engine {
    socket: UdpSocket,
    counts: Arc<Counts>,
    /// Sources waiting for their queries, with when they were taken.
    queue: VecDeque<(Ipv4Addr, Instant)>,
    /// Queued or in flight: a source pushed again meanwhile is not asked twice.
    waiting: HashSet<Ipv4Addr>,
    lookups: HashMap<Ipv4Addr, Lookup>,
    queries: HashMap<u16, Query>,
    cache: HashMap<Ipv4Addr, Cached>,
    tokens: f64,
    refilled: Instant,
    next_id: u16,
    swept: Instant,
}

impl Engine {
    fn new(counts: Arc<Counts>) -> std::io::Result<Engine> {
        let socket = UdpSocket::bind("0.0.0.0:0")?;
        socket.set_read_timeout(Some(POLL))?;
        let now = Instant::now();
        Ok(Engine {
            socket,
            counts,
            queue: VecDeque::new(),
            waiting: HashSet::new(),
            lookups: HashMap::new(),
            queries: HashMap::new(),
            cache: HashMap::new(),
            tokens: 1.0,
            refilled: now,
            // Not predictable from the outside; the answers are matched by name too.
            next_id: std::process::id() as u16
                ^ std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.subsec_nanos() as u16),
            swept: now,
        })
    }

    /// One round: new sources from the ring, queries the rate allows, answers that
    /// arrive within `POLL`, timeouts.
    fn step(&mut self, s: &Settings, tables: &Tables<'_>, clock: impl Fn() -> u32) {
        while let Some(src) = tables.new_sources.pop() {
            self.take(s, src, &tables.rates, clock());
        }
        self.send(s);
        self.receive(s, &tables.rates, &clock);
        self.expire(s, &tables.rates, clock());
        let c = &self.counts;
        c.pending
            .store((self.queue.len() + self.lookups.len()) as u64, Relaxed);
        c.cached.store(self.cache.len() as u64, Relaxed);
    }

    fn take(&mut self, s: &Settings, src: Ipv4Addr, rates: &FlowTable<'_>, now_s: u32) {
        let now = Instant::now();
        if let Some(c) = self.cache.get(&src).filter(|c| c.until > now) {
            self.counts.cache_hits.fetch_add(1, Relaxed);
            let ttl = (c.until - now).as_secs().max(1) as u32;
            let listed = c.listed;
            self.verdict(s, rates, src, (Some(listed), ttl), None, now_s);
            return;
        }
        if self.waiting.contains(&src) {
            return;
        }
        if self.queue.len() >= s.queue {
            self.counts.queue_full.fetch_add(1, Relaxed);
            return;
        }
        self.waiting.insert(src);
        self.queue.push_back((src, now));
    }

    /// Sends the queued sources' queries as the rate allows (a bucket of a tenth of a
    /// second's queries, at least one).
    fn send(&mut self, s: &Settings) {
        let now = Instant::now();
        let qps = f64::from(s.qps);
        let burst = (qps / 10.0).max(1.0);
        self.tokens = (self.tokens + (now - self.refilled).as_secs_f64() * qps).min(burst);
        self.refilled = now;
        let zones = s.zones.len() as f64;
        while self.tokens >= zones.min(burst) {
            let Some((src, since)) = self.queue.pop_front() else {
                break;
            };
            self.tokens -= zones;
            self.lookups.insert(
                src,
                Lookup {
                    since,
                    left: s.zones.len(),
                    listed_ttl: None,
                    clean_ttl: MAX_TTL_S,
                    failed: false,
                },
            );
            for zone in &s.zones {
                self.query(s, src, zone);
            }
        }
    }

    fn query(&mut self, s: &Settings, src: Ipv4Addr, zone: &str) {
        let name = query_name(src, zone);
        let mut id = self.next_id;
        while self.queries.contains_key(&id) {
            id = id.wrapping_add(1);
        }
        self.next_id = id.wrapping_add(1);
        self.counts.queries.fetch_add(1, Relaxed);
        let sent = s.resolver.and_then(|r| {
            let bytes = query_bytes(id, &name).ok()?;
            self.socket.send_to(&bytes, r).ok()
        });
        if sent.is_none() {
            // No resolver, or the send failed: this zone's answer is an error at once.
            self.counts.errors.fetch_add(1, Relaxed);
            if let Some(l) = self.lookups.get_mut(&src) {
                l.failed = true;
                l.left -= 1;
            }
            return;
        }
        self.queries.insert(
            id,
            Query {
                src,
                name,
                sent: Instant::now(),
            },
        );
    }

    fn receive(&mut self, s: &Settings, rates: &FlowTable<'_>, clock: &impl Fn() -> u32) {
        if self.queries.is_empty() {
            std::thread::sleep(POLL);
            return;
        }
        let mut buf = [0u8; 1500];
        // The first answer is waited for up to POLL (the read timeout), the rest taken
        // as they are.
        let _ = self.socket.set_nonblocking(false);
        while let Ok((n, from)) = self.socket.recv_from(&mut buf) {
            let _ = self.socket.set_nonblocking(true);
            if s.resolver.map(SocketAddr::V4) != Some(from) {
                continue;
            }
            let Ok(pkt) = Packet::parse(&buf[..n]) else {
                continue;
            };
            let Some(q) = self.queries.get(&pkt.id()) else {
                continue;
            };
            let asked = pkt
                .questions
                .first()
                .is_some_and(|x| x.qname.to_string().eq_ignore_ascii_case(&q.name));
            if !asked {
                continue;
            }
            let q = self.queries.remove(&pkt.id()).expect("looked up above");
            let answer = answer(&pkt, s.negative_ttl_s);
            self.settle(s, rates, q.src, answer, clock());
        }
    }

    /// Counts one zone's answer for `src`; the last one gives the verdict.
    fn settle(
        &mut self,
        s: &Settings,
        rates: &FlowTable<'_>,
        src: Ipv4Addr,
        a: Answer,
        now_s: u32,
    ) {
        let Some(l) = self.lookups.get_mut(&src) else {
            return;
        };
        match a {
            Answer::Listed(ttl) => l.listed_ttl = Some(l.listed_ttl.map_or(ttl, |t| t.min(ttl))),
            Answer::Clean(ttl) => l.clean_ttl = l.clean_ttl.min(ttl),
            Answer::Failed(why) => {
                self.counts.errors.fetch_add(1, Relaxed);
                if self.counts.errors.load(Relaxed).is_power_of_two() {
                    eprintln!("siplb: dnsbl: lookup of {src} failed: {why}");
                }
                l.failed = true;
            }
        }
        l.left -= 1;
        if l.left > 0 {
            return;
        }
        let l = self.lookups.remove(&src).expect("present");
        let (listed, ttl) = match (l.listed_ttl, l.failed) {
            (Some(ttl), _) => (Some(true), ttl),
            (None, false) => (Some(false), l.clean_ttl),
            (None, true) => (None, ERROR_TTL_S),
        };
        let ttl = ttl.clamp(1, MAX_TTL_S);
        self.verdict(s, rates, src, (listed, ttl), Some(l.since), now_s);
    }

    /// Writes the verdict (listed, or `None`: the lookup failed; for `ttl` seconds)
    /// into the rates table and caches it; `since`: when the resolver's lookup began
    /// (its latency is measured), `None` for a cache hit.
    fn verdict(
        &mut self,
        s: &Settings,
        rates: &FlowTable<'_>,
        src: Ipv4Addr,
        (listed, ttl): (Option<bool>, u32),
        since: Option<Instant>,
        now_s: u32,
    ) {
        self.waiting.remove(&src);
        let c = &self.counts;
        let listed_now = listed == Some(true);
        let mark_s = if listed_now {
            ttl
        } else {
            ttl.min(CLEAN_MARK_MAX_S)
        };
        if judge(rates, src, listed_now, mark_s, s.ban_s, now_s).is_err() {
            c.errors.fetch_add(1, Relaxed);
        }
        let now = Instant::now();
        if let Some(listed) = listed {
            if listed { &c.listed } else { &c.clean }.fetch_add(1, Relaxed);
        }
        if let Some(listed) = listed.filter(|_| self.cache.len() < CACHE_MAX) {
            self.cache.insert(
                src,
                Cached {
                    listed,
                    until: now + Duration::from_secs(u64::from(ttl)),
                },
            );
        }
        if let Some(since) = since {
            let us = (now - since).as_micros() as u64;
            c.verdicts.fetch_add(1, Relaxed);
            c.latency_us_sum.fetch_add(us, Relaxed);
            c.latency_us_max.fetch_max(us, Relaxed);
        }
    }

    /// Queries past `TIMEOUT` fail; the cache forgets what expired (every second).
    fn expire(&mut self, s: &Settings, rates: &FlowTable<'_>, now_s: u32) {
        let now = Instant::now();
        let late: Vec<u16> = self
            .queries
            .iter()
            .filter(|(_, q)| now - q.sent > TIMEOUT)
            .map(|(id, _)| *id)
            .collect();
        for id in late {
            let q = self.queries.remove(&id).expect("listed above");
            self.counts.timeouts.fetch_add(1, Relaxed);
            self.settle(
                s,
                rates,
                q.src,
                Answer::Failed(format!("no answer from the resolver for {}", q.name)),
                now_s,
            );
        }
        // Lookups whose every query failed to send have nothing in flight.
        let done: Vec<Ipv4Addr> = self
            .lookups
            .iter()
            .filter(|(_, l)| l.left == 0)
            .map(|(a, _)| *a)
            .collect();
        for src in done {
            let l = self.lookups.remove(&src).expect("listed above");
            self.verdict(s, rates, src, (None, ERROR_TTL_S), Some(l.since), now_s);
        }
        if now - self.swept > Duration::from_secs(1) {
            self.cache.retain(|_, c| c.until > now);
            self.swept = now;
        }
    }
}

/// A recursive A query for `name`.
fn query_bytes(id: u16, name: &str) -> Result<Vec<u8>, simple_dns::SimpleDnsError> {
    let mut p = Packet::new_query(id);
    p.set_flags(simple_dns::PacketFlag::RECURSION_DESIRED);
    p.questions.push(Question::new(
        Name::new(name)?,
        QTYPE::TYPE(TYPE::A),
        QCLASS::CLASS(CLASS::IN),
        false,
    ));
    p.build_bytes_vec()
}

/// What a zone's answer says: an A record in 127.0.0.0/8 lists the source (its TTL);
/// NXDOMAIN or no such record does not (the SOA's TTL and minimum, the lower, RFC
/// 2308; else `negative_ttl_s`). 127.255.255.0/24 is how public DNSBLs refuse a query
/// (Spamhaus: "query through a public resolver"): a failure, not a listing.
fn answer(p: &Packet<'_>, negative_ttl_s: u32) -> Answer {
    let negative = || {
        p.name_servers
            .iter()
            .find_map(|r| match &r.rdata {
                RData::SOA(soa) => Some(soa.minimum.min(r.ttl)),
                _ => None,
            })
            .unwrap_or(negative_ttl_s)
    };
    match p.rcode() {
        RCODE::NameError => Answer::Clean(negative()),
        RCODE::NoError => {
            let mut listed = None;
            for r in &p.answers {
                if let RData::A(a) = &r.rdata {
                    let ip = Ipv4Addr::from(a.address);
                    if ip.octets()[..3] == [127, 255, 255] {
                        return Answer::Failed(format!("the zone refused the query ({ip})"));
                    }
                    if ip.is_loopback() {
                        listed = Some(listed.map_or(r.ttl, |t: u32| t.min(r.ttl)));
                    }
                }
            }
            listed.map_or_else(|| Answer::Clean(negative()), Answer::Listed)
        }
        rc => Answer::Failed(format!("the resolver answered {rc:?}")),
    }
}

/// The DNSBL question for `src` in `zone` (RFC 5782): its octets reversed, then the
/// zone.
fn query_name(src: Ipv4Addr, zone: &str) -> String {
    let [a, b, c, d] = src.octets();
    format!("{d}.{c}.{b}.{a}.{zone}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use simple_dns::rdata::{A, SOA};
    use simple_dns::ResourceRecord;
    use siplb_core::lb::security::dnsbl::{note, Mark};
    use siplb_core::lb::security::limits;
    use siplb_core::lb::sim::SimMemory;
    use std::sync::atomic::AtomicUsize;

    /// A resolver on loopback for zone `bl.test`: `x.x.x.66` is listed (127.0.0.2,
    /// TTL 120), `x.x.x.77` fails (SERVFAIL), everything else is NXDOMAIN with an SOA
    /// of minimum 30 (`x.x.x.88`: 3600). Counts the queries it gets.
    fn resolver() -> (SocketAddrV4, Arc<AtomicUsize>) {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = match sock.local_addr().unwrap() {
            SocketAddr::V4(a) => a,
            SocketAddr::V6(_) => unreachable!(),
        };
        let n = Arc::new(AtomicUsize::new(0));
        let seen = n.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            while let Ok((len, from)) = sock.recv_from(&mut buf) {
                seen.fetch_add(1, Relaxed);
                let q = Packet::parse(&buf[..len]).unwrap();
                let name = q.questions[0].qname.clone();
                let mut r = Packet::new_reply(q.id());
                r.questions.push(q.questions[0].clone());
                let first = name.to_string();
                let zone = Name::new("bl.test").unwrap();
                if first.starts_with("66.") {
                    r.answers.push(ResourceRecord::new(
                        name,
                        CLASS::IN,
                        120,
                        RData::A(A {
                            address: u32::from(Ipv4Addr::new(127, 0, 0, 2)),
                        }),
                    ));
                } else if first.starts_with("77.") {
                    *r.rcode_mut() = RCODE::ServerFailure;
                } else {
                    *r.rcode_mut() = RCODE::NameError;
                    r.name_servers.push(ResourceRecord::new(
                        zone.clone(),
                        CLASS::IN,
                        3600,
                        RData::SOA(SOA {
                            mname: zone.clone(),
                            rname: zone,
                            serial: 1,
                            refresh: 3600,
                            retry: 600,
                            expire: 86400,
                            minimum: if first.starts_with("88.") { 3600 } else { 30 },
                        }),
                    ));
                }
                sock.send_to(&r.build_bytes_vec().unwrap(), from).unwrap();
            }
        });
        (addr, n)
    }

    fn settings(resolver: SocketAddrV4, qps: u32, queue: usize) -> Settings {
        Settings {
            zones: vec!["bl.test".into()],
            resolver: Some(resolver),
            qps,
            queue,
            ban_s: 0,
            negative_ttl_s: 300,
        }
    }

    #[test]
    fn listed_sources_are_banned_clean_ones_judged_failures_admitted_and_answers_cached() {
        let (addr, asked) = resolver();
        let mem = SimMemory::new(1024);
        let t = mem.tables();
        let counts = Arc::<Counts>::default();
        let mut e = Engine::new(counts.clone()).unwrap();
        let s = settings(addr, 1000, 16);
        let now_s = 1000;
        let ip = |d| Ipv4Addr::new(198, 18, 0, d);
        for d in [10, 66, 77] {
            assert_eq!(
                note(&t.rates, &t.new_sources, ip(d), now_s),
                Ok(Mark::Noted)
            );
        }
        let until = Instant::now() + Duration::from_secs(5);
        while counts.clean.load(Relaxed) + counts.listed.load(Relaxed) + counts.errors.load(Relaxed)
            < 3
            && Instant::now() < until
        {
            e.step(&s, &t, || now_s);
        }
        let g = |a: &AtomicU64| a.load(Relaxed);
        assert_eq!(
            (
                g(&counts.queries),
                g(&counts.listed),
                g(&counts.clean),
                g(&counts.errors)
            ),
            (3, 1, 1, 1)
        );
        assert_eq!(asked.load(Relaxed), 3);
        let bans = limits::list_bans(&t.rates, now_s);
        assert_eq!(bans.len(), 1, "{bans:?}");
        assert_eq!(
            (bans[0].source, bans[0].reason, bans[0].remaining_s),
            (ip(66), "dnsbl", 120)
        );
        // Every source has its verdict: clean for the SOA minimum, the failure for
        // ERROR_TTL_S.
        for d in [10, 66, 77] {
            assert_eq!(
                note(&t.rates, &t.new_sources, ip(d), now_s + 29),
                Ok(Mark::Judged)
            );
        }
        assert_eq!(
            note(&t.rates, &t.new_sources, ip(10), now_s + 30),
            Ok(Mark::Noted)
        );
        assert_eq!(
            note(&t.rates, &t.new_sources, ip(77), now_s + 60),
            Ok(Mark::Noted)
        );
        // The clean one comes from the cache; the failed one is asked again.
        let until = Instant::now() + Duration::from_secs(5);
        while g(&counts.errors) < 2 && Instant::now() < until {
            e.step(&s, &t, || now_s + 60);
        }
        assert_eq!(
            (g(&counts.cache_hits), g(&counts.queries), g(&counts.errors)),
            (1, 4, 2)
        );
        assert_eq!(asked.load(Relaxed), 4);
        assert!(g(&counts.verdicts) == 4 && g(&counts.latency_us_max) > 0);
    }

    #[test]
    fn a_clean_mark_lives_at_most_five_minutes_and_the_cache_answers_after_it() {
        let (addr, asked) = resolver();
        let mem = SimMemory::new(1024);
        let t = mem.tables();
        let counts = Arc::<Counts>::default();
        let mut e = Engine::new(counts.clone()).unwrap();
        let s = settings(addr, 1000, 16);
        let src = Ipv4Addr::new(198, 18, 0, 88);
        let note = |now| note(&t.rates, &t.new_sources, src, now).unwrap();
        assert_eq!(note(1000), Mark::Noted);
        let until = Instant::now() + Duration::from_secs(5);
        while counts.clean.load(Relaxed) == 0 && Instant::now() < until {
            e.step(&s, &t, || 1000);
        }
        assert_eq!(note(1000 + CLEAN_MARK_MAX_S - 1), Mark::Judged);
        assert_eq!(
            note(1000 + CLEAN_MARK_MAX_S),
            Mark::Noted,
            "a TTL of 3600 s, capped"
        );
        e.step(&s, &t, || 1000 + CLEAN_MARK_MAX_S);
        assert_eq!(
            counts.cache_hits.load(Relaxed),
            1,
            "the answer is still cached"
        );
        assert_eq!(note(1000 + CLEAN_MARK_MAX_S + 1), Mark::Judged);
        assert_eq!((counts.queries.load(Relaxed), asked.load(Relaxed)), (1, 1));
    }

    #[test]
    fn queries_keep_to_the_rate_and_the_queue_to_its_bound() {
        let (addr, asked) = resolver();
        let mem = SimMemory::new(1024);
        let t = mem.tables();
        let counts = Arc::<Counts>::default();
        let mut e = Engine::new(counts.clone()).unwrap();
        let s = settings(addr, 50, 40);
        // Idle for a while: the bucket fills, to its burst and no further.
        e.step(&s, &t, || 1);
        std::thread::sleep(Duration::from_millis(500));
        // The simulation's ring holds 64: 60 sources, 20 beyond the queue.
        for i in 0..60 {
            assert!(t.new_sources.push(Ipv4Addr::new(198, 18, 1, i)));
        }
        let start = Instant::now();
        e.step(&s, &t, || 1);
        assert_eq!(counts.queue_full.load(Relaxed), 20);
        while start.elapsed() < Duration::from_millis(300) {
            e.step(&s, &t, || 1);
        }
        let sent = counts.queries.load(Relaxed);
        let elapsed = start.elapsed().as_secs_f64();
        println!("{sent} queries in {elapsed:.3} s at dnsbl_qps = 50 (burst 5)");
        assert!(
            sent as f64 <= 5.0 + 50.0 * elapsed + 1.0,
            "{sent} in {elapsed} s"
        );
        assert!(sent >= 5, "{sent}: the burst at least");
        assert!(asked.load(Relaxed) as u64 <= sent);
    }

    #[test]
    fn answers_read_as_rfc_5782_and_2308_say() {
        // 198.18.0.10's question: its octets reversed under the zone.
        let qname = query_name(Ipv4Addr::new(198, 18, 0, 10), "bl.test");
        let name = Name::new(&qname).unwrap();
        let a = |ip: Ipv4Addr, ttl| {
            ResourceRecord::new(
                name.clone(),
                CLASS::IN,
                ttl,
                RData::A(A { address: ip.into() }),
            )
        };
        let mut p = Packet::new_reply(1);
        p.answers.push(a(Ipv4Addr::new(127, 0, 0, 4), 900));
        p.answers.push(a(Ipv4Addr::new(127, 0, 0, 2), 600));
        assert_eq!(answer(&p, 300), Answer::Listed(600));
        let mut p = Packet::new_reply(1);
        p.answers.push(a(Ipv4Addr::new(198, 18, 0, 1), 900));
        assert_eq!(answer(&p, 300), Answer::Clean(300), "not a 127/8 answer");
        let mut p = Packet::new_reply(1);
        p.answers.push(a(Ipv4Addr::new(127, 255, 255, 254), 900));
        assert!(matches!(answer(&p, 300), Answer::Failed(_)));
        let mut p = Packet::new_reply(1);
        *p.rcode_mut() = RCODE::NameError;
        assert_eq!(
            answer(&p, 300),
            Answer::Clean(300),
            "no SOA: the configured TTL"
        );
        *p.rcode_mut() = RCODE::Refused;
        assert!(matches!(answer(&p, 300), Answer::Failed(_)));
    }
}
