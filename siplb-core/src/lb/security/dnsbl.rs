//! The dataplane's side of the DNSBL lookups (`[security] dnsbl`): the control plane
//! resolves, the workers only mark and look up.
//!
//! New work is what admission meters: a request of no known dialog, a REGISTER, a TCP
//! SYN. Each source that brings new work has a `Kind::Dnsbl` mark in the rates table: while
//! none exists, the first worker to create one (pending, `PENDING_S`) pushes the
//! source onto the new-sources ring (`table::source_ring`) for the control plane; its
//! verdict replaces the mark (clean or listed, for the answer's TTL) and a listed
//! source is also banned (reason `dnsbl`). So a source costs one ring push and one
//! lookup per verdict's lifetime, and new work one read-only lookup while the mark
//! lives. A pending mark that outlives `PENDING_S` (a stopped control plane, a queue
//! that was full) lets the next request push the source again. With `hold`, new work
//! from a pending source is dropped until the verdict; sources that hold a dialog or
//! registration (trusted) and messages of admitted dialogs never wait.

use super::limits::{self, BanReason, Kind};
use super::Policy;
use crate::config::{DnsblPending, SecurityConfig};
use crate::lb::counters::{DropReason, WorkerCounters};
use crate::table::flow::{Entry, FlowTable, TableFull};
use crate::table::source_ring::SourceRing;
use std::cell::Cell;
use std::net::Ipv4Addr;

/// How long a source waits for its verdict before its next request asks again.
pub const PENDING_S: u32 = 10;

const PENDING: u32 = 1;
const CLEAN: u32 = 2;
const LISTED: u32 = 3;

/// What the marks say about a source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mark {
    /// Judged (clean, or listed and banned or unbanned by hand).
    Judged,
    /// Its lookup is pending.
    Pending,
    /// Just marked pending and pushed onto the ring.
    Noted,
    /// Just seen, but the ring was full: the mark was taken back, the next request
    /// tries again.
    RingFull,
}

/// What the dataplane does about DNSBL lookups (`Policy::dnsbl`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Lookups {
    #[default]
    Off,
    /// New sources are looked up; their work passes meanwhile.
    Admit,
    /// New work of a source waits for its verdict.
    Hold,
}

impl Lookups {
    pub fn of(cfg: &SecurityConfig) -> Lookups {
        match (cfg.dnsbl.is_empty(), cfg.dnsbl_pending) {
            (true, _) => Lookups::Off,
            (false, DnsblPending::Admit) => Lookups::Admit,
            (false, DnsblPending::Hold) => Lookups::Hold,
        }
    }
}

impl Policy {
    /// New work from `src` (after its bucket): has the DNSBL judged the source? A new
    /// source is handed to the control plane; with `hold`, a source not yet judged is
    /// refused unless it holds a dialog or registration.
    #[inline]
    pub fn admit_new_source(
        &self,
        rates: &FlowTable<'_>,
        ring: &SourceRing<'_>,
        c: &WorkerCounters,
        src: Ipv4Addr,
        now: u32,
    ) -> Result<(), DropReason> {
        if self.dnsbl == Lookups::Off {
            return Ok(());
        }
        let waiting = match note(rates, ring, src, now) {
            Ok(Mark::Judged) => false,
            Ok(Mark::Pending) => true,
            Ok(Mark::Noted) => {
                c.dnsbl_noted.inc();
                true
            }
            Ok(Mark::RingFull) => {
                c.dnsbl_ring_full.inc();
                true
            }
            // Unjudged but unmarkable: refusing would lock new sources out for as
            // long as the table stays full.
            Err(_) => {
                c.rate_table_full.inc();
                false
            }
        };
        if waiting && self.dnsbl == Lookups::Hold && !limits::trusted(rates, src, now) {
            return Err(DropReason::DnsblPending);
        }
        Ok(())
    }
}

