//! The one IPv4 address-with-prefix type: a port's address and subnet, a source
//! prefix of the security lists, and the services snapshot's port networks.

use serde::{Deserialize, Deserializer, Serialize};
use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

/// An IPv4 address with a prefix length, written `198.18.0.1/24`; where a bare
/// address is allowed (`Ipv4Net::from_str`) it stands for `/32`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "String", into = "String")]
pub struct Ipv4Net {
    pub addr: Ipv4Addr,
    pub len: u8,
}

impl Ipv4Net {
    /// The network mask, host order.
    pub fn mask(&self) -> u32 {
        if self.len == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(self.len))
        }
    }

    pub fn contains(&self, a: Ipv4Addr) -> bool {
        (u32::from(a) ^ u32::from(self.addr)) & self.mask() == 0
    }

    /// Parses `a.b.c.d/len` with the length required: an interface's address, whose
    /// subnet the operator must state.
    pub fn parse_with_len(s: &str) -> Result<Self, String> {
        if !s.contains('/') {
            return Err(format!(
                "`{s}`: expected an address with a prefix length, like 198.18.0.1/24"
            ));
        }
        s.parse()
    }

    /// Serde `deserialize_with` for fields that need the length (`parse_with_len`).
    pub fn deserialize_with_len<'de, D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Self::parse_with_len(&String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

impl FromStr for Ipv4Net {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (a, l) = s.split_once('/').unwrap_or((s, "32"));
        let addr = a
            .trim()
            .parse()
            .map_err(|_| format!("`{a}` is not an IPv4 address"))?;
        let len = l
            .trim()
            .parse::<u8>()
            .ok()
            .filter(|l| *l <= 32)
            .ok_or_else(|| format!("`{l}` is not a prefix length (0-32)"))?;
        Ok(Self { addr, len })
    }
}

impl TryFrom<String> for Ipv4Net {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<Ipv4Net> for String {
    fn from(n: Ipv4Net) -> String {
        n.to_string()
    }
}

impl fmt::Display for Ipv4Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contains_and_masks() {
        let n: Ipv4Net = "198.18.0.1/24".parse().unwrap();
        assert!(n.contains(Ipv4Addr::new(198, 18, 0, 255)));
        assert!(!n.contains(Ipv4Addr::new(198, 18, 1, 0)));
        let all: Ipv4Net = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(Ipv4Addr::new(198, 19, 1, 1)));
        assert_eq!(all.mask(), 0);
        let m = |s: &str| s.parse::<Ipv4Net>().unwrap().mask();
        assert_eq!(m("198.18.128.0/17"), 0xffff_8000);
        assert_eq!(m("198.18.5.7"), u32::MAX);
    }

    #[test]
    fn a_bare_address_is_a_host_unless_the_length_is_required() {
        let h: Ipv4Net = "198.18.5.7".parse().unwrap();
        assert_eq!(h.len, 32);
        assert_eq!(h.to_string(), "198.18.5.7/32");
        let e = Ipv4Net::parse_with_len("198.18.5.7").unwrap_err();
        assert!(e.contains("prefix length"), "{e}");
        assert_eq!(
            Ipv4Net::parse_with_len("198.18.5.0/24").unwrap(),
            "198.18.5.0/24".parse().unwrap()
        );
        assert!("198.18.5.0/33".parse::<Ipv4Net>().is_err());
        assert!("198.18.5/24".parse::<Ipv4Net>().is_err());
    }
}
