//! The shared-memory layout of a running dataplane: a header, per-worker counters and
//! the tables, each in a named memzone. The primary creates them; secondaries (the
//! control plane) attach by name and see the same memory at the same addresses.

use crate::clock::Clock;
use crate::names::{
    MZ_BACKEND_LOAD, MZ_CONNECTIONS, MZ_COUNTERS, MZ_DIALOGS, MZ_DIRECTORY, MZ_DIRTY, MZ_HEADER,
    MZ_HELD, MZ_MEDIA, MZ_NEIGHBOURS, MZ_NEW_SOURCES, MZ_RATES, MZ_REGISTRATIONS, MZ_REQUEST_TIMES,
    MZ_SNAT_FWD, MZ_SNAT_REV, MZ_TCP_SEQ,
};
use anyhow::{bail, Context, Result};
use dpdk::memzone::Memzone;
use siplb_core::config::{Config, MAX_BACKENDS, MAX_WORKERS};
use siplb_core::lb::counters::WorkerCounters;
use siplb_core::lb::failover::{HeldSlot, HeldStore};
use siplb_core::lb::load::{BackendLoad, LoadTable};
use siplb_core::lb::neighbour::{NeighbourSlot, NeighbourTable};
use siplb_core::lb::snat::{SnatSlot, SnatTable, PORTS_PER_ADDRESS};
use siplb_core::lb::timing::{request_time_slots, RequestTimes};
use siplb_core::lb::Tables;
use siplb_core::table::connection::ConnectionTable;
use siplb_core::table::dialog::DialogTable;
use siplb_core::table::dirty::DirtyMarks;
use siplb_core::table::flow::{FlowTable, Slot};
use siplb_core::table::media::{self, Leg, LegInfo, MediaMemory, MediaTable, Pool};
use siplb_core::table::registration::RegistrationTable;
use siplb_core::table::source_ring::SourceRing;
use siplb_core::table::tcp_seq::{SeqSlot, SeqTable};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

const MAGIC: u64 = u64::from_be_bytes(*b"SIPLB\x00\x00\x01");
/// Bumped whenever a shared structure's layout changes, so a mismatched control plane
/// refuses to attach instead of misreading memory.
const LAYOUT_VERSION: u32 = 19;
const NEIGHBOUR_SLOTS: usize = 4096;
/// Cells of the DNSBL's new-sources ring: a burst of new sources the control plane
/// takes in well under a second; more are counted (`dnsbl_ring_full`) and retried.
const NEW_SOURCE_CELLS: usize = 4096;
/// Probe bound of the flow tables (buckets of 4 slots).
const MAX_PROBE: usize = 16;

#[repr(C)]
pub struct Header {
    /// Written last by the primary (Release): a secondary that reads it (Acquire) sees
    /// every other field initialised.
    magic: AtomicU64,
    layout_version: u32,
    pub workers: u32,
    pub dialog_slots: u64,
    pub registration_slots: u64,
    pub snat_slots: u64,
    /// SNAT address slots of the reverse table: the ports' own addresses and every
    /// pool address of the configuration the dataplane started with.
    pub snat_address_slots: u64,
    pub connection_slots: u64,
    pub rate_slots: u64,
    pub clock: Clock,
    /// PID of the dataplane process.
    pub pid: AtomicU32,
    /// Bumped by the dataplane's main loop about every 100 ms.
    pub heartbeat: AtomicU64,
    /// HA: `Clock::millis` when the control plane's HA thread last sent its peer a
    /// heartbeat. The dataplane stands down when it goes stale (`housekeeping.rs`).
    pub control_beat: AtomicU64,
    /// HA: times the dataplane stood down on its own because `control_beat` went
    /// stale; the HA thread reads it to learn that its unit is no longer active.
    pub stood_down: AtomicU64,
    /// Counted by the main lcore's table sweeps (`sweeps.rs`): entries whose deadline
    /// passed.
    pub dialogs_expired: AtomicU64,
    pub registrations_expired: AtomicU64,
    /// The media table (`MZ_MEDIA`): pools of the start-up configuration, their legs,
    /// and the dialog index's slots.
    pub media_pools: u64,
    pub media_legs: u64,
    pub media_index_slots: u64,
    /// Media mappings ended idle by the main lcore's sweep.
    pub media_expired: AtomicU64,
    /// Slots of `MZ_REQUEST_TIMES` (`lb::timing::request_time_slots`).
    pub request_time_slots: u64,
    /// Slots of `MZ_HELD` (`[tables] held_requests`, a power of two).
    pub held_slots: u64,
}

