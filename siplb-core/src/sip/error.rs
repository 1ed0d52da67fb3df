//! Why a SIP message or stream was rejected. Dense and `Copy`, so the dataplane keeps
//! one counter per reason (`index`) and labels it (`name`).

/// A reason the scanner rejected its input. Every malformed input maps to one of these;
/// the scanner never panics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[repr(u8)]
pub enum SipError {
    #[error("empty message: the datagram holds nothing but CR/LF")]
    Empty,
    #[error("message larger than Limits::max_message_len")]
    MessageTooLarge,
    #[error("a line is longer than Limits::max_line_len")]
    LineTooLong,
    #[error("more header fields than Limits::max_headers")]
    TooManyHeaders,
    #[error("a line ends in LF without CR (RFC 3261 §7: lines end in CRLF)")]
    BadLineEnding,
    #[error("the header section does not end with an empty line (RFC 3261 §7)")]
    IncompleteHeaders,
    #[error("malformed Request-Line: expected `Method SP Request-URI SP SIP/2.0` (RFC 3261 §7.1)")]
    BadRequestLine,
    #[error("malformed or unacceptable Request-URI (RFC 3261 §19.1, RFC 4475 `escruri`)")]
    BadRequestUri,
    #[error("malformed Status-Line: expected `SIP/2.0 SP 3DIGIT SP Reason` (RFC 3261 §7.2)")]
    BadStatusLine,
    #[error("SIP version is not SIP/2.0 (RFC 3261 §7.1)")]
    BadVersion,
    #[error("malformed header line: no `name:` or a continuation before the first header (RFC 3261 §7.3.1)")]
    BadHeaderLine,
    #[error("a single-valued header (Call-ID, CSeq, From, To, Max-Forwards, Expires, Content-Length) appears twice")]
    DuplicateHeader,
    #[error("Call-ID header missing (RFC 3261 §8.1.1)")]
    MissingCallId,
    #[error("CSeq header missing (RFC 3261 §8.1.1)")]
    MissingCSeq,
    #[error("From header missing (RFC 3261 §8.1.1)")]
    MissingFrom,
    #[error("To header missing (RFC 3261 §8.1.1)")]
    MissingTo,
    #[error("malformed Call-ID: expected `word [\"@\" word]` (RFC 3261 §20.8)")]
    BadCallId,
    #[error("malformed CSeq: expected `1*DIGIT LWS Method`, number below 2^32 (RFC 3261 §20.16)")]
    BadCSeq,
    #[error("CSeq method differs from the Request-Line method (RFC 3261 §8.1.1.5)")]
    CSeqMethodMismatch,
    #[error("malformed From header (RFC 3261 §20.20)")]
    BadFrom,
    #[error("malformed To header (RFC 3261 §20.39)")]
    BadTo,
    #[error("malformed top Via header (RFC 3261 §20.42)")]
    BadVia,
    #[error("malformed first Contact of a REGISTER transaction (RFC 3261 §20.10)")]
    BadContact,
    #[error("malformed Max-Forwards: expected 0..=255 (RFC 3261 §20.22)")]
    BadMaxForwards,
    #[error("malformed Expires: expected delta-seconds below 2^32 (RFC 3261 §20.19)")]
    BadExpires,
    #[error("malformed Content-Length: expected 1*DIGIT (RFC 3261 §20.14)")]
    BadContentLength,
    #[error("Content-Length exceeds the bytes after the header section (RFC 3261 §18.3)")]
    ContentLengthExceedsDatagram,
    #[error("Content-Length missing on a stream transport (RFC 3261 §18.3)")]
    MissingContentLength,
}

impl SipError {
    /// The number of reasons: counters are `[Counter; SipError::COUNT]`.
    pub const COUNT: usize = 28;

    /// Every reason, in `index` order.
    pub const ALL: [SipError; SipError::COUNT] = [
        Self::Empty,
        Self::MessageTooLarge,
        Self::LineTooLong,
        Self::TooManyHeaders,
        Self::BadLineEnding,
        Self::IncompleteHeaders,
        Self::BadRequestLine,
        Self::BadRequestUri,
        Self::BadStatusLine,
        Self::BadVersion,
        Self::BadHeaderLine,
        Self::DuplicateHeader,
        Self::MissingCallId,
        Self::MissingCSeq,
        Self::MissingFrom,
        Self::MissingTo,
        Self::BadCallId,
        Self::BadCSeq,
        Self::CSeqMethodMismatch,
        Self::BadFrom,
        Self::BadTo,
        Self::BadVia,
        Self::BadContact,
        Self::BadMaxForwards,
        Self::BadExpires,
        Self::BadContentLength,
        Self::ContentLengthExceedsDatagram,
        Self::MissingContentLength,
    ];

    /// A dense index in `0..COUNT`.
    #[inline]
    pub fn index(self) -> usize {
        self as usize
    }

    /// A snake_case name, for counter labels.
    pub fn name(self) -> &'static str {
        match self {
            Self::Empty => "empty",
            Self::MessageTooLarge => "message_too_large",
            Self::LineTooLong => "line_too_long",
            Self::TooManyHeaders => "too_many_headers",
            Self::BadLineEnding => "bad_line_ending",
            Self::IncompleteHeaders => "incomplete_headers",
            Self::BadRequestLine => "bad_request_line",
            Self::BadRequestUri => "bad_request_uri",
            Self::BadStatusLine => "bad_status_line",
            Self::BadVersion => "bad_version",
            Self::BadHeaderLine => "bad_header_line",
            Self::DuplicateHeader => "duplicate_header",
            Self::MissingCallId => "missing_call_id",
            Self::MissingCSeq => "missing_cseq",
            Self::MissingFrom => "missing_from",
            Self::MissingTo => "missing_to",
            Self::BadCallId => "bad_call_id",
            Self::BadCSeq => "bad_cseq",
            Self::CSeqMethodMismatch => "cseq_method_mismatch",
            Self::BadFrom => "bad_from",
            Self::BadTo => "bad_to",
            Self::BadVia => "bad_via",
            Self::BadContact => "bad_contact",
            Self::BadMaxForwards => "bad_max_forwards",
            Self::BadExpires => "bad_expires",
            Self::BadContentLength => "bad_content_length",
            Self::ContentLengthExceedsDatagram => "content_length_exceeds_datagram",
            Self::MissingContentLength => "missing_content_length",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indices_are_dense_and_names_unique() {
        for (i, e) in SipError::ALL.iter().enumerate() {
            assert_eq!(e.index(), i);
            assert!(e
                .name()
                .bytes()
                .all(|c| c.is_ascii_lowercase() || c == b'_'));
            assert!(!e.to_string().is_empty());
        }
        let mut names: Vec<_> = SipError::ALL.iter().map(|e| e.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), SipError::COUNT);
    }
}
