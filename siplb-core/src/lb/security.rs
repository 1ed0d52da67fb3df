//! The balancer's first line of defence, applied to what clients send to the VIPs:
//! deny and allow lists of source prefixes (a blocklist feed can be a file), SIP
//! scanners recognised by their User-Agent, and a per-source limit on new dialogs and
//! registrations per second (floods). Everything dropped here is counted by reason.

use crate::config::{Ipv4Net, SecurityConfig};
use crate::hash::hash64;
use crate::table::flow::{Entry, FlowTable};
use memchr::memmem::Finder;
use std::net::Ipv4Addr;
use std::sync::LazyLock;

/// Source prefixes, grouped by length so a lookup is one binary search per length in
/// use (usually two: /32 and /24).
#[derive(Debug, Clone, Default)]
pub struct PrefixSet {
    /// (network mask of one prefix length, sorted network addresses), longest first.
    by_len: Vec<(u32, Vec<u32>)>,
}

impl PrefixSet {
    pub fn new(prefixes: &[Ipv4Net]) -> Self {
        let mut by_len: Vec<(u32, Vec<u32>)> = Vec::new();
        for p in prefixes {
            let net = u32::from(p.addr) & p.mask();
            match by_len.iter_mut().find(|(m, _)| *m == p.mask()) {
                Some((_, v)) => v.push(net),
                None => by_len.push((p.mask(), vec![net])),
            }
        }
        for (_, v) in &mut by_len {
            v.sort_unstable();
            v.dedup();
        }
        by_len.sort_by_key(|(m, _)| std::cmp::Reverse(*m));
        Self { by_len }
    }

    pub fn is_empty(&self) -> bool {
        self.by_len.is_empty()
    }

    pub fn len(&self) -> usize {
        self.by_len.iter().map(|(_, v)| v.len()).sum()
    }

    #[inline]
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let a = u32::from(ip);
        self.by_len
            .iter()
            .any(|(mask, nets)| nets.binary_search(&(a & mask)).is_ok())
    }
}

/// The security policy in force (part of the services snapshot).
#[derive(Debug, Clone, Default)]
pub struct Policy {
    pub deny: PrefixSet,
    pub allow: PrefixSet,
    /// Lower-case User-Agent substrings of scanners.
    pub scanners: Vec<Vec<u8>>,
    pub max_new_per_source: u32,
}

/// Whether `hay` contains `lower` (lower-case ASCII) in any case: candidates found
/// by their first byte in either case (SIMD), then compared.
fn contains_caseless(hay: &[u8], lower: &[u8]) -> bool {
    let Some(&first) = lower.first() else {
        return false;
    };
    memchr::memchr2_iter(first, first.to_ascii_uppercase(), hay).any(|i| {
        hay.get(i..i + lower.len())
            .is_some_and(|w| w.eq_ignore_ascii_case(lower))
    })
}

/// Why a client was turned away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Denied,
    Scanner,
    Flood,
}

/// The prefixes of a deny file: one address or prefix per line, `#` comments. Errors
/// name the file and line.
pub fn read_deny_file(path: &str) -> Result<Vec<Ipv4Net>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let l = line.split('#').next().unwrap_or("").trim();
        if !l.is_empty() {
            out.push(l.parse().map_err(|e| format!("{path}:{}: {e}", n + 1))?);
        }
    }
    Ok(out)
}

impl Policy {
    /// Builds the policy, reading `deny_file` if set. Errors name the file and line.
    pub fn build(cfg: &SecurityConfig) -> Result<Policy, String> {
        let mut deny = cfg.deny.clone();
        if !cfg.deny_file.is_empty() {
            deny.extend(read_deny_file(&cfg.deny_file)?);
        }
        Ok(Policy {
            deny: PrefixSet::new(&deny),
            allow: PrefixSet::new(&cfg.allow),
            scanners: cfg
                .scanner_user_agents
                .iter()
                .filter(|s| !s.is_empty())
                .map(|s| s.to_ascii_lowercase().into_bytes())
                .collect(),
            max_new_per_source: cfg.max_new_per_source,
        })
    }

    /// May this source talk to the VIPs at all?
    #[inline]
    pub fn admits(&self, src: Ipv4Addr) -> bool {
        !(self.deny.contains(src) || (!self.allow.is_empty() && !self.allow.contains(src)))
    }

