//! A run of IPv4 addresses for a SNAT pool, written as one address (`198.18.1.100`),
//! a range (`198.18.1.100-198.18.1.131`) or a prefix (`198.18.1.128/27`, every address
//! of it, network and broadcast included: the pool is not a subnet of ours).

use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

/// Addresses one range may hold; a pool's memory is 16 bytes per address and port.
pub const MAX_RANGE: u32 = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "String", into = "String")]
pub struct AddressRange {
    pub first: Ipv4Addr,
    pub last: Ipv4Addr,
}

impl AddressRange {
    pub fn iter(&self) -> impl Iterator<Item = Ipv4Addr> {
        (u32::from(self.first)..=u32::from(self.last)).map(Ipv4Addr::from)
    }
}

fn addr(s: &str) -> Result<Ipv4Addr, String> {
    s.trim()
        .parse()
        .map_err(|_| format!("`{}` is not an IPv4 address", s.trim()))
}

impl FromStr for AddressRange {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (first, last) = if let Some((a, b)) = s.split_once('-') {
            (addr(a)?, addr(b)?)
        } else {
            let n: super::Ipv4Net = s.parse()?;
            let first = u32::from(n.addr) & n.mask();
            (Ipv4Addr::from(first), Ipv4Addr::from(first | !n.mask()))
        };
        let (a, b) = (u32::from(first), u32::from(last));
        if b < a {
            return Err(format!("`{s}`: the range ends before it starts"));
        }
        if b - a >= MAX_RANGE {
            return Err(format!(
                "`{s}`: at most {MAX_RANGE} addresses per range (a /24); split it or use fewer"
            ));
        }
        Ok(Self { first, last })
    }
}

impl TryFrom<String> for AddressRange {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<AddressRange> for String {
    fn from(r: AddressRange) -> String {
        r.to_string()
    }
}

impl fmt::Display for AddressRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}-{}", self.first, self.last)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_range_and_prefix() {
        let one: AddressRange = "198.18.1.100".parse().unwrap();
        assert_eq!(one.iter().count(), 1);
        let r: AddressRange = "198.18.1.100-198.18.1.131".parse().unwrap();
        assert_eq!(r.iter().count(), 32);
        assert_eq!(r.to_string(), "198.18.1.100-198.18.1.131");
        let p: AddressRange = "198.18.1.130/27".parse().unwrap();
        assert_eq!(
            (p.first, p.last),
            (
                "198.18.1.128".parse().unwrap(),
                "198.18.1.159".parse().unwrap()
            )
        );
        assert!("198.18.1.9-198.18.1.1".parse::<AddressRange>().is_err());
        assert!("198.18.0.0/16".parse::<AddressRange>().is_err());
        assert!("198.18.1.x".parse::<AddressRange>().is_err());
    }
}
