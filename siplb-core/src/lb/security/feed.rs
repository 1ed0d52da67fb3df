//! Blocklist feeds' formats (`[[security.feed]]`), and the file that carries their
//! prefixes from the control plane to the dataplane.
//!
//! 1 M prefixes are 19 MB of JSON, over the control channel's 16 MiB message limit
//! and ~0.5 s to encode and decode (`bench lpm`), so they do not travel inside the
//! desired state: the control plane writes them to a file, 8 bytes a prefix, and the
//! state names the file and its version; the dataplane's main lcore reads it and
//! builds the table only when the version changes.

use crate::config::Ipv4Net;
use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;

/// One address or prefix per line, `#` comments. Errors name `origin` and the line.
pub fn parse_lines(text: &str, origin: &str) -> Result<Vec<Ipv4Net>, String> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let l = line.split('#').next().unwrap_or("").trim();
        if !l.is_empty() {
            out.push(l.parse().map_err(|e| format!("{origin}:{}: {e}", n + 1))?);
        }
    }
    Ok(out)
}

/// An APIBAN answer: `{"ipaddress": ["1.2.3.4", ...], "ID": "..."}`.
#[derive(Deserialize)]
struct Apiban {
    ipaddress: IpList,
    #[serde(rename = "ID")]
    id: String,
}

/// APIBAN sends a list, or one string for errors (`"rate limit exceeded"`).
#[derive(Deserialize)]
#[serde(untagged)]
enum IpList {
    Many(Vec<String>),
    One(String),
}

/// One page of APIBAN: its addresses and the ID to ask for the next page, `None`
/// when it was the last ("no new bans"). Errors name `origin`.
pub fn parse_apiban(body: &str, origin: &str) -> Result<(Vec<Ipv4Net>, Option<String>), String> {
    let a: Apiban = serde_json::from_str(body).map_err(|e| {
        format!("{origin}: not APIBAN JSON ({{\"ipaddress\": [...], \"ID\": ...}}): {e}")
    })?;
    let list = match a.ipaddress {
        IpList::Many(l) => l,
        IpList::One(s) => return Err(format!("{origin}: APIBAN says `{s}` (ID `{}`)", a.id)),
    };
    if list.len() == 1 && list[0] == "no new bans" {
        return Ok((Vec::new(), None));
    }
    let nets = list
        .iter()
        .map(|s| {
            s.parse()
                .map_err(|e| format!("{origin}: APIBAN address `{s}`: {e}"))
        })
        .collect::<Result<Vec<Ipv4Net>, String>>()?;
    let next = (!nets.is_empty() && a.id != "none" && !a.id.is_empty()).then_some(a.id);
    Ok((nets, next))
}

/// The feeds' prefixes as the control plane wrote them (`DesiredState::feeds`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeedsFile {
    pub path: String,
    /// A hash of the contents: the dataplane builds a new table only when it changes.
    pub version: u64,
    pub prefixes: usize,
}

const MAGIC: &[u8; 8] = b"siplbPF1";

/// The file's bytes: a magic, then per prefix its address (network order), its
/// length and three zero bytes.
pub fn encode(prefixes: &[Ipv4Net]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + prefixes.len() * 8);
    out.extend_from_slice(MAGIC);
    for p in prefixes {
        out.extend_from_slice(&p.addr.octets());
        out.extend_from_slice(&[p.len, 0, 0, 0]);
    }
    out
}

/// Reads what `encode` wrote. Errors name `origin`.
pub fn decode(bytes: &[u8], origin: &str) -> Result<Vec<Ipv4Net>, String> {
    let body = bytes
        .strip_prefix(MAGIC)
        .filter(|b| b.len() % 8 == 0)
        .ok_or_else(|| format!("{origin}: not a siplb feeds file (bad magic or length)"))?;
    body.chunks_exact(8)
        .map(|c| match c[4] {
            len @ 0..=32 => Ok(Ipv4Net {
                addr: Ipv4Addr::new(c[0], c[1], c[2], c[3]),
                len,
            }),
            len => Err(format!("{origin}: a prefix of length {len}")),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apiban_pages_and_errors() {
        let (nets, next) = parse_apiban(
            r#"{"ipaddress":["198.18.7.1","198.18.7.2"],"ID":"987"}"#,
            "u",
        )
        .unwrap();
        assert_eq!((nets.len(), next.as_deref()), (2, Some("987")));
        let (nets, next) =
            parse_apiban(r#"{"ipaddress":["no new bans"], "ID":"none"}"#, "u").unwrap();
        assert_eq!((nets.len(), next), (0, None));
        let e = parse_apiban(
            r#"{"ipaddress":"rate limit exceeded", "ID":"unauthorized"}"#,
            "u",
        )
        .unwrap_err();
        assert!(e.contains("rate limit exceeded"), "{e}");
        let e = parse_apiban(r#"{"ipaddress":["198.18.7.1","x"],"ID":"1"}"#, "u").unwrap_err();
        assert!(e.contains("`x`"), "{e}");
        assert!(parse_apiban("<html>", "u")
            .unwrap_err()
            .contains("not APIBAN JSON"));
    }

    #[test]
    fn lines_and_the_file_round_trip() {
        let nets = parse_lines("# list\n198.18.7.0/24\n\n198.18.8.8 # one\n", "f").unwrap();
        assert_eq!(nets.len(), 2);
        assert_eq!(decode(&encode(&nets), "x").unwrap(), nets);
        assert!(parse_lines("198.18.7.0/24\nnope\n", "f")
            .unwrap_err()
            .starts_with("f:2:"));
        assert!(decode(b"garbage!", "x").is_err());
        let mut bad = encode(&nets);
        bad[12] = 33;
        assert!(decode(&bad, "x").unwrap_err().contains("length 33"));
    }
}