    /// Does a User-Agent field of this header section name a scanner? Field names in
    /// any case, white space before the colon allowed, every such field looked at.
    /// Only lines that start with `u`/`U` are read, found with two SIMD searches
    /// (`memmem`), not with the SIP scanner's header iterator, which would parse every
    /// field's name on the new-work path.
    pub fn has_scanner_agent(&self, header_section: &[u8]) -> bool {
        static LINE_U: LazyLock<[Finder<'static>; 2]> =
            LazyLock::new(|| [Finder::new(b"\nU"), Finder::new(b"\nu")]);
        if self.scanners.is_empty() {
            return false;
        }
        let hs = header_section;
        let starts = LINE_U
            .iter()
            .flat_map(|f| f.find_iter(hs).map(|i| i + 1))
            .chain([0]);
        for start in starts {
            let line = &hs[start..];
            let line = &line[..memchr::memchr(b'\n', line).unwrap_or(line.len())];
            if self.is_scanner_agent_line(line) {
                return true;
            }
        }
        false
    }

    /// Is `line` a User-Agent field naming a scanner?
    fn is_scanner_agent_line(&self, line: &[u8]) -> bool {
        const NAME: &[u8] = b"user-agent";
        if line.len() <= NAME.len() || !line[..NAME.len()].eq_ignore_ascii_case(NAME) {
            return false;
        }
        let rest = &line[NAME.len()..];
        let colon = rest.iter().position(|b| !matches!(b, b' ' | b'\t'));
        colon
            .filter(|i| rest[*i] == b':')
            .is_some_and(|i| self.is_scanner(&rest[i + 1..]))
    }

    /// Is this User-Agent one of a scanner's?
    pub fn is_scanner(&self, user_agent: &[u8]) -> bool {
        self.scanners
            .iter()
            .any(|s| contains_caseless(user_agent, s))
    }

    /// Counts one new dialog or registration from `src` in this second's window of
    /// `rates`; false when the source is over its limit.
    #[inline]
    pub fn within_rate(&self, rates: &FlowTable<'_>, src: Ipv4Addr, now: u32) -> bool {
        if self.max_new_per_source == 0 {
            return true;
        }
        let key = hash64(&u32::from(src).to_be_bytes()) | 1;
        let limit = self.max_new_per_source;
        // The closure may run again if another worker counts the same source at once.
        let over = std::cell::Cell::new(false);
        let _ = rates.upsert(key, now, |old| {
            let n = old.map_or(0, |e| e.payload);
            over.set(n >= limit);
            (n < limit).then_some(Entry {
                payload: n + 1,
                deadline: old.map_or(now.saturating_add(1), |e| e.deadline),
            })
        });
        !over.get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::flow::Slot;

    fn p(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    #[test]
    fn prefixes_match_by_length() {
        let s = PrefixSet::new(&[p("198.18.5.0/24"), p("198.19.1.1"), p("198.18.128.0/17")]);
        assert!(s.contains("198.18.5.77".parse().unwrap()));
        assert!(s.contains("198.19.1.1".parse().unwrap()));
        assert!(!s.contains("198.19.1.2".parse().unwrap()));
        assert!(s.contains("198.18.200.1".parse().unwrap()));
        assert!(!s.contains("198.18.6.1".parse().unwrap()));
        assert_eq!(s.len(), 3);
    }

    #[test]
    fn allow_list_and_scanners() {
        let cfg = SecurityConfig {
            allow: vec![p("198.18.0.0/24")],
            deny: vec![p("198.18.0.66")],
            ..Default::default()
        };
        let pol = Policy::build(&cfg).unwrap();
        assert!(pol.admits("198.18.0.10".parse().unwrap()));
        assert!(!pol.admits("198.18.0.66".parse().unwrap()));
        assert!(!pol.admits("198.18.1.10".parse().unwrap()));
        assert!(pol.is_scanner(b"Friendly-Scanner 1.0"));
        assert!(pol.is_scanner(b"sipvicious"));
        assert!(!pol.is_scanner(b"Linphone/5.2"));
    }

    #[test]
    fn rate_limit_per_source_per_second() {
        let slots: Vec<Slot> = (0..1024).map(|_| Slot::default()).collect();
        let t = FlowTable::new(&slots, 8);
        let pol = Policy {
            max_new_per_source: 3,
            ..Default::default()
        };
        let a: Ipv4Addr = "198.18.0.10".parse().unwrap();
        let b: Ipv4Addr = "198.18.0.11".parse().unwrap();
        let passed = (0..10).filter(|_| pol.within_rate(&t, a, 100)).count();
        assert_eq!(passed, 3);
        assert!(
            pol.within_rate(&t, b, 100),
            "other sources are not affected"
        );
        assert!(pol.within_rate(&t, a, 101), "a new second, a new budget");
    }

    #[test]
    fn deny_file_errors_name_the_line() {
        let dir = std::env::temp_dir().join(format!("siplb-deny-{}", std::process::id()));
        std::fs::write(&dir, "# feed\n198.18.9.0/24\nnot-an-address\n").unwrap();
        let cfg = SecurityConfig {
            deny_file: dir.display().to_string(),
            ..Default::default()
        };
        let e = Policy::build(&cfg).unwrap_err();
        assert!(e.contains(":3:"), "{e}");
        std::fs::write(&dir, "# feed\n198.18.9.0/24 # a block\n").unwrap();
        let pol = Policy::build(&cfg).unwrap();
        assert!(!pol.admits("198.18.9.9".parse().unwrap()));
        let _ = std::fs::remove_file(&dir);
    }

    #[test]
    fn scanner_agents_are_found_in_any_spelling_of_the_field_name() {
        let p = Policy {
            scanners: vec![b"friendly-scanner".to_vec()],
            ..Policy::default()
        };
        let h = |ua_line: &str| {
            format!(
                "INVITE sip:a@x SIP/2.0\r\nVia: SIP/2.0/UDP x\r\n{ua_line}\r\nCall-ID: 1\r\n\r\n"
            )
        };
        for line in [
            "User-Agent: friendly-scanner",
            "user-agent:Friendly-Scanner 1.0",
            "USER-AGENT \t: x friendly-scanner",
        ] {
            assert!(p.has_scanner_agent(h(line).as_bytes()), "{line}");
        }
        for line in [
            "User-Agent: baresip",
            "User-Agents: friendly-scanner",
            "X-User-Agent: friendly-scanner",
            "Subject: friendly-scanner",
        ] {
            assert!(!p.has_scanner_agent(h(line).as_bytes()), "{line}");
        }
        assert!(!Policy::default().has_scanner_agent(h("User-Agent: friendly-scanner").as_bytes()));
    }
}
