//! Replacements collected while a message is scanned, then applied to the packet's
//! bytes in place, in one pass, with the Content-Length fixed to the new body.
//!
//! [`Edits`] holds at most [`MAX_EDITS`] replacements of at most [`MAX_TEXT`] bytes
//! each (the longest the rewriter writes is `255.255.255.255:65535`), in a fixed array:
//! no allocation. [`Edits::apply`] checks everything first — order, bounds, the new
//! length against the buffer's capacity and [`MAX_DATAGRAM`] — and only then moves
//! bytes, so a refused message is left exactly as it was, never half rewritten.
//!
//! Moving in place: the bytes between two edits (a segment) move by the sum of the
//! length changes of the edits before them. Segments that move left are moved first,
//! left to right; then those that move right, right to left. Neither order overwrites
//! a segment before it has moved: a segment's destination lies between the new
//! places of its neighbours, and a neighbour still waiting to move lies on the side
//! the segment moves away from. Replacement texts are written last, into the gaps.
//! Segments that do not move are not touched, and bytes after the message (a
//! datagram's trailing bytes beyond Content-Length) are dropped.

use std::net::Ipv4Addr;
use std::ops::Range;

/// Replacements per message. An INVITE rewritten both in its headers and in an SDP of
/// three streams needs about twenty.
pub const MAX_EDITS: usize = 64;

/// Bytes per replacement text: `255.255.255.255:65535` is 21.
pub const MAX_TEXT: usize = 24;

/// The largest SIP message an IPv4 UDP datagram carries: 65535 minus the IPv4 and UDP
/// headers (20 + 8 bytes).
pub const MAX_DATAGRAM: usize = 65535 - 28;

/// Why edits could not be recorded or applied. The buffer is untouched in every case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum EditError {
    #[error("more than 64 replacements in one message")]
    TooManyEdits,
    #[error("a replacement text is longer than 24 bytes")]
    TextTooLong,
    #[error("replacements overlap, or one crosses the end of the header section")]
    Overlap,
    #[error(
        "a replacement lies past the end of the message, or the message is longer than the buffer"
    )]
    OutOfBounds,
    #[error("the rewritten message would exceed the buffer's capacity or 65507 bytes (the largest UDP payload over IPv4)")]
    TooLarge,
}

impl EditError {
    pub const COUNT: usize = 5;
    /// Every reason, in `index` order.
    pub const ALL: [EditError; Self::COUNT] = [
        Self::TooManyEdits,
        Self::TextTooLong,
        Self::Overlap,
        Self::OutOfBounds,
        Self::TooLarge,
    ];

    /// A dense index in `0..COUNT`.
    pub fn index(self) -> usize {
        self as usize
    }

    /// A snake_case name, for counter labels.
    pub fn name(self) -> &'static str {
        match self {
            Self::TooManyEdits => "too_many_edits",
            Self::TextTooLong => "edit_text_too_long",
            Self::Overlap => "edit_overlap",
            Self::OutOfBounds => "edit_out_of_bounds",
            Self::TooLarge => "message_too_large",
        }
    }
}

/// A replacement text, held inline.
#[derive(Debug, Clone, Copy)]
pub struct Text {
    bytes: [u8; MAX_TEXT],
    len: u8,
}