/// Byte offsets in `MZ_MEDIA` of the pools, legs, leg infos, bitmap and index, and
/// the zone's length (each part 64-byte aligned).
fn media_offsets(pools: usize, legs: usize, index: usize) -> [usize; 6] {
    let sizes = [
        pools * std::mem::size_of::<Pool>(),
        legs * std::mem::size_of::<Leg>(),
        legs * std::mem::size_of::<LegInfo>(),
        legs.div_ceil(64) * 8,
        index * std::mem::size_of::<Slot>(),
    ];
    let mut out = [0; 6];
    for (i, s) in sizes.iter().enumerate() {
        out[i + 1] = (out[i] + s).next_multiple_of(64);
    }
    out
}

/// Word offsets in `MZ_DIRTY` of the dirty marks of the replicated tables (dialogs,
/// registrations, connections, SNAT forward, SNAT reverse, media legs), and the
/// zone's length in words.
fn dirty_offsets(h: &Header) -> [usize; 7] {
    let slots = [
        h.dialog_slots as usize,
        h.registration_slots as usize,
        h.connection_slots as usize,
        h.snat_slots as usize,
        h.snat_address_slots as usize * PORTS_PER_ADDRESS,
        h.media_legs as usize,
    ];
    let mut out = [0; 7];
    for (i, n) in slots.iter().enumerate() {
        out[i + 1] = out[i] + DirtyMarks::words_for(*n);
    }
    out
}

/// Slots for `entries` live entries at a load factor of at most 1/2, a power of two.
pub fn slots_for(entries: u64) -> u64 {
    (entries * 2).next_power_of_two()
}

pub struct Shared {
    pub header: &'static Header,
    pub counters: &'static [WorkerCounters],
    pub tables: &'static Tables<'static>,
    /// Which backend each counter/table slot stands for.
    pub directory: &'static [DirEntry],
}

/// The identity of one backend slot (`SlotRegistry`): written once by the dataplane
/// when the slot is assigned, never changed while it runs, then published by `used`.
#[repr(C, align(64))]
pub struct DirEntry {
    used: AtomicU32,
    identity: std::cell::UnsafeCell<SlotIdentity>,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct SlotIdentity {
    addr: u32,
    port: u16,
    farm_len: u8,
    farm: [u8; 41],
}

// SAFETY: `identity` is written once before `used` is set (Release) and only read after
// `used` is seen set (Acquire), so no access races.
unsafe impl Sync for DirEntry {}

impl DirEntry {
    /// (farm, address, port) of the slot, once assigned.
    pub fn get(&self) -> Option<(String, std::net::Ipv4Addr, u16)> {
        if self.used.load(Ordering::Acquire) == 0 {
            return None;
        }
        // SAFETY: published (see the Sync impl).
        let id = unsafe { *self.identity.get() };
        let farm =
            String::from_utf8_lossy(&id.farm[..usize::from(id.farm_len).min(41)]).into_owned();
        Some((farm, id.addr.into(), id.port))
    }

