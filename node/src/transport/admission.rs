//! Admission by source address: how many incoming connections (handshakes in progress and
//! established) one IP may hold, and the penalties and bans of IPs whose connections misbehave.
//!
//! The PeerId ban (in `daemon::peers`) is not enough on its own: a client can make a new key for
//! every connection, so what it did is also charged to where it comes from. The endpoint asks
//! here before it accepts a QUIC `Incoming`, so a refused flood costs one lookup and, at most, one
//! small packet. IPv6 sources are grouped by /64, the block one host usually gets; IPv4-mapped
//! IPv6 addresses count as their IPv4 address.
//!
//! Penalty points decay (one every [`IP_PENALTY_DECAY`]), so an honest host that fails now and
//! then (a node on another network redialing with backoff) never reaches [`IP_BAN_THRESHOLD`].
//! The table holds only addresses with a connection, points or a ban, and at most
//! [`MAX_TRACKED_IPS`] of them, so a spoofed flood cannot grow it without bound.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Penalty points at which an IP is banned: three times a PeerId's, since several keys (or
/// several hosts behind one NAT) may share it.
pub const IP_BAN_THRESHOLD: u32 = 300;
/// How long an IP ban lasts.
pub const IP_BAN_DURATION: Duration = Duration::from_secs(600);
/// One penalty point of an IP is forgiven per this much time.
pub const IP_PENALTY_DECAY: Duration = Duration::from_secs(2);
/// Addresses tracked at most; past it, new penalties are not recorded (admission still counts
/// connections, which the endpoint bounds anyway).
pub const MAX_TRACKED_IPS: usize = 65_536;

/// Why an incoming connection is turned away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Its source is banned.
    Banned,
    /// Its source holds its limit of connections already.
    TooMany,
}

#[derive(Debug, Default, Clone, Copy)]
struct IpState {
    /// Incoming connections held: handshakes in progress and established ones.
    slots: usize,
    /// Penalty points as of `updated`.
    points: u32,
    updated: Option<Instant>,
    banned_until: Option<Instant>,
}

impl IpState {
    /// Applies the decay up to `now` and ends an expired ban.
    fn settle(&mut self, now: Instant) {
        if self.banned_until.is_some_and(|until| until <= now) {
            self.banned_until = None;
            self.points = 0;
        }
        if let Some(updated) = self.updated {
            let steps = now.saturating_duration_since(updated).as_millis()
                / IP_PENALTY_DECAY.as_millis().max(1);
            let steps = u32::try_from(steps).unwrap_or(u32::MAX);
            if steps > 0 {
                self.points = self.points.saturating_sub(steps);
                self.updated = Some(updated + IP_PENALTY_DECAY.saturating_mul(steps));
            }
        }
    }

    fn banned(&self, now: Instant) -> bool {
        self.banned_until.is_some_and(|until| until > now)
    }

    fn idle(&self) -> bool {
        self.slots == 0 && self.points == 0 && self.banned_until.is_none()
    }
}

/// The per-IP accounting of one endpoint.
#[derive(Debug)]
pub struct Admission {
    max_per_ip: usize,
    table: Mutex<HashMap<IpAddr, IpState>>,
}

/// One incoming connection's place in its IP's count; given back when dropped (when the
/// handshake fails, or when the last handle of the established connection goes).
#[derive(Debug)]
pub struct IpSlot {
    admission: Arc<Admission>,
    ip: IpAddr,
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut table = self.admission.table();
        if let Some(state) = table.get_mut(&self.ip) {
            state.slots = state.slots.saturating_sub(1);
            state.settle(Instant::now());
            if state.idle() {
                table.remove(&self.ip);
            }
        }
    }
}

impl IpSlot {
    /// The (grouped) source address the slot counts against.
    pub fn ip(&self) -> IpAddr {
        self.ip
    }
}

/// The key an address is counted under: IPv4 as is (mapped IPv6 too), IPv6 by its /64.
pub fn source_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(Ipv6Addr::from(bits))
        }
        v4 => v4,
    }
}

impl Admission {
    /// Admits at most `max_per_ip` incoming connections per source at once (at least 1).
    pub fn new(max_per_ip: usize) -> Arc<Self> {
        Arc::new(Self {
            max_per_ip: max_per_ip.max(1),
            table: Mutex::new(HashMap::new()),
        })
    }