/// Looks `src`'s mark up, marking it pending and pushing it onto `ring` when it has
/// none.
#[inline]
pub fn note(
    rates: &FlowTable<'_>,
    ring: &SourceRing<'_>,
    src: Ipv4Addr,
    now: u32,
) -> Result<Mark, TableFull> {
    let k = limits::key(src, Kind::Dnsbl, 0);
    if let Some(e) = rates.lookup(k, now) {
        return Ok(if e.payload == PENDING {
            Mark::Pending
        } else {
            Mark::Judged
        });
    }
    let created = Cell::new(false);
    let mark = rates.upsert(k, now, |old| {
        created.set(old.is_none());
        old.or(Some(Entry {
            payload: PENDING,
            deadline: now.saturating_add(PENDING_S),
        }))
    })?;
    if !created.get() {
        // Another worker was first.
        return Ok(match mark {
            Some(e) if e.payload != PENDING => Mark::Judged,
            _ => Mark::Pending,
        });
    }
    if ring.push(src) {
        Ok(Mark::Noted)
    } else {
        rates.remove(k, now);
        Ok(Mark::RingFull)
    }
}

/// Writes the control plane's verdict on `src` for `ttl_s` seconds; a listed source
/// is banned for `ban_s` (0: `ttl_s`).
pub fn judge(
    rates: &FlowTable<'_>,
    src: Ipv4Addr,
    listed: bool,
    ttl_s: u32,
    ban_s: u32,
    now: u32,
) -> Result<(), TableFull> {
    let ttl_s = ttl_s.max(1);
    if listed {
        limits::ban(
            rates,
            src,
            BanReason::Dnsbl,
            if ban_s == 0 { ttl_s } else { ban_s },
            now,
        )?;
    }
    let verdict = Entry {
        payload: if listed { LISTED } else { CLEAN },
        deadline: now.saturating_add(ttl_s),
    };
    rates.upsert(limits::key(src, Kind::Dnsbl, 0), now, |_| Some(verdict))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::flow::Slot;
    use std::sync::atomic::AtomicU64;

    #[test]
    fn a_source_is_noted_once_until_its_verdict_and_again_after_it() {
        let slots: Vec<Slot> = (0..256).map(|_| Slot::default()).collect();
        let rates = FlowTable::new(&slots, 8);
        let mem: Vec<AtomicU64> = (0..SourceRing::words_for(2))
            .map(|_| AtomicU64::new(0))
            .collect();
        let ring = SourceRing::new(&mem);
        ring.init();
        let a = Ipv4Addr::new(198, 18, 0, 10);
        let note = |src, now| note(&rates, &ring, src, now).unwrap();
        assert_eq!(note(a, 100), Mark::Noted);
        assert_eq!(note(a, 100), Mark::Pending);
        assert_eq!(ring.pop(), Some(a));
        assert_eq!(ring.pop(), None, "pushed once");
        judge(&rates, a, false, 60, 0, 101).unwrap();
        assert_eq!(note(a, 102), Mark::Judged);
        assert_eq!(note(a, 161), Mark::Noted, "the verdict expired");
        assert!(limits::list_bans(&rates, 161).is_empty());
        // Listed: banned for the TTL, or ban_s.
        let b = Ipv4Addr::new(198, 18, 0, 11);
        judge(&rates, b, true, 30, 0, 200).unwrap();
        assert_eq!(note(b, 201), Mark::Judged);
        let bans = limits::list_bans(&rates, 201);
        assert_eq!(
            (bans[0].source, bans[0].reason, bans[0].remaining_s),
            (b, "dnsbl", 29)
        );
        // A pending mark that outlives PENDING_S asks again.
        assert_eq!(ring.pop(), Some(a));
        let c = Ipv4Addr::new(198, 18, 0, 12);
        assert_eq!(note(c, 300), Mark::Noted);
        assert_eq!(note(c, 300 + PENDING_S), Mark::Noted);
        // A full ring takes the mark back: the next request tries again.
        let d = Ipv4Addr::new(198, 18, 0, 13);
        assert_eq!(note(d, 300 + PENDING_S), Mark::RingFull);
        assert_eq!(ring.pop(), Some(c));
        assert_eq!(note(d, 300 + PENDING_S), Mark::Noted);
    }
}
