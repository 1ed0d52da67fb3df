//! TCP flag combinations no TCP stack sends: the 13 rules of SKUDONET's (Zevenet's)
//! `bogustcpflags` DoS rule, each an iptables `--tcp-flags MASK COMP` pair: a segment
//! matches when its flags under `MASK` equal `COMP`. Stealth scans (null, FIN, Xmas)
//! and OS fingerprinting use them; a load balancer has no reason to pass one.

use crate::wire::tcp::{ACK, FIN, RST, SYN};

const PSH: u8 = 0x08;
const URG: u8 = 0x20;
/// iptables' `ALL`: the six classic flags (ECE and CWR are not looked at).
const ALL: u8 = FIN | SYN | RST | PSH | ACK | URG;

/// (mask, value) of each rule, in SKUDONET's order.
const RULES: [(u8, u8); 13] = [
    (ALL, 0),                           // FIN,SYN,RST,PSH,ACK,URG NONE
    (FIN | SYN, FIN | SYN),             // FIN,SYN FIN,SYN
    (SYN | RST, SYN | RST),             // SYN,RST SYN,RST
    (FIN | RST, FIN | RST),             // FIN,RST FIN,RST
    (FIN | ACK, FIN),                   // FIN,ACK FIN: FIN without ACK
    (ACK | URG, URG),                   // ACK,URG URG: URG without ACK
    (ACK | FIN, FIN),                   // ACK,FIN FIN (the same, as SKUDONET lists it)
    (ACK | PSH, PSH),                   // ACK,PSH PSH: PSH without ACK
    (ALL, ALL),                         // Xmas tree
    (ALL, 0),                           // ALL NONE (null scan, again)
    (ALL, FIN | PSH | URG),             // nmap's Xmas scan
    (ALL, SYN | FIN | PSH | URG),       //
    (ALL, SYN | RST | ACK | FIN | URG), //
];

/// Is this combination of TCP flags one of the bogus ones?
#[inline]
pub fn bogus(flags: u8) -> bool {
    RULES.iter().any(|&(mask, value)| flags & mask == value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_stacks_send_passes_and_the_thirteen_rules_match() {
        for ok in [
            SYN,
            SYN | ACK,
            ACK,
            ACK | PSH,
            FIN | ACK,
            RST,
            RST | ACK,
            ACK | URG,
        ] {
            assert!(!bogus(ok), "{ok:#04x}");
        }
        // ECN bits on a SYN (ECE|CWR) are not looked at.
        assert!(!bogus(SYN | 0xC0));
        for bad in [
            0,
            FIN | SYN,
            SYN | RST,
            FIN | RST | ACK,
            FIN,
            URG,
            PSH,
            ALL,
            FIN | PSH | URG,
            SYN | FIN | PSH | URG,
            SYN | RST | ACK | FIN | URG,
        ] {
            assert!(bogus(bad), "{bad:#04x}");
        }
        // Every one of the 64 combinations is judged; count the bogus ones.
        let n = (0u8..64).filter(|f| bogus(*f)).count();
        assert_eq!(n, 46, "combinations the 13 rules drop");
    }
}
