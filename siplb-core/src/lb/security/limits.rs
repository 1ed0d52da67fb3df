//! Per-source limits in the shared rates table (`Tables::rates`, a `FlowTable` every
//! worker and the control plane see): token buckets per source, farm and method class,
//! the overrun count that bans a source, the ban list itself, the sources that hold a
//! registration, dialog or connection (trusted under a SYN flood), and TCP
//! connections per source.
//!
//! Every entry is keyed by the source address in the key's upper half (the control
//! plane lists bans from it), a kind in bits 28..32 and a hash of what else the entry
//! is about in bits 0..28, from which the table takes the home bucket: an attacker
//! choosing addresses cannot aim at one bucket.
//!
//! A token bucket fits one entry: the payload holds the tokens (low 16 bits) and the
//! second of the last refill (high 16 bits, modulo 2^16: an entry lives far less long);
//! the deadline is when the bucket would be full again, after which a missing entry
//! means the same thing. Refills come in whole seconds, the tables' clock.

use crate::config::Bucket;
use crate::hash::hash64;
use crate::table::flow::{Entry, FlowTable, TableFull};
use std::cell::Cell;
use std::net::Ipv4Addr;

/// What a rates-table entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    Bucket = 1,
    /// Bucket overruns in the current ban window.
    Overruns = 2,
    Ban = 3,
    /// The source holds a registration, dialog or established connection.
    Trusted = 4,
    /// TCP connections open from the source.
    Connections = 5,
    /// A request of the source that carried credentials, until its answer
    /// (`sub`: its transaction).
    Credentials = 6,
    /// Authentication failures in the current window.
    AuthFailures = 7,
    /// The source's DNSBL lookup: pending, or its verdict (`dnsbl.rs`).
    Dnsbl = 8,
}

/// The bucket of TCP SYNs per source (`sub` of `Kind::Bucket`; SIP classes are below).
pub const SUB_SYN: u32 = 0xFF00;
/// The bucket of TCP RSTs per source.
pub const SUB_RST: u32 = 0xFF01;
/// The bucket of SYNs from untrusted sources, all together (under address 0.0.0.0).
pub const SUB_UNTRUSTED_SYN: u32 = 0xFF02;

/// The key of `src`'s entry of `kind` about `sub`.
#[inline]
pub fn key(src: Ipv4Addr, kind: Kind, sub: u32) -> u64 {
    let ip = u32::from(src);
    let mut b = [0u8; 9];
    b[..4].copy_from_slice(&ip.to_be_bytes());
    b[4..8].copy_from_slice(&sub.to_be_bytes());
    b[8] = kind as u8;
    (u64::from(ip) << 32) | (u64::from(kind as u8) << 28) | (hash64(&b) & 0x0FFF_FFFF)
}

/// The source address and kind of a key (for the control plane's list of bans).
pub fn parse_key(key: u64) -> (Ipv4Addr, u8) {
    (
        Ipv4Addr::from((key >> 32) as u32),
        ((key >> 28) & 0xF) as u8,
    )
}

/// Takes a token from `b`'s bucket under `key`: false when it is empty.
#[inline]
pub fn take(rates: &FlowTable<'_>, key: u64, b: Bucket, now: u32) -> Result<bool, TableFull> {
    let rate = b.rate;
    let burst = if b.burst == 0 { rate } else { b.burst }.clamp(1, 0xFFFF);
    let full_after = burst.div_ceil(rate.max(1)) + 1;
    let second = now & 0xFFFF;
    let took = Cell::new(false);
    rates.upsert(key, now, |old| {
        let tokens = old.map_or(burst, |e| {
            let elapsed = second.wrapping_sub(e.payload >> 16) & 0xFFFF;
            (e.payload & 0xFFFF)
                .saturating_add(elapsed.saturating_mul(rate))
                .min(burst)
        });
        took.set(tokens > 0);
        // An empty bucket is left as it is: its refill second must not move.
        (tokens > 0).then(|| Entry {
            payload: (tokens - 1) | (second << 16),
            deadline: now.saturating_add(full_after),
        })
    })?;
    Ok(took.get())
}

/// Counts an overrun of `src`'s buckets in the window that began with the first one;
/// true when it is the one more than `limit` (the source is to be banned).
pub fn overrun(
    rates: &FlowTable<'_>,
    src: Ipv4Addr,
    limit: u32,
    window_s: u32,
    now: u32,
) -> Result<bool, TableFull> {
    counted(rates, key(src, Kind::Overruns, 0), limit, window_s, now)
}

/// Counts an event under `key` in the window that began with the first one; true
/// when it is the one more than `limit`.
pub fn counted(
    rates: &FlowTable<'_>,
    key: u64,
    limit: u32,
    window_s: u32,
    now: u32,
) -> Result<bool, TableFull> {
    let n = Cell::new(0);
    rates.upsert(key, now, |old| {
        let c = old.map_or(0, |e| e.payload).saturating_add(1);
        n.set(c);
        Some(Entry {
            payload: c,
            deadline: old.map_or(now.saturating_add(window_s.max(1)), |e| e.deadline),
        })
    })?;
    Ok(n.get() == limit.saturating_add(1))
}

