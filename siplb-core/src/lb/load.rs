//! The choice of backend for new work by priority group, reading each backend's live
//! load (`backend_load.rs`: dialogs against `max_dialogs`, Retry-After holds, `oc`
//! shedding, passive health marks), and what the backends' answers change in it; the
//! stateless 503 of a full farm.

pub use super::backend_load::{BackendLoad, LoadTable, LoadView, MAX_RETRY_AFTER_S};
use super::backend_load::{Refusal, DEFAULT_OC_VALIDITY_MS, OC_UNTIL};
use super::context::{Ctx, Verdict};
use super::counters::DropReason;
use super::packet::Flow;
use super::services::{Backend, Farm};
use crate::config::WhenFull;
use crate::maglev;
use crate::sip::{HeaderName, SipMessage};
use crate::table::dialog::Advanced;
use crate::wire::ipv4;
use std::sync::atomic::Ordering::Relaxed;

/// What a backend's response says about its load: the status code, Retry-After (on
/// a 503) and the top Via's RFC 7339 parameters. Read from the raw message, which
/// the light scan may have steered without a full parse.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Overload {
    retry_after: Option<u64>,
    /// `oc` (percent), `oc-validity` (ms), `oc-seq`.
    oc: Option<(u8, u64, u64)>,
}

/// The status code of a response (`SIP/2.0 503 ...`), or `None` for a request.
#[inline]
fn status_code(sip: &[u8]) -> Option<u16> {
    if !sip.starts_with(b"SIP/2.0 ") || sip.len() < 12 {
        return None;
    }
    let d = &sip[8..11];
    d.iter()
        .all(u8::is_ascii_digit)
        .then(|| d.iter().fold(0u16, |n, c| n * 10 + u16::from(c - b'0')))
}

/// Header lines of a message: `(name, value)` up to the empty line; folded lines
/// stay part of their field's value.
fn header_lines(sip: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    let body = memchr::memmem::find(sip, b"\r\n\r\n").unwrap_or(sip.len());
    let head = &sip[..body];
    let start = memchr::memmem::find(head, b"\r\n").map_or(head.len(), |i| i + 2);
    head[start.min(head.len())..]
        .split(|&c| c == b'\n')
        .filter_map(|l| {
            let l = l.strip_suffix(b"\r").unwrap_or(l);
            let c = memchr::memchr(b':', l)?;
            Some((l[..c].trim_ascii(), l[c + 1..].trim_ascii()))
        })
}

fn number(s: &[u8]) -> Option<u64> {
    let end = s
        .iter()
        .position(|c| !c.is_ascii_digit())
        .unwrap_or(s.len());
    if end == 0 || end > 12 {
        return None;
    }
    Some(s[..end].iter().fold(0, |n, c| n * 10 + u64::from(c - b'0')))
}

/// `oc-seq = 1*12DIGIT "." 1*5DIGIT` (RFC 7339 §5.2) as one ordered number.
fn oc_seq(s: &[u8]) -> Option<u64> {
    let (int, frac) = match memchr::memchr(b'.', s) {
        Some(i) => (&s[..i], &s[i + 1..]),
        None => (s, &b""[..]),
    };
    let i = number(int)?;
    let digits = frac
        .iter()
        .take_while(|c| c.is_ascii_digit())
        .count()
        .min(5);
    let mut f = frac[..digits]
        .iter()
        .fold(0, |n, c| n * 10 + u64::from(c - b'0'));
    for _ in digits..5 {
        f *= 10;
    }
    Some(i * 100_000 + f)
}

/// Reads Retry-After (503 only) and the top Via's `oc` parameters.
fn overload_of(sip: &[u8], code: u16) -> Overload {
    let mut o = Overload::default();
    let mut via_seen = false;
    for (name, value) in header_lines(sip) {
        match HeaderName::from_bytes(name) {
            HeaderName::Via if !via_seen => {
                via_seen = true;
                o.oc = top_via_oc(value);
            }
            HeaderName::Other if code == 503 && name.eq_ignore_ascii_case(b"Retry-After") => {
                o.retry_after = number(value);
            }
            _ => {}
        }
    }
    o
}

