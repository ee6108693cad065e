//! A UDP relay with a seeded fault model, for the fault tests: it stands between a node and
//! the peer it dials and forwards every datagram both ways, dropping, delaying, duplicating and
//! reordering them as the model says.
//!
//! The kernel here has no `netem`, so the faults of a lossy, slow path come from userspace. The
//! fate of each datagram is drawn from a ChaCha RNG seeded per direction, so the n-th datagram
//! each way meets the same fate in every run with the same seed (when it arrives still depends
//! on the scheduler). Every fate draws the same count of numbers, so one fate never shifts the
//! next.
// Test helpers panic on failure by design; not every test uses every item.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokio::net::UdpSocket;

/// What the relay does to the datagrams of one direction.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FaultModel {
    /// Probability that a datagram is dropped.
    pub drop: f64,
    /// Probability that a datagram that is not dropped is sent twice (each copy delayed on its
    /// own).
    pub duplicate: f64,
    /// Probability that a datagram is held back by [`FaultModel::reorder_delay`] beyond its
    /// delay, so the ones after it overtake it.
    pub reorder: f64,
    /// Each copy is delayed by a uniform draw from `delay_min..=delay_max`; a spread wider than
    /// the gap between two datagrams reorders some of them too, as a real path's jitter does.
    pub delay_min: Duration,
    /// See [`FaultModel::delay_min`].
    pub delay_max: Duration,
    /// See [`FaultModel::reorder`].
    pub reorder_delay: Duration,
}

impl FaultModel {
    /// Every datagram forwarded once, at once, in order.
    pub const NONE: Self = Self {
        drop: 0.0,
        duplicate: 0.0,
        reorder: 0.0,
        delay_min: Duration::ZERO,
        delay_max: Duration::ZERO,
        reorder_delay: Duration::ZERO,
    };
}

/// What happens to one datagram: the delay of each copy sent (none: dropped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fate {
    pub copies: Vec<Duration>,
    pub reordered: bool,
}

/// The seeded decisions of one direction.
pub struct Faults {
    model: FaultModel,
    rng: ChaCha8Rng,
}

impl Faults {
    pub fn new(model: FaultModel, seed: u64) -> Self {
        Self {
            model,
            rng: ChaCha8Rng::seed_from_u64(seed),
        }
    }

    /// The fate of the next datagram.
    pub fn next_fate(&mut self) -> Fate {
        // Always five draws, whatever the outcome, so the stream of fates depends only on the
        // seed and the datagram's index.
        let [drop, duplicate, reorder, first, second]: [f64; 5] =
            std::array::from_fn(|_| self.rng.random::<f64>());
        let m = &self.model;
        if drop < m.drop {
            return Fate {
                copies: Vec::new(),
                reordered: false,
            };
        }
        let reordered = reorder < m.reorder;
        let delay = |u: f64| {
            let base = m.delay_min + m.delay_max.saturating_sub(m.delay_min).mul_f64(u);
            if reordered {
                base + m.reorder_delay
            } else {
                base
            }
        };
        let mut copies = vec![delay(first)];
        if duplicate < m.duplicate {
            copies.push(delay(second));
        }
        Fate { copies, reordered }
    }
}

/// Counts of one direction.
#[derive(Debug, Default)]
pub struct DirectionStats {
    pub datagrams: AtomicU64,
    pub dropped: AtomicU64,
    pub duplicated: AtomicU64,
    pub reordered: AtomicU64,
}

impl DirectionStats {
    fn note(&self, fate: &Fate) {
        self.datagrams.fetch_add(1, Ordering::Relaxed);
        if fate.copies.is_empty() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        if fate.copies.len() > 1 {
            self.duplicated.fetch_add(1, Ordering::Relaxed);
        }
        if fate.reordered {
            self.reordered.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// (datagrams, dropped, duplicated, reordered).
    pub fn get(&self) -> (u64, u64, u64, u64) {
        let load = |n: &AtomicU64| n.load(Ordering::Relaxed);
        (
            load(&self.datagrams),
            load(&self.dropped),
            load(&self.duplicated),
            load(&self.reordered),
        )
    }
}

impl std::fmt::Display for DirectionStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (datagrams, dropped, duplicated, reordered) = self.get();
        write!(
            f,
            "{datagrams} datagrams, {dropped} dropped, {duplicated} duplicated, {reordered} held back"
        )
    }
}

#[derive(Debug, Default)]
pub struct RelayStats {
    /// From the dialing side to the upstream.
    pub forward: DirectionStats,
    /// From the upstream back to the dialing side.
    pub back: DirectionStats,
}