/// Why a source is banned (the top byte of a ban's payload; the rest counts hits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum BanReason {
    /// It kept overrunning its request buckets.
    Flood = 1,
    /// It kept overrunning its TCP SYN or RST buckets.
    TcpFlood = 2,
    /// Its credentials kept failing at the backends (`brute.rs`).
    AuthFailures = 3,
    /// A DNSBL zone lists it (`dnsbl.rs`).
    Dnsbl = 4,
}

impl BanReason {
    pub fn name(code: u8) -> &'static str {
        match code {
            1 => "flood",
            2 => "tcp_flood",
            3 => "auth_failures",
            4 => "dnsbl",
            _ => "unknown",
        }
    }
}

const HITS: u32 = 0x00FF_FFFF;

/// Bans `src` until `now + ban_s` (an existing ban keeps its end and hits).
pub fn ban(
    rates: &FlowTable<'_>,
    src: Ipv4Addr,
    reason: BanReason,
    ban_s: u32,
    now: u32,
) -> Result<(), TableFull> {
    rates
        .upsert(key(src, Kind::Ban, 0), now, |old| {
            old.is_none().then_some(Entry {
                payload: u32::from(reason as u8) << 24,
                deadline: now.saturating_add(ban_s),
            })
        })
        .map(|_| ())
}

/// Is `src` banned? A hit is counted on the ban (a write only when it is).
#[inline]
pub fn banned(rates: &FlowTable<'_>, src: Ipv4Addr, now: u32) -> bool {
    let k = key(src, Kind::Ban, 0);
    if rates.lookup(k, now).is_none() {
        return false;
    }
    let _ = rates.upsert(k, now, |old| {
        old.map(|e| Entry {
            payload: (e.payload & !HITS) | ((e.payload & HITS) + 1).min(HITS),
            ..e
        })
    });
    true
}

/// One ban as the control plane lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BanEntry {
    pub source: Ipv4Addr,
    pub reason: &'static str,
    pub remaining_s: u32,
    pub hits: u32,
}

/// The bans in force (a scan of the whole table: for the control plane).
pub fn list_bans(rates: &FlowTable<'_>, now: u32) -> Vec<BanEntry> {
    let mut out = Vec::new();
    rates.for_each_live(now, |k, e| {
        let (source, kind) = parse_key(k);
        if kind == Kind::Ban as u8 && k == key(source, Kind::Ban, 0) {
            out.push(BanEntry {
                source,
                reason: BanReason::name((e.payload >> 24) as u8),
                remaining_s: e.deadline - now,
                hits: e.payload & HITS,
            });
        }
    });
    out.sort_by_key(|b| b.source);
    out
}

/// Lifts `src`'s ban; false when there was none.
pub fn unban(rates: &FlowTable<'_>, src: Ipv4Addr, now: u32) -> bool {
    let k = key(src, Kind::Ban, 0);
    let was = rates.lookup(k, now).is_some();
    rates.remove(k, now);
    // A fresh window: the next overrun or failure does not ban again at once.
    rates.remove(key(src, Kind::Overruns, 0), now);
    rates.remove(key(src, Kind::AuthFailures, 0), now);
    was
}

/// Notes that `src` holds state a backend vouched for until `until`. Written only
/// when it moves the deadline by a minute or more, so a busy source does not write
/// on every packet.
#[inline]
pub fn trust(rates: &FlowTable<'_>, src: Ipv4Addr, until: u32, now: u32) {
    let k = key(src, Kind::Trusted, 0);
    if rates
        .lookup(k, now)
        .is_some_and(|e| e.deadline.saturating_add(60) >= until)
    {
        return;
    }
    let _ = rates.upsert(k, now, |old| {
        (old.map_or(0, |e| e.deadline) < until).then_some(Entry {
            payload: 0,
            deadline: until,
        })
    });
}

#[inline]
pub fn trusted(rates: &FlowTable<'_>, src: Ipv4Addr, now: u32) -> bool {
    rates.lookup(key(src, Kind::Trusted, 0), now).is_some()
}

/// Counts a new TCP connection from `src` if it has fewer than `max`; false when it
/// has `max` already. The count lives `lifetime` seconds after its last new
/// connection: connections that end silently (no FIN or RST) are forgotten with it.
pub fn open_connection(
    rates: &FlowTable<'_>,
    src: Ipv4Addr,
    max: u32,
    lifetime: u32,
    now: u32,
) -> Result<bool, TableFull> {
    let ok = Cell::new(false);
    rates.upsert(key(src, Kind::Connections, 0), now, |old| {
        let n = old.map_or(0, |e| e.payload);
        ok.set(n < max);
        (n < max).then_some(Entry {
            payload: n + 1,
            deadline: now.saturating_add(lifetime),
        })
    })?;
    Ok(ok.get())
}

