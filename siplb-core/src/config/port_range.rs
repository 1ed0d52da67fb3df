//! A run of UDP ports, written `first-last` (`40000-59999`): a farm's `media_ports`.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::ops::RangeInclusive;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "String", into = "String")]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

impl PortRange {
    pub const fn new(first: u16, last: u16) -> Self {
        Self { first, last }
    }

    pub fn ports(&self) -> RangeInclusive<u16> {
        self.first..=self.last
    }

    pub fn len(&self) -> u32 {
        u32::from(self.last) - u32::from(self.first) + 1
    }

    pub fn is_empty(&self) -> bool {
        false
    }

    pub fn contains(&self, port: u16) -> bool {
        self.ports().contains(&port)
    }

    pub fn overlaps(&self, other: RangeInclusive<u16>) -> bool {
        self.first <= *other.end() && *other.start() <= self.last
    }

    /// The lower and upper halves, each an even number of ports from an even port
    /// (whole RTP/RTCP pairs).
    pub fn halves(&self) -> (PortRange, PortRange) {
        let first = (u32::from(self.first) + 1) & !1;
        let pairs = (u32::from(self.last) + 1).saturating_sub(first) / 2;
        let mid = first + 2 * (pairs / 2);
        let low = PortRange::new(first as u16, (mid - 1).max(first) as u16);
        let high = PortRange::new(mid.min(u32::from(self.last)) as u16, self.last);
        (low, high)
    }
}

impl FromStr for PortRange {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let port = |p: &str| {
            p.trim()
                .parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| format!("`{}` is not a port number 1-65535", p.trim()))
        };
        let (a, b) = s
            .split_once('-')
            .ok_or_else(|| format!("`{s}`: expected a range of ports such as \"40000-59999\""))?;
        let (first, last) = (port(a)?, port(b)?);
        if last < first {
            return Err(format!("`{s}`: the range ends before it starts"));
        }
        Ok(Self { first, last })
    }
}

impl TryFrom<String> for PortRange {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<PortRange> for String {
    fn from(r: PortRange) -> String {
        r.to_string()
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.first, self.last)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_refuses_with_a_reason() {
        assert_eq!("40000-59999".parse(), Ok(PortRange::new(40000, 59999)));
        assert_eq!(" 20000 - 20003 ".parse(), Ok(PortRange::new(20000, 20003)));
        for bad in ["40000", "0-10", "10-5", "a-b", "1-70000"] {
            assert!(bad.parse::<PortRange>().is_err(), "{bad}");
        }
    }

    #[test]
    fn halves_hold_whole_pairs() {
        let (l, h) = PortRange::new(40000, 59999).halves();
        assert_eq!(
            (l, h),
            (PortRange::new(40000, 49999), PortRange::new(50000, 59999))
        );
        let (l, h) = PortRange::new(40001, 40008).halves();
        assert_eq!(
            (l, h),
            (PortRange::new(40002, 40003), PortRange::new(40004, 40008))
        );
    }
}
