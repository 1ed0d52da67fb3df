//! SIP request methods (RFC 3261 §7.1 and §27.4, plus the extensions a balancer sees).

/// A request method. Methods are case-sensitive (RFC 3261 §7.1): `invite` is an
/// extension method, not INVITE. Unknown methods are `Other`; the spelling is kept
/// next to it (`method_raw`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    Invite,
    Ack,
    Bye,
    Cancel,
    Register,
    Options,
    /// RFC 6086.
    Info,
    /// RFC 3311.
    Update,
    /// RFC 3262.
    Prack,
    /// RFC 6665.
    Subscribe,
    /// RFC 6665.
    Notify,
    /// RFC 3515.
    Refer,
    /// RFC 3428.
    Message,
    /// RFC 3903.
    Publish,
    Other,
}

impl Method {
    /// The method named by `raw`, compared byte for byte.
    pub fn from_bytes(raw: &[u8]) -> Self {
        // The usual ones first, by length and one word compare.
        match raw.len() {
            6 if raw == b"INVITE" => return Self::Invite,
            3 if raw == b"ACK" => return Self::Ack,
            3 if raw == b"BYE" => return Self::Bye,
            8 if raw == b"REGISTER" => return Self::Register,
            _ => {}
        }
        match raw {
            b"INVITE" => Self::Invite,
            b"ACK" => Self::Ack,
            b"BYE" => Self::Bye,
            b"CANCEL" => Self::Cancel,
            b"REGISTER" => Self::Register,
            b"OPTIONS" => Self::Options,
            b"INFO" => Self::Info,
            b"UPDATE" => Self::Update,
            b"PRACK" => Self::Prack,
            b"SUBSCRIBE" => Self::Subscribe,
            b"NOTIFY" => Self::Notify,
            b"REFER" => Self::Refer,
            b"MESSAGE" => Self::Message,
            b"PUBLISH" => Self::Publish,
            _ => Self::Other,
        }
    }

    /// The method's name, `None` for `Other`.
    pub fn as_str(self) -> Option<&'static str> {
        Some(match self {
            Self::Invite => "INVITE",
            Self::Ack => "ACK",
            Self::Bye => "BYE",
            Self::Cancel => "CANCEL",
            Self::Register => "REGISTER",
            Self::Options => "OPTIONS",
            Self::Info => "INFO",
            Self::Update => "UPDATE",
            Self::Prack => "PRACK",
            Self::Subscribe => "SUBSCRIBE",
            Self::Notify => "NOTIFY",
            Self::Refer => "REFER",
            Self::Message => "MESSAGE",
            Self::Publish => "PUBLISH",
            Self::Other => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_are_case_sensitive() {
        for m in [
            Method::Invite,
            Method::Ack,
            Method::Bye,
            Method::Cancel,
            Method::Register,
            Method::Options,
            Method::Info,
            Method::Update,
            Method::Prack,
            Method::Subscribe,
            Method::Notify,
            Method::Refer,
            Method::Message,
            Method::Publish,
        ] {
            let name = m.as_str().unwrap();
            assert_eq!(Method::from_bytes(name.as_bytes()), m);
            assert_eq!(
                Method::from_bytes(name.to_lowercase().as_bytes()),
                Method::Other
            );
        }
        assert_eq!(Method::Other.as_str(), None);
    }
}