/// One of `src`'s connections ended (FIN or RST).
pub fn close_connection(rates: &FlowTable<'_>, src: Ipv4Addr, now: u32) {
    let _ = rates.upsert(key(src, Kind::Connections, 0), now, |old| {
        old.filter(|e| e.payload > 0).map(|e| Entry {
            payload: e.payload - 1,
            ..e
        })
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::flow::Slot;

    fn table(slots: &[Slot]) -> FlowTable<'_> {
        FlowTable::new(slots, 8)
    }

    #[test]
    fn a_bucket_gives_its_burst_then_its_rate_per_second() {
        let s: Vec<Slot> = (0..256).map(|_| Slot::default()).collect();
        let t = table(&s);
        let b = Bucket { rate: 2, burst: 5 };
        let k = key(Ipv4Addr::new(198, 18, 0, 10), Kind::Bucket, 1);
        let got = |now| (0..20).filter(|_| take(&t, k, b, now).unwrap()).count();
        assert_eq!(got(100), 5, "the burst");
        assert_eq!(got(100), 0, "nothing more this second");
        assert_eq!(got(101), 2, "the rate");
        assert_eq!(got(103), 4, "two seconds' refill");
        assert_eq!(got(200), 5, "refilled to the burst, no more");
        // Burst 0 means the rate.
        let k2 = key(Ipv4Addr::new(198, 18, 0, 11), Kind::Bucket, 1);
        let n = (0..20)
            .filter(|_| take(&t, k2, Bucket { rate: 3, burst: 0 }, 7).unwrap())
            .count();
        assert_eq!(n, 3);
    }

    #[test]
    fn overruns_ban_once_and_bans_list_count_and_lift() {
        let s: Vec<Slot> = (0..256).map(|_| Slot::default()).collect();
        let t = table(&s);
        let a = Ipv4Addr::new(198, 18, 0, 10);
        let verdicts: Vec<bool> = (0..20)
            .map(|_| overrun(&t, a, 16, 2, 50).unwrap())
            .collect();
        assert_eq!(verdicts.iter().filter(|v| **v).count(), 1);
        assert!(verdicts[16], "the 17th overrun bans");
        assert!(!overrun(&t, a, 16, 2, 52).unwrap(), "a new window");
        ban(&t, a, BanReason::Flood, 300, 50).unwrap();
        assert!(banned(&t, a, 60));
        assert!(banned(&t, a, 61));
        assert!(!banned(&t, Ipv4Addr::new(198, 18, 0, 11), 61));
        assert_eq!(
            list_bans(&t, 70),
            vec![BanEntry {
                source: a,
                reason: "flood",
                remaining_s: 280,
                hits: 2
            }]
        );
        assert!(!banned(&t, a, 350), "over after ban_s");
        ban(&t, a, BanReason::Flood, 300, 400).unwrap();
        assert!(unban(&t, a, 401));
        assert!(!banned(&t, a, 401));
        assert!(list_bans(&t, 401).is_empty());
        assert!(!unban(&t, a, 402));
    }

    #[test]
    fn keys_carry_the_source_and_kind_and_spread_over_buckets() {
        let a = Ipv4Addr::new(198, 18, 7, 9);
        assert_eq!(parse_key(key(a, Kind::Ban, 0)), (a, Kind::Ban as u8));
        assert_ne!(key(a, Kind::Bucket, 0), key(a, Kind::Bucket, 1));
        // Sources that differ only in their upper octets still get different homes.
        let homes: std::collections::HashSet<u64> = (0..64u32)
            .map(|i| key(Ipv4Addr::from(i << 24 | 1), Kind::Bucket, 0) & 0xFF)
            .collect();
        assert!(homes.len() > 40, "{}", homes.len());
    }

    #[test]
    fn connections_per_source_are_capped_and_released() {
        let s: Vec<Slot> = (0..256).map(|_| Slot::default()).collect();
        let t = table(&s);
        let a = Ipv4Addr::new(198, 18, 0, 10);
        let opened = (0..5)
            .filter(|_| open_connection(&t, a, 3, 100, 10).unwrap())
            .count();
        assert_eq!(opened, 3);
        close_connection(&t, a, 11);
        assert!(open_connection(&t, a, 3, 100, 12).unwrap());
        assert!(!open_connection(&t, a, 3, 100, 12).unwrap());
        assert!(open_connection(&t, a, 3, 100, 200).unwrap(), "forgotten");
    }

    #[test]
    fn trust_is_written_only_when_it_moves() {
        let s: Vec<Slot> = (0..256).map(|_| Slot::default()).collect();
        let t = table(&s);
        let a = Ipv4Addr::new(198, 18, 0, 10);
        assert!(!trusted(&t, a, 10));
        trust(&t, a, 1000, 10);
        assert!(trusted(&t, a, 999));
        trust(&t, a, 500, 20);
        assert_eq!(
            t.lookup(key(a, Kind::Trusted, 0), 20).unwrap().deadline,
            1000
        );
        assert!(!trusted(&t, a, 1000));
    }
}
