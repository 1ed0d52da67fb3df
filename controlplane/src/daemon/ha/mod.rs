//! Two-unit high availability. Each unit's control plane sends heartbeats to its peer
//! (UDP through the exception path); the active unit owns the VIPs, SNAT and floating
//! addresses and replicates what changes in its tables (dialogs, registrations, TCP
//! connections, SNAT sessions, media mappings) to the standby, which writes it into its own dataplane's
//! shared memory. When the active unit's heartbeats stop, the standby becomes active:
//! its dataplane announces the VIPs with gratuitous ARP and carries on with the
//! replicated state, so dialogs in progress keep their backends.
//!
//! Liveness follows the forwarding plane: each heartbeat sent is also stamped into the
//! dataplane's shared header (`control_beat`); a dataplane whose control plane falls
//! silent past the dead time stands down by itself (`stood_down`), and this thread,
//! seeing that, takes its unit for standby before electing again.
//!
//! Every datagram is authenticated (`wire`: HMAC-SHA256 with the pair's key) and
//! dropped and counted when its MAC, version or source is wrong. Replication runs in
//! *streams* (`repl`): sequenced, acknowledged, resent, paced; each stream starts with
//! a full resync of every live entry ended by a marker. The active unit starts a new
//! stream when the peer appears or restarts, when it becomes active itself, when the
//! peer steps down after a partition, when both units' numbering comes to agree, and
//! when the peer falls too far behind (its oldest unacknowledged datagram is older
//! than the dead time).
//!
//! Election: not preemptive; a unit that comes back stays standby (and is resynced)
//! while its peer is active. When both are standby, a unit in the middle of a resync
//! or numbering farms/backends differently from its peer (`numbering`) goes after one
//! that is not; then the higher priority (then the lower address) becomes active. When both are active (a
//! partition that healed), the lower one by the same rule steps down; the winner
//! announces the VIPs again and resyncs the loser. A standby whose peer dies takes over
//! whatever its state: forwarding with part of the tables beats not forwarding.

pub mod numbering;
pub mod repl;
pub mod wire;

use crate::api::{HaView, ResyncView};
use crate::daemon::Event;
use anyhow::Context;
use numbering::Digests;
use repl::{Inbox, Outbox};
use runtime::clock::Clock;
use runtime::shm::Header as ShmHeader;
use siplb_core::config::HaConfig;
use siplb_core::lb::Tables;
use siplb_core::table::flow::FlowTable;
use siplb_core::table::media::{Exported, MappingRecord, RECORD_BYTES};
use siplb_core::table::Changes;
use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, SocketAddrV4, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use wire::{
    Beat, Header, Key, Kind, Reject, FLAG_ACTIVE, FLAG_PREFERRED, FLAG_RESYNCING, FLAG_SYNCED,
    PER_DATAGRAM,
};

/// Tables replicated, in message order.
const DIALOGS: u8 = 0;
const REGISTRATIONS: u8 = 1;
const CONNECTIONS: u8 = 2;
const SNAT_FORWARD: u8 = 3;
const SNAT_REVERSE: u8 = 4;
/// Media mappings (`MappingRecord`s of `RECORD_BYTES`).
const MEDIA: u8 = 5;
/// Media records per sync datagram (152 bytes each), and what one costs of the
/// per-sync budget counted in flow entries.
const MEDIA_PER_DATAGRAM: usize = 8;
const MEDIA_COST: usize = PER_DATAGRAM / MEDIA_PER_DATAGRAM;

/// Acknowledgement times kept for the percentiles.
const LAG_SAMPLES: usize = 1024;

/// What the main loop and status output see of the HA thread.
#[derive(Debug, Default)]
pub struct HaStatus {
    pub active: AtomicBool,
    pub peer_alive: AtomicBool,
    /// Set by the main loop on `siplb ha takeover`; the HA thread takes it.
    pub takeover: AtomicBool,
    /// Set by the main loop from the state applied (`numbering::digests`).
    pub numbering: Mutex<Digests>,
    /// Written by the HA thread a few times a second.
    pub view: Mutex<HaView>,
}

