//! The running node: what `tally run` starts. It wires the QUIC endpoint, the connection table,
//! the request handlers (serving chunks and countersigning), the swarm downloads, the receipt
//! chains and the local HTTP API, and stops them in order.
//!
//! Layout: [`peers`] (connections: accept, dial, redial, penalties), [`serve`] (answering one
//! request: the uploader's side), [`fetch`] (downloads: the downloader's side), [`pairs`] (the
//! receipt chains), [`api`] (the HTTP API's view of the node), [`events`] (the event bus the
//! API streams), [`metrics`] (the figures `/metrics` renders). Everything shared hangs off
//! [`Shared`]; tasks are tracked so shutdown waits for them.

pub mod api;
pub mod events;
pub mod fetch;
pub mod meter;
pub mod metrics;
pub mod pairs;
pub mod peers;
pub mod serve;
pub mod standing;
pub mod upload;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use tally_ledger::{Identity, NetworkId, PeerId, Store};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{Config, NodeSettings};
use crate::content::{CHUNK_SIZE, ContentId, ContentStore};
use crate::rate::RateLimiter;
use crate::transport::{Endpoint, ErrorCode, TransportConfig};

/// How the node behaves beyond its settings: test modes of the same code.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Behaviour {
    /// Never propose a receipt: a freerider, for tests and experiments.
    pub never_sign: bool,
    /// Flip a byte of every chunk served: a provider of bad data, for tests.
    pub corrupt_uploads: bool,
    /// Serve no chunk and announce no content: a freerider that does not upload, for
    /// experiments.
    pub never_upload: bool,
}

/// How much larger than the configured `credit_window` good standing makes a peer's window.
pub const CREDIT_WINDOW_GROWTH: u64 = 16;

/// Everything the node's tasks share.
pub struct Shared {
    /// This node's identity.
    pub identity: Arc<Identity>,
    /// Its PeerId.
    pub me: PeerId,
    /// The network's name.
    pub network_name: String,
    /// The network's id.
    pub network: NetworkId,
    /// The receipt store.
    pub store: Arc<Store>,
    /// The content store.
    pub content: Arc<ContentStore>,
    /// The receipt chains with peers.
    pub pairs: pairs::Pairs,
    /// The QUIC endpoint.
    pub endpoint: Endpoint,
    /// Connections and what is known of peers.
    pub peers: peers::Peers,
    /// Gossip's tables (provider and peer records) and counters.
    pub gossip: Arc<crate::gossip::Gossip>,
    /// Every peer's standing at this node, kept in step with the store.
    pub standing: standing::StandingKeeper,
    /// Chunk requests waiting for their turn, in order of standing.
    pub uploads: upload::UploadQueue,
    /// The order book, this node's own orders and its trades.
    pub market: crate::market::Market,
    /// Downloads, running and finished, by content.
    pub downloads: Mutex<HashMap<ContentId, Arc<fetch::DownloadStatus>>>,
    /// Global upload limit.
    pub upload_limit: RateLimiter,
    /// Global download limit.
    pub download_limit: RateLimiter,
    /// The settings in force.
    pub settings: NodeSettings,
    /// Test modes.
    pub behaviour: Behaviour,
    /// When the node started.
    pub started: Instant,
    /// Payload bytes sent, all peers.
    pub bytes_up: AtomicU64,
    /// Payload bytes received and verified, all peers.
    pub bytes_down: AtomicU64,
    /// Cancelled when the node stops.
    pub cancel: CancellationToken,
    /// Every task the node started.
    pub tasks: TaskTracker,
    /// Where the HTTP API listens, once bound.
    pub api_addr: Mutex<Option<SocketAddr>>,
    /// Cancelled when someone asks the node to stop (the API's shutdown).
    pub stop_requested: CancellationToken,
    /// Live transfer rates per connected peer.
    pub rates: meter::PeerRates,
    /// The event bus the API's event stream reads.
    pub events: Arc<events::Events>,
    /// The one allowance every stranger draws on, instead of a credit window per key.
    pub strangers: Mutex<tally_market::StrangerCredit<PeerId>>,
}

