//! The main lcore's passes over the shared tables: dialogs and registrations whose
//! deadline passed, counted into the header, and live entries for the stats line;
//! dialogs that expired holding a unit of their backend's count give it back. Each
//! tick visits a bounded slice of each table (`Sweep`), never a whole table: the main
//! lcore may share a worker's core, and packets wait while it runs.

use runtime::shm::{Header, Shared};
use siplb_core::lb::snat::SnatTable;
use siplb_core::lb::Tables;
use siplb_core::table::media::MediaTable;
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
/// timeout, and counts the mappings alive (by their client legs) over each complete
/// pass.
struct MediaSweep {
    cursor: usize,
    words: usize,
    seen: usize,
    live: Option<usize>,
}

impl MediaSweep {
    fn new(legs: usize) -> Self {
        Self {
            cursor: 0,
            words: legs.div_ceil(64),
            seen: 0,
            live: None,
        }
    }

    /// One tick's share of the pass over `t`; returns the mappings it ended.
    fn step(&mut self, t: &MediaTable<'_>, now: u32) -> usize {
        if self.words == 0 {
            return 0;
        }
        // A step stops at the table's end, so a pass counts its own words only.
        let budget = MEDIA_WORDS_PER_TICK.min(self.words - self.cursor);
        let s = t.sweep(&mut self.cursor, budget, now);
        self.seen += s.live;
        if self.cursor == 0 {
            // The cursor wrapped: a pass ended.
            self.live = Some(self.seen);
            self.seen = 0;
        }
        s.ended
    }
}

pub struct TableSweeps {
    header: &'static Header,
    dialogs: Sweep<'static, FlowTable<'static>>,
    registrations: Sweep<'static, FlowTable<'static>>,
    snat: Sweep<'static, SnatTable<'static>>,
    tables: &'static Tables<'static>,
    media: MediaSweep,
    /// Next dialog bucket of the pass that gives back the count units of expired
    /// dialogs (`DialogTable::release_expired`).
    release_next: usize,
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
            media: MediaSweep::new(shared.header.media_legs as usize),
            release_next: 0,
        }
    }

    /// One tick's share of every pass.
    pub fn tick(&mut self, now: u32) {
        let d = self.dialogs.step(now, BUCKETS_PER_TICK);
        let r = self.registrations.step(now, BUCKETS_PER_TICK);
        self.snat.step(now, SNAT_PORTS_PER_TICK);
        self.media_step(now);
        self.release_step(now);
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

    /// Gives back the count units of dialogs that expired holding one (a lost BYE,
    /// an INVITE never answered), a tick's share of the table at a time.
    fn release_step(&mut self, now: u32) {
        let t = self.tables;
        let buckets = t.dialogs.flow().buckets();
        let end = buckets.min(self.release_next + BUCKETS_PER_TICK);
        t.dialogs
            .release_expired(self.release_next..end, now, |slot| t.load.give_back(slot));
        self.release_next = if end == buckets { 0 } else { end };
    }

    fn media_step(&mut self, now: u32) {
        let ended = self.media.step(&self.tables.media, now);
        if ended > 0 {
            self.header
                .media_expired
                .fetch_add(ended as u64, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use siplb_core::table::media::{Announce, MediaMemory, Placement, PoolSpec, Side, MAX_STREAMS};
    use std::net::{Ipv4Addr, SocketAddrV4};

    /// Mappings idle past their timeout end in the sweep, counted; one kept busy by
    /// its RTP stays; the live count is that of the last complete pass.
    #[test]
    fn the_media_sweep_ends_idle_mappings_and_counts_the_live_ones() {
        let vip = Ipv4Addr::new(198, 18, 0, 2);
        let snat = Ipv4Addr::new(198, 18, 1, 1);
        // 5,000 pairs each: more legs than one tick visits, so a pass takes ticks.
        let mem = MediaMemory::new(&[
            PoolSpec {
                addr: vip,
                ports: 40000..=49999,
            },
            PoolSpec {
                addr: snat,
                ports: 40000..=49999,
            },
        ])
        .unwrap();
        let t = mem.table();
        let place = Placement {
            farm: 0,
            client_pool: t.pool(vip, 40000).unwrap(),
            backend_pool: t.pool(snat, 40000).unwrap(),
            timeout: 60,
        };
        let phone = |i: u16| SocketAddrV4::new(Ipv4Addr::new(198, 18, 0, 10), 6000 + 2 * i);
        let mut client_legs = Vec::new();
        for i in 0..3u16 {
            let a = Announce {
                call: 100 + u64::from(i),
                stream: (usize::from(i) % MAX_STREAMS) as u8,
                from: Side::Client,
                rtp: phone(i),
                rtcp: SocketAddrV4::new(*phone(i).ip(), phone(i).port() + 1),
            };
            t.announce(&place, &a, 1000).unwrap();
            let b = Announce {
                from: Side::Backend,
                rtp: SocketAddrV4::new(Ipv4Addr::new(198, 18, 1, 11), 7000),
                rtcp: SocketAddrV4::new(Ipv4Addr::new(198, 18, 1, 11), 7001),
                ..a
            };
            let m = t.announce(&place, &b, 1000).unwrap();
            client_legs.push(SocketAddrV4::new(m.addr, m.port));
        }
        let mut sweep = MediaSweep::new(t.legs());
        let pass = |sweep: &mut MediaSweep, now: u32| {
            let (mut ended, mut ticks) = (0, 0);
            loop {
                ended += sweep.step(&t, now);
                ticks += 1;
                if sweep.cursor == 0 {
                    return (ended, ticks);
                }
            }
        };
        // Within the timeout: nothing ends; a pass spans several ticks.
        let (ended, ticks) = pass(&mut sweep, 1030);
        assert_eq!(ended, 0);
        assert!(ticks > 1, "{ticks} ticks");
        assert_eq!(sweep.live, Some(3));
        // Mapping 0 carries RTP at 1050; at 1100 the other two idled 100 s > 60 s.
        t.forward(client_legs[0], phone(0), 172, 1050).unwrap();
        let (ended, _) = pass(&mut sweep, 1100);
        assert_eq!(ended, 2);
        assert_eq!(sweep.live, Some(1));
        assert_eq!(t.count_live(), 1);
        // Then it idles too.
        let (ended, _) = pass(&mut sweep, 1200);
        assert_eq!((ended, sweep.live, t.count_live()), (1, Some(0), 0));
    }
}
