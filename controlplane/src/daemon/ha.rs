//! Two-unit high availability. Each unit's control plane sends heartbeats to its peer
//! (UDP through the exception path); the active unit owns the VIPs, SNAT and floating
//! addresses and replicates what changes in its tables (dialogs, registrations, TCP
//! connections, SNAT sessions) to the standby, which writes it into its own dataplane's
//! shared memory. When the active unit's heartbeats stop, the standby becomes active:
//! its dataplane announces the VIPs with gratuitous ARP and carries on with the
//! replicated state, so dialogs in progress keep their backends.
//!
//! Liveness follows the forwarding plane: each heartbeat sent is also stamped into the
//! dataplane's shared header (`control_beat`); a dataplane whose control plane falls
//! silent past the dead time stands down by itself (`stood_down`), and this thread,
//! seeing that, takes its unit for standby before electing again.
//!
//! Not preemptive: a unit that comes back stays standby (and is brought up to date)
//! while its peer is active. When both start at once, the higher priority (then the
//! lower address) becomes active.

use crate::daemon::Event;
use runtime::clock::Clock;
use runtime::shm::Header;
use siplb_core::config::HaConfig;
use siplb_core::lb::Tables;
use siplb_core::table::flow::FlowTable;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The last byte is the message format's version: SNAT reverse entries grew to 16 bytes
/// (a u32 index) with SNAT address pools.
const MAGIC: &[u8; 4] = b"SLB2";
const HEARTBEAT: u8 = 1;
const SYNC: u8 = 2;
/// Flow-table entries per sync datagram (16 bytes each; the datagram stays < 1400 B).
const PER_DATAGRAM: usize = 80;

/// Tables replicated, in message order.
const DIALOGS: u8 = 0;
const REGISTRATIONS: u8 = 1;
const CONNECTIONS: u8 = 2;
const SNAT_FORWARD: u8 = 3;
const SNAT_REVERSE: u8 = 4;

/// What the main loop and status output see of the HA thread.
#[derive(Debug, Default)]
pub struct HaStatus {
    pub active: AtomicBool,
    pub peer_alive: AtomicBool,
}

struct Peer {
    addr: SocketAddrV4,
    last_seen: Option<Instant>,
    priority: u8,
    active: bool,
}

/// Per-slot copies of what was last sent, to send only changes.
struct Shadow {
    flows: Vec<Vec<(u64, u64)>>,
    reverse: Vec<(u64, u32)>,
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
            .map(|n| vec![(0, 0); *n])
            .collect(),
            reverse: vec![(0, 0); t.snat.mappings()],
        }
    }

    fn reset(&mut self) {
        for f in &mut self.flows {
            f.iter_mut().for_each(|e| *e = (0, 0));
        }
        self.reverse.iter_mut().for_each(|e| *e = (0, 0));
    }
}