impl PartialEq for Text {
    fn eq(&self, other: &Self) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for Text {}

impl Default for Text {
    fn default() -> Self {
        Self::new()
    }
}

impl Text {
    pub const fn new() -> Self {
        Self {
            bytes: [0; MAX_TEXT],
            len: 0,
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        self.bytes.get(..usize::from(self.len)).unwrap_or_default()
    }

    pub fn len(&self) -> usize {
        usize::from(self.len)
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends `s`.
    pub fn push(&mut self, s: &[u8]) -> Result<(), EditError> {
        let start = usize::from(self.len);
        let dst = self
            .bytes
            .get_mut(start..start + s.len())
            .ok_or(EditError::TextTooLong)?;
        dst.copy_from_slice(s);
        self.len += s.len() as u8;
        Ok(())
    }

    /// Appends `n` in decimal.
    pub fn push_decimal(&mut self, n: u32) -> Result<(), EditError> {
        let digits = match n {
            0..=9 => 1,
            10..=99 => 2,
            100..=999 => 3,
            1_000..=9_999 => 4,
            10_000..=99_999 => 5,
            100_000..=999_999 => 6,
            1_000_000..=9_999_999 => 7,
            10_000_000..=99_999_999 => 8,
            100_000_000..=999_999_999 => 9,
            _ => 10,
        };
        let start = usize::from(self.len);
        let dst = self
            .bytes
            .get_mut(start..start + digits)
            .ok_or(EditError::TextTooLong)?;
        let mut v = n;
        for d in dst.iter_mut().rev() {
            *d = b'0' + (v % 10) as u8;
            v /= 10;
        }
        self.len += digits as u8;
        Ok(())
    }

    /// Appends `ip` in dotted-quad text.
    pub fn push_ipv4(&mut self, ip: Ipv4Addr) -> Result<(), EditError> {
        let mut out = [0u8; 16];
        let mut n = 0;
        for o in ip.octets() {
            // Hundreds, tens, units and a dot; the leading zeros shifted out.
            let digits = [b'0' + o / 100, b'0' + o / 10 % 10, b'0' + o % 10, b'.'];
            let zeros = usize::from(o < 100) + usize::from(o < 10);
            let word = u32::from_le_bytes(digits) >> (8 * zeros);
            if let Some(dst) = out.get_mut(n..n + 4) {
                dst.copy_from_slice(&word.to_le_bytes());
            }
            n += 4 - zeros;
        }
        // Without the last dot; in one fixed-size copy where the room allows.
        let len = n - 1;
        let start = usize::from(self.len);
        match self.bytes.get_mut(start..start + out.len()) {
            Some(dst) => {
                dst.copy_from_slice(&out);
                self.len += len as u8;
                Ok(())
            }
            None => self.push(out.get(..len).unwrap_or_default()),
        }
    }
}

impl TryFrom<&[u8]> for Text {
    type Error = EditError;

    fn try_from(s: &[u8]) -> Result<Self, EditError> {
        let mut t = Self::new();
        t.push(s)?;
        Ok(t)
    }
}

/// One replacement: `old_len` bytes at `at` become `text`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Edit {
    at: usize,
    old_len: usize,
    text: Text,
}

impl Edit {
    const EMPTY: Edit = Edit {
        at: 0,
        old_len: 0,
        text: Text::new(),
    };

    fn end(&self) -> usize {
        self.at + self.old_len
    }

    /// How many bytes this edit adds (negative: removes).
    fn delta(&self) -> isize {
        self.text.len() as isize - self.old_len as isize
    }
}

/// The replacements for one message, kept sorted by position; see the module
/// documentation. Reuse one per worker: [`reset`](Self::reset) before each message.
#[derive(Debug, Clone)]
pub struct Edits {
    items: [Edit; MAX_EDITS],
    len: usize,
    msg_len: usize,
    body_offset: usize,
    content_length: Option<Range<usize>>,
    /// Flow tokens the rewrite found but could not read (left as they were).
    foreign_tokens: usize,
}

impl Default for Edits {
    fn default() -> Self {
        Self::new()
    }
}

impl Edits {
    pub const fn new() -> Self {
        Self {
            items: [Edit::EMPTY; MAX_EDITS],
            len: 0,
            msg_len: 0,
            body_offset: 0,
            content_length: None,
            foreign_tokens: 0,
        }
    }

    /// Starts the edits of a message of `msg_len` bytes (header section and body; any
    /// bytes after it in the buffer are dropped when the message is rewritten) whose
    /// body starts at `body_offset`. `content_length` is the span of the
    /// Content-Length value's digits, rewritten by [`apply`](Self::apply) when the
    /// body's length changes; `None` when the message has no Content-Length.
    pub fn reset(
        &mut self,
        msg_len: usize,
        body_offset: usize,
        content_length: Option<Range<usize>>,
    ) -> Result<(), EditError> {
        self.len = 0;
        self.msg_len = 0;
        self.body_offset = 0;
        self.content_length = None;
        self.foreign_tokens = 0;
        if body_offset > msg_len
            || content_length
                .as_ref()
                .is_some_and(|c| c.start > c.end || c.end > body_offset)
        {
            return Err(EditError::OutOfBounds);
        }
        self.msg_len = msg_len;
        self.body_offset = body_offset;
        self.content_length = content_length;
        Ok(())
    }