    fn table(&self) -> MutexGuard<'_, HashMap<IpAddr, IpState>> {
        self.table
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The per-IP limit.
    pub fn max_per_ip(&self) -> usize {
        self.max_per_ip
    }

    /// Takes a slot for a new incoming connection from `ip`, unless it is banned or full.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<IpSlot, Refusal> {
        let ip = source_key(ip);
        self.admit_at(ip, Instant::now())?;
        Ok(IpSlot {
            admission: Arc::clone(self),
            ip,
        })
    }

    fn admit_at(&self, ip: IpAddr, now: Instant) -> Result<(), Refusal> {
        let mut table = self.table();
        let tracked = table.len();
        match table.get_mut(&ip) {
            Some(state) => {
                state.settle(now);
                if state.banned(now) {
                    return Err(Refusal::Banned);
                }
                if state.slots >= self.max_per_ip {
                    return Err(Refusal::TooMany);
                }
                state.slots += 1;
            }
            // Full of other addresses' state: admit without tracking rather than refuse an
            // address that did nothing (the endpoint's total limits still hold).
            None if tracked >= MAX_TRACKED_IPS => {
                prune(&mut table, now);
                if table.len() < MAX_TRACKED_IPS {
                    table.insert(
                        ip,
                        IpState {
                            slots: 1,
                            ..IpState::default()
                        },
                    );
                }
            }
            None => {
                table.insert(
                    ip,
                    IpState {
                        slots: 1,
                        ..IpState::default()
                    },
                );
            }
        }
        Ok(())
    }

    /// Adds `points` to `ip`; at [`IP_BAN_THRESHOLD`] it is banned for [`IP_BAN_DURATION`].
    /// Returns true if this call banned it.
    pub fn penalize(&self, ip: IpAddr, points: u32, why: &str) -> bool {
        self.penalize_at(source_key(ip), points, why, Instant::now())
    }

    fn penalize_at(&self, ip: IpAddr, points: u32, why: &str, now: Instant) -> bool {
        if points == 0 {
            return false;
        }
        let mut table = self.table();
        if !table.contains_key(&ip) && table.len() >= MAX_TRACKED_IPS {
            prune(&mut table, now);
            if table.len() >= MAX_TRACKED_IPS {
                return false;
            }
        }
        let state = table.entry(ip).or_default();
        state.settle(now);
        if state.banned(now) {
            return false;
        }
        state.points = state.points.saturating_add(points);
        state.updated = Some(now);
        tracing::debug!(%ip, points, total = state.points, "address penalised: {why}");
        if state.points < IP_BAN_THRESHOLD {
            return false;
        }
        state.banned_until = Some(now + IP_BAN_DURATION);
        tracing::warn!(%ip, "address banned for {IP_BAN_DURATION:?}: {why}");
        true
    }

    /// Whether `ip` is banned now.
    pub fn is_banned(&self, ip: IpAddr) -> bool {
        let now = Instant::now();
        self.table()
            .get(&source_key(ip))
            .is_some_and(|state| state.banned(now))
    }

    /// The penalty points of `ip` now.
    pub fn penalty(&self, ip: IpAddr) -> u32 {
        let now = Instant::now();
        self.table().get(&source_key(ip)).map_or(0, |state| {
            let mut state = *state;
            state.settle(now);
            state.points
        })
    }

    /// Incoming connections `ip` holds now (handshakes in progress and established).
    pub fn connections(&self, ip: IpAddr) -> usize {
        self.table()
            .get(&source_key(ip))
            .map_or(0, |state| state.slots)
    }

    /// Every banned address and how long its ban has left.
    pub fn banned(&self) -> Vec<(IpAddr, Duration)> {
        let now = Instant::now();
        let mut banned: Vec<_> = self
            .table()
            .iter()
            .filter_map(|(ip, state)| {
                state
                    .banned_until
                    .filter(|until| *until > now)
                    .map(|until| (*ip, until - now))
            })
            .collect();
        banned.sort();
        banned
    }

    /// Addresses tracked now (for tests and metrics: the table's size stays bounded).
    pub fn tracked(&self) -> usize {
        self.table().len()
    }
}