pub struct Ha {
    cfg: HaConfig,
    own: Ipv4Addr,
    socket: UdpSocket,
    peer: Peer,
    tables: &'static Tables<'static>,
    header: &'static Header,
    clock: Clock,
    /// `header.stood_down` when last looked at.
    stood_down: u64,
    status: Arc<HaStatus>,
    events: Sender<Event>,
    shadow: Option<Shadow>,
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

impl Ha {
    /// Binds the HA socket on `own` (our address in the peer's subnet) and starts the
    /// thread.
    pub fn start(
        cfg: HaConfig,
        own: Ipv4Addr,
        tables: &'static Tables<'static>,
        header: &'static Header,
        active: bool,
        events: Sender<Event>,
    ) -> anyhow::Result<Arc<HaStatus>> {
        let peer = cfg
            .peer
            .ok_or_else(|| anyhow::anyhow!("[ha] peer is not set"))?;
        let socket = UdpSocket::bind(SocketAddrV4::new(own, cfg.port)).map_err(|e| {
            anyhow::anyhow!(
                "HA socket on {own}:{}: {e} (is the exception path on?)",
                cfg.port
            )
        })?;
        socket.set_read_timeout(Some(Duration::from_millis(10)))?;
        let status = Arc::new(HaStatus::default());
        status.active.store(active, Ordering::SeqCst);
        let ha = Ha {
            peer: Peer {
                addr: SocketAddrV4::new(peer, cfg.port),
                last_seen: None,
                priority: 0,
                active: false,
            },
            cfg,
            own,
            socket,
            tables,
            header,
            clock: header.clock,
            stood_down: header.stood_down.load(Ordering::Acquire),
            status: status.clone(),
            events,
            shadow: None,
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
        let mut buf = [0u8; 2048];
        loop {
            let now = Instant::now();
            if now >= next_beat {
                self.send_heartbeat();
                next_beat = now + beat;
                self.decide(started);
            }
            if now >= next_sync && self.status.active.load(Ordering::SeqCst) && self.peer_alive() {
                self.sync();
                next_sync = now + sync_every;
            }
            match self.socket.recv_from(&mut buf) {
                Ok((n, from)) if from.ip() == std::net::IpAddr::V4(*self.peer.addr.ip()) => {
                    self.receive(&buf[..n]);
                }
                _ => {}
            }
        }
    }

    fn peer_alive(&self) -> bool {
        let limit = Duration::from_millis(self.cfg.heartbeat_ms * u64::from(self.cfg.dead_after));
        self.peer.last_seen.is_some_and(|t| t.elapsed() < limit)
    }

    fn send_heartbeat(&self) {
        self.header
            .control_beat
            .store(self.clock.millis(), Ordering::Release);
        let mut m = Vec::with_capacity(8);
        m.extend_from_slice(MAGIC);
        m.push(HEARTBEAT);
        m.push(self.cfg.priority);
        m.push(u8::from(self.status.active.load(Ordering::SeqCst)));
        let _ = self.socket.send_to(&m, self.peer.addr);
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
        let alive = self.peer_alive();
        let was_alive = self.status.peer_alive.swap(alive, Ordering::SeqCst);
        if alive && !was_alive {
            // A (re)appeared peer gets everything again.
            if let Some(s) = self.shadow.as_mut() {
                s.reset();
            }
            println!("siplb: HA: peer {} is up", self.peer.addr.ip());
        } else if !alive && was_alive {
            println!("siplb: HA: peer {} stopped answering", self.peer.addr.ip());
        }
        let active = self.status.active.load(Ordering::SeqCst);
        // Give a starting peer time to be heard before deciding alone.
        let settling = started.elapsed()
            < Duration::from_millis(self.cfg.heartbeat_ms * u64::from(self.cfg.dead_after + 1));
        let outranks = (self.cfg.priority, std::cmp::Reverse(u32::from(self.own)))
            > (
                self.peer.priority,
                std::cmp::Reverse(u32::from(*self.peer.addr.ip())),
            );
        let want = if active {
            // Split brain resolves toward the higher priority.
            !(alive && self.peer.active && !outranks)
        } else if !alive {
            !settling
        } else {
            !self.peer.active && outranks
        };
        if want != active {
            self.status.active.store(want, Ordering::SeqCst);
            let why = if !alive {
                "the peer is not answering"
            } else if want {
                "this unit outranks an idle peer"
            } else {
                "the peer is active"
            };
            println!(
                "siplb: HA: this unit becomes {} ({why})",
                if want { "ACTIVE" } else { "STANDBY" }
            );
            let _ = self.events.send(Event::HaRole(want));
        }
    }

    fn receive(&mut self, m: &[u8]) {
        if m.len() < 5 || &m[..4] != MAGIC {
            return;
        }
        match m[4] {
            HEARTBEAT if m.len() >= 7 => {
                self.peer.last_seen = Some(Instant::now());
                self.peer.priority = m[5];
                self.peer.active = m[6] == 1;
            }
            SYNC if m.len() >= 8 && !self.status.active.load(Ordering::SeqCst) => {
                self.import(m[5], u16::from_be_bytes([m[6], m[7]]) as usize, &m[8..]);
            }
            _ => {}
        }
    }

    fn import(&self, table: u8, count: usize, body: &[u8]) {
        let now = self.clock.now();
        if table == SNAT_REVERSE {
            for e in body.chunks_exact(16).take(count) {
                let index = u32::from_be_bytes(e[..4].try_into().unwrap());
                let client = u64::from_be_bytes(e[4..12].try_into().unwrap());
                let deadline = u32::from_be_bytes(e[12..16].try_into().unwrap());
                self.tables.snat.import(index, client, deadline);
            }
            return;
        }
        let Some(t) = flow(self.tables, table) else {
            return;
        };
        for e in body.chunks_exact(16).take(count) {
            let key = u64::from_be_bytes(e[..8].try_into().unwrap());
            let raw = u64::from_be_bytes(e[8..16].try_into().unwrap());
            let _ = t.import(key, raw, now);
        }
    }

    /// Sends the peer every table entry that changed since the last sync.
    fn sync(&mut self) {
        let tables = self.tables;
        let shadow = self.shadow.get_or_insert_with(|| Shadow::new(tables));
        let mut out: Vec<Vec<u8>> = Vec::new();
        for id in [DIALOGS, REGISTRATIONS, CONNECTIONS, SNAT_FORWARD] {
            let t = flow(tables, id).expect("replicated table");
            let sh = &mut shadow.flows[usize::from(id)];
            let mut batch: Vec<(u64, u64)> = Vec::new();
            t.for_each_slot(|i, k, v| {
                if sh[i] != (k, v) {
                    sh[i] = (k, v);
                    batch.push((k, v));
                }
            });
            for chunk in batch.chunks(PER_DATAGRAM) {
                let mut m = Vec::with_capacity(8 + 16 * chunk.len());
                m.extend_from_slice(MAGIC);
                m.push(SYNC);
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
        tables.snat.for_each_mapping(|i, c, d| {
            let sh = &mut shadow.reverse[i as usize];
            if *sh != (c, d) {
                *sh = (c, d);
                rev.push((i, c, d));
            }
        });
        for chunk in rev.chunks(PER_DATAGRAM) {
            let mut m = Vec::with_capacity(8 + 16 * chunk.len());
            m.extend_from_slice(MAGIC);
            m.push(SYNC);
            m.push(SNAT_REVERSE);
            m.extend_from_slice(&(chunk.len() as u16).to_be_bytes());
            for (p, c, d) in chunk {
                m.extend_from_slice(&p.to_be_bytes());
                m.extend_from_slice(&c.to_be_bytes());
                m.extend_from_slice(&d.to_be_bytes());
            }
            out.push(m);
        }
        for m in out {
            let _ = self.socket.send_to(&m, self.peer.addr);
        }
    }
}
