//! The SIP scanner's limits from `[sip]`: given to every worker at start, so they are
//! fixed while the dataplane runs (a new state that changes them is refused).

use siplb_core::config::Config;
use siplb_core::sip::Limits;

pub fn sip_limits(cfg: &Config) -> Limits {
    let mut l = Limits::default();
    if let Some(n) = cfg.sip.max_headers {
        l.max_headers = n;
    }
    if let Some(n) = cfg.sip.max_line_len {
        l.max_line_len = n;
    }
    l
}