/// Forgets addresses with nothing left to remember.
fn prune(table: &mut HashMap<IpAddr, IpState>, now: Instant) {
    table.retain(|_, state| {
        state.settle(now);
        !state.idle()
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    #[test]
    fn each_source_gets_its_limit_and_slots_come_back_when_dropped() {
        let admission = Admission::new(2);
        let a1 = admission.admit(ip(2)).unwrap();
        let _a2 = admission.admit(ip(2)).unwrap();
        assert_eq!(admission.admit(ip(2)).unwrap_err(), Refusal::TooMany);
        // Another source is not affected.
        let _b = admission.admit(ip(3)).unwrap();
        assert_eq!(admission.connections(ip(2)), 2);
        drop(a1);
        assert_eq!(admission.connections(ip(2)), 1);
        let _a3 = admission.admit(ip(2)).unwrap();
        assert_eq!(admission.admit(ip(2)).unwrap_err(), Refusal::TooMany);
    }

    #[test]
    fn a_source_with_nothing_left_is_forgotten() {
        let admission = Admission::new(4);
        let slot = admission.admit(ip(2)).unwrap();
        assert_eq!(admission.tracked(), 1);
        drop(slot);
        assert_eq!(admission.tracked(), 0);
    }

    #[test]
    fn penalties_add_up_to_a_ban_that_refuses_and_then_expires() {
        let admission = Admission::new(8);
        let start = Instant::now();
        let key = ip(5);
        assert!(!admission.penalize_at(key, IP_BAN_THRESHOLD - 1, "test", start));
        assert!(admission.admit_at(key, start).is_ok());
        assert!(admission.penalize_at(key, 1, "test", start));
        assert_eq!(admission.admit_at(key, start), Err(Refusal::Banned));
        // Still banned just before the end, admitted after, with its points reset.
        let almost = start + IP_BAN_DURATION - Duration::from_millis(1);
        assert_eq!(admission.admit_at(key, almost), Err(Refusal::Banned));
        let after = start + IP_BAN_DURATION;
        assert!(admission.admit_at(key, after).is_ok());
        let state = admission.table().get(&key).copied().unwrap();
        assert_eq!(state.points, 0);
        assert!(state.banned_until.is_none());
    }

    #[test]
    fn points_decay_so_rare_failures_never_ban() {
        let admission = Admission::new(8);
        let start = Instant::now();
        let key = ip(6);
        // 5 points a minute (a mismatched node redialing at the longest backoff) against a
        // decay of 30 a minute.
        for minute in 0..100u32 {
            let now = start + Duration::from_secs(60 * u64::from(minute));
            assert!(!admission.penalize_at(key, 5, "mismatch", now));
        }
        let mut state = admission.table().get(&key).copied().unwrap();
        state.settle(start + Duration::from_secs(60 * 100));
        assert_eq!(state.points, 0);
        // Decay is exact over many small steps: 10 points in 20 s, not fewer.
        let fresh = ip(7);
        assert!(!admission.penalize_at(fresh, 100, "x", start));
        let mut state = admission.table().get(&fresh).copied().unwrap();
        for s in 1..=20 {
            state.settle(start + Duration::from_millis(1000 * s));
        }
        assert_eq!(state.points, 90);
    }

    #[test]
    fn ipv6_is_counted_per_64_and_mapped_ipv4_as_ipv4() {
        let admission = Admission::new(1);
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        let _slot = admission.admit(a).unwrap();
        assert_eq!(admission.admit(b).unwrap_err(), Refusal::TooMany);
        let _other = admission.admit(c).unwrap();
        let mapped: IpAddr = "::ffff:127.0.0.9".parse().unwrap();
        let _v4 = admission.admit(ip(9)).unwrap();
        assert_eq!(admission.admit(mapped).unwrap_err(), Refusal::TooMany);
    }

    #[test]
    fn the_table_stays_bounded_under_a_spread_of_penalised_sources() {
        let admission = Admission::new(8);
        let now = Instant::now();
        for n in 0..(MAX_TRACKED_IPS as u32 + 1000) {
            let key = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + n));
            admission.penalize_at(key, 10, "spread", now);
        }
        assert_eq!(admission.tracked(), MAX_TRACKED_IPS);
        // Once their points have decayed they are pruned to make room.
        let later = now + IP_PENALTY_DECAY * 10;
        assert!(!admission.penalize_at(ip(7), 10, "late", later));
        assert_eq!(admission.tracked(), 1);
    }
}
