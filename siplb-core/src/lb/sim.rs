//! An in-process balancer: the real `process` over tables in plain memory, for unit
//! tests and the per-packet benchmark. Frames are built here byte by byte (no I/O).

use super::counters::{WorkerCounters, NO_FARM};
use super::failover::{HeldSlot, HeldStore, Resends};
use super::load::{BackendLoad, LoadTable};
use super::neighbour::{NeighbourSlot, NeighbourTable};
use super::reassembly::Reassembler;
use super::services::{Services, SlotRegistry};
use super::snat::{SnatAllocator, SnatSlot, SnatTable, PORTS_PER_ADDRESS};
use super::timing::{RequestTimes, REQUEST_TIME_SLOTS};
use super::{process_in, ArpRequests, Tables, Verdict, WorkerCtx};
use crate::alg::Edits;
use crate::config::{Config, MAX_BACKENDS};
use crate::sip::Limits;
use crate::table::connection::ConnectionTable;
use crate::table::dialog::DialogTable;
use crate::table::dirty::DirtyMarks;
use crate::table::flow::{FlowTable, Slot};
use crate::table::media::MediaMemory;
use crate::table::registration::RegistrationTable;
use crate::table::source_ring::SourceRing;
use crate::table::tcp_seq::{SeqSlot, SeqTable};
use crate::wire::ethernet::{EthernetFrame, ETHERTYPE_IPV4};
use crate::wire::ipv4;
use crate::wire::udp::{self, UdpPacket};
use crate::wire::MacAddr;
use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::atomic::AtomicU64;

/// The memory behind a `Tables`.
pub struct SimMemory {
    dialogs: Vec<Slot>,
    rates: Vec<Slot>,
    connections: Vec<Slot>,
    registrations: Vec<Slot>,
    snat_forward: Vec<Slot>,
    snat_reverse: Vec<SnatSlot>,
    neighbours: Vec<NeighbourSlot>,
    media: MediaMemory,
    tcp_seq: Vec<SeqSlot>,
    request_times: Vec<AtomicU64>,
    /// Dirty marks of the replicated tables, as the dataplane keeps them (dialogs,
    /// registrations, connections, SNAT forward, SNAT reverse, media legs).
    dirty: [Vec<AtomicU64>; 6],
    load: Vec<BackendLoad>,
    /// The DNSBL's new-sources ring (`SOURCE_RING_CELLS` cells).
    pub new_sources: Vec<AtomicU64>,
    held: Vec<HeldSlot>,
}

/// Cells of the simulation's new-sources ring.
pub const SOURCE_RING_CELLS: usize = 64;

fn marks_for(slots: usize) -> Vec<AtomicU64> {
    (0..DirtyMarks::words_for(slots))
        .map(|_| AtomicU64::new(0))
        .collect()
}

impl SimMemory {
    pub fn new(dialog_slots: usize) -> Self {
        Self::with_snat(dialog_slots, 1 << 16, SNAT_ADDRESS_SLOTS)
    }

    /// With a SNAT forward table of `forward_slots` and a reverse table for
    /// `address_slots` SNAT address slots.
    pub fn with_snat(dialog_slots: usize, forward_slots: usize, address_slots: usize) -> Self {
        let slots = |n: usize| (0..n).map(|_| Slot::default()).collect::<Vec<_>>();
        let media = MediaMemory::new(&[]).expect("no media pools");
        Self {
            dirty: [
                marks_for(dialog_slots),
                marks_for(1 << 16),
                marks_for(1 << 14),
                marks_for(forward_slots),
                marks_for(address_slots * PORTS_PER_ADDRESS),
                marks_for(media.table().legs()),
            ],
            dialogs: slots(dialog_slots),
            rates: slots(1 << 12),
            connections: slots(1 << 14),
            registrations: slots(1 << 16),
            snat_forward: slots(forward_slots),
            snat_reverse: (0..address_slots * PORTS_PER_ADDRESS)
                .map(|_| SnatSlot::default())
                .collect(),
            neighbours: (0..4096).map(|_| NeighbourSlot::default()).collect(),
            media,
            tcp_seq: (0..1 << 14).map(|_| SeqSlot::default()).collect(),
            request_times: (0..REQUEST_TIME_SLOTS).map(|_| AtomicU64::new(0)).collect(),
            load: (0..MAX_BACKENDS).map(|_| BackendLoad::default()).collect(),
            new_sources: {
                let words = (0..SourceRing::words_for(SOURCE_RING_CELLS))
                    .map(|_| AtomicU64::new(0))
                    .collect::<Vec<_>>();
                SourceRing::new(&words).init();
                words
            },
            held: (0..SIM_HELD_SLOTS).map(|_| HeldSlot::default()).collect(),
        }
    }

