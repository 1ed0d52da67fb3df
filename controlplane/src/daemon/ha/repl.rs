//! Reliable, paced replication streams as pure state machines (no sockets, no clock
//! reads: callers pass `now`), so loss, reordering and resends are unit-tested.
//!
//! The active unit's `Outbox` keeps each sync datagram until it is acknowledged,
//! resends it after `rto`, and sends at most `rate` datagrams per second. The
//! standby's `Inbox` delivers a stream's payloads in sequence order (holding up to
//! `WINDOW` early ones) and says what to acknowledge.

use super::wire::{Ack, Header, Key, Kind};
use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

/// Datagrams in flight (and held out of order by the receiver) at most.
pub const WINDOW: usize = 512;

struct Pending {
    seq: u32,
    datagram: Vec<u8>,
    queued: Instant,
    /// The changes it carries happened after this (the previous sync pass); None for
    /// a resync's datagrams.
    changed_after: Option<Instant>,
    sent: Option<Instant>,
    acked: bool,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct OutboxStats {
    pub sent: u64,
    pub resent: u64,
    pub streams: u64,
}

pub struct Outbox {
    epoch: u64,
    stream: u32,
    next: u32,
    window: VecDeque<Pending>,
    rto: Duration,
    rate: f64,
    tokens: f64,
    refilled: Option<Instant>,
    pub stats: OutboxStats,
    /// Per acknowledged datagram of changes: the longest its changes can have waited
    /// (from the previous pass to the acknowledgement). Drained by the caller.
    pub change_lags: Vec<Duration>,
}

impl Outbox {
    pub fn new(epoch: u64, rto: Duration, rate: u32) -> Outbox {
        Outbox {
            epoch,
            stream: 0,
            next: 1,
            window: VecDeque::new(),
            rto,
            rate: f64::from(rate),
            tokens: 0.0,
            refilled: None,
            stats: OutboxStats::default(),
            change_lags: Vec::new(),
        }
    }

    /// Starts a new stream (the receiver resets and expects a full resync): whatever
    /// was in flight is dropped.
    pub fn new_stream(&mut self) {
        self.stream += 1;
        self.next = 1;
        self.window.clear();
        self.stats.streams += 1;
    }

    /// Datagrams that may still be queued before the window is full.
    pub fn room(&self) -> usize {
        WINDOW.saturating_sub(self.window.len())
    }

    pub fn in_flight(&self) -> usize {
        self.window.iter().filter(|p| !p.acked).count()
    }

    /// How long the oldest unacknowledged datagram has waited.
    pub fn oldest(&self, now: Instant) -> Option<Duration> {
        self.window
            .iter()
            .find(|p| !p.acked)
            .map(|p| now.saturating_duration_since(p.queued))
    }

    /// Queues a sequenced datagram (sent by `poll`). None when the window is full.
    pub fn push(&mut self, key: &Key, kind: Kind, payload: &[u8], now: Instant) -> Option<u32> {
        self.push_changes(key, kind, payload, now, None)
    }

    /// `push` of changes made after `changed_after` (for the lag figures).
    pub fn push_changes(
        &mut self,
        key: &Key,
        kind: Kind,
        payload: &[u8],
        now: Instant,
        changed_after: Option<Instant>,
    ) -> Option<u32> {
        if self.room() == 0 || self.stream == 0 {
            return None;
        }
        let seq = self.next;
        self.next += 1;
        let datagram = key.seal(
            Header {
                kind,
                epoch: self.epoch,
                stream: self.stream,
                seq,
            },
            payload,
        );
        self.window.push_back(Pending {
            seq,
            datagram,
            queued: now,
            changed_after,
            sent: None,
            acked: false,
        });
        Some(seq)
    }

    /// Takes an acknowledgement of our current stream into account; returns the
    /// age of each datagram it newly acknowledged (for the lag figures).
    pub fn ack(&mut self, a: &Ack, now: Instant) -> Vec<Duration> {
        let mut ages = Vec::new();
        if a.epoch != self.epoch || a.stream != self.stream {
            return ages;
        }
        for p in &mut self.window {
            let d = p.seq.wrapping_sub(a.cumulative);
            let got =
                p.seq <= a.cumulative || (1..=64).contains(&d) && a.bitmap >> (d - 1) & 1 == 1;
            if got && !p.acked {
                p.acked = true;
                ages.push(now.saturating_duration_since(p.queued));
                if let Some(t) = p.changed_after {
                    self.change_lags.push(now.saturating_duration_since(t));
                }
            }
        }
        while self.window.front().is_some_and(|p| p.acked) {
            self.window.pop_front();
        }
        ages
    }