/// The `oc`, `oc-validity` and `oc-seq` parameters of the first Via value.
fn top_via_oc(value: &[u8]) -> Option<(u8, u64, u64)> {
    let first = value.split(|&c| c == b',').next()?;
    let (mut oc, mut validity, mut seq) = (None, DEFAULT_OC_VALIDITY_MS, 0);
    for p in first.split(|&c| c == b';').skip(1) {
        let (n, v) = match memchr::memchr(b'=', p) {
            Some(i) => (p[..i].trim_ascii(), Some(p[i + 1..].trim_ascii())),
            None => (p.trim_ascii(), None),
        };
        if n.eq_ignore_ascii_case(b"oc") {
            // A bare `oc` is a client's offer to take overload control, not a value.
            oc = v.and_then(number).map(|n| n.min(100) as u8);
        } else if n.eq_ignore_ascii_case(b"oc-validity") {
            validity = v.and_then(number).unwrap_or(validity);
        } else if n.eq_ignore_ascii_case(b"oc-seq") {
            seq = v.and_then(oc_seq).unwrap_or(0);
        }
    }
    oc.map(|p| (p, validity, seq))
}

impl Ctx<'_, '_, '_> {
    /// The backend for new work placed by `key`: the first priority group with a
    /// backend that takes it; in the group, the Maglev choice if it takes it, else
    /// the next one that does from a point the key gives (so a full backend's share
    /// spreads over the others). `dialog`: an INVITE that takes a count unit (the
    /// caller records it counted). Every backend is looked at once at most.
    pub(super) fn place_new(&self, farm: &Farm, key: u64, dialog: bool) -> Option<usize> {
        self.place_excluding(farm, key, dialog, &[])
    }

    /// `place_new` among the backends whose slots are not in `skip` (those a held
    /// request already tried, `lb::failover`): the same order of preference.
    pub(super) fn place_excluding(
        &self,
        farm: &Farm,
        key: u64,
        dialog: bool,
        skip: &[u16],
    ) -> Option<usize> {
        let skipped = |i: usize| skip.contains(&farm.backends[i].slot);
        for (table, members) in farm.groups() {
            let first = maglev::lookup(table, key);
            if first == maglev::NO_BACKEND {
                continue;
            }
            let first = usize::from(first);
            if !skipped(first) {
                match self.admit(farm, first, key, dialog) {
                    None => return Some(first),
                    Some(r) => self.count_refusal(&farm.backends[first], r),
                }
            }
            let n = members.len();
            let start = (key >> 40) as usize % n.max(1);
            for k in 0..n {
                let j = usize::from(members[(start + k) % n]);
                if j != first
                    && !skipped(j)
                    && farm.backends[j].takes_new_work()
                    && self.admit(farm, j, key, dialog).is_none()
                {
                    return Some(j);
                }
            }
        }
        None
    }

    /// Whether backend `i` takes this new work now; with `dialog`, a count unit is
    /// taken when it does.
    #[inline]
    fn admit(&self, farm: &Farm, i: usize, key: u64, dialog: bool) -> Option<Refusal> {
        let b = &farm.backends[i];
        let l = self.t.load.get(b.slot);
        if let Some(r) = l.refuses(self.w.now_ms, key, farm.passive_hold_ms) {
            return Some(r);
        }
        if dialog && farm.passive.unanswered > 0 && self.unanswered_too_long(farm, l) {
            return Some(Refusal::Down);
        }
        (dialog && !l.try_take(b.max_dialogs)).then_some(Refusal::Full)
    }

    /// Passive health: `unanswered` dialog-creating requests in a row got no message
    /// back within `window_ms` of the first; marks the backend down if so.
    fn unanswered_too_long(&self, farm: &Farm, l: &BackendLoad) -> bool {
        let n = l.hot.unanswered.load(Relaxed);
        let since = l.hot.unanswered_since.load(Relaxed);
        let late = n >= farm.passive.unanswered
            && self.w.now_ms.saturating_sub(since) >= u64::from(farm.passive.window_ms);
        if late && l.mark_down(self.w.now_ms, farm.passive_hold_ms) {
            self.w.counters.passive_marks.inc();
        }
        late
    }

    fn count_refusal(&self, b: &Backend, r: Refusal) {
        let c = &self.w.counters.backends[usize::from(b.slot)];
        match r {
            Refusal::Full => c.full.inc(),
            Refusal::Shed => c.oc_shed.inc(),
            Refusal::Held => c.held.inc(),
            Refusal::Down => {}
        }
    }

    /// Whether backend `i` of `farm` takes this new work (a known registration's
    /// backend); with `dialog`, it then holds the work's count unit.
    pub(super) fn admits(&self, farm: &Farm, i: usize, key: u64, dialog: bool) -> bool {
        farm.backends[i].takes_new_work() && self.admit(farm, i, key, dialog).is_none()
    }

    /// Whether a known dialog's backend counts as down for moving it: configured
    /// down, or marked down passively.
    pub(super) fn backend_down(&self, farm: &Farm, i: usize) -> bool {
        let b = &farm.backends[i];
        b.state == super::services::BackendState::Down
            || self
                .t
                .load
                .get(b.slot)
                .passive_down(self.w.now_ms, farm.passive_hold_ms)
    }

    /// A dialog-creating request went to backend `i`: passive health counts it
    /// unanswered until the backend's next message.
    pub(super) fn note_sent_new_dialog(&self, farm: &Farm, i: usize) {
        if farm.passive.unanswered == 0 {
            return;
        }
        let l = self.t.load.get(farm.backends[i].slot);
        if l.hot.unanswered.fetch_add(1, Relaxed) == 0 {
            l.hot.unanswered_since.store(self.w.now_ms, Relaxed);
        }
    }

    /// Gives back the count unit a dialog update released; returns the deadline.
    #[inline]
    pub(super) fn dialog_advanced(&self, a: Advanced) -> u32 {
        if let Some(s) = a.released {
            self.t.load.get(s).give_back();
        }
        a.deadline
    }

    /// What a backend's message says about the backend: it answers (passive
    /// health), and, for a 503 or a response whose top Via carries `oc`, how much
    /// new work it wants. Costs a load per message, and a header scan only for
    /// responses that mention either.
    pub(super) fn note_backend_message(&self, farm: &Farm, i: usize, sip: &[u8]) {
        let l = self.t.load.get(farm.backends[i].slot);
        if l.hot.unanswered.load(Relaxed) != 0 {
            l.hot.unanswered.store(0, Relaxed);
        }
        let Some(code) = status_code(sip) else {
            return;
        };
        let head_end = memchr::memmem::find(sip, b"\r\n\r\n").unwrap_or(sip.len());
        if code != 503 && memchr::memmem::find(&sip[..head_end], b";oc").is_none() {
            return;
        }
        let o = overload_of(sip, code);
        let now = self.w.now_ms;
        if let Some(s) = o.retry_after {
            let until = now + s.min(MAX_RETRY_AFTER_S) * 1000;
            if l.cold.hold_until.load(Relaxed) < until {
                l.cold.hold_until.store(until, Relaxed);
                self.w.counters.backends[usize::from(farm.backends[i].slot)]
                    .retry_after
                    .inc();
            }
        }
        if let Some((pct, validity, seq)) = o.oc {
            // RFC 7339 §5.3: an older oc-seq than the one in force is ignored.
            if seq >= l.cold.oc_seq.load(Relaxed) {
                l.cold.oc_seq.store(seq, Relaxed);
                let until = if validity == 0 { 0 } else { now + validity };
                l.cold
                    .oc
                    .store((u64::from(pct) << 56) | (until & OC_UNTIL), Relaxed);
            }
        }
    }

    /// ICMP from a backend's address: a port unreachable about a datagram to a
    /// backend's SIP port marks that backend down (farms with `passive.icmp`).
    /// Returns whether it did; the caller goes on as before.
    pub(super) fn note_backend_icmp(&self, frame: &[u8], flow: &Flow) -> bool {
        let m = &frame[flow.l4..flow.end];
        // type 3 (destination unreachable), code 3 (port), then the original IPv4
        // header and at least its UDP ports.
        if m.len() < 8 + 20 + 4 || m[0] != 3 || m[1] != 3 {
            return false;
        }
        let inner = &m[8..];
        let ihl = usize::from(inner[0] & 0x0f) * 4;
        if inner[0] >> 4 != 4 || inner[9] != ipv4::PROTO_UDP || inner.len() < ihl + 4 {
            return false;
        }
        let dst = std::net::Ipv4Addr::new(inner[16], inner[17], inner[18], inner[19]);
        let dport = u16::from_be_bytes([inner[ihl + 2], inner[ihl + 3]]);
        let Some((farm, i)) = self.svc.backend_at(dst, dport) else {
            return false;
        };
        if !farm.passive.icmp || dst != flow.src {
            return false;
        }
        let marked = self
            .t
            .load
            .get(farm.backends[i].slot)
            .mark_down(self.w.now_ms, farm.passive_hold_ms);
        if marked {
            self.w.counters.passive_marks.inc();
        }
        marked
    }

    /// No backend takes a new dialog: the farm's `when_full` answer (`reply`, from
    /// `full_reply`; none: drop), counted.
    pub(super) fn farm_full(
        &mut self,
        frame: &mut [u8],
        flow: &Flow,
        reply: Option<Reply>,
    ) -> Verdict {
        let Some(reply) = reply else {
            return Verdict::Drop(DropReason::FarmFull);
        };
        let Some(v) = self.answer_in_place(frame, flow, &reply.buf[..reply.len]) else {
            return Verdict::Drop(DropReason::FarmFull);
        };
        self.w.counters.farm_full_rejected.inc();
        v
    }
}