/// The most one stranger holds of an allowance of `credit` (and what one with nothing out may
/// draw beyond it): half, and at least a chunk, so that one peer that never signs cannot hold
/// it all and a newcomer gets the chunk it signs for first.
pub fn stranger_share(credit: u64) -> u64 {
    (credit / 2).max(u64::from(CHUNK_SIZE))
}

/// Below this standing, a peer that never signed a receipt for this node is a stranger: it
/// draws on the allowance all strangers share ([`Shared::reserve_upload`]).
pub const STRANGER_STANDING: f64 = 0.01;

impl Shared {
    /// The credit window of `peer`, from its standing: the configured `credit_window` at the
    /// floor, doubling every quarter of standing up to 16 times that.
    pub fn credit_window(&self, standing: f64) -> u64 {
        let floor = self.settings.credit_window;
        tally_market::credit_window(
            standing,
            tally_market::WindowParams {
                floor_bytes: floor,
                ceiling_bytes: floor.saturating_mul(CREDIT_WINDOW_GROWTH),
                ..tally_market::WindowParams::default()
            },
        )
    }

    /// Whether `peer`, of `standing`, is a stranger here: below [`STRANGER_STANDING`], never
    /// signed a receipt for this node, and not a buyer this node agreed to sell to.
    pub fn is_stranger(&self, peer: PeerId, standing: f64) -> Result<bool, pairs::PairError> {
        if standing >= STRANGER_STANDING || self.market.delivering_to(&peer, now_ms()) {
            return Ok(false);
        }
        Ok(self.pairs.is_stranger(peer)?)
    }

    /// The strangers' allowance, with what strangers left unsigned too long written off (and
    /// forgiven in their pairs), and the time it was taken at.
    fn strangers_now(&self) -> (MutexGuard<'_, tally_market::StrangerCredit<PeerId>>, u64) {
        let now = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        // Draws and releases are single steps; a poisoned lock holds consistent counts.
        let mut pool = self
            .strangers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for (peer, bytes) in pool.expire(now) {
            self.pairs.forgive(peer, bytes);
        }
        (pool, now)
    }

    /// Whether `len` more bytes to `peer` would fit its credit `window` and, for a
    /// `stranger`, the strangers' allowance, without counting them.
    pub fn check_upload(
        &self,
        peer: PeerId,
        len: u64,
        window: u64,
        stranger: bool,
    ) -> Result<pairs::Window, pairs::PairError> {
        if stranger {
            let (pool, _) = self.strangers_now();
            if !pool.may_draw(&peer, len) {
                return Ok(pairs::Window::StrangersFull {
                    outstanding: pool.outstanding(),
                    capacity: pool.limit(),
                });
            }
        }
        self.pairs.check(peer, len, window)
    }

    /// Reserves `len` bytes to `peer`, `credits` due, under its credit `window` and, for a
    /// `stranger`, the strangers' allowance, in one step ([`pairs::Pairs::reserve`]).
    pub fn reserve_upload(
        &self,
        peer: PeerId,
        len: u64,
        credits: u64,
        window: u64,
        stranger: bool,
    ) -> Result<pairs::Window, pairs::PairError> {
        if !stranger {
            return self.pairs.reserve(peer, len, credits, window);
        }
        // The allowance's lock is held across the pair's reserve so that strangers' requests
        // waiting together cannot overdraw it; the pairs' lock is only ever taken inside it.
        let (mut pool, now) = self.strangers_now();
        if !pool.may_draw(&peer, len) {
            return Ok(pairs::Window::StrangersFull {
                outstanding: pool.outstanding(),
                capacity: pool.limit(),
            });
        }
        let sent = self.pairs.reserve(peer, len, credits, window)?;
        if sent == pairs::Window::Open {
            pool.draw(peer, len, now);
        }
        Ok(sent)
    }

    /// `peer` signed a receipt for this node: what it drew as a stranger returns to the
    /// allowance.
    pub fn signed_by(&self, peer: &PeerId) {
        let (mut pool, _) = self.strangers_now();
        pool.graduate(peer);
    }