    /// The datagrams to send now: resends of those unacknowledged for `rto`, then
    /// new ones, oldest first, as far as the rate allows.
    pub fn poll(&mut self, now: Instant) -> Vec<Vec<u8>> {
        let since = self.refilled.map_or(Duration::ZERO, |t| now - t);
        // A burst of at most 1/20 s worth, at least 8.
        let burst = (self.rate / 20.0).max(8.0);
        self.tokens = (self.tokens + since.as_secs_f64() * self.rate).min(burst);
        if self.refilled.is_none() {
            self.tokens = burst;
        }
        self.refilled = Some(now);
        let mut out = Vec::new();
        for p in self.window.iter_mut().filter(|p| !p.acked) {
            if self.tokens < 1.0 {
                break;
            }
            match p.sent {
                Some(t) if now.saturating_duration_since(t) < self.rto => continue,
                Some(_) => self.stats.resent += 1,
                None => {}
            }
            self.stats.sent += 1;
            self.tokens -= 1.0;
            p.sent = Some(now);
            out.push(p.datagram.clone());
        }
        out
    }
}

/// What the standby knows of the stream it receives.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct InboxState {
    pub epoch: u64,
    pub stream: u32,
    /// The stream's full resync has been delivered.
    pub synced: bool,
}

pub struct Inbox {
    pub state: InboxState,
    /// Next seq to deliver.
    next: u32,
    held: BTreeMap<u32, (Kind, Vec<u8>)>,
    pub stale: u64,
}

impl Default for Inbox {
    fn default() -> Self {
        Inbox {
            state: InboxState::default(),
            next: 1,
            held: BTreeMap::new(),
            stale: 0,
        }
    }
}

/// What a received sequenced datagram gives.
pub struct Delivery {
    /// A new stream began with it: the sender starts a full resync.
    pub new_stream: bool,
    /// Payloads now deliverable, in order.
    pub payloads: Vec<(Kind, Vec<u8>)>,
}

impl Inbox {
    /// Takes a sequenced datagram; a later stream (or a restarted sender) resets the
    /// inbox, an earlier one is stale.
    pub fn accept(&mut self, h: &Header, payload: &[u8]) -> Delivery {
        let mut d = Delivery {
            new_stream: false,
            payloads: Vec::new(),
        };
        let ours = (self.state.epoch, self.state.stream);
        if (h.epoch, h.stream) > ours {
            self.state = InboxState {
                epoch: h.epoch,
                stream: h.stream,
                synced: false,
            };
            self.next = 1;
            self.held.clear();
            d.new_stream = true;
        } else if (h.epoch, h.stream) < ours {
            self.stale += 1;
            return d;
        }
        if h.seq < self.next || h.seq - self.next >= WINDOW as u32 {
            // Already delivered (a resend whose ack was lost), or beyond the window.
            return d;
        }
        self.held.insert(h.seq, (h.kind, payload.to_vec()));
        while let Some(p) = self.held.remove(&self.next) {
            if p.0 == Kind::ResyncEnd {
                self.state.synced = true;
            }
            d.payloads.push(p);
            self.next += 1;
        }
        d
    }