/// A running relay: datagrams to [`Relay::addr`] go to `upstream`, from a socket of the relay's
/// own per sender, and the answers come back the same way. Stops when dropped.
pub struct Relay {
    pub addr: SocketAddr,
    pub stats: Arc<RelayStats>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Relay {
    /// Listens on `listen` (port 0 picks one) and forwards to `upstream` from sockets bound on
    /// `upstream_from`; the forward direction draws from `seed`, the way back from another
    /// stream derived from it.
    pub fn start(
        listen: SocketAddr,
        upstream: SocketAddr,
        upstream_from: IpAddr,
        model: FaultModel,
        seed: u64,
    ) -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        let socket = runtime.block_on(UdpSocket::bind(listen))?;
        let addr = socket.local_addr()?;
        let stats = Arc::new(RelayStats::default());
        runtime.spawn(run(
            Arc::new(socket),
            upstream,
            upstream_from,
            model,
            seed,
            Arc::clone(&stats),
        ));
        Ok(Self {
            addr,
            stats,
            runtime: Some(runtime),
        })
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// The seed of the way back from the seed of the way forward.
fn back_seed(seed: u64, sender: usize) -> u64 {
    seed ^ 0x5EED_BAC4_0000_0000 ^ sender as u64
}

async fn run(
    listen: Arc<UdpSocket>,
    upstream: SocketAddr,
    upstream_from: IpAddr,
    model: FaultModel,
    seed: u64,
    stats: Arc<RelayStats>,
) {
    let mut senders: HashMap<SocketAddr, Arc<UdpSocket>> = HashMap::new();
    let mut faults = Faults::new(model, seed);
    let mut buf = vec![0u8; 65_536];
    loop {
        // An error here is an ICMP report of an earlier send; the path just lost a datagram.
        let Ok((len, sender)) = listen.recv_from(&mut buf).await else {
            continue;
        };
        let socket = match senders.get(&sender) {
            Some(socket) => Arc::clone(socket),
            None => {
                let Ok(socket) = UdpSocket::bind(SocketAddr::new(upstream_from, 0)).await else {
                    continue;
                };
                let socket = Arc::new(socket);
                let back = Faults::new(model, back_seed(seed, senders.len()));
                tokio::spawn(back_loop(
                    Arc::clone(&socket),
                    Arc::clone(&listen),
                    sender,
                    back,
                    Arc::clone(&stats),
                ));
                senders.insert(sender, Arc::clone(&socket));
                socket
            }
        };
        forward(&mut faults, &stats.forward, &socket, upstream, &buf[..len]).await;
    }
}

/// The upstream's answers to one sender.
async fn back_loop(
    from: Arc<UdpSocket>,
    listen: Arc<UdpSocket>,
    sender: SocketAddr,
    mut faults: Faults,
    stats: Arc<RelayStats>,
) {
    let mut buf = vec![0u8; 65_536];
    loop {
        let Ok((len, _)) = from.recv_from(&mut buf).await else {
            continue;
        };
        forward(&mut faults, &stats.back, &listen, sender, &buf[..len]).await;
    }
}

/// Sends `datagram` to `to` as its fate says: undelayed copies at once (so a model without
/// faults keeps the order), delayed ones from a timer task each.
async fn forward(
    faults: &mut Faults,
    stats: &DirectionStats,
    socket: &Arc<UdpSocket>,
    to: SocketAddr,
    datagram: &[u8],
) {
    let fate = faults.next_fate();
    stats.note(&fate);
    for delay in fate.copies {
        if delay.is_zero() {
            let _ = socket.send_to(datagram, to).await;
        } else {
            let (socket, datagram) = (Arc::clone(socket), datagram.to_vec());
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                let _ = socket.send_to(&datagram, to).await;
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn lossy() -> FaultModel {
        FaultModel {
            drop: 0.05,
            duplicate: 0.02,
            reorder: 0.05,
            delay_min: MS,
            delay_max: 20 * MS,
            reorder_delay: 30 * MS,
        }
    }

    fn fates(model: FaultModel, seed: u64, n: usize) -> Vec<Fate> {
        let mut faults = Faults::new(model, seed);
        (0..n).map(|_| faults.next_fate()).collect()
    }

    #[test]
    fn the_same_seed_gives_the_same_fates_and_another_seed_others() {
        assert_eq!(fates(lossy(), 7, 2_000), fates(lossy(), 7, 2_000));
        assert_ne!(fates(lossy(), 7, 2_000), fates(lossy(), 8, 2_000));
    }

    #[test]
    fn a_fate_does_not_shift_the_fates_after_it() {
        // The same seed under two drop rates: a datagram that both keep has the same other
        // draws under both, so the same copies and delays.
        let keep = fates(lossy(), 3, 500);
        let more_drops = fates(
            FaultModel {
                drop: 0.5,
                ..lossy()
            },
            3,
            500,
        );
        for (a, b) in keep.iter().zip(&more_drops) {
            if !b.copies.is_empty() {
                assert_eq!(a, b);
            }
        }
    }

    #[test]
    fn the_counts_of_each_fault_follow_the_model() {
        for seed in 0..4 {
            let all = fates(lossy(), seed, 40_000);
            let n = all.len() as f64;
            let dropped = all.iter().filter(|f| f.copies.is_empty()).count() as f64;
            let sent: Vec<&Fate> = all.iter().filter(|f| !f.copies.is_empty()).collect();
            let duplicated = sent.iter().filter(|f| f.copies.len() == 2).count() as f64;
            let reordered = sent.iter().filter(|f| f.reordered).count() as f64;
            let near = |got: f64, want: f64| (got - want).abs() < want * 0.15;
            assert!(near(dropped / n, 0.05), "seed {seed}: dropped {dropped}");
            let kept = sent.len() as f64;
            assert!(near(duplicated / kept, 0.02), "seed {seed}: {duplicated}");
            assert!(near(reordered / kept, 0.05), "seed {seed}: {reordered}");
        }
    }

    #[test]
    fn delays_stay_in_range_and_a_held_back_datagram_waits_longer() {
        for fate in fates(lossy(), 11, 10_000) {
            for &delay in &fate.copies {
                let (low, high) = if fate.reordered {
                    (31 * MS, 50 * MS)
                } else {
                    (MS, 20 * MS)
                };
                assert!((low..=high).contains(&delay), "{fate:?}");
            }
            assert!(fate.copies.len() <= 2);
        }
    }

    #[test]
    fn without_faults_every_datagram_goes_once_at_once() {
        for fate in fates(FaultModel::NONE, 5, 1_000) {
            assert_eq!(fate.copies, vec![Duration::ZERO]);
            assert!(!fate.reordered);
        }
    }

    /// An echo server behind a relay on 127.0.0.1: what the client gets back.
    async fn echo_through(model: FaultModel, datagrams: u32) -> (Vec<u32>, Arc<RelayStats>) {
        let server = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let server_addr = server.local_addr().unwrap();
        tokio::spawn(async move {
            let mut buf = [0u8; 64];
            while let Ok((len, from)) = server.recv_from(&mut buf).await {
                let _ = server.send_to(&buf[..len], from).await;
            }
        });
        let relay = tokio::task::spawn_blocking(move || {
            Relay::start(
                "127.0.0.1:0".parse().unwrap(),
                server_addr,
                "127.0.0.1".parse().unwrap(),
                model,
                42,
            )
            .unwrap()
        })
        .await
        .unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let mut got = Vec::new();
        for i in 0..datagrams {
            client.send_to(&i.to_be_bytes(), relay.addr).await.unwrap();
            // One at a time: the echo of each must come back before the next goes (a lost
            // one is waited for only briefly: it is not coming).
            let mut buf = [0u8; 64];
            while let Ok(Ok((len, _))) =
                tokio::time::timeout(Duration::from_millis(200), client.recv_from(&mut buf)).await
            {
                got.push(u32::from_be_bytes(buf[..len].try_into().unwrap()));
                if model.duplicate == 0.0 {
                    break;
                }
            }
        }
        let stats = Arc::clone(&relay.stats);
        tokio::task::spawn_blocking(move || drop(relay))
            .await
            .unwrap();
        (got, stats)
    }

    #[tokio::test]
    async fn the_relay_forwards_both_ways_in_order_without_faults() {
        let (got, stats) = echo_through(FaultModel::NONE, 50).await;
        assert_eq!(got, (0..50).collect::<Vec<_>>());
        assert_eq!(stats.forward.get(), (50, 0, 0, 0));
        assert_eq!(stats.back.get(), (50, 0, 0, 0));
    }

    #[tokio::test]
    async fn the_relay_duplicates_both_ways_as_told() {
        let model = FaultModel {
            duplicate: 1.0,
            ..FaultModel::NONE
        };
        let (got, stats) = echo_through(model, 5).await;
        // Each datagram twice to the server, each of those echoed twice back.
        for i in 0..5 {
            assert_eq!(got.iter().filter(|&&n| n == i).count(), 4, "{got:?}");
        }
        assert_eq!(stats.forward.get(), (5, 0, 5, 0));
        assert_eq!(stats.back.get(), (10, 0, 10, 0));
    }
}
