//! Rate pacing on the TSC: after `t` seconds, `rate × t` requests may have been sent.
//! A loop that fell behind (descheduled on a shared core) catches up at most one
//! millisecond of requests, in bursts of at most `burst`: what it missed beyond that is
//! not sent, rather than thrown at the device under test at the generator's full speed.

pub struct Pacer {
    start: u64,
    hz: u64,
    /// Requests per second; 0 = unlimited.
    rate: u64,
    sent: u64,
}

impl Pacer {
    pub fn new(start_tsc: u64, tsc_hz: u64, rate: u64) -> Self {
        Pacer {
            start: start_tsc,
            hz: tsc_hz.max(1),
            rate,
            sent: 0,
        }
    }

    /// How many requests may go now, at most `burst`.
    #[inline]
    pub fn allowance(&self, now_tsc: u64, burst: usize) -> usize {
        if self.rate == 0 {
            return burst;
        }
        let due = u128::from(now_tsc.saturating_sub(self.start)) * u128::from(self.rate)
            / u128::from(self.hz);
        (due.saturating_sub(u128::from(self.sent)) as usize).min(burst)
    }

    #[inline]
    pub fn consume(&mut self, n: usize) {
        self.sent += n as u64;
    }

    /// Forgets the requests due more than a millisecond ago that were not sent; returns
    /// how many were forgotten.
    pub fn forgive(&mut self, now_tsc: u64) -> u64 {
        if self.rate == 0 {
            return 0;
        }
        let due = (u128::from(now_tsc.saturating_sub(self.start)) * u128::from(self.rate)
            / u128::from(self.hz)) as u64;
        let max_debt = (self.rate / 1000).max(32);
        let debt = due.saturating_sub(self.sent);
        if debt > max_debt {
            self.sent += debt - max_debt;
            debt - max_debt
        } else {
            0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paces_to_the_rate() {
        let hz = 1_000_000_000;
        let mut p = Pacer::new(1000, hz, 1_000_000); // 1 per µs
        assert_eq!(p.allowance(1000, 32), 0);
        assert_eq!(p.allowance(1000 + 10_000, 32), 10);
        p.consume(10);
        assert_eq!(p.allowance(1000 + 10_000, 32), 0);
        // Far behind: bursts of at most 32.
        assert_eq!(p.allowance(1000 + 1_000_000, 32), 32);
        let mut sent = 10;
        let mut t = 1000 + 10_000;
        while t <= 1000 + 1_000_000 {
            let n = p.allowance(t, 32);
            p.consume(n);
            sent += n;
            t += 500;
        }
        assert_eq!(sent, 1000);
    }

    #[test]
    fn a_long_gap_is_forgiven_beyond_a_millisecond() {
        let hz = 1_000_000_000;
        let mut p = Pacer::new(0, hz, 100_000); // 100 per ms
        assert_eq!(p.forgive(500_000), 0); // 50 due, within a millisecond of debt
        assert_eq!(p.forgive(10_000_000), 900); // 1000 due: keep 100
        let mut sent = 0;
        while p.allowance(10_000_000, 32) > 0 {
            let n = p.allowance(10_000_000, 32);
            p.consume(n);
            sent += n;
        }
        assert_eq!(sent, 100);
    }

    #[test]
    fn zero_rate_is_unlimited() {
        let p = Pacer::new(0, 1, 0);
        assert_eq!(p.allowance(0, 32), 32);
    }
}