    /// The acknowledgement of what has arrived (None before any stream).
    pub fn ack(&self) -> Option<Ack> {
        if self.state.stream == 0 {
            return None;
        }
        let cumulative = self.next - 1;
        let bitmap = self
            .held
            .keys()
            .map(|s| s - cumulative)
            .filter(|d| (1..=64).contains(d))
            .fold(0u64, |b, d| b | 1 << (d - 1));
        Some(Ack {
            epoch: self.state.epoch,
            stream: self.state.stream,
            cumulative,
            bitmap,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> Key {
        Key::new(b"0123456789abcdef")
    }

    fn ms(t: Instant, n: u64) -> Instant {
        t + Duration::from_millis(n)
    }

    /// Feeds datagrams to an inbox as a socket would.
    fn deliver(inbox: &mut Inbox, k: &Key, m: &[u8]) -> Delivery {
        let (h, p) = k.open(m).unwrap();
        inbox.accept(&h, p)
    }

    #[test]
    fn a_lost_datagram_is_resent_after_the_timeout_and_delivered_in_order() {
        let k = key();
        let t = Instant::now();
        let mut out = Outbox::new(5, Duration::from_millis(100), 1000);
        out.new_stream();
        for i in 0..4u8 {
            out.push(&k, Kind::Sync, &[i], t).unwrap();
        }
        let first = out.poll(t);
        assert_eq!(first.len(), 4);
        let mut inbox = Inbox::default();
        // Datagram 2 is lost: 1 is delivered, 3 and 4 are held.
        let d = deliver(&mut inbox, &k, &first[0]);
        assert!(d.new_stream);
        assert_eq!(d.payloads, vec![(Kind::Sync, vec![0])]);
        assert!(deliver(&mut inbox, &k, &first[2]).payloads.is_empty());
        assert!(deliver(&mut inbox, &k, &first[3]).payloads.is_empty());
        let a = inbox.ack().unwrap();
        assert_eq!((a.cumulative, a.bitmap), (1, 0b110));
        assert_eq!(out.ack(&a, ms(t, 10)).len(), 3);
        assert_eq!(out.in_flight(), 1);
        // Not yet due for a resend.
        assert!(out.poll(ms(t, 50)).is_empty());
        let again = out.poll(ms(t, 120));
        assert_eq!(again.len(), 1);
        assert_eq!(out.stats.resent, 1);
        let d = deliver(&mut inbox, &k, &again[0]);
        let got: Vec<u8> = d.payloads.iter().map(|p| p.1[0]).collect();
        assert_eq!(got, vec![1, 2, 3]);
        out.ack(&inbox.ack().unwrap(), ms(t, 130));
        assert_eq!((out.in_flight(), out.room()), (0, WINDOW));
        // A duplicate (resend whose ack was lost) is not delivered twice.
        assert!(deliver(&mut inbox, &k, &again[0]).payloads.is_empty());
    }

    #[test]
    fn sends_are_paced_and_the_window_is_bounded() {
        let k = key();
        let t = Instant::now();
        let mut out = Outbox::new(5, Duration::from_secs(10), 200);
        out.new_stream();
        let mut queued = 0;
        while out.push(&k, Kind::Sync, b"x", t).is_some() {
            queued += 1;
        }
        assert_eq!(queued, WINDOW);
        // A burst of 10 (200/s / 20), then 200 per second.
        assert_eq!(out.poll(t).len(), 10);
        assert_eq!(out.poll(ms(t, 500)).len(), 10, "burst-capped");
        let mut sent = 0;
        for i in 1..=100 {
            sent += out.poll(ms(t, 500 + 10 * i)).len();
        }
        assert_eq!(sent, 200, "one second at 200/s");
    }

    #[test]
    fn a_new_stream_or_a_restarted_sender_resets_the_inbox_and_old_ones_are_stale() {
        let k = key();
        let t = Instant::now();
        let mut out = Outbox::new(5, Duration::from_millis(100), 1000);
        out.new_stream();
        out.push(&k, Kind::Sync, b"a", t);
        out.push(&k, Kind::ResyncEnd, b"", t);
        let s1 = out.poll(t);
        let mut inbox = Inbox::default();
        deliver(&mut inbox, &k, &s1[0]);
        assert!(!inbox.state.synced);
        deliver(&mut inbox, &k, &s1[1]);
        assert!(inbox.state.synced);
        out.new_stream();
        out.push(&k, Kind::Sync, b"b", t);
        let s2 = out.poll(ms(t, 1));
        let d = deliver(&mut inbox, &k, &s2[0]);
        assert!(d.new_stream);
        assert_eq!(
            inbox.state,
            InboxState {
                epoch: 5,
                stream: 2,
                synced: false
            }
        );
        // An ack for the old stream is ignored by the sender.
        let old = Ack {
            epoch: 5,
            stream: 1,
            cumulative: 9,
            bitmap: 0,
        };
        assert!(out.ack(&old, t).is_empty());
        // A late datagram of stream 1 is stale.
        assert!(deliver(&mut inbox, &k, &s1[0]).payloads.is_empty());
        assert_eq!(inbox.stale, 1);
        // A restarted sender (later epoch) starts over at stream 1.
        let mut restarted = Outbox::new(6, Duration::from_millis(100), 1000);
        restarted.new_stream();
        restarted.push(&k, Kind::Sync, b"c", t);
        let d = deliver(&mut inbox, &k, &restarted.poll(t)[0]);
        assert!(d.new_stream);
        assert_eq!(d.payloads, vec![(Kind::Sync, b"c".to_vec())]);
    }

    #[test]
    fn the_oldest_unacknowledged_age_is_the_lag() {
        let k = key();
        let t = Instant::now();
        let mut out = Outbox::new(5, Duration::from_millis(100), 1000);
        assert!(out.push(&k, Kind::Sync, b"x", t).is_none(), "no stream yet");
        out.new_stream();
        out.push(&k, Kind::Sync, b"x", t);
        out.poll(t);
        assert_eq!(out.oldest(ms(t, 250)), Some(Duration::from_millis(250)));
        let a = Ack {
            epoch: 5,
            stream: 1,
            cumulative: 1,
            bitmap: 0,
        };
        assert_eq!(out.ack(&a, ms(t, 30)), vec![Duration::from_millis(30)]);
        assert_eq!(out.oldest(ms(t, 250)), None);
        // Changes seen by a pass at t, made after the pass 20 ms before: they waited
        // at most 20 + 40 ms when acknowledged 40 ms after t.
        out.push_changes(&k, Kind::Sync, b"y", t, Some(t - Duration::from_millis(20)));
        out.poll(t);
        let a = Ack { cumulative: 2, ..a };
        assert_eq!(out.ack(&a, ms(t, 40)), vec![Duration::from_millis(40)]);
        assert_eq!(out.change_lags, vec![Duration::from_millis(60)]);
    }
}
