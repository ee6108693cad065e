//! The gossip loop: every interval (with jitter, so nodes started together drift apart) it
//! refreshes this node's own records, starts a session with one random connected peer, and
//! dials one peer it has heard of while fewer than `target_peers` connections are open (peer
//! exchange). Downloads ask it to dial the providers gossip told of ([`dial_providers`]).

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rand::seq::IteratorRandom as _;
use tally_ledger::PeerId;
use tracing::Instrument as _;

use super::records::{PeerRecord, ProviderRecord};
use super::session::{self, SessionError};
use crate::config::PeerAddr;
use crate::content::ContentId;
use crate::daemon::peers::{Direction, dial, drive};
use crate::daemon::{Shared, now_ms};

/// How long this node's provider records are valid.
pub const PROVIDER_TTL: Duration = Duration::from_secs(3600);
/// This node re-signs its records this often (well before they expire, so they stay hot
/// somewhere in the network).
pub const REFRESH_OWN_RECORDS: Duration = Duration::from_secs(600);
/// Providers a download dials at once, at most.
pub const PROVIDER_DIALS: usize = 4;

/// Starts the gossip loop.
pub fn start(shared: &Arc<Shared>) {
    let span = tracing::info_span!("gossip", me = %shared.me.fmt_short());
    shared.tasks.spawn(run(Arc::clone(shared)).instrument(span));
}

async fn run(shared: Arc<Shared>) {
    let mut signed: Option<(Instant, Option<Vec<SocketAddr>>)> = None;
    loop {
        let interval = shared.settings.gossip_interval;
        // ±25%, so nodes started together do not stay in step.
        let jitter = interval.mul_f64(rand::random_range(0.75..1.25));
        tokio::select! {
            () = shared.cancel.cancelled() => return,
            () = tokio::time::sleep(jitter) => {}
        }
        let addrs = own_addrs(&shared);
        let due = signed.as_ref().is_none_or(|(at, signed_for)| {
            at.elapsed() >= REFRESH_OWN_RECORDS || *signed_for != addrs
        });
        if due {
            if let Some(addrs) = &addrs {
                let record = PeerRecord::sign(&shared.identity, &shared.network, addrs, now_ms());
                shared.gossip.add_peer(record, Instant::now());
            }
            signed = Some((Instant::now(), addrs));
        }
        if let Err(error) = refresh_provider_records(&shared).await {
            tracing::warn!("cannot sign this node's provider records: {error:#}");
        }
        let mark = shared.store.sync_items().mark();
        shared.gossip.note_mark(Instant::now(), mark);
        let connected = shared.peers.connected();
        shared
            .gossip
            .forget_disconnected(&connected.iter().copied().collect());
        start_session(&shared, &connected);
        exchange_peers(&shared, &connected);
    }
}

/// Starts a session with a random connected peer that has none running, if any.
fn start_session(shared: &Arc<Shared>, connected: &[PeerId]) {
    let now = Instant::now();
    let mut candidates: Vec<PeerId> = connected.to_vec();
    let mut rng = rand::rng();
    while let Some(peer) = candidates.iter().copied().choose(&mut rng) {
        candidates.retain(|p| *p != peer);
        let Some(slot) = Arc::clone(&shared.gossip).start(peer, now) else {
            continue;
        };
        let Some(conn) = shared.peers.connection(&peer) else {
            continue;
        };
        let shared2 = Arc::clone(shared);
        let span = tracing::debug_span!("session", peer = %peer.fmt_short());
        let task = async move {
            let result = session::initiate(&shared2, &conn).await;
            drop(slot);
            let stats = &shared2.gossip.stats;
            match result {
                Ok(outcome) => {
                    stats.sessions_started.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(?outcome, "gossip session done");
                }
                Err(SessionError::Refused(why)) => tracing::debug!("session refused: {why}"),
                Err(error) => tracing::info!("gossip session failed: {error}"),
            }
        };
        shared.tasks.spawn(task.instrument(span));
        return;
    }
}