    /// The media table's memory (its size, for benchmarks).
    pub fn media_memory(&self) -> &MediaMemory {
        &self.media
    }

    /// A fresh rates table of `slots` slots (benchmarks that keep more entries per
    /// source at the same load).
    pub fn resize_rates(&mut self, slots: usize) {
        self.rates = (0..slots).map(|_| Slot::default()).collect();
    }

    /// With the media pools of the configuration `cfg_toml` (farms relaying media).
    pub fn with_media(mut self, cfg_toml: &str) -> Self {
        let cfg = Config::parse(cfg_toml, Path::new("sim.toml")).expect("simulation config");
        self.media = MediaMemory::new(&cfg.media_pools()).expect("media pools");
        self.dirty[5] = marks_for(self.media.table().legs());
        self
    }

    pub fn tables(&self) -> Tables<'_> {
        let marks = |i: usize| DirtyMarks::new(&self.dirty[i]);
        Tables {
            dialogs: DialogTable::new(FlowTable::new(&self.dialogs, 16).with_dirty(marks(0))),
            rates: FlowTable::new(&self.rates, 16),
            connections: ConnectionTable::new(
                FlowTable::new(&self.connections, 16).with_dirty(marks(2)),
            ),
            registrations: RegistrationTable::new(
                FlowTable::new(&self.registrations, 16).with_dirty(marks(1)),
            ),
            neighbours: NeighbourTable::new(&self.neighbours),
            snat: SnatTable::new(
                FlowTable::new(&self.snat_forward, 16).with_dirty(marks(3)),
                &self.snat_reverse,
            )
            .with_dirty(marks(4)),
            media: self.media.table().with_dirty(marks(5)),
            tcp_seq: SeqTable::new(&self.tcp_seq, 16),
            request_times: RequestTimes::new(&self.request_times),
            load: LoadTable::new(&self.load),
            new_sources: SourceRing::new(&self.new_sources),
            held: HeldStore::new(&self.held),
        }
    }
}

/// Held-request slots of `SimMemory::new` (1 MiB).
pub const SIM_HELD_SLOTS: usize = 256;

/// SNAT address slots of `SimMemory::new`: the ports' own and a few pool addresses.
pub const SNAT_ADDRESS_SLOTS: usize = 4;

/// MAC address of port `i` in the simulation.
pub fn port_mac(i: u8) -> MacAddr {
    MacAddr([0x02, 0x5b, 0, 0, 0, i])
}

/// MAC address given to a simulated host.
pub fn host_mac(ip: Ipv4Addr) -> MacAddr {
    let o = ip.octets();
    MacAddr([0x02, 0x48, o[0], o[1], o[2], o[3]])
}

pub fn services(cfg_toml: &str) -> Services {
    let cfg = Config::parse(cfg_toml, Path::new("sim.toml")).expect("simulation config");
    let macs: Vec<MacAddr> = (0..cfg.ports.len()).map(|i| port_mac(i as u8)).collect();
    let mut registry =
        SlotRegistry::new(SNAT_ADDRESS_SLOTS.max(1 + cfg.snat_pool_addresses().len()));
    Services::build(&cfg, &macs, &HashMap::new(), &mut registry).expect("services")
}

