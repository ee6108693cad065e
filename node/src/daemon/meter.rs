//! Live transfer rates per peer: what `GET /api/v1/peers` shows as `up_bps` and `down_bps`.
//!
//! A connection already counts the payload bytes sent and received on it (monotonic counters in
//! the connection table). A task samples every connection's counters every [`TICK`]; a rate is
//! the growth since the oldest sample kept, at most [`WINDOW`] ago, over the time since. So a
//! rate covers the last few seconds, falls to 0 within [`WINDOW`] once bytes stop flowing, and
//! costs the transfer path nothing. A new connection to the same peer (new counters) starts a
//! new series.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tally_ledger::PeerId;

use super::Shared;

/// How often the counters are sampled.
pub const TICK: Duration = Duration::from_secs(1);
/// How far back a rate looks.
pub const WINDOW: Duration = Duration::from_secs(5);

/// One sample of a connection's counters.
#[derive(Debug, Clone, Copy)]
struct Sample {
    at: Instant,
    sent: u64,
    received: u64,
}

/// The samples of one connection, oldest first.
#[derive(Debug)]
struct Series {
    /// When the connection was opened: tells one connection from the next.
    since_ms: u64,
    samples: VecDeque<Sample>,
}

/// Every connected peer's recent samples.
#[derive(Debug, Default)]
pub struct PeerRates {
    series: Mutex<HashMap<PeerId, Series>>,
}

/// A peer's rates in bytes per second.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rates {
    /// This node to the peer.
    pub up_bps: u64,
    /// The peer to this node.
    pub down_bps: u64,
}

impl PeerRates {
    fn series(&self) -> MutexGuard<'_, HashMap<PeerId, Series>> {
        self.series
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Records the counters of every live connection, `(peer, since_ms, sent, received)`, at
    /// `now`; forgets peers no longer connected and samples older than needed.
    pub fn sample(&self, now: Instant, live: &[(PeerId, u64, u64, u64)]) {
        let mut series = self.series();
        series.retain(|peer, _| live.iter().any(|(p, ..)| p == peer));
        for &(peer, since_ms, sent, received) in live {
            let entry = series.entry(peer).or_insert_with(|| Series {
                since_ms,
                samples: VecDeque::new(),
            });
            if entry.since_ms != since_ms {
                *entry = Series {
                    since_ms,
                    samples: VecDeque::new(),
                };
            }
            entry.samples.push_back(Sample {
                at: now,
                sent,
                received,
            });
            // Keep the newest sample at least WINDOW old, so a rate always spans the window.
            while entry.samples.len() > 2
                && entry
                    .samples
                    .get(1)
                    .is_some_and(|s| now.saturating_duration_since(s.at) >= WINDOW)
            {
                entry.samples.pop_front();
            }
        }
    }

    /// The rates of `peer`'s connection opened at `since_ms`, whose counters are `sent` and
    /// `received` at `now`. Zero before the first sample.
    pub fn rates(
        &self,
        peer: &PeerId,
        since_ms: u64,
        sent: u64,
        received: u64,
        now: Instant,
    ) -> Rates {
        let series = self.series();
        let Some(oldest) = series
            .get(peer)
            .filter(|s| s.since_ms == since_ms)
            .and_then(|s| {
                s.samples
                    .iter()
                    .find(|sample| now.saturating_duration_since(sample.at) <= WINDOW)
                    .or(s.samples.back())
            })
        else {
            return Rates::default();
        };
        let elapsed_ms = now.saturating_duration_since(oldest.at).as_millis();
        if elapsed_ms == 0 {
            return Rates::default();
        }
        let per_s = |now_total: u64, then: u64| -> u64 {
            let grown = u128::from(now_total.saturating_sub(then));
            u64::try_from(grown * 1000 / elapsed_ms).unwrap_or(u64::MAX)
        };
        Rates {
            up_bps: per_s(sent, oldest.sent),
            down_bps: per_s(received, oldest.received),
        }
    }
}

/// Starts the task that samples every connection's counters each [`TICK`].
pub fn start(shared: &Arc<Shared>) {
    let shared_task = Arc::clone(shared);
    shared.tasks.spawn(async move {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shared_task.cancel.cancelled() => return,
                _ = tick.tick() => {}
            }
            let live: Vec<(PeerId, u64, u64, u64)> = shared_task
                .peers
                .snapshot()
                .into_iter()
                .map(|(peer, _, _, since, sent, received)| (peer, since, sent, received))
                .collect();
            shared_task.rates.sample(Instant::now(), &live);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    const PEER: PeerId = PeerId([7; 32]);

    #[test]
    fn a_rate_is_the_growth_over_the_window() {
        let rates = PeerRates::default();
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        assert_eq!(rates.rates(&PEER, 1, 0, 0, t0), Rates::default());
        rates.sample(t0, &[(PEER, 1, 0, 0)]);
        rates.sample(at(1), &[(PEER, 1, 1000, 10)]);
        assert_eq!(
            rates.rates(&PEER, 1, 2000, 20, at(2)),
            Rates {
                up_bps: 1000,
                down_bps: 10
            }
        );
        // Ten seconds of 1000 B/s: the rate looks back WINDOW, not to the start.
        for s in 2..=10 {
            rates.sample(at(s), &[(PEER, 1, 1000 * s, 0)]);
        }
        rates.sample(at(11), &[(PEER, 1, 1000 * 10 + 5 * 4000, 0)]);
        let r = rates.rates(&PEER, 1, 30_000, 0, at(11));
        // From the sample at 6 s (6000) to 30000 over 5 s.
        assert_eq!(r.up_bps, 4800);
        // Bytes stop: the rate falls to 0 once the window has passed.
        for s in 12..=17 {
            rates.sample(at(s), &[(PEER, 1, 30_000, 0)]);
        }
        assert_eq!(rates.rates(&PEER, 1, 30_000, 0, at(17)).up_bps, 0);
    }

    #[test]
    fn a_new_connection_starts_a_new_series_and_gone_peers_are_forgotten() {
        let rates = PeerRates::default();
        let t0 = Instant::now();
        rates.sample(t0, &[(PEER, 1, 0, 0)]);
        rates.sample(t0 + TICK, &[(PEER, 1, 5000, 0)]);
        // Reconnected: the counters start again from 0; no negative or huge rate.
        rates.sample(t0 + 2 * TICK, &[(PEER, 2, 100, 0)]);
        let r = rates.rates(&PEER, 2, 300, 0, t0 + 3 * TICK);
        assert_eq!(r.up_bps, 200);
        // The old connection's series is gone.
        assert_eq!(
            rates.rates(&PEER, 1, 9999, 0, t0 + 3 * TICK),
            Rates::default()
        );
        rates.sample(t0 + 4 * TICK, &[]);
        assert_eq!(
            rates.rates(&PEER, 2, 300, 0, t0 + 5 * TICK),
            Rates::default()
        );
    }
}