    /// Names the span of the Content-Length value's digits once the edits are known
    /// (the rewriter looks for it only when the body changed); it may not overlap an
    /// edit.
    pub fn set_content_length(&mut self, span: Range<usize>) -> Result<(), EditError> {
        if span.start > span.end || span.end > self.body_offset {
            return Err(EditError::OutOfBounds);
        }
        if self
            .items()
            .iter()
            .any(|e| e.at < span.end && span.start < e.end().max(e.at + 1))
        {
            return Err(EditError::Overlap);
        }
        self.content_length = Some(span);
        Ok(())
    }

    /// Records that `old_len` bytes at `at` become `text`. Edits may come in any
    /// order but may not overlap each other, the Content-Length value, or the end of
    /// the header section.
    pub fn replace(&mut self, at: usize, old_len: usize, text: &[u8]) -> Result<(), EditError> {
        self.replace_text(at, old_len, Text::try_from(text)?)
    }

    /// [`replace`](Self::replace) with a ready [`Text`].
    pub fn replace_text(&mut self, at: usize, old_len: usize, text: Text) -> Result<(), EditError> {
        let end = at.checked_add(old_len).ok_or(EditError::OutOfBounds)?;
        if end > self.msg_len {
            return Err(EditError::OutOfBounds);
        }
        if at < self.body_offset && end > self.body_offset
            || self
                .content_length
                .as_ref()
                .is_some_and(|c| at < c.end && c.start < end.max(at + 1))
        {
            return Err(EditError::Overlap);
        }
        if self.len == MAX_EDITS {
            return Err(EditError::TooManyEdits);
        }
        let edit = Edit { at, old_len, text };
        // Nearly always appended in order.
        if self.items().last().map_or(0, Edit::end) <= at {
            if let Some(slot) = self.items.get_mut(self.len) {
                *slot = edit;
                self.len += 1;
            }
            return Ok(());
        }
        let items = self.items.get(..self.len).unwrap_or_default();
        let i = items.iter().rposition(|e| e.at <= at).map_or(0, |p| p + 1);
        let prev_end = i
            .checked_sub(1)
            .and_then(|p| items.get(p))
            .map_or(0, Edit::end);
        if prev_end > at || items.get(i).is_some_and(|next| end > next.at) {
            return Err(EditError::Overlap);
        }
        if let Some(tail) = self.items.get_mut(i..=self.len) {
            tail.rotate_right(1);
        }
        if let Some(slot) = self.items.get_mut(i) {
            *slot = edit;
        }
        self.len += 1;
        Ok(())
    }

    /// Notes a flow token ([`token`](super::token)) that was foreign or garbled.
    pub fn note_foreign_token(&mut self) {
        self.foreign_tokens += 1;
    }

    /// Flow tokens of this message that named none of the farm's addresses, left as
    /// they were (the caller counts them).
    pub fn foreign_tokens(&self) -> usize {
        self.foreign_tokens
    }

    /// Number of replacements recorded (the Content-Length fix not counted).
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The message's length before the edits.
    pub fn msg_len(&self) -> usize {
        self.msg_len
    }

    /// The replacements in order: the span replaced and its new bytes (the
    /// Content-Length fix not included).
    pub fn iter(&self) -> impl Iterator<Item = (Range<usize>, &[u8])> + '_ {
        self.items()
            .iter()
            .map(|e| (e.at..e.end(), e.text.as_bytes()))
    }

    fn items(&self) -> &[Edit] {
        self.items.get(..self.len).unwrap_or_default()
    }

    /// The Content-Length edit, if the body's length changes, and where it goes
    /// among the others.
    fn content_length_edit(&self) -> Result<Option<(usize, Edit)>, EditError> {
        let Some(span) = self.content_length.clone() else {
            return Ok(None);
        };
        let body_delta: isize = self
            .items()
            .iter()
            .filter(|e| e.at >= self.body_offset)
            .map(Edit::delta)
            .sum();
        if body_delta == 0 {
            return Ok(None);
        }
        let body_len = (self.msg_len - self.body_offset) as isize + body_delta;
        let mut text = Text::new();
        text.push_decimal(u32::try_from(body_len.max(0)).unwrap_or(u32::MAX))?;
        let edit = Edit {
            at: span.start,
            old_len: span.end - span.start,
            text,
        };
        let i = self.items().partition_point(|e| e.at < edit.at);
        Ok(Some((i, edit)))
    }