/// The addresses this node's peer record names: where it listens, or, bound to an
/// unspecified address, where peers see it.
fn own_addrs(shared: &Shared) -> Option<Vec<SocketAddr>> {
    let local = shared.endpoint.local_addr();
    if !local.ip().is_unspecified() {
        return Some(vec![local]);
    }
    shared.gossip.observed_addr().map(|addr| vec![addr])
}

/// Signs a provider record for every content this node holds some of and has no record for
/// signed within [`REFRESH_OWN_RECORDS`] (a content just shared gets one at the next tick).
async fn refresh_provider_records(shared: &Arc<Shared>) -> anyhow::Result<()> {
    if shared.behaviour.never_upload {
        return Ok(());
    }
    let (now, ms) = (Instant::now(), now_ms());
    let held = shared.content_blocking(|c| c.list()).await?;
    let fresh_after = ms.saturating_sub(REFRESH_OWN_RECORDS.as_millis() as u64);
    for info in held.into_iter().filter(|info| info.have_chunks > 0) {
        let signed_lately = shared
            .gossip
            .providers_of(&info.id, ms)
            .iter()
            .any(|r| r.provider == shared.me && r.issued_ms > fresh_after);
        if signed_lately {
            continue;
        }
        let record = ProviderRecord::sign(
            &shared.identity,
            &shared.network,
            info.id,
            ms,
            PROVIDER_TTL.as_millis() as u64,
        );
        shared.gossip.add_provider(record, now, ms);
    }
    Ok(())
}

/// Dials one peer this node has heard of but is not connected to, while fewer than
/// `target_peers` connections are open.
fn exchange_peers(shared: &Arc<Shared>, connected: &[PeerId]) {
    let target = shared
        .settings
        .target_peers
        .min(shared.settings.max_connections);
    if connected.len() >= target {
        return;
    }
    let connected: HashSet<PeerId> = connected.iter().copied().collect();
    let candidate = shared
        .gossip
        .known_peers()
        .into_iter()
        .filter(|record| record.peer != shared.me && !connected.contains(&record.peer))
        .filter(|record| !shared.peers.is_banned(&record.peer))
        .choose(&mut rand::rng());
    if let Some(record) = candidate {
        dial_known(shared, record.peer, record.addrs);
    }
}

/// Dials `peer` at the first of `addrs` that answers, once (no redial), unless a dial of it is
/// already running or failed a moment ago.
fn dial_known(shared: &Arc<Shared>, peer: PeerId, addrs: Vec<SocketAddr>) {
    let Some(guard) = Arc::clone(&shared.gossip).begin_dial(peer, Instant::now()) else {
        return;
    };
    let tasks = shared.tasks.clone();
    let shared = Arc::clone(shared);
    let span = tracing::info_span!("pex", peer = %peer.fmt_short());
    let task = async move {
        for addr in addrs {
            let target = PeerAddr {
                peer_id: peer,
                addr: addr.to_string(),
            };
            match dial(&shared, &target).await {
                Ok(conn) => {
                    guard.succeeded();
                    tracing::debug!(%addr, "connected to a peer learned by gossip");
                    drive(Arc::clone(&shared), conn, Direction::Outbound).await;
                    return;
                }
                Err(error) => tracing::debug!(%addr, "cannot reach a gossiped peer: {error:#}"),
            }
        }
    };
    tasks.spawn(task.instrument(span));
}

/// Dials up to [`PROVIDER_DIALS`] providers of `content` that gossip told of and that are not
/// connected. Returns how many dials it started.
pub fn dial_providers(shared: &Arc<Shared>, content: &ContentId) -> usize {
    let connected: HashSet<PeerId> = shared.peers.connected().into_iter().collect();
    let mut started = 0;
    for record in shared.gossip.providers_of(content, now_ms()) {
        if started == PROVIDER_DIALS {
            break;
        }
        if record.provider == shared.me
            || connected.contains(&record.provider)
            || shared.peers.is_banned(&record.provider)
        {
            continue;
        }
        if let Some(addrs) = shared.gossip.peer_addrs(&record.provider) {
            dial_known(shared, record.provider, addrs);
            started += 1;
        }
    }
    started
}