    /// Records the slot's identity (the dataplane's main lcore, once per slot).
    pub fn set(&self, farm: &str, addr: std::net::Ipv4Addr, port: u16) {
        if self.used.load(Ordering::Acquire) != 0 {
            return;
        }
        let mut id = SlotIdentity {
            addr: addr.into(),
            port,
            farm_len: farm.len().min(41) as u8,
            farm: [0; 41],
        };
        id.farm[..usize::from(id.farm_len)]
            .copy_from_slice(&farm.as_bytes()[..usize::from(id.farm_len)]);
        // SAFETY: not yet published; only the dataplane's main lcore writes.
        unsafe { *self.identity.get() = id };
        self.used.store(1, Ordering::Release);
    }
}

impl Shared {
    /// Creates the shared memory of a new dataplane (primary).
    pub fn create(cfg: &Config, clock: Clock) -> Result<Shared> {
        let workers = usize::from(cfg.dataplane.workers);
        let hdr = Memzone::reserve(MZ_HEADER, std::mem::size_of::<Header>(), 64).context(
            "reserving the shared header (is another dataplane running with this --file-prefix?)",
        )?;
        let dialog_slots = slots_for(cfg.tables.dialogs);
        let registration_slots = slots_for(cfg.tables.registrations);
        let snat_slots = slots_for(cfg.tables.snat_sessions);
        let snat_address_slots = 1 + cfg.snat_pool_addresses().len() as u64;
        let connection_slots = slots_for(cfg.tables.tcp_connections);
        let rate_slots = slots_for(cfg.tables.rate_sources);
        let (pools, media_legs) = media::layout(&cfg.media_pools()).context(
            "laying out the farms' media_ports (the configuration check should have refused this)",
        )?;
        let media_index_slots = MediaMemory::index_slots(media_legs);
        let h = hdr.addr() as *mut Header;
        // SAFETY: a fresh zero-filled zone of the right size and alignment (all-zero is a
        // valid Header) that no reference points into yet. Secondaries may look the zone
        // up at once, so they check `magic`, which is published last.
        unsafe {
            (*h).layout_version = LAYOUT_VERSION;
            (*h).workers = workers as u32;
            (*h).dialog_slots = dialog_slots;
            (*h).registration_slots = registration_slots;
            (*h).snat_slots = snat_slots;
            (*h).snat_address_slots = snat_address_slots;
            (*h).connection_slots = connection_slots;
            (*h).rate_slots = rate_slots;
            (*h).media_pools = pools.len() as u64;
            (*h).media_legs = media_legs as u64;
            (*h).media_index_slots = media_index_slots as u64;
            (*h).clock = clock;
            (*h).request_time_slots = request_time_slots(cfg.tables.dialogs) as u64;
            (*h).held_slots = cfg.tables.held_requests.next_power_of_two();
        }
        // SAFETY: initialised above; from here on only atomics are written.
        let header: &'static Header = unsafe { &*h };
        header.pid.store(std::process::id(), Ordering::Relaxed);
        let reserve = |name: &str, bytes: usize| {
            Memzone::reserve(name, bytes, 64).with_context(|| {
                format!(
                    "reserving {} MiB of hugepage memory for {name}: reserve more hugepages or lower [tables] capacities",
                    bytes.div_ceil(1 << 20)
                )
            })
        };
        let mz_c = reserve(MZ_COUNTERS, workers * std::mem::size_of::<WorkerCounters>())?;
        let mz_d = reserve(
            MZ_DIALOGS,
            dialog_slots as usize * std::mem::size_of::<Slot>(),
        )?;
        let mz_r = reserve(
            MZ_REGISTRATIONS,
            registration_slots as usize * std::mem::size_of::<Slot>(),
        )?;
        let mz_sf = reserve(
            MZ_SNAT_FWD,
            snat_slots as usize * std::mem::size_of::<Slot>(),
        )?;
        let mz_sr = reserve(
            MZ_SNAT_REV,
            snat_address_slots as usize * PORTS_PER_ADDRESS * std::mem::size_of::<SnatSlot>(),
        )?;
        let mz_n = reserve(
            MZ_NEIGHBOURS,
            NEIGHBOUR_SLOTS * std::mem::size_of::<NeighbourSlot>(),
        )?;
        let mz_dir = reserve(MZ_DIRECTORY, MAX_BACKENDS * std::mem::size_of::<DirEntry>())?;
        let mz_conn = reserve(
            MZ_CONNECTIONS,
            connection_slots as usize * std::mem::size_of::<Slot>(),
        )?;
        let mz_rate = reserve(MZ_RATES, rate_slots as usize * std::mem::size_of::<Slot>())?;
        let off = media_offsets(pools.len(), media_legs, media_index_slots);
        // At least a line: a zero-length reservation would take the largest free block.
        let mz_media = reserve(MZ_MEDIA, off[5].max(64))?;
        for (i, pool) in pools.into_iter().enumerate() {
            // SAFETY: the zone holds `off[1] - off[0]` bytes for the pools at offset 0,
            // 64-byte aligned; nothing reads them before `magic` is published.
            unsafe { std::ptr::write((mz_media.addr() as *mut Pool).add(i), pool) };
        }
        // TCP sequence corrections: one slot per connection slot.
        let mz_seq = reserve(
            MZ_TCP_SEQ,
            connection_slots as usize * std::mem::size_of::<SeqSlot>(),
        )?;
        let mz_times = reserve(
            MZ_REQUEST_TIMES,
            header.request_time_slots as usize * std::mem::size_of::<AtomicU64>(),
        )?;
        let mz_dirty = reserve(MZ_DIRTY, (dirty_offsets(header)[6] * 8).max(64))?;
        let mz_load = reserve(
            MZ_BACKEND_LOAD,
            MAX_BACKENDS * std::mem::size_of::<BackendLoad>(),
        )?;
        let mz_new = reserve(
            MZ_NEW_SOURCES,
            SourceRing::words_for(NEW_SOURCE_CELLS) * std::mem::size_of::<AtomicU64>(),
        )?;
        let mz_held = reserve(
            MZ_HELD,
            header.held_slots as usize * std::mem::size_of::<HeldSlot>(),
        )?;
        let shared = Self::view(
            header,
            [
                mz_c, mz_d, mz_r, mz_sf, mz_sr, mz_n, mz_dir, mz_conn, mz_rate, mz_media, mz_seq,
                mz_times, mz_dirty, mz_load, mz_new, mz_held,
            ],
        )?;
        // Before `magic`: a secondary never sees the ring uninitialised.
        shared.tables.new_sources.init();
        header.magic.store(MAGIC, Ordering::Release);
        Ok(shared)
    }

