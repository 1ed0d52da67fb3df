//! Zero-copy SIP scanner (see issue 3).