/// A stateless response built aside: it repeats fields of the request in another
/// order, so it cannot be written over the request as it is read.
pub(super) struct Reply {
    buf: [u8; 2048],
    len: usize,
}

/// The 503 with Retry-After (RFC 3261 §8.2.6, §21.5.4) that answers `msg` when no
/// backend of `farm` takes it and the farm rejects; `None` when the farm drops, or
/// the response would not fit.
pub(super) fn full_reply(farm: &Farm, msg: &SipMessage<'_>) -> Option<Reply> {
    if farm.when_full == WhenFull::Drop {
        return None;
    }
    let mut r = Reply {
        buf: [0; 2048],
        len: 0,
    };
    let mut put = |s: &[u8]| -> Option<()> {
        r.buf.get_mut(r.len..r.len + s.len())?.copy_from_slice(s);
        r.len += s.len();
        Some(())
    };
    put(b"SIP/2.0 503 Service Unavailable\r\n")?;
    for h in msg.headers() {
        if !matches!(
            h.name,
            HeaderName::Via
                | HeaderName::From
                | HeaderName::To
                | HeaderName::CallId
                | HeaderName::CSeq
        ) {
            continue;
        }
        put(h.raw_name)?;
        put(b": ")?;
        put(h.value)?;
        if h.name == HeaderName::To && msg.to().tag.is_none() {
            put(b";tag=")?;
            put(&full_reply_tag(msg.call_id()))?;
        }
        put(b"\r\n")?;
    }
    put(b"Retry-After: ")?;
    let mut digits = [0u8; 10];
    put(decimal(farm.full_retry_after, &mut digits))?;
    put(b"\r\nContent-Length: 0\r\n\r\n")?;
    Some(r)
}