impl HaStatus {
    pub fn view(&self) -> HaView {
        self.view.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn digests(&self) -> Digests {
        *self.numbering.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[derive(Default)]
struct Peer {
    last_seen: Option<Instant>,
    epoch: u64,
    beat: Beat,
}

/// Per table: a copy of each slot as last queued, and the groups the dataplane's dirty
/// marks say changed since (`siplb_core::table::dirty`), so a sync reads only those.
struct Shadow {
    /// (key, raw value) per slot of each flow table.
    flows: Vec<Changes<(u64, u64)>>,
    /// (client word, deadline) per SNAT reverse slot.
    reverse: Changes<(u64, u32)>,
    /// Per media leg: the fingerprint of the mapping starting there (0: none).
    media: Changes<u64>,
}

impl Shadow {
    fn new(t: &Tables<'_>) -> Self {
        Self {
            flows: [
                t.dialogs.flow().capacity(),
                t.registrations.flow().capacity(),
                t.connections.flow().capacity(),
                t.snat.forward().capacity(),
            ]
            .iter()
            .map(|n| Changes::new(*n))
            .collect(),
            reverse: Changes::new(t.snat.mappings()),
            media: Changes::new(t.media.legs()),
        }
    }

    fn reset(&mut self) {
        for f in &mut self.flows {
            f.restart();
        }
        self.reverse.restart();
        self.media.restart();
    }

    /// Slots read to find changes since the start.
    fn read(&self) -> u64 {
        self.flows.iter().map(|f| f.read).sum::<u64>() + self.reverse.read + self.media.read
    }
}

/// A full resync being sent (active) or received (standby).
struct Resync {
    started: Instant,
    entries: u64,
}

pub struct Ha {
    cfg: HaConfig,
    own: Ipv4Addr,
    peer_addr: SocketAddrV4,
    socket: UdpSocket,
    key: Key,
    epoch: u64,
    peer: Peer,
    tables: &'static Tables<'static>,
    header: &'static ShmHeader,
    clock: Clock,
    /// `header.stood_down` when last looked at.
    stood_down: u64,
    /// The operator asked this unit to take over (`siplb ha takeover`): it outranks
    /// the peer whatever the priorities, until the peer is asked in turn.
    preferred: bool,
    status: Arc<HaStatus>,
    events: Sender<Event>,
    shadow: Option<Shadow>,
    outbox: Outbox,
    inbox: Inbox,
    /// Why this unit last stayed standby although it outranks its standby peer.
    held_back: Option<String>,
    /// What differed in the numbering when last checked.
    mismatch: Option<String>,
    /// The peer epoch our current stream serves; None: a new stream is due.
    stream_for: Option<u64>,
    sending: Option<Resync>,
    receiving: Option<Resync>,
    last_resync: Option<ResyncView>,
    imported: u64,
    rejected: [u64; 4],
    ack_ages: VecDeque<f64>,
    /// Upper bounds of change-to-acknowledgement times (see `Outbox::change_lags`).
    change_lags: VecDeque<f64>,
    /// When the last sync pass read the marks: the changes the next one finds were
    /// made after it.
    last_pass: Option<Instant>,
    ack_due: u32,
    last_ack: Instant,
}

/// A unit as the election ranks it.
#[derive(Debug, Clone, Copy)]
struct Rank {
    /// Not resyncing, and numbering like its peer.
    fit: bool,
    /// Asked to take over by the operator (`siplb ha takeover`).
    preferred: bool,
    priority: u8,
    addr: Ipv4Addr,
}

impl Rank {
    /// The operator's preference, then the higher priority, then the lower address.
    fn outranks(&self, other: &Rank) -> bool {
        (
            self.preferred,
            self.priority,
            std::cmp::Reverse(u32::from(self.addr)),
        ) > (
            other.preferred,
            other.priority,
            std::cmp::Reverse(u32::from(other.addr)),
        )
    }
}

/// What one election round knows (a pure function of it, unit-tested).
struct Election {
    active: bool,
    alive: bool,
    /// Just started: the peer may not have been heard yet.
    settling: bool,
    peer_active: bool,
    /// The peer (a standby) holds our full resync.
    peer_synced: bool,
    me: Rank,
    peer: Rank,
}

impl Election {
    /// Whether this unit should be active. An active unit stays so unless its live
    /// peer is active too and outranks it (a partition healed). A standby takes over
    /// from a dead peer whatever its state; when both are standby, a fit unit goes
    /// before an unfit one (resyncing, or numbering differently), then rank decides;
    /// an active peer is never preempted. The exception is the operator's takeover: an
    /// active unit hands over to a preferred peer once that peer is fit and synced.
    fn want_active(&self) -> bool {
        if self.active {
            let hand_over = self.peer.preferred && self.peer.fit && self.peer_synced;
            return !(self.alive
                && (self.peer_active || hand_over)
                && self.peer.outranks(&self.me));
        }
        if !self.alive {
            return !self.settling;
        }
        !self.peer_active && (self.me.fit, self.me.outranks(&self.peer)) > (self.peer.fit, false)
    }
}

fn flow(t: &Tables<'static>, id: u8) -> Option<FlowTable<'static>> {
    Some(match id {
        DIALOGS => *t.dialogs.flow(),
        REGISTRATIONS => *t.registrations.flow(),
        CONNECTIONS => *t.connections.flow(),
        SNAT_FORWARD => *t.snat.forward(),
        _ => return None,
    })
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The pair's shared secret from `[ha] key` or `key_file`.
pub fn load_key(cfg: &HaConfig) -> anyhow::Result<Key> {
    let secret = match (&cfg.key, &cfg.key_file) {
        (Some(k), _) => k.as_bytes().to_vec(),
        (None, Some(f)) => {
            let mut s = std::fs::read(f)
                .with_context(|| format!("[ha] key_file {}: cannot read it", f.display()))?;
            while s.last().is_some_and(|c| *c == b'\n' || *c == b'\r') {
                s.pop();
            }
            s
        }
        (None, None) => anyhow::bail!("[ha] key: HA needs a shared secret (key or key_file)"),
    };
    if secret.len() < 16 {
        let field = match (&cfg.key, &cfg.key_file) {
            (None, Some(f)) => format!("key_file {}", f.display()),
            _ => "key".into(),
        };
        anyhow::bail!(
            "[ha] {field}: {} bytes, at least 16 are needed",
            secret.len()
        );
    }
    Ok(Key::new(&secret))
}

impl Ha {
    /// Binds the HA socket on `own` (our address in the peer's subnet) and starts the
    /// thread.
    pub fn start(
        cfg: HaConfig,
        own: Ipv4Addr,
        tables: &'static Tables<'static>,
        header: &'static ShmHeader,
        active: bool,
        numbering: Digests,
        events: Sender<Event>,
    ) -> anyhow::Result<Arc<HaStatus>> {
        let peer = cfg
            .peer
            .ok_or_else(|| anyhow::anyhow!("[ha] peer is not set"))?;
        let key = load_key(&cfg)?;
        let socket = UdpSocket::bind(SocketAddrV4::new(own, cfg.port)).map_err(|e| {
            anyhow::anyhow!(
                "HA socket on {own}:{}: {e} (is the exception path on?)",
                cfg.port
            )
        })?;
        socket.set_read_timeout(Some(Duration::from_millis(5)))?;
        let status = Arc::new(HaStatus::default());
        status.active.store(active, Ordering::SeqCst);
        *status.numbering.lock().unwrap_or_else(|p| p.into_inner()) = numbering;
        let epoch = unix_ms();
        let rto = Duration::from_millis(cfg.heartbeat_ms.max(50));
        let ha = Ha {
            peer_addr: SocketAddrV4::new(peer, cfg.port),
            key,
            epoch,
            peer: Peer::default(),
            outbox: Outbox::new(epoch, rto, cfg.sync_rate),
            inbox: Inbox::default(),
            cfg,
            own,
            socket,
            tables,
            header,
            clock: header.clock,
            stood_down: header.stood_down.load(Ordering::Acquire),
            preferred: false,
            status: status.clone(),
            events,
            shadow: None,
            held_back: None,
            mismatch: None,
            stream_for: None,
            sending: None,
            receiving: None,
            last_resync: None,
            imported: 0,
            rejected: [0; 4],
            ack_ages: VecDeque::new(),
            change_lags: VecDeque::new(),
            last_pass: None,
            ack_due: 0,
            last_ack: Instant::now(),
        };
        std::thread::Builder::new()
            .name("siplb-ha".into())
            .spawn(move || ha.run())?;
        Ok(status)
    }

    fn run(mut self) {
        let beat = Duration::from_millis(self.cfg.heartbeat_ms);
        let sync_every = Duration::from_millis(self.cfg.sync_ms);
        let started = Instant::now();
        let mut next_beat = Instant::now();
        let mut next_sync = Instant::now();
        let mut next_view = Instant::now();
        let mut buf = [0u8; 2048];
        loop {
            let now = Instant::now();
            if now >= next_beat {
                self.send_heartbeat();
                next_beat = now + beat;
                self.decide(started);
            }
            if self.replicating() {
                if self.stream_for != Some(self.peer.epoch) {
                    self.begin_stream(now);
                }
                // A resync in progress goes on as fast as the window and rate allow
                // (each pass scans the tables: wait for half the window to be free).
                let resync_room = self.sending.is_some() && self.outbox.room() >= repl::WINDOW / 2;
                if now >= next_sync || resync_room {
                    self.sync(now);
                    next_sync = now + sync_every;
                }
                if self.outbox.oldest(now) > Some(self.dead_time()) {
                    println!(
                        "siplb: HA: the peer is {} ms behind: full resync",
                        self.outbox.oldest(now).unwrap_or_default().as_millis()
                    );
                    self.stream_for = None;
                }
                for m in self.outbox.poll(now) {
                    let _ = self.socket.send_to(&m, self.peer_addr);
                }
            }
            match self.socket.recv_from(&mut buf) {
                Ok((n, from)) if from.ip() == IpAddr::V4(*self.peer_addr.ip()) => {
                    self.receive(&buf[..n], now);
                }
                Ok(_) => self.rejected[0] += 1,
                Err(_) => {}
            }
            if self.ack_due > 0
                && (self.ack_due >= 32 || self.last_ack.elapsed() >= Duration::from_millis(5))
            {
                self.send_ack();
            }
            if now >= next_view {
                self.publish(now);
                next_view = now + Duration::from_millis(100);
            }
        }
    }

    fn dead_time(&self) -> Duration {
        Duration::from_millis(self.cfg.heartbeat_ms * u64::from(self.cfg.dead_after))
    }

    fn peer_alive(&self) -> bool {
        let limit = self.dead_time();
        self.peer.last_seen.is_some_and(|t| t.elapsed() < limit)
    }

    /// Why the peer's replicated entries would not mean the same here.
    fn numbering_differs(&self) -> Option<String> {
        self.peer.last_seen?;
        numbering::differs(&self.status.digests(), &self.peer.beat.digests)
    }

    /// Notes when the numbering starts or stops agreeing (ours changes with the state
    /// applied, the peer's with its heartbeats).
    fn check_numbering(&mut self) {
        let now = self.numbering_differs();
        if now == self.mismatch {
            return;
        }
        match &now {
            Some(why) => println!("siplb: HA: {why}; replication is off until they agree"),
            None => {
                println!("siplb: HA: the peer's numbering agrees");
                // What the standby received meanwhile was not imported: resync.
                self.stream_for = None;
            }
        }
        self.mismatch = now;
    }

    /// The active unit replicates to a live standby that numbers things alike.
    fn replicating(&self) -> bool {
        self.status.active.load(Ordering::SeqCst)
            && self.peer_alive()
            && self.peer.beat.flags & FLAG_ACTIVE == 0
            && self.numbering_differs().is_none()
    }

    /// Standby in the middle of a full resync.
    fn resyncing(&self) -> bool {
        self.inbox.state.stream != 0 && !self.inbox.state.synced
    }

    fn send(&self, kind: Kind, payload: &[u8]) {
        let h = Header {
            kind,
            epoch: self.epoch,
            stream: 0,
            seq: 0,
        };
        let _ = self
            .socket
            .send_to(&self.key.seal(h, payload), self.peer_addr);
    }

    fn send_heartbeat(&self) {
        self.header
            .control_beat
            .store(self.clock.millis(), Ordering::Release);
        let mut flags = 0;
        if self.status.active.load(Ordering::SeqCst) {
            flags |= FLAG_ACTIVE;
        }
        if self.inbox.state.synced {
            flags |= FLAG_SYNCED;
        }
        if self.preferred {
            flags |= FLAG_PREFERRED;
        }
        if self.resyncing() {
            flags |= FLAG_RESYNCING;
        }
        let b = Beat {
            priority: self.cfg.priority,
            flags,
            digests: self.status.digests(),
        };
        self.send(Kind::Heartbeat, &b.encode());
    }

    fn send_ack(&mut self) {
        if let Some(a) = self.inbox.ack() {
            self.send(Kind::Ack, &a.encode());
        }
        self.ack_due = 0;
        self.last_ack = Instant::now();
    }

    /// Who is active: see the module notes.
    fn decide(&mut self, started: Instant) {
        let stood_down = self.header.stood_down.load(Ordering::Acquire);
        if stood_down != self.stood_down {
            self.stood_down = stood_down;
            if self.status.active.swap(false, Ordering::SeqCst) {
                println!("siplb: HA: the dataplane stood down after this control plane fell silent: this unit is STANDBY");
                let _ = self.events.send(Event::HaRole(false));
            }
        }
        self.check_numbering();
        let alive = self.peer_alive();
        let was_alive = self.status.peer_alive.swap(alive, Ordering::SeqCst);
        if alive && !was_alive {
            println!("siplb: HA: peer {} is up", self.peer_addr.ip());
        } else if !alive && was_alive {
            // When it comes back, it gets everything again (one new stream; set here,
            // not when it reappears, which may come after its first heartbeat already
            // started one for its new epoch).
            self.stream_for = None;
            println!("siplb: HA: peer {} stopped answering", self.peer_addr.ip());
        }
        let active = self.status.active.load(Ordering::SeqCst);
        let peer_active = self.peer.beat.flags & FLAG_ACTIVE != 0;
        if self.status.takeover.swap(false, Ordering::SeqCst) {
            println!("siplb: HA: takeover asked by the operator: this unit outranks its peer");
            self.preferred = true;
        }
        let peer_preferred = alive && self.peer.beat.flags & FLAG_PREFERRED != 0;
        // A takeover is asked of a standby: an active unit whose peer was asked gives
        // its own, older preference up (the most recent request wins).
        if active && peer_preferred && self.preferred {
            self.preferred = false;
        }
        let unfit = if self.resyncing() {
            Some("a full resync from the peer is under way".to_string())
        } else {
            self.numbering_differs()
        };
        let e = Election {
            active,
            alive,
            // Give a starting peer time to be heard before deciding alone.
            settling: started.elapsed()
                < self.dead_time() + Duration::from_millis(self.cfg.heartbeat_ms),
            peer_active,
            peer_synced: self.peer.beat.flags & FLAG_SYNCED != 0,
            me: Rank {
                fit: unfit.is_none(),
                preferred: self.preferred,
                priority: self.cfg.priority,
                addr: self.own,
            },
            peer: Rank {
                fit: self.peer.beat.flags & FLAG_RESYNCING == 0
                    && self.numbering_differs().is_none(),
                preferred: peer_preferred,
                priority: self.peer.beat.priority,
                addr: *self.peer_addr.ip(),
            },
        };
        let want = e.want_active();
        if want != active {
            self.status.active.store(want, Ordering::SeqCst);
            let why = if !alive {
                "the peer is not answering".to_string()
            } else if want {
                "this unit outranks an idle peer".to_string()
            } else if !peer_active {
                "the operator asked the peer to take over".to_string()
            } else {
                "the peer is active and outranks this unit".to_string()
            };
            println!(
                "siplb: HA: this unit becomes {} ({why})",
                if want { "ACTIVE" } else { "STANDBY" }
            );
            // Becoming active starts a stream to the peer (resyncing it).
            self.stream_for = None;
            let _ = self.events.send(Event::HaRole(want));
        }
        let held_back = (!want && alive && !peer_active && e.me.outranks(&e.peer))
            .then_some(unfit)
            .flatten();
        if held_back != self.held_back {
            if let Some(why) = &held_back {
                println!("siplb: HA: this unit stays standby although it outranks its peer: {why}");
            }
            self.held_back = held_back;
        }
    }

    fn receive(&mut self, m: &[u8], now: Instant) {
        let (h, payload) = match self.key.open(m) {
            Ok(x) => x,
            Err(r) => {
                let i = Reject::ALL.iter().position(|x| *x == r).unwrap_or(1);
                self.rejected[i] += 1;
                // Logged at 1, 2, 4, 8, ... drops: loud at first, bounded after.
                if self.rejected[i].is_power_of_two() {
                    println!(
                        "siplb: HA: {} datagram(s) from the peer dropped ({}){}",
                        self.rejected[i],
                        r.name(),
                        if r == Reject::Mac {
                            ": is [ha] key the same on both units?"
                        } else {
                            ""
                        }
                    );
                }
                return;
            }
        };
        match h.kind {
            Kind::Heartbeat => {
                let Some(b) = Beat::decode(payload) else {
                    self.rejected[1] += 1;
                    return;
                };
                let was_active = self.peer.beat.flags & FLAG_ACTIVE != 0;
                let restarted = self.peer.last_seen.is_some() && h.epoch != self.peer.epoch;
                self.peer.last_seen = Some(now);
                self.peer.epoch = h.epoch;
                self.peer.beat = b;
                if restarted {
                    println!("siplb: HA: peer {} restarted", self.peer_addr.ip());
                }
                self.check_numbering();
                let me_active = self.status.active.load(Ordering::SeqCst);
                if me_active && was_active && b.flags & FLAG_ACTIVE == 0 {
                    // The peer stepped down (a partition healed and we won): announce
                    // the VIPs again and resync it.
                    println!("siplb: HA: the peer stepped down: announcing the VIPs, resyncing it");
                    let _ = self.events.send(Event::HaAnnounce);
                    self.stream_for = None;
                }
            }
            Kind::Ack => {
                if let Some(a) = wire::Ack::decode(payload) {
                    for age in self.outbox.ack(&a, now) {
                        if self.ack_ages.len() == LAG_SAMPLES {
                            self.ack_ages.pop_front();
                        }
                        self.ack_ages.push_back(age.as_secs_f64() * 1000.0);
                    }
                    for lag in std::mem::take(&mut self.outbox.change_lags) {
                        if self.change_lags.len() == LAG_SAMPLES {
                            self.change_lags.pop_front();
                        }
                        self.change_lags.push_back(lag.as_secs_f64() * 1000.0);
                    }
                }
            }
            Kind::Sync | Kind::ResyncEnd => {
                if self.status.active.load(Ordering::SeqCst) {
                    return;
                }
                let d = self.inbox.accept(&h, payload);
                self.ack_due += 1;
                if d.new_stream {
                    self.receiving = Some(Resync {
                        started: now,
                        entries: 0,
                    });
                }
                // Entries numbered differently would land on the wrong farm, backend
                // or SNAT address: acknowledged, not imported.
                let import = self.numbering_differs().is_none();
                for (kind, p) in d.payloads {
                    if kind == Kind::ResyncEnd {
                        if let Some(r) = self.receiving.take() {
                            self.resync_done("received", r, now);
                        }
                    } else if import && p.len() >= 3 {
                        let n = self.import(
                            p[0],
                            usize::from(u16::from_be_bytes([p[1], p[2]])),
                            &p[3..],
                        );
                        if let Some(r) = self.receiving.as_mut() {
                            r.entries += n;
                        }
                    }
                }
            }
        }
    }

    fn resync_done(&mut self, direction: &str, r: Resync, now: Instant) {
        let v = ResyncView {
            direction: direction.into(),
            at_ms: unix_ms(),
            entries: r.entries,
            duration_ms: now.saturating_duration_since(r.started).as_millis() as u64,
        };
        println!(
            "siplb: HA: full resync {direction}: {} entries in {} ms",
            v.entries, v.duration_ms
        );
        self.last_resync = Some(v);
    }

    /// Writes a sync payload's entries; returns how many.
    fn import(&mut self, table: u8, count: usize, body: &[u8]) -> u64 {
        let now = self.clock.now();
        let mut n = 0;
        if table == MEDIA {
            for e in body.chunks_exact(RECORD_BYTES).take(count) {
                if let Some(r) = MappingRecord::decode(e) {
                    n += u64::from(self.tables.media.import(&r, now));
                }
            }
        } else if table == SNAT_REVERSE {
            for e in body.chunks_exact(16).take(count) {
                let index = u32::from_be_bytes(e[..4].try_into().expect("4 bytes"));
                let client = u64::from_be_bytes(e[4..12].try_into().expect("8 bytes"));
                let deadline = u32::from_be_bytes(e[12..16].try_into().expect("4 bytes"));
                self.tables.snat.import(index, client, deadline);
                n += 1;
            }
        } else if table == DIALOGS {
            // Through the dialog table: the count units of `max_dialogs` follow.
            let (t, load) = (&self.tables.dialogs, &self.tables.load);
            for e in body.chunks_exact(16).take(count) {
                let key = u64::from_be_bytes(e[..8].try_into().expect("8 bytes"));
                let raw = u64::from_be_bytes(e[8..16].try_into().expect("8 bytes"));
                if let Ok((released, held)) = t.import(key, raw, now) {
                    if let Some(slot) = held {
                        load.take(slot);
                    }
                    load.release(released);
                }
                n += 1;
            }
        } else if let Some(t) = flow(self.tables, table) {
            for e in body.chunks_exact(16).take(count) {
                let key = u64::from_be_bytes(e[..8].try_into().expect("8 bytes"));
                let raw = u64::from_be_bytes(e[8..16].try_into().expect("8 bytes"));
                let _ = t.import(key, raw, now);
                n += 1;
            }
        }
        self.imported += n;
        n
    }

    fn begin_stream(&mut self, now: Instant) {
        self.outbox.new_stream();
        self.stream_for = Some(self.peer.epoch);
        if let Some(s) = self.shadow.as_mut() {
            s.reset();
        }
        self.sending = Some(Resync {
            started: now,
            entries: 0,
        });
    }

    /// Queues every table entry that changed since it was last queued, as far as the
    /// window allows (the rest stays pending and goes next time); a resync whose
    /// entries are all queued gets its end marker. Only the groups of slots the
    /// dataplane marked dirty are read (a new stream reads every group once).
    fn sync(&mut self, now: Instant) {
        let tables = self.tables;
        let shadow = self.shadow.get_or_insert_with(|| Shadow::new(tables));
        // Each table's last datagram may be partial (6 tables), and the end marker
        // needs one: 8 datagrams of the room are kept for them.
        let mut budget = self.outbox.room().saturating_sub(8) * PER_DATAGRAM;
        let mut left_out = false;
        let mut out: Vec<Vec<u8>> = Vec::new();
        for id in [DIALOGS, REGISTRATIONS, CONNECTIONS, SNAT_FORWARD] {
            let t = flow(tables, id).expect("replicated table");
            let mut batch: Vec<(u64, u64)> = Vec::new();
            left_out |=
                !shadow.flows[usize::from(id)].collect(t.dirty(), &mut budget, 1, |r, take| {
                    t.for_each_slot_in(r, |i, k, v| {
                        if take(i, (k, v)) {
                            batch.push((k, v));
                        }
                    })
                });
            for chunk in batch.chunks(PER_DATAGRAM) {
                let mut m = Vec::with_capacity(3 + 16 * chunk.len());
                m.push(id);
                m.extend_from_slice(&(chunk.len() as u16).to_be_bytes());
                for (k, v) in chunk {
                    m.extend_from_slice(&k.to_be_bytes());
                    m.extend_from_slice(&v.to_be_bytes());
                }
                out.push(m);
            }
        }
        let mut rev: Vec<(u32, u64, u32)> = Vec::new();
        left_out |= !shadow
            .reverse
            .collect(tables.snat.dirty(), &mut budget, 1, |r, take| {
                tables.snat.for_each_mapping_in(r, |i, c, d| {
                    if take(i as usize, (c, d)) {
                        rev.push((i, c, d));
                    }
                })
            });
        for chunk in rev.chunks(PER_DATAGRAM) {
            let mut m = Vec::with_capacity(3 + 16 * chunk.len());
            m.push(SNAT_REVERSE);
            m.extend_from_slice(&(chunk.len() as u16).to_be_bytes());
            for (p, c, d) in chunk {
                m.extend_from_slice(&p.to_be_bytes());
                m.extend_from_slice(&c.to_be_bytes());
                m.extend_from_slice(&d.to_be_bytes());
            }
            out.push(m);
        }
        // A mark names a leg; its mapping is exported from its client leg. A mapping
        // being written (`Busy`) is marked again by its writer when done.
        let mut media: Vec<MappingRecord> = Vec::new();
        left_out |=
            !shadow
                .media
                .collect(tables.media.dirty(), &mut budget, MEDIA_COST, |r, take| {
                    for leg in r {
                        let c = tables.media.client_leg_of(leg as u32);
                        match tables.media.export(c) {
                            Exported::Mapping(m) => {
                                if take(c as usize, m.fingerprint()) {
                                    media.push(m);
                                }
                            }
                            Exported::None => {
                                if take(c as usize, 0) {
                                    media.push(MappingRecord::ended(c));
                                }
                            }
                            Exported::Busy => {}
                        }
                    }
                });
        for chunk in media.chunks(MEDIA_PER_DATAGRAM) {
            let mut m = Vec::with_capacity(3 + RECORD_BYTES * chunk.len());
            m.push(MEDIA);
            m.extend_from_slice(&(chunk.len() as u16).to_be_bytes());
            for r in chunk {
                r.encode(&mut m);
            }
            out.push(m);
        }
        let queued: u64 = out
            .iter()
            .map(|m| u64::from(u16::from_be_bytes([m[1], m[2]])))
            .sum();
        // Changes found by this pass were made after the previous one (a resync's
        // entries may be older: no lag figure for them).
        let changed_after = self.last_pass.filter(|_| self.sending.is_none());
        self.last_pass = Some(now);
        for m in out {
            // Room was counted above: every batch fits.
            let _ = self
                .outbox
                .push_changes(&self.key, Kind::Sync, &m, now, changed_after);
        }
        if let Some(r) = self.sending.as_mut() {
            r.entries += queued;
            if !left_out {
                let entries = r.entries as u32;
                if self
                    .outbox
                    .push(&self.key, Kind::ResyncEnd, &entries.to_be_bytes(), now)
                    .is_some()
                {
                    let r = self.sending.take().expect("a resync is being sent");
                    self.resync_done("sent", r, now);
                }
            }
        }
    }

    fn publish(&self, now: Instant) {
        let quantiles = |samples: &VecDeque<f64>| {
            let mut v: Vec<f64> = samples.iter().copied().collect();
            v.sort_by(f64::total_cmp);
            let at = |q: f64| {
                if v.is_empty() {
                    0.0
                } else {
                    v[((v.len() - 1) as f64 * q).round() as usize]
                }
            };
            (at(0.5), at(0.99))
        };
        let (ack_p50_ms, ack_p99_ms) = quantiles(&self.ack_ages);
        let (change_lag_p50_ms, change_lag_p99_ms) = quantiles(&self.change_lags);
        let v = HaView {
            active: self.status.active.load(Ordering::SeqCst),
            priority: self.cfg.priority,
            peer: self.peer_addr.ip().to_string(),
            peer_alive: self.peer_alive(),
            peer_active: self.peer.beat.flags & FLAG_ACTIVE != 0,
            peer_priority: self.peer.beat.priority,
            numbering: self.numbering_differs().unwrap_or_default(),
            resyncing: self.resyncing(),
            peer_synced: self.peer.beat.flags & FLAG_SYNCED != 0,
            preferred: self.preferred,
            lag_ms: self.outbox.oldest(now).map_or(0, |d| d.as_millis() as u64),
            ack_p50_ms,
            ack_p99_ms,
            change_lag_p50_ms,
            change_lag_p99_ms,
            sync_slots_read: self.shadow.as_ref().map_or(0, Shadow::read),
            in_flight: self.outbox.in_flight() as u64,
            sent: self.outbox.stats.sent,
            resent: self.outbox.stats.resent,
            streams: self.outbox.stats.streams,
            imported: self.imported,
            rejected: Reject::ALL
                .iter()
                .zip(self.rejected)
                .map(|(r, n)| (r.name().to_string(), n))
                .collect(),
            last_resync: self.last_resync.clone(),
        };
        *self.status.view.lock().unwrap_or_else(|p| p.into_inner()) = v;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 1);
    const B: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 3);

    fn rank(addr: Ipv4Addr, priority: u8, fit: bool) -> Rank {
        Rank {
            fit,
            preferred: false,
            priority,
            addr,
        }
    }

    /// Both units' wishes for one round, each seeing the other.
    fn both(active: [bool; 2], ranks: [Rank; 2]) -> [bool; 2] {
        [0, 1].map(|i| {
            Election {
                active: active[i],
                alive: true,
                settling: false,
                peer_active: active[1 - i],
                peer_synced: true,
                me: ranks[i],
                peer: ranks[1 - i],
            }
            .want_active()
        })
    }

    #[test]
    fn the_key_comes_from_the_config_or_its_file_and_must_have_16_bytes() {
        let dir = std::env::temp_dir().join(format!("siplb-ha-key-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("ha.key");
        std::fs::write(&file, "0123456789abcdef\n").unwrap();
        let cfg = |key: Option<&str>| HaConfig {
            key: key.map(str::to_string),
            key_file: key.is_none().then(|| file.clone()),
            ..HaConfig::default()
        };
        // The file's trailing newline is not part of the key: both make the same MACs.
        let h = Header {
            kind: Kind::Heartbeat,
            epoch: 1,
            stream: 0,
            seq: 0,
        };
        let sealed = load_key(&cfg(None)).unwrap().seal(h, b"x");
        let k = load_key(&cfg(Some("0123456789abcdef"))).unwrap();
        assert!(k.open(&sealed).is_ok());
        let e = load_key(&cfg(Some("0123456789abcde"))).err().unwrap();
        assert_eq!(e.to_string(), "[ha] key: 15 bytes, at least 16 are needed");
        std::fs::write(&file, "short\n").unwrap();
        let e = load_key(&cfg(None)).err().unwrap();
        assert_eq!(
            e.to_string(),
            format!(
                "[ha] key_file {}: 5 bytes, at least 16 are needed",
                file.display()
            )
        );
        std::fs::remove_dir_all(&dir).unwrap();
        let e = load_key(&cfg(None)).err().unwrap();
        assert!(e.to_string().starts_with("[ha] key_file /"), "{e}");
    }

    #[test]
    fn after_a_partition_exactly_one_active_unit_steps_down() {
        // Priority first, then the lower address.
        let r = [rank(A, 100, true), rank(B, 200, true)];
        assert_eq!(both([true, true], r), [false, true]);
        let r = [rank(A, 100, true), rank(B, 100, true)];
        assert_eq!(both([true, true], r), [true, false]);
        // Fitness does not decide between two active units.
        let r = [rank(A, 100, false), rank(B, 100, true)];
        assert_eq!(both([true, true], r), [true, false]);
    }

    #[test]
    fn an_active_peer_is_not_preempted_and_two_standbys_elect_one() {
        let r = [rank(A, 100, true), rank(B, 200, true)];
        assert_eq!(both([true, false], r), [true, false]);
        assert_eq!(both([false, false], r), [false, true]);
        let r = [rank(A, 100, true), rank(B, 100, true)];
        assert_eq!(both([false, false], r), [true, false]);
    }

    #[test]
    fn a_resyncing_or_misnumbered_unit_does_not_take_over_by_preference_but_does_from_a_dead_peer()
    {
        // B outranks A but is resyncing: A is elected.
        let r = [rank(A, 100, true), rank(B, 200, false)];
        assert_eq!(both([false, false], r), [true, false]);
        // Both unfit (numbering differs on both sides): rank decides, someone forwards.
        let r = [rank(A, 100, false), rank(B, 200, false)];
        assert_eq!(both([false, false], r), [false, true]);
        // A dead peer is taken over from whatever the state, once settled.
        let mut e = Election {
            active: false,
            alive: false,
            settling: true,
            peer_active: true,
            peer_synced: false,
            me: rank(B, 100, false),
            peer: rank(A, 200, true),
        };
        assert!(!e.want_active(), "settling");
        e.settling = false;
        assert!(e.want_active());
    }

    #[test]
    fn a_takeover_hands_over_once_the_preferred_standby_is_synced() {
        // A (priority 200) is active; the operator asks B (priority 100) to take over.
        let b = Rank {
            preferred: true,
            ..rank(B, 100, true)
        };
        let mut a_view = Election {
            active: true,
            alive: true,
            settling: false,
            peer_active: false,
            peer_synced: false,
            me: rank(A, 200, true),
            peer: b,
        };
        assert!(
            a_view.want_active(),
            "B is not synced yet: A keeps the VIPs"
        );
        a_view.peer_synced = true;
        assert!(!a_view.want_active(), "A hands over");
        a_view.peer.fit = false;
        assert!(
            a_view.want_active(),
            "not to a peer that numbers differently"
        );
        // B, preferred, takes over from the idle A; A does not come back.
        assert_eq!(both([false, false], [rank(A, 200, true), b]), [false, true]);
        assert_eq!(both([false, true], [rank(A, 200, true), b]), [false, true]);
    }
}
