//! Health-check configuration of a farm (`[farm.health]`): how the control plane
//! decides that a backend is up or down. Modelled on Kamailio's dispatcher probing
//! (`ds_ping_interval`, `ds_probing_threshold`, `ds_inactive_threshold`,
//! `ds_ping_reply_codes`) and on the `check_sip` dummy calls of the reference ADC.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckKind {
    /// No checks: backends are up unless drained.
    None,
    /// SIP OPTIONS to the backend; any reply code in `reply_codes` counts as up.
    Options,
    /// A TCP connection to the backend's port (for TCP/TLS services).
    Tcp,
    /// A full dummy call: optional REGISTER with digest, INVITE with SDP (PCMU/8000),
    /// 200, ACK, RTP for `call.duration_ms`, BYE.
    Call,
    /// An external command (`command`, with HOST and PORT replaced); exit 0 = up.
    Command,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthConfig {
    pub check: CheckKind,
    /// Time between the starts of two checks of one backend.
    pub interval_ms: u64,
    /// A check without an answer within this time failed.
    pub timeout_ms: u64,
    /// Consecutive successes that bring a down backend back.
    pub rise: u32,
    /// Consecutive failures that take an up backend down.
    pub fall: u32,
    /// Reply codes that count as "up" for OPTIONS: exact codes ("404") or classes
    /// ("2xx").
    pub reply_codes: Vec<String>,
    /// For `command`: the command line, with HOST and PORT tokens (e.g.
    /// `check_sip -T 9 sip:probe@198.18.0.2 sip:alive@HOST:PORT`).
    pub command: String,
    pub call: CallCheck,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            check: CheckKind::None,
            interval_ms: 1000,
            timeout_ms: 900,
            rise: 2,
            fall: 2,
            reply_codes: vec!["2xx".into()],
            command: String::new(),
            call: CallCheck::default(),
        }
    }
}

/// The dummy call of a `call` check.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CallCheck {
    /// Register first (answering a digest challenge with `user`/`password`).
    pub register: bool,
    pub user: String,
    pub password: String,
    /// The user called (Request-URI and To).
    pub to_user: String,
    /// How long RTP flows before the BYE.
    pub duration_ms: u64,
    /// Raw PCMU (G.711 µ-law, 8 kHz) to send as RTP; empty = a generated tone.
    pub rtp_file: String,
    /// Fail the check unless RTP comes back from the backend during the call (an
    /// echo, an announcement): proves the media path, not only signalling.
    pub expect_rtp: bool,
}

impl Default for CallCheck {
    fn default() -> Self {
        Self {
            register: false,
            user: "siplb-check".into(),
            password: String::new(),
            to_user: "siplb-check".into(),
            duration_ms: 1000,
            rtp_file: String::new(),
            expect_rtp: false,
        }
    }
}

impl HealthConfig {
    /// Why this configuration cannot work, if it cannot (the field and what to do).
    pub fn problem(&self) -> Option<(&'static str, String)> {
        if self.check == CheckKind::None {
            return None;
        }
        if self.interval_ms < 50 {
            return Some(("interval_ms", "expected at least 50 ms".into()));
        }
        if self.timeout_ms == 0
            || self.timeout_ms > self.interval_ms.max(self.call.duration_ms + 10_000)
        {
            return Some((
                "timeout_ms",
                "expected more than 0 and at most the interval".into(),
            ));
        }
        if self.rise == 0 || self.fall == 0 {
            return Some(("rise", "rise and fall must be at least 1".into()));
        }
        if self.check == CheckKind::Options && self.reply_codes.iter().any(|c| !valid_code(c)) {
            return Some((
                "reply_codes",
                "expected codes like \"200\" or classes like \"2xx\" (100-699)".into(),
            ));
        }
        if self.check == CheckKind::Call && self.call.register && self.call.password.is_empty() {
            return Some((
                "call",
                "register = true needs the digest `password` (and `user`)".into(),
            ));
        }
        if self.check == CheckKind::Command && !self.command.contains("HOST") {
            return Some(("command", "the command must contain the HOST token".into()));
        }
        None
    }

    /// True if a reply `code` counts as "up".
    pub fn accepts(&self, code: u16) -> bool {
        self.reply_codes.iter().any(|c| {
            let b = c.as_bytes();
            match b {
                [d, b'x', b'x'] => u16::from(d - b'0') == code / 100,
                _ => c.parse::<u16>() == Ok(code),
            }
        })
    }
}

fn valid_code(c: &str) -> bool {
    match c.as_bytes() {
        [d @ b'1'..=b'6', b'x', b'x'] => *d >= b'1',
        _ => c.parse::<u16>().is_ok_and(|n| (100..=699).contains(&n)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_codes_match_codes_and_classes() {
        let h = HealthConfig {
            reply_codes: vec!["2xx".into(), "404".into()],
            ..Default::default()
        };
        assert!(h.accepts(200) && h.accepts(202) && h.accepts(404));
        assert!(!h.accepts(403) && !h.accepts(500));
    }

    #[test]
    fn problems_name_the_field() {
        let mut h = HealthConfig {
            check: CheckKind::Options,
            ..Default::default()
        };
        assert_eq!(h.problem(), None);
        h.reply_codes = vec!["2yy".into()];
        assert_eq!(h.problem().unwrap().0, "reply_codes");
        h.check = CheckKind::Command;
        h.command = "true".into();
        assert_eq!(h.problem().unwrap().0, "command");
    }
}