/// The To tag of the 503 for a full farm: `slb` and the Call-ID's hash in hex, so
/// the caller's ACK of it is known again (`is_full_reply_ack`).
fn full_reply_tag(call_id: &[u8]) -> [u8; 19] {
    let k = crate::hash::hash64(call_id);
    let mut t = [0u8; 19];
    t[..3].copy_from_slice(b"slb");
    for (i, d) in t[3..].iter_mut().enumerate() {
        *d = b"0123456789abcdef"[((k >> ((15 - i) * 4)) & 15) as usize];
    }
    t
}

/// Whether `msg` is the ACK of a 503 the balancer sent for a full farm.
pub(super) fn is_full_reply_ack(msg: &SipMessage<'_>) -> bool {
    msg.method() == Some(crate::sip::Method::Ack)
        && msg.to().tag == Some(&full_reply_tag(msg.call_id())[..])
}

/// `v` in decimal, written into `buf`.
pub(super) fn decimal(mut v: u32, buf: &mut [u8; 10]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            return &buf[i..];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overload_signals_are_read_from_a_response() {
        let r = b"SIP/2.0 503 Service Unavailable\r\nVia: SIP/2.0/UDP 198.18.0.10:5060;branch=z9hG4bK1;oc=20;oc-validity=1000;oc-seq=1282321615.782\r\nVia: SIP/2.0/UDP 198.18.0.9;oc=90\r\nRetry-After: 30 (maintenance)\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(status_code(r), Some(503));
        let o = overload_of(r, 503);
        assert_eq!(o.retry_after, Some(30));
        assert_eq!(o.oc, Some((20, 1000, 1_282_321_615 * 100_000 + 78_200)));
        // A bare `oc` (the client's offer) is no value; no validity: 500 ms.
        assert_eq!(top_via_oc(b"SIP/2.0/UDP h;branch=z9hG4bK1;oc"), None);
        assert_eq!(
            top_via_oc(b"SIP/2.0/UDP h;oc=150;branch=x"),
            Some((100, DEFAULT_OC_VALIDITY_MS, 0))
        );
        // Retry-After counts only on a 503.
        assert_eq!(overload_of(r, 500).retry_after, None);
        assert_eq!(status_code(b"INVITE sip:a@b SIP/2.0\r\n"), None);
    }

    #[test]
    fn count_units_stop_at_the_cap_and_never_go_below_zero() {
        let l = BackendLoad::default();
        assert!(l.try_take(2) && l.try_take(2) && !l.try_take(2));
        assert!(l.try_take(0), "0: no cap");
        for _ in 0..5 {
            l.give_back();
        }
        assert_eq!(l.view().dialogs, 0);
    }
}