pub fn worker(counters: &WorkerCounters) -> WorkerCtx<'_> {
    WorkerCtx {
        counters,
        limits: Limits::default(),
        snat_ports: SnatAllocator::for_worker(0, 1),
        arp_requests: ArpRequests::default(),
        reassembly: Reassembler::new(8, 5),
        edits: Edits::new(),
        out_len: 0,
        farm: NO_FARM,
        now_us: 0,
        now_ms: 0,
        resends: Resends::default(),
        resend: None,
        held_cursor: 0,
    }
}

/// An Ethernet + IPv4 + UDP frame from `src` to `dst` (MACs from the addresses; the
/// destination MAC is `to_mac`), with a correct UDP checksum.
pub fn udp_frame(
    to_mac: MacAddr,
    src: (Ipv4Addr, u16),
    dst: (Ipv4Addr, u16),
    payload: &[u8],
) -> Vec<u8> {
    let mut f = vec![0u8; 14 + 20 + 8 + payload.len()];
    {
        let mut eth = EthernetFrame::new_unchecked(&mut f[..]);
        eth.set_dst(to_mac);
        eth.set_src(host_mac(src.0));
        eth.set_ethertype(ETHERTYPE_IPV4);
    }
    ipv4::write_header(
        &mut f[14..34],
        (20 + 8 + payload.len()) as u16,
        0x4242,
        false,
        0,
        64,
        ipv4::PROTO_UDP,
        src.0,
        dst.0,
    );
    udp::write_header(&mut f[34..42], src.1, dst.1, payload.len());
    f[42..].copy_from_slice(payload);
    UdpPacket::new_unchecked(&mut f[34..]).fill_checksum(src.0, dst.0);
    f
}

/// Room after a frame for the SIP ALG to grow it, as an mbuf's tailroom gives.
pub const ROOM: usize = 1024;

/// Runs one frame through `process_in` (with `ROOM` bytes to grow), and a completed
/// reassembly through it again, as the dataplane worker does. Returns the verdict and
/// leaves in `frame` the frame as it would leave.
pub fn run(
    svc: &Services,
    t: &Tables<'_>,
    w: &mut WorkerCtx<'_>,
    frame: &mut Vec<u8>,
    in_port: u8,
    now: u32,
) -> Verdict {
    let len = frame.len();
    frame.resize(len + ROOM, 0);
    let v = process_in(svc, t, w, frame, len, in_port, now);
    frame.truncate(w.out_len);
    if v != Verdict::Reassembled {
        return v;
    }
    let (mut buf, len) = w.reassembly.take_frame();
    let v = process_in(svc, t, w, &mut buf, len, in_port, now);
    *frame = buf[..w.out_len].to_vec();
    w.reassembly.put_back(buf);
    v
}

/// An Ethernet + IPv4 + TCP frame with `flags` and `payload`, correct checksums.
pub fn tcp_frame(
    to_mac: MacAddr,
    src: (Ipv4Addr, u16),
    dst: (Ipv4Addr, u16),
    flags: u8,
    payload: &[u8],
) -> Vec<u8> {
    use crate::wire::tcp::{self, TcpSegment};
    let mut f = vec![0u8; 14 + 20 + 20 + payload.len()];
    {
        let mut eth = EthernetFrame::new_unchecked(&mut f[..]);
        eth.set_dst(to_mac);
        eth.set_src(host_mac(src.0));
        eth.set_ethertype(ETHERTYPE_IPV4);
    }
    ipv4::write_header(
        &mut f[14..34],
        (20 + 20 + payload.len()) as u16,
        0x4243,
        false,
        0,
        64,
        ipv4::PROTO_TCP,
        src.0,
        dst.0,
    );
    tcp::write_header(&mut f[34..54], src.1, dst.1, 1000, 0, flags);
    f[54..].copy_from_slice(payload);
    TcpSegment::new_unchecked(&mut f[34..]).fill_checksum(src.0, dst.0);
    f
}
