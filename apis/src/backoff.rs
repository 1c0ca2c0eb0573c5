//! How long a broken watch waits before it lists and watches again.
//!
//! kube-runtime's default (800 ms doubling to 30 s, with up to as much again in jitter, reset
//! only after two quiet minutes) is client-go's convention for large clusters. Here it meant
//! that after a 10-second apiserver restart the worker's WorkItem watch stayed down for a
//! further minute, its backoff grown by the failed reconnects during the outage, and nothing
//! moved (found by `cargo xtask faults`, scenario apiserver-restart). Our watchers are few (one
//! per worker, a handful in the provider), so a short ceiling costs the apiserver little.

use std::time::Duration;

/// Backoff of the provider's and the worker's watches: 500 ms doubling to 5 s, ±20 % jitter
/// so that many workers do not reconnect in step. Reset by the stream on every success.
#[derive(Debug, Clone)]
pub struct WatchBackoff {
    next: Duration,
    seed: u64,
}

impl WatchBackoff {
    /// First delay.
    pub const MIN: Duration = Duration::from_millis(500);
    /// Longest delay before jitter.
    pub const MAX: Duration = Duration::from_secs(5);
}

impl Default for WatchBackoff {
    fn default() -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .subsec_nanos();
        WatchBackoff {
            next: Self::MIN,
            seed: u64::from(nanos) ^ u64::from(std::process::id()) << 32,
        }
    }
}

impl Iterator for WatchBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        // xorshift: jitter needs no quality, only to differ between processes.
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        let permille = 800 + self.seed % 401; // 0.8 ..= 1.2
        let delay = self.next.mul_f64(permille as f64 / 1000.0);
        self.next = (self.next * 2).min(Self::MAX);
        Some(delay)
    }
}

impl kube::runtime::utils::Backoff for WatchBackoff {
    fn reset(&mut self) {
        self.next = Self::MIN;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::runtime::utils::Backoff;

    #[test]
    fn grows_to_a_short_ceiling_and_resets() {
        let mut b = WatchBackoff::default();
        let delays: Vec<Duration> = (&mut b).take(12).collect();
        // (why, attempt, nominal delay)
        let cases = [
            ("the first retry is quick", 0, WatchBackoff::MIN),
            ("it doubles", 1, Duration::from_secs(1)),
            ("and doubles", 2, Duration::from_secs(2)),
            ("up to the ceiling", 4, WatchBackoff::MAX),
            ("never beyond it, however long the outage", 11, WatchBackoff::MAX),
        ];
        for (why, i, nominal) in cases {
            let d = delays[i];
            assert!(
                d >= nominal.mul_f64(0.8) && d <= nominal.mul_f64(1.2),
                "{why}: {d:?} vs {nominal:?}"
            );
        }
        b.reset();
        let d = b.next().unwrap();
        assert!(
            d <= WatchBackoff::MIN.mul_f64(1.2),
            "a success starts over: {d:?}"
        );
    }
}