    /// The downloads table.
    pub fn downloads(&self) -> MutexGuard<'_, HashMap<ContentId, Arc<fetch::DownloadStatus>>> {
        self.downloads
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Counts payload bytes sent.
    pub fn count_up(&self, bytes: u64) {
        self.bytes_up.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Counts payload bytes received.
    pub fn count_down(&self, bytes: u64) {
        self.bytes_down.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Runs `work` on the content store on a blocking thread.
    pub async fn content_blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&ContentStore) -> Result<T, crate::content::ContentError> + Send + 'static,
    ) -> anyhow::Result<T> {
        let content = Arc::clone(&self.content);
        Ok(tokio::task::spawn_blocking(move || work(&content))
            .await
            .context("a content store task was cancelled")??)
    }
}

/// The wall clock in Unix milliseconds, for receipts' `time_ms`.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// What a running node writes to `DATA_DIR/node.json` so scripts and the command line find it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeFile {
    /// The node's PeerId.
    pub peer_id: String,
    /// The network's id.
    pub network_id: String,
    /// Where it listens for peers.
    pub quic_addr: SocketAddr,
    /// Where its HTTP API listens.
    pub api_addr: SocketAddr,
    /// The process id.
    pub pid: u32,
}

/// What starting a node needs beyond its settings.
pub struct NodeParts {
    /// The identity.
    pub identity: Identity,
    /// The settings.
    pub config: Config,
    /// `DATA_DIR/store` opened.
    pub store: Store,
    /// `DATA_DIR/content` opened.
    pub content: ContentStore,
    /// Test modes.
    pub behaviour: Behaviour,
}

impl NodeParts {
    /// Opens the receipt store (`root/store`) and the content store (`root/content`) of a data
    /// directory: what `tally run`, the tests and the benches start a node from.
    pub fn open(
        root: &std::path::Path,
        identity: Identity,
        config: Config,
        behaviour: Behaviour,
    ) -> anyhow::Result<Self> {
        let store = Store::open(
            root.join(crate::data_dir::STORE_DIR),
            config.network_id(),
            config.store_config(),
        )
        .map_err(|e| match e {
            tally_ledger::StoreError::Locked { .. } => anyhow::anyhow!(
                "{e}\nIs a node already running for {}? `tally status` asks it.",
                root.display()
            ),
            other => other.into(),
        })?;
        let content = ContentStore::open(root.join(crate::content::CONTENT_DIR))
            .context("cannot open the content store")?;
        Ok(Self {
            identity,
            config,
            store,
            content,
            behaviour,
        })
    }
}

/// A started node. Drop does not stop it: call [`Node::shutdown`].
pub struct Node {
    shared: Arc<Shared>,
}