    /// Attaches to the shared memory of a running dataplane (secondary).
    pub fn attach() -> Result<Shared> {
        let hdr = Memzone::lookup(MZ_HEADER)
            .context("no siplb dataplane found with this --file-prefix")?;
        // SAFETY: the zone holds a Header (checked by magic and version below).
        let header: &'static Header = unsafe { &*(hdr.addr() as *const Header) };
        if header.magic.load(Ordering::Acquire) != MAGIC || header.layout_version != LAYOUT_VERSION
        {
            bail!(
                "the dataplane's shared memory has layout {} (this program expects {LAYOUT_VERSION}): use the siplb binaries of the same build",
                header.layout_version
            );
        }
        let look = |name: &str| Memzone::lookup(name).with_context(|| format!("looking up {name}"));
        Self::view(
            header,
            [
                look(MZ_COUNTERS)?,
                look(MZ_DIALOGS)?,
                look(MZ_REGISTRATIONS)?,
                look(MZ_SNAT_FWD)?,
                look(MZ_SNAT_REV)?,
                look(MZ_NEIGHBOURS)?,
                look(MZ_DIRECTORY)?,
                look(MZ_CONNECTIONS)?,
                look(MZ_RATES)?,
                look(MZ_MEDIA)?,
                look(MZ_TCP_SEQ)?,
                look(MZ_REQUEST_TIMES)?,
                look(MZ_DIRTY)?,
                look(MZ_BACKEND_LOAD)?,
                look(MZ_NEW_SOURCES)?,
                look(MZ_HELD)?,
            ],
        )
    }

