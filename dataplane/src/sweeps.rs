//! The main lcore's passes over the shared tables: dialogs and registrations whose
//! deadline passed, counted into the header, and live entries for the stats line. Each
//! tick visits a bounded slice of each table (`Sweep`), never a whole table: the main
//! lcore may share a worker's core, and packets wait while it runs.

use runtime::shm::{Header, Shared};
use siplb_core::lb::snat::SnatTable;
use siplb_core::lb::Tables;
use siplb_core::table::{FlowTable, Sweep};
use std::sync::atomic::Ordering;

/// Flow-table buckets (64-byte cache lines) each pass visits per tick; the SNAT pass
/// reads as many bytes (four 16-byte ports a line). The bound: 3 × 128 KiB read per
/// tick, about 6 µs per table on the test machines (`cargo run --release -p bench --bin
/// sweep`: median 5.5 µs per 2048 buckets; the whole default dialog table in one go,
/// as the old once-a-second count did, 1.0 ms). At a 20 ms tick the default tables
/// (2^19 dialog buckets, 2^17 registration buckets) take 5.2 s and 1.3 s per pass; an
/// expiry is counted within two passes of its deadline.
pub const BUCKETS_PER_TICK: usize = 2048;
const SNAT_PORTS_PER_TICK: usize = BUCKETS_PER_TICK * 4;
/// Media bitmap words (64 legs, one 64-byte line each) per tick: 2048 legs, as many
/// lines as the flow-table passes.
const MEDIA_WORDS_PER_TICK: usize = BUCKETS_PER_TICK / 64;

/// The media table's idle sweep: ends mappings both of whose legs idled past their
/// timeout, and counts live legs over each complete pass.
struct MediaSweep {
    cursor: usize,
    words: usize,
    seen: usize,
    live: Option<usize>,
}

pub struct TableSweeps {
    header: &'static Header,
    dialogs: Sweep<'static, FlowTable<'static>>,
    registrations: Sweep<'static, FlowTable<'static>>,
    snat: Sweep<'static, SnatTable<'static>>,
    tables: &'static Tables<'static>,
    media: MediaSweep,
}

/// Live entries per table; `None` until a first pass has ended.
#[derive(Debug, Clone, Copy, Default)]
pub struct Live {
    pub dialogs: Option<usize>,
    pub registrations: Option<usize>,
    pub snat_sessions: Option<usize>,
    pub media_mappings: Option<usize>,
}

impl Live {
    /// Counted now over the whole tables: for the summary at exit, once the workers
    /// stopped.
    pub fn count(tables: &Tables<'_>, now: u32) -> Live {
        Live {
            dialogs: Some(tables.dialogs.count_live(now)),
            registrations: Some(tables.registrations.count_live(now)),
            snat_sessions: Some(tables.snat.count_live(now)),
            media_mappings: Some(tables.media.count_live()),
        }
    }
}

impl TableSweeps {
    /// Counts the expiries of deadlines after `now`.
    pub fn new(shared: &Shared, now: u32) -> Self {
        let t: &'static Tables<'static> = shared.tables;
        Self {
            header: shared.header,
            dialogs: Sweep::new(t.dialogs.flow(), now),
            registrations: Sweep::new(t.registrations.flow(), now),
            snat: Sweep::new(&t.snat, now),
            tables: t,
            media: MediaSweep {
                cursor: 0,
                words: shared.header.media_legs.div_ceil(64) as usize,
                seen: 0,
                live: None,
            },
        }
    }

    /// One tick's share of every pass.
    pub fn tick(&mut self, now: u32) {
        let d = self.dialogs.step(now, BUCKETS_PER_TICK);
        let r = self.registrations.step(now, BUCKETS_PER_TICK);
        self.snat.step(now, SNAT_PORTS_PER_TICK);
        self.media_step(now);
        if d > 0 {
            self.header.dialogs_expired.fetch_add(d, Ordering::Relaxed);
        }
        if r > 0 {
            self.header
                .registrations_expired
                .fetch_add(r, Ordering::Relaxed);
        }
    }

    /// Live entries as the last complete passes counted them.
    pub fn live(&self) -> Live {
        Live {
            dialogs: self.dialogs.live(),
            registrations: self.registrations.live(),
            snat_sessions: self.snat.live(),
            media_mappings: self.media.live,
        }
    }

    fn media_step(&mut self, now: u32) {
        let m = &mut self.media;
        if m.words == 0 {
            return;
        }
        let start = m.cursor;
        let s = self
            .tables
            .media
            .sweep(&mut m.cursor, MEDIA_WORDS_PER_TICK, now);
        m.seen += s.visited.saturating_sub(2 * s.ended);
        if m.cursor <= start {
            // A pass ended: two legs a mapping.
            m.live = Some(m.seen / 2);
            m.seen = 0;
        }
        if s.ended > 0 {
            self.header
                .media_expired
                .fetch_add(s.ended as u64, Ordering::Relaxed);
        }
    }
}