impl Node {
    /// Binds the QUIC endpoint, starts accepting and dialing the configured peers.
    pub async fn start(parts: NodeParts) -> anyhow::Result<Self> {
        let NodeParts {
            identity,
            config,
            store,
            content,
            behaviour,
        } = parts;
        let network = config.network_id();
        let settings = config.node.clone();
        let transport = TransportConfig {
            max_connections_per_ip: settings.max_connections_per_ip,
            ..TransportConfig::default()
        };
        let endpoint = Endpoint::bind(settings.listen, &identity, network, transport)
            .with_context(|| format!("cannot listen for peers on {}", settings.listen))?;
        let admission = Arc::clone(endpoint.admission());
        let identity = Arc::new(identity);
        let store = Arc::new(store);
        let (store2, me) = (Arc::clone(&store), identity.peer_id());
        let standing = tokio::task::spawn_blocking(move || {
            standing::StandingKeeper::build(&store2, me, tally_market::StandingParams::default())
        })
        .await
        .context("computing standing was cancelled")?
        .context("cannot read the receipts to compute standing")?;
        let stranger_credit = settings.stranger_credit.unwrap_or(settings.credit_window);
        let stranger_write_off = settings.stranger_write_off;
        let shared = Arc::new(Shared {
            standing,
            uploads: upload::UploadQueue::new(tally_market::SchedulerConfig::default()),
            market: crate::market::Market::new(
                Arc::clone(&identity),
                network,
                tally_market::BookConfig::default(),
            ),
            me: identity.peer_id(),
            pairs: pairs::Pairs::new(Arc::clone(&identity), network, Arc::clone(&store))
                .with_uncounted(settings.credit_window.saturating_mul(CREDIT_WINDOW_GROWTH)),
            identity,
            network_name: config.network.clone(),
            network,
            store,
            content: Arc::new(content),
            endpoint,
            peers: peers::Peers::new(settings.max_connections).with_admission(admission),
            gossip: Arc::new(crate::gossip::Gossip::new(settings.gossip_interval)),
            downloads: Mutex::new(HashMap::new()),
            upload_limit: RateLimiter::new(settings.upload_limit, u64::from(CHUNK_SIZE)),
            download_limit: RateLimiter::new(settings.download_limit, u64::from(CHUNK_SIZE)),
            settings,
            behaviour,
            started: Instant::now(),
            bytes_up: AtomicU64::new(0),
            bytes_down: AtomicU64::new(0),
            cancel: CancellationToken::new(),
            tasks: TaskTracker::new(),
            api_addr: Mutex::new(None),
            stop_requested: CancellationToken::new(),
            rates: meter::PeerRates::default(),
            events: Arc::new(events::Events::new()),
            strangers: Mutex::new(tally_market::StrangerCredit::new(
                stranger_credit,
                stranger_share(stranger_credit),
                u64::try_from(stranger_write_off.as_millis()).unwrap_or(u64::MAX),
            )),
        });
        // A cap lowered in the config takes effect now, not at the next gossip batch.
        let (store, me, cap) = (
            Arc::clone(&shared.store),
            shared.me,
            shared.settings.max_third_party_receipts,
        );
        let evicted = tokio::task::spawn_blocking(move || store.enforce_cap(me, cap))
            .await
            .context("the start-up eviction was cancelled")?
            .context("cannot apply the cap on third parties' receipts")?;
        if evicted.receipts > 0 {
            tracing::info!(
                evicted = evicted.receipts,
                kept = evicted.third_party,
                cap,
                "dropped the third parties' receipts farthest from this node"
            );
        }
        // Before any peer is heard: a buyer's first request must meet its trade.
        match crate::market::restore_trades(&shared).await {
            Ok(0) => {}
            Ok(restored) => {
                tracing::info!(restored, "took back the trades agreed before this start")
            }
            Err(error) => tracing::warn!("cannot read the stored trade agreements: {error:#}"),
        }
        shared.tasks.spawn(peers::accept_loop(Arc::clone(&shared)));
        for peer in shared.settings.peers.clone() {
            peers::keep_dialing(&shared, peer);
        }
        crate::gossip::task::start(&shared);
        let budget = tally_market::UploadBudget::new(
            shared.settings.upload_budget_daily,
            shared.settings.upload_budget_monthly,
        );
        shared
            .uploads
            .set_budget(budget)
            .context("the upload budget is smaller than one upload request")?;
        standing::start(&shared);
        upload::start(&shared);
        crate::market::start(&shared);
        meter::start(&shared);
        events::start(&shared);
        Ok(Self { shared })
    }

    /// What the node's tasks share (for the API and tests).
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// This node's PeerId.
    pub fn peer_id(&self) -> PeerId {
        self.shared.me
    }

    /// Where the QUIC endpoint listens.
    pub fn quic_addr(&self) -> anyhow::Result<SocketAddr> {
        Ok(self.shared.endpoint.local_addr())
    }

    /// Stops in order: no new work, connections closed with a reason, tasks awaited (for at
    /// most `grace`), the store flushed.
    pub async fn shutdown(self, grace: Duration) -> anyhow::Result<()> {
        let shared = self.shared;
        shared.cancel.cancel();
        shared.tasks.close();
        shared
            .endpoint
            .close(ErrorCode::ShuttingDown, "the node is shutting down");
        if tokio::time::timeout(grace, shared.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                tasks = shared.tasks.len(),
                "some tasks did not stop within {grace:?}; stopping anyway"
            );
        }
        let waited = Instant::now();
        tracing::debug!("tasks stopped");
        let _ = tokio::time::timeout(grace, shared.endpoint.wait_idle()).await;
        tracing::debug!(took = ?waited.elapsed(), "connections closed");
        let store = Arc::clone(&shared.store);
        tokio::task::spawn_blocking(move || store.flush())
            .await
            .context("the final store flush was cancelled")?
            .context("cannot flush the receipt store")?;
        Ok(())
    }
}

/// `DATA_DIR/node.json`.
pub fn node_file_path(data_dir: &std::path::Path) -> PathBuf {
    data_dir.join("node.json")
}