    fn view(header: &'static Header, zones: [Memzone; 16]) -> Result<Shared> {
        let [c, d, r, sf, sr, n, dir, conn, rate, m, seq, times, dirty, load, new, held] = zones;
        let dw = dirty_offsets(header);
        let (pools, legs, index) = (
            header.media_pools as usize,
            header.media_legs as usize,
            header.media_index_slots as usize,
        );
        let off = media_offsets(pools, legs, index);
        let workers = header.workers as usize;
        if workers == 0 || workers > MAX_WORKERS {
            bail!("corrupt shared header: {workers} workers");
        }
        // SAFETY: each zone was reserved with exactly these element types and counts
        // (zero-filled, which is the valid empty state of every one of them: atomics
        // and counters), aligned to 64 bytes; the memory lives as long as the process.
        // The dirty marks are consecutive runs of words (`dirty_offsets`).
        let tables = unsafe {
            let marks =
                |i: usize| DirtyMarks::new(dirty.slice::<AtomicU64>(dw[i] * 8, dw[i + 1] - dw[i]));
            Tables {
                dialogs: DialogTable::new(
                    FlowTable::new(d.slice::<Slot>(0, header.dialog_slots as usize), MAX_PROBE)
                        .with_dirty(marks(0)),
                ),
                rates: FlowTable::new(rate.slice::<Slot>(0, header.rate_slots as usize), MAX_PROBE),
                connections: ConnectionTable::new(
                    FlowTable::new(
                        conn.slice::<Slot>(0, header.connection_slots as usize),
                        MAX_PROBE,
                    )
                    .with_dirty(marks(2)),
                ),
                registrations: RegistrationTable::new(
                    FlowTable::new(
                        r.slice::<Slot>(0, header.registration_slots as usize),
                        MAX_PROBE,
                    )
                    .with_dirty(marks(1)),
                ),
                neighbours: NeighbourTable::new(n.slice::<NeighbourSlot>(0, NEIGHBOUR_SLOTS)),
                snat: SnatTable::new(
                    FlowTable::new(sf.slice::<Slot>(0, header.snat_slots as usize), MAX_PROBE)
                        .with_dirty(marks(3)),
                    sr.slice::<SnatSlot>(0, header.snat_address_slots as usize * PORTS_PER_ADDRESS),
                )
                .with_dirty(marks(4)),
                // Pools were written by the primary before publication; legs, infos,
                // bitmap and index are atomics, zero-filled when free.
                media: MediaTable::new(
                    m.slice::<Pool>(off[0], pools),
                    m.slice::<Leg>(off[1], legs),
                    m.slice::<LegInfo>(off[2], legs),
                    m.slice::<AtomicU64>(off[3], legs.div_ceil(64)),
                    m.slice::<Slot>(off[4], index),
                )
                .with_dirty(marks(5)),
                tcp_seq: SeqTable::new(
                    seq.slice::<SeqSlot>(0, header.connection_slots as usize),
                    MAX_PROBE,
                ),
                request_times: RequestTimes::new(
                    times.slice::<AtomicU64>(0, header.request_time_slots as usize),
                ),
                load: LoadTable::new(load.slice::<BackendLoad>(0, MAX_BACKENDS)),
                // Initialised by the primary before publication (`create`).
                new_sources: SourceRing::new(
                    new.slice::<AtomicU64>(0, SourceRing::words_for(NEW_SOURCE_CELLS)),
                ),
                held: HeldStore::new(held.slice::<HeldSlot>(0, header.held_slots as usize)),
            }
        };
        // SAFETY: as above, for the counters.
        let counters = unsafe { c.slice::<WorkerCounters>(0, workers) };
        // SAFETY: as above; all-zero DirEntry values are unused slots.
        let directory = unsafe { dir.slice::<DirEntry>(0, MAX_BACKENDS) };
        Ok(Shared {
            header,
            counters,
            tables: Box::leak(Box::new(tables)),
            directory,
        })
    }
}