    /// The message's length after [`apply`](Self::apply), Content-Length fix
    /// included; [`EditError::TooLarge`] past [`MAX_DATAGRAM`].
    pub fn new_len(&self) -> Result<usize, EditError> {
        self.len_after(&self.content_length_edit()?)
    }

    fn len_after(&self, cl: &Option<(usize, Edit)>) -> Result<usize, EditError> {
        let delta: isize = self.items().iter().map(Edit::delta).sum::<isize>()
            + cl.as_ref().map_or(0, |(_, e)| e.delta());
        let len = self.msg_len as isize + delta;
        if len > MAX_DATAGRAM as isize {
            return Err(EditError::TooLarge);
        }
        Ok(len.max(0) as usize)
    }

    /// Rewrites the message at the start of `buf` (its length is the capacity: the
    /// mbuf's data and tailroom) and returns its new length. Without edits nothing is
    /// touched and the length before is returned. On error `buf` is unchanged.
    pub fn apply(&self, buf: &mut [u8]) -> Result<usize, EditError> {
        if self.msg_len > buf.len() {
            return Err(EditError::OutOfBounds);
        }
        let cl = self.content_length_edit()?;
        let new_len = self.len_after(&cl)?;
        if new_len > buf.len() {
            return Err(EditError::TooLarge);
        }
        if self.len == 0 && cl.is_none() {
            return Ok(self.msg_len);
        }
        let items = self.items();
        let n = items.len() + usize::from(cl.is_some());
        // The edits in order, the Content-Length fix merged in.
        let edit = |k: usize| -> &Edit {
            let item = match &cl {
                Some((i, e)) if k == *i => Some(e),
                Some((i, _)) if k > *i => items.get(k - 1),
                _ => items.get(k),
            };
            item.unwrap_or(&Edit::EMPTY)
        };
        // Segment k lies between edit k-1 and edit k and moves by the deltas before it.
        let segment = |k: usize| -> Range<usize> {
            let start = k.checked_sub(1).map_or(0, |p| edit(p).end());
            let end = if k == n { self.msg_len } else { edit(k).at };
            start..end
        };
        let moved = |at: usize, shift: isize| (at as isize + shift) as usize;
        // Which way segments move: most rewrites only grow or only shrink.
        let (mut left, mut right, mut sum) = (false, false, 0isize);
        for k in 0..n {
            sum += edit(k).delta();
            left |= sum < 0;
            right |= sum > 0;
        }

        if left {
            let mut shift = 0isize;
            for k in 0..=n {
                let r = segment(k);
                if shift < 0 && !r.is_empty() {
                    let to = moved(r.start, shift);
                    buf.copy_within(r, to);
                }
                if k < n {
                    shift += edit(k).delta();
                }
            }
        }
        if right {
            let mut shift = sum;
            for k in (0..=n).rev() {
                let r = segment(k);
                if shift > 0 && !r.is_empty() {
                    let to = moved(r.start, shift);
                    buf.copy_within(r, to);
                }
                if k > 0 {
                    shift -= edit(k - 1).delta();
                }
            }
        }
        let mut shift = 0isize;
        for k in 0..n {
            let e = edit(k);
            let at = moved(e.at, shift);
            if let Some(dst) = buf.get_mut(at..at + e.text.len()) {
                dst.copy_from_slice(e.text.as_bytes());
            }
            shift += e.delta();
        }
        Ok(new_len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Applies `edits` the slow way: a new vector.
    fn model(msg: &[u8], edits: &Edits) -> Vec<u8> {
        let mut all: Vec<(Range<usize>, Vec<u8>)> =
            edits.iter().map(|(r, t)| (r, t.to_vec())).collect();
        if let Some((_, e)) = edits.content_length_edit().unwrap() {
            all.push((e.at..e.end(), e.text.as_bytes().to_vec()));
        }
        all.sort_by_key(|(r, _)| r.start);
        let mut out = Vec::new();
        let mut pos = 0;
        for (r, t) in all {
            out.extend_from_slice(&msg[pos..r.start]);
            out.extend_from_slice(&t);
            pos = r.end;
        }
        out.extend_from_slice(&msg[pos..edits.msg_len]);
        out
    }

    const MSG: &[u8] = b"INVITE sip:b@198.18.1.1 SIP/2.0\r\nContent-Length: 12\r\n\r\nc=198.18.1.1";

    fn edits_for(msg: &[u8]) -> Edits {
        let body = msg.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        let cl = msg
            .windows(16)
            .position(|w| w == b"Content-Length: ")
            .unwrap()
            + 16;
        let mut e = Edits::new();
        e.reset(msg.len(), body, Some(cl..body - 4)).unwrap();
        e
    }

    fn apply(msg: &[u8], e: &Edits, cap: usize) -> Result<Vec<u8>, EditError> {
        let mut buf = vec![0xAA; cap.max(msg.len())];
        buf[..msg.len()].copy_from_slice(msg);
        let before = buf.clone();
        match e.apply(&mut buf[..cap]) {
            Ok(n) => Ok(buf[..n].to_vec()),
            Err(err) => {
                assert_eq!(buf, before, "buffer touched on error");
                Err(err)
            }
        }
    }

    #[test]
    fn grow_and_shrink_with_content_length() {
        let mut e = edits_for(MSG);
        e.replace(MSG.len() - 10, 10, b"198.19.113.200").unwrap();
        // Out of order on purpose: the list sorts itself.
        e.replace(13, 10, b"198.19.255.254:5070").unwrap();
        let got = apply(MSG, &e, 200).unwrap();
        assert_eq!(got, model(MSG, &e));
        assert_eq!(
            got,
            b"INVITE sip:b@198.19.255.254:5070 SIP/2.0\r\nContent-Length: 16\r\n\r\nc=198.19.113.200"
        );

        let mut e = edits_for(MSG);
        e.replace(13, 10, b"1.2.3.4").unwrap();
        e.replace(MSG.len() - 10, 10, b"1.2.3.4").unwrap();
        let got = apply(MSG, &e, MSG.len()).unwrap();
        assert_eq!(
            got,
            b"INVITE sip:b@1.2.3.4 SIP/2.0\r\nContent-Length: 9\r\n\r\nc=1.2.3.4"
        );
        assert_eq!(e.new_len().unwrap(), got.len());
    }

    #[test]
    fn header_only_edits_keep_content_length() {
        let mut e = edits_for(MSG);
        e.replace(13, 10, b"198.19.0.1").unwrap();
        assert_eq!(e.content_length_edit().unwrap(), None);
        let got = apply(MSG, &e, 100).unwrap();
        assert!(got.ends_with(b"Content-Length: 12\r\n\r\nc=198.18.1.1"));
    }

    #[test]
    fn nothing_to_do_touches_nothing_and_trailing_bytes_stay_outside() {
        let e = edits_for(MSG);
        assert!(e.is_empty());
        let mut buf = MSG.to_vec();
        assert_eq!(e.apply(&mut buf).unwrap(), MSG.len());
        assert_eq!(buf, MSG);

        // A datagram with junk after the body: the message is the first msg_len bytes.
        let mut junk = MSG.to_vec();
        junk.extend_from_slice(b"junk");
        let mut e = edits_for(MSG);
        e.replace(13, 10, b"198.19.0.1").unwrap();
        let got = apply(&junk, &e, 200).unwrap();
        assert_eq!(got, model(MSG, &e));
    }

    #[test]
    fn refusals_leave_the_buffer_alone() {
        let mut e = edits_for(MSG);
        e.replace(13, 10, b"198.19.255.254:5070").unwrap();
        assert_eq!(apply(MSG, &e, MSG.len() + 8), Err(EditError::TooLarge));
        assert_eq!(apply(MSG, &e, MSG.len() + 9).unwrap().len(), MSG.len() + 9);
        assert_eq!(apply(MSG, &e, MSG.len() - 1), Err(EditError::OutOfBounds));

        // Past 65507 bytes: refused whatever the capacity.
        let big = {
            let mut m = b"MESSAGE sip:b@198.18.1.1 SIP/2.0\r\n\r\n".to_vec();
            m.resize(MAX_DATAGRAM, b'x');
            m
        };
        let mut e = Edits::new();
        e.reset(big.len(), 36, None).unwrap();
        e.replace(13, 10, b"198.19.255.254").unwrap();
        assert_eq!(e.new_len(), Err(EditError::TooLarge));
        assert_eq!(apply(&big, &e, 70_000), Err(EditError::TooLarge));
    }

    #[test]
    fn overlaps_bounds_and_capacity_of_the_list() {
        let mut e = edits_for(MSG);
        e.replace(13, 10, b"x").unwrap();
        assert_eq!(e.replace(20, 1, b"y"), Err(EditError::Overlap));
        assert_eq!(e.replace(10, 5, b"y"), Err(EditError::Overlap));
        assert_eq!(
            e.replace(MSG.len() - 1, 2, b"y"),
            Err(EditError::OutOfBounds)
        );
        let cl = MSG.windows(2).position(|w| w == b"12").unwrap();
        assert_eq!(e.replace(cl, 1, b"7"), Err(EditError::Overlap));
        let body = MSG.len() - 12;
        assert_eq!(e.replace(body - 2, 3, b"7"), Err(EditError::Overlap));
        assert_eq!(e.replace(0, 0, &[b'z'; 25]), Err(EditError::TextTooLong));
        assert_eq!(e.len(), 1);

        let long = [b'x'; 100];
        let mut e = Edits::new();
        e.reset(long.len(), long.len(), None).unwrap();
        for i in 0..MAX_EDITS {
            e.replace(i, 1, b"ab").unwrap();
        }
        assert_eq!(e.replace(MAX_EDITS, 1, b"x"), Err(EditError::TooManyEdits));
        let got = apply(&long, &e, 300).unwrap();
        assert_eq!(got, model(&long, &e));

        let mut bad = Edits::new();
        assert_eq!(bad.reset(10, 11, None), Err(EditError::OutOfBounds));
        assert_eq!(bad.reset(10, 5, Some(4..6)), Err(EditError::OutOfBounds));
    }

    #[test]
    fn texts() {
        let mut t = Text::new();
        t.push_ipv4(Ipv4Addr::new(255, 255, 255, 255)).unwrap();
        t.push(b":").unwrap();
        t.push_decimal(65535).unwrap();
        for (ip, text) in [
            ([0, 0, 0, 0], &b"0.0.0.0"[..]),
            ([9, 10, 99, 100], b"9.10.99.100"),
            ([255, 255, 255, 255], b"255.255.255.255"),
        ] {
            let mut t = Text::new();
            t.push_ipv4(Ipv4Addr::from(ip)).unwrap();
            assert_eq!(t.as_bytes(), text);
        }
        assert_eq!(t.as_bytes(), b"255.255.255.255:65535");
        t.push(b"abc").unwrap();
        assert_eq!(t.push(b"d"), Err(EditError::TextTooLong));
        let mut z = Text::new();
        z.push_decimal(0).unwrap();
        assert_eq!(z.as_bytes(), b"0");
    }

    #[test]
    fn in_place_matches_the_model_for_random_edit_sets() {
        // A small deterministic generator: many shapes of grow/shrink mixes.
        let msg: Vec<u8> = (0..200u8).collect();
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = |m: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % m
        };
        for _ in 0..2000 {
            let mut e = Edits::new();
            e.reset(msg.len() - next(20) as usize, 150, Some(100..103))
                .unwrap();
            for _ in 0..next(12) {
                let at = next(msg.len() as u64) as usize;
                let old = next(8) as usize;
                let text = vec![b'#'; next(MAX_TEXT as u64 + 1) as usize];
                let _ = e.replace(at, old, &text);
            }
            let cap = msg.len() + next(120) as usize;
            match apply(&msg, &e, cap) {
                Ok(got) => assert_eq!(got, model(&msg, &e)),
                Err(err) => assert_eq!(err, EditError::TooLarge),
            }
        }
    }
}
