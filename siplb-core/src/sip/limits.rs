//! Bounds on the work one message may cause. The scanner is linear in the bytes it
//! looks at; these cap those bytes and the number of header fields.

/// Per-message bounds, checked by [`SipMessage::parse`](super::SipMessage::parse) and
/// [`next_frame`](super::next_frame).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Header fields per message (a folded field counts once). Real INVITEs carry 10 to
    /// 30; 64 leaves room for long Via and Record-Route stacks.
    pub max_headers: usize,
    /// Bytes per line, CRLF excluded (each physical line of a folded field counts on
    /// its own). 4096 holds long Identity and Authorization values.
    pub max_line_len: usize,
    /// Bytes per message, header section and body. 65535 covers the largest UDP
    /// datagram (65507 bytes over IPv4) and bounds what a TCP framer buffers.
    pub max_message_len: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_headers: 64,
            max_line_len: 4096,
            max_message_len: 65535,
        }
    }
}
