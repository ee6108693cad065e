//! The JSON types of the API, shared by the server ([`crate::server`]) and by clients.
//!
//! Request types reject unknown fields, so a typo is a 400 and not a silently ignored setting.
//! Response types accept unknown fields, so a newer node can add fields without breaking an older
//! client. Ids (peer ids, content ids) are [`HexId`]s: 64 lowercase hex characters in JSON.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use utoipa::ToSchema;

/// Length of an id in bytes: peer ids (ed25519 public keys) and content ids (BLAKE3 hashes).
pub const ID_BYTES: usize = 32;

/// Why a string is not a [`HexId`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HexIdError {
    /// The string does not have 64 characters.
    #[error("expected 64 lowercase hex characters, not {0}")]
    Length(usize),
    /// A character is not one of `0-9a-f`.
    #[error("expected 64 lowercase hex characters, found {found:?} at position {at}")]
    Char {
        /// Byte offset of the character.
        at: usize,
        /// The offending character.
        found: char,
    },
}

/// Parses 64 lowercase hex characters into 32 bytes. Uppercase is rejected so that every id
/// has exactly one spelling.
pub fn parse_hex32(s: &str) -> Result<[u8; ID_BYTES], HexIdError> {
    if s.len() != 2 * ID_BYTES {
        return Err(HexIdError::Length(s.chars().count()));
    }
    let digit = |at: usize| -> Result<u8, HexIdError> {
        let b = s.as_bytes()[at];
        match b {
            b'0'..=b'9' => Ok(b - b'0'),
            b'a'..=b'f' => Ok(b - b'a' + 10),
            _ => Err(HexIdError::Char {
                at,
                found: s
                    .get(at..)
                    .and_then(|rest| rest.chars().next())
                    .unwrap_or('?'),
            }),
        }
    };
    let mut out = [0u8; ID_BYTES];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = (digit(2 * i)? << 4) | digit(2 * i + 1)?;
    }
    Ok(out)
}

/// A 32-byte id — a peer id or a content id — written as 64 lowercase hex characters in JSON
/// and in URLs. Deserializing checks the shape, so a handler never sees a malformed id.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HexId(pub [u8; ID_BYTES]);

impl HexId {
    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; ID_BYTES] {
        &self.0
    }
}

impl From<[u8; ID_BYTES]> for HexId {
    fn from(bytes: [u8; ID_BYTES]) -> Self {
        Self(bytes)
    }
}

impl FromStr for HexId {
    type Err = HexIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_hex32(s).map(Self)
    }
}

impl fmt::Display for HexId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // One write of 64 characters: every JSON id goes through here, and 32 formatted
        // writes of two digits cost more than the rest of a small response's encoding.
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut out = [0u8; 2 * ID_BYTES];
        for (pair, b) in out.chunks_exact_mut(2).zip(self.0) {
            pair[0] = DIGITS[usize::from(b >> 4)];
            pair[1] = DIGITS[usize::from(b & 0x0f)];
        }
        // Only ASCII digits were written.
        f.write_str(std::str::from_utf8(&out).map_err(|_| fmt::Error)?)
    }
}

impl fmt::Debug for HexId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HexId({self})")
    }
}

impl Serialize for HexId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for HexId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // Borrowing would fail on strings with escapes; ids never need them, but an owned
        // string keeps the error a shape error rather than a type error.
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// What `GET /api/v1/status` answers: the node at a glance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Status {
    /// This node's peer id.
    pub peer_id: HexId,
    /// The network's name (from the config).
    pub network: String,
    /// The network's id, as the node derives it from the name (nodes of different networks do
    /// not talk).
    pub network_id: String,
    /// The node's version (`tally-node`'s crate version).
    pub version: String,
    /// The address the QUIC endpoint is bound to, `HOST:PORT`.
    pub quic_addr: String,
    /// The address this HTTP API is bound to, `HOST:PORT`.
    pub api_addr: String,
    /// Seconds since the node started.
    pub uptime_s: u64,
    /// Peers with an open connection.
    pub peers_connected: u32,
    /// The receipt store's counts.
    pub store: StoreStatus,
    /// Payload bytes moved since the node started.
    pub transfer: TransferTotals,
    /// The rate limits in force.
    pub limits: RateLimits,
    /// Peers marked dishonest by a conflict proof, at most [`MAX_DISHONEST_LISTED`] of them
    /// (`store.dishonest` counts them all).
    pub dishonest_peers: Vec<HexId>,
    /// What gossip did since the node started.
    pub gossip: GossipStatus,
    /// Upload used today and this month, against the budgets (data caps) if any.
    pub upload_budget: UploadBudgetStatus,
}

/// Upload used in the current UTC day and month, and the budgets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct UploadBudgetStatus {
    /// The current UTC day.
    pub day: BudgetPeriod,
    /// The current UTC calendar month.
    pub month: BudgetPeriod,
}

/// One period of an upload budget.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct BudgetPeriod {
    /// Bytes uploaded in it so far (counted with or without a budget).
    pub used: u64,
    /// The budget in bytes; `null` is unlimited.
    pub limit: Option<u64>,
    /// Bytes still allowed; `null` without a budget.
    pub remaining: Option<u64>,
    /// When it ends and its count resets, Unix milliseconds.
    pub resets_at_ms: u64,
}

/// Dishonest peers listed in [`Status::dishonest_peers`] at most.
pub const MAX_DISHONEST_LISTED: usize = 100;

/// Gossip's counters since the node started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct GossipStatus {
    /// Sessions completed, started by this node or by peers.
    pub sessions: u64,
    /// Sessions refused or broken off.
    pub sessions_failed: u64,
    /// Receipts received that were new to this node.
    pub receipts_received: u64,
    /// Receipts pushed to peers.
    pub receipts_sent: u64,
    /// Receipts refused because they did not verify.
    pub receipts_rejected: u64,
    /// Conflict proofs learned from peers.
    pub conflicts_learned: u64,
    /// Gossip bytes sent.
    pub bytes_sent: u64,
    /// Gossip bytes received.
    pub bytes_received: u64,
    /// Peers known from peer records (the peer table).
    pub known_peers: u64,
    /// Provider records held.
    pub provider_records: u64,
}

/// The receipt store's counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct StoreStatus {
    /// Receipts held (one latest receipt per pair).
    pub receipts: u64,
    /// Ordered (uploader, downloader) pairs with a receipt.
    pub pairs: u64,
    /// Conflicts recorded: two different receipts with the same pair and sequence number.
    pub conflicts: u64,
    /// Peers marked dishonest because of a conflict they signed.
    pub dishonest: u64,
    /// Receipts held between other peers (capped by `max_third_party_receipts`).
    pub third_party: u64,
    /// Pairs whose receipt was dropped to keep that cap and that gossip must not bring back.
    pub tombstones: u64,
}

/// Payload bytes moved since the node started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TransferTotals {
    /// Bytes this node uploaded to peers.
    pub bytes_up: u64,
    /// Bytes this node downloaded from peers.
    pub bytes_down: u64,
}

/// Upload and download rate limits. `null` means unlimited. `PUT /api/v1/limits` replaces both:
/// an absent field is `null`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RateLimits {
    /// Upload cap in bytes per second, or `null` for unlimited.
    #[serde(default)]
    pub upload_bytes_per_s: Option<u64>,
    /// Download cap in bytes per second, or `null` for unlimited.
    #[serde(default)]
    pub download_bytes_per_s: Option<u64>,
}

/// Who opened a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// The peer dialled this node: `"in"`.
    In,
    /// This node dialled the peer: `"out"`.
    Out,
}

/// Why a peer has its standing at this node, as `GET /api/v1/standing/{peer_id}` and
/// `tally standing PEER` give it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct StandingInfo {
    /// The peer.
    pub peer_id: HexId,
    /// Its standing in [0, 1): 0 is the floor, shared by freeriders, newcomers and dishonest
    /// keys.
    pub score: f64,
    /// Whether it is at the floor.
    pub at_floor: bool,
    /// Marked dishonest by a conflict proof: no standing.
    pub dishonest: bool,
    /// Credits the peer gave this node (its latest receipts as uploader to this node).
    pub given: u64,
    /// Credits this node gave the peer.
    pub taken: u64,
    /// Credits of its direct balance it passed on to those who gave to it (the walk conserves
    /// what this node received: what a peer passes on, it no longer holds).
    pub passed: f64,
    /// Credits that reached it through the contribution graph: a share of what this node
    /// received, passed back along chains of contributions.
    pub transitive: f64,
    /// `given − taken − passed + transitive`, in credits: what `score` is computed from.
    pub raw: f64,
    /// The strongest chains that carry the transitive part, strongest first.
    pub paths: Vec<StandingPath>,
    /// Its weight in this node's upload queue (1 at the floor, up to 10).
    pub weight: f64,
    /// Bytes this node uploads to it ahead of its receipts.
    pub credit_window: u64,
    /// Where it stands in this node's upload queue now; `null` when it has no request waiting.
    pub queue: Option<UploadQueueInfo>,
}

/// A peer's place in this node's upload queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct UploadQueueInfo {
    /// `"standing"` or `"floor"`: floor peers share a slice of the upload round-robin.
    pub class: String,
    /// Its place in the order of service within its class, 1 = next.
    pub rank: u64,
    /// Peers waiting in its class.
    pub waiting_in_class: u64,
    /// The fraction of this node's upload it gets while everyone now waiting stays waiting.
    pub share: f64,
    /// Its chunk requests waiting.
    pub requests: u64,
}

/// A chain of contributions that carries transitive standing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct StandingPath {
    /// From this node's direct contributor to the peer: each gave to the one before it.
    pub via: Vec<HexId>,
    /// Credits of the peer's transitive standing that came along it.
    pub credits: f64,
}

/// One peer this node knows, as `GET /api/v1/peers` lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PeerInfo {
    /// The peer's id.
    pub peer_id: HexId,
    /// The peer's address, `HOST:PORT`.
    pub addr: String,
    /// Whether a connection is open now.
    pub connected: bool,
    /// Who opened the (last) connection: `"in"` or `"out"`.
    pub direction: Direction,
    /// When the (last) connection was opened, Unix milliseconds.
    pub since_ms: u64,
    /// Payload bytes this node sent the peer.
    pub bytes_sent: u64,
    /// Payload bytes this node received from the peer.
    pub bytes_received: u64,
    /// The latest receipt sequence numbers between this node and the peer.
    pub receipts: PeerReceipts,
    /// Its standing at this node in [0, 1), as of the last refresh (`GET
    /// /api/v1/standing/{peer_id}` explains it).
    pub standing: f64,
    /// Credits this node earned by uploading to the peer: the latest receipt of the `up` chain.
    pub credits_sent: u64,
    /// Credits this node owes the peer for what it downloaded: the latest receipt of the `down`
    /// chain.
    pub credits_received: u64,
    /// Payload bytes per second this node sends the peer, over the last few seconds.
    pub up_bps: u64,
    /// Payload bytes per second this node receives from the peer, over the last few seconds.
    pub down_bps: u64,
    /// `"connected"`, `"disconnected"` (known: dialled or seen before) or `"banned"`.
    pub state: PeerState,
}

/// The latest receipt sequence number in each direction between this node and one peer;
/// `null` when that chain has no receipt yet.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PeerReceipts {
    /// Chain in which this node is the uploader (the peer signed for bytes it received).
    pub up: Option<u64>,
    /// Chain in which the peer is the uploader (this node signed for bytes it received).
    pub down: Option<u64>,
}

/// Body of `POST /api/v1/peers`: dial a peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConnectRequest {
    /// `PEERID@HOST:PORT`: the peer's id (64 lowercase hex) and its QUIC address. IPv6 hosts go
    /// in brackets: `PEERID@[::1]:7420`.
    #[schema(pattern = "^[0-9a-f]{64}@.+:[0-9]{1,5}$")]
    pub peer: String,
}

/// A [`ConnectRequest`] whose `peer` has the right shape. The host is not resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerTarget {
    /// The peer id the dialled node must present.
    pub peer_id: HexId,
    /// Host name or IP address (IPv6 without brackets).
    pub host: String,
    /// UDP port, never 0.
    pub port: u16,
}

/// Why a [`ConnectRequest`]'s `peer` is malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeerAddrError {
    /// No `@` between peer id and address.
    #[error("expected PEERID@HOST:PORT, found no '@'")]
    MissingAt,
    /// The peer id is not 64 lowercase hex characters.
    #[error("bad peer id: {0}")]
    PeerId(#[from] HexIdError),
    /// The address has no `:PORT`.
    #[error("expected PEERID@HOST:PORT, the address has no port")]
    MissingPort,
    /// The port is not a number from 1 to 65535.
    #[error("bad port {0:?}: expected a number from 1 to 65535")]
    BadPort(String),
    /// The host is empty or has a character that cannot be in a host name or address.
    #[error("bad host {0:?}")]
    BadHost(String),
}

impl ConnectRequest {
    /// Checks the shape of `peer` and splits it.
    pub fn parse(&self) -> Result<PeerTarget, PeerAddrError> {
        let (id, addr) = self.peer.split_once('@').ok_or(PeerAddrError::MissingAt)?;
        let peer_id = id.parse::<HexId>()?;
        let (host, port) = addr.rsplit_once(':').ok_or(PeerAddrError::MissingPort)?;
        let port = match port.parse::<u16>() {
            Ok(p) if p != 0 && !port.starts_with('+') => p,
            _ => return Err(PeerAddrError::BadPort(port.to_owned())),
        };
        let host = match host.strip_prefix('[') {
            Some(rest) => match rest.strip_suffix(']') {
                Some(v6) if v6.parse::<std::net::Ipv6Addr>().is_ok() => v6,
                _ => return Err(PeerAddrError::BadHost(host.to_owned())),
            },
            None => host,
        };
        let host_ok = !host.is_empty()
            && host.len() <= 253
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '_'));
        // A bare IPv6 address without brackets is ambiguous with the port separator.
        if !host_ok || (host.contains(':') && !addr.starts_with('[')) {
            return Err(PeerAddrError::BadHost(host.to_owned()));
        }
        Ok(PeerTarget {
            peer_id,
            host: host.to_owned(),
            port,
        })
    }
}

/// Body of `POST /api/v1/content`: share a file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ShareRequest {
    /// Path of the file to share, as the node (not the client) sees it; relative paths are
    /// relative to the node's working directory, so clients should send absolute paths.
    #[schema(min_length = 1)]
    pub path: String,
}

/// One piece of content this node shares.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ContentSummary {
    /// The content id: BLAKE3 of the manifest.
    pub content_id: HexId,
    /// Size in bytes.
    pub size: u64,
    /// Number of chunks.
    pub chunks: u64,
    /// The file name it was shared under.
    pub name: String,
}

/// Body of `POST /api/v1/downloads`: start downloading content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GetRequest {
    /// The content to fetch.
    pub content_id: HexId,
    /// Where the node writes the file, as the node sees it (send absolute paths).
    #[schema(min_length = 1)]
    pub out: String,
}

/// Where a download stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DownloadState {
    /// Fetching chunks: `"running"`.
    Running,
    /// Every chunk verified and written: `"complete"`.
    Complete,
    /// Stopped for good; `error` says why: `"failed"`.
    Failed,
    /// Stopped by `DELETE /api/v1/downloads/{content_id}`: `"cancelled"`. Verified chunks are
    /// kept, so starting it again resumes.
    Cancelled,
}

/// One download, as `GET /api/v1/downloads` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DownloadInfo {
    /// The content being fetched.
    pub content_id: HexId,
    /// Where the file is written.
    pub out: String,
    /// Total size in bytes (0 until the manifest is known).
    pub size: u64,
    /// Verified bytes written so far.
    pub bytes_have: u64,
    /// Number of chunks (0 until the manifest is known).
    pub chunks_total: u64,
    /// Verified chunks written so far.
    pub chunks_have: u64,
    /// Peers currently serving chunks of it.
    pub providers: u32,
    /// Running, complete, failed or cancelled.
    pub state: DownloadState,
    /// Why it failed; while `running`, a local error that holds it back now (a full or
    /// read-only disk: it resumes by itself once the cause is gone); otherwise `null`.
    pub error: Option<String>,
}

/// Longest an order may live, in seconds: 7 days.
pub const MAX_ORDER_TTL_S: u64 = 7 * 24 * 3600;

/// Body of `POST /api/v1/offers`: sell upload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OfferRequest {
    /// Bytes for sale; at least 1.
    #[schema(minimum = 1)]
    pub bytes: u64,
    /// Credits asked per GiB (0 is free seeding).
    pub price_per_gib: u64,
    /// Most bytes per second the node will upload for it; `null` for the node's upload limit,
    /// or unlimited.
    #[serde(default)]
    #[schema(minimum = 1)]
    pub max_rate: Option<u64>,
    /// Seconds the offer lives, 1 to [`MAX_ORDER_TTL_S`]; `null` for an hour.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 604800)]
    pub ttl_s: Option<u64>,
}

/// Body of `POST /api/v1/bids`: buy upload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BidRequest {
    /// Bytes wanted; at least 1.
    #[schema(minimum = 1)]
    pub bytes: u64,
    /// Most credits per GiB the node will pay.
    pub max_price_per_gib: u64,
    /// The content wanted, if any (it matters for delivery, not for matching).
    #[serde(default)]
    pub content_id: Option<HexId>,
    /// Seconds the bid lives, 1 to [`MAX_ORDER_TTL_S`]; `null` for an hour.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 604800)]
    pub ttl_s: Option<u64>,
}

impl OfferRequest {
    /// Checks the bounds the server can check without the node.
    pub fn check(&self) -> Result<(), String> {
        check_order(self.bytes, self.ttl_s)?;
        if self.max_rate == Some(0) {
            return Err("max_rate: must be at least 1 byte per second, or null".into());
        }
        Ok(())
    }
}

impl BidRequest {
    /// Checks the bounds the server can check without the node.
    pub fn check(&self) -> Result<(), String> {
        check_order(self.bytes, self.ttl_s)
    }
}

fn check_order(bytes: u64, ttl_s: Option<u64>) -> Result<(), String> {
    if bytes == 0 {
        return Err("bytes: must be at least 1".into());
    }
    match ttl_s {
        Some(ttl) if ttl == 0 || ttl > MAX_ORDER_TTL_S => Err(format!(
            "ttl_s: must be from 1 to {MAX_ORDER_TTL_S} seconds (7 days)"
        )),
        _ => Ok(()),
    }
}

/// Which side of the book an order is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum OrderSide {
    /// An offer to sell upload: `"offer"`.
    Offer,
    /// A bid to buy upload: `"bid"`.
    Bid,
}

/// One order, as the market lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct OrderInfo {
    /// The order's id: BLAKE3 of its signed bytes.
    pub order_id: HexId,
    /// `"offer"` or `"bid"`.
    pub side: OrderSide,
    /// Who made it.
    pub owner: HexId,
    /// Bytes when made.
    pub bytes: u64,
    /// Bytes left: resting in the book for others' orders; not yet in trades for this node's.
    pub remaining: u64,
    /// An offer's price or a bid's maximum, in credits per GiB.
    pub price_per_gib: u64,
    /// An offer's most bytes per second; `null` for a bid.
    pub max_rate: Option<u64>,
    /// A bid's content; `null` if none.
    pub content_id: Option<HexId>,
    /// When it expires, Unix milliseconds.
    pub expires_ms: u64,
    /// Whether it is this node's.
    pub mine: bool,
    /// Whether this node cancelled it.
    pub cancelled: bool,
}

/// One trade, as `GET /api/v1/trades` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TradeInfo {
    /// The trade's id: BLAKE3 of its signed terms.
    pub trade_id: HexId,
    /// This node's side: `"seller"` or `"buyer"`.
    pub role: String,
    /// `"proposed"`, `"agreed"`, `"delivering"`, `"settled"`, `"cancelled"`, `"expired"`,
    /// `"seller_defaulted"` or `"buyer_defaulted"`.
    pub state: String,
    /// The offer matched.
    pub offer_id: HexId,
    /// The bid matched.
    pub bid_id: HexId,
    /// Who uploads.
    pub seller: HexId,
    /// Who downloads and pays.
    pub buyer: HexId,
    /// Bytes to deliver.
    pub bytes: u64,
    /// Credits per GiB.
    pub price_per_gib: u64,
    /// When delivery must be done, Unix milliseconds.
    pub expires_ms: u64,
    /// Bytes delivered so far.
    pub delivered_bytes: u64,
    /// Credits paid for them so far, through receipts both parties signed.
    pub settled_credits: u64,
    /// Credits the buyer owes on it now: delivered and not yet covered by a receipt (bounded by
    /// the buyer's credit window).
    pub owed_credits: u64,
    /// Why it was refused or failed; `null` if it was not.
    pub note: Option<String>,
}

/// What `GET /api/v1/market` answers: the book's best orders, this node's orders and trades.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct MarketInfo {
    /// Live offers, cheapest (then earliest) first, at most 50.
    pub offers: Vec<OrderInfo>,
    /// Live bids, highest (then earliest) first, at most 50.
    pub bids: Vec<OrderInfo>,
    /// Offers resting in the book in all.
    pub offers_total: u64,
    /// Bids resting in the book in all.
    pub bids_total: u64,
    /// This node's unexpired orders.
    pub mine: Vec<OrderInfo>,
    /// This node's trades, oldest first.
    pub trades: Vec<TradeInfo>,
}

/// The JSON body of every error response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// The HTTP status code, repeated.
    pub status: u16,
    /// A stable, machine-readable code, e.g. `"bad_request"`, `"unauthorized"`.
    pub code: String,
    /// What went wrong, for humans.
    pub message: String,
}

/// Body of `POST /api/v1/session`: the dashboard's login. Its `Debug` output hides the key.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    /// The node's API key (`tally api-key` prints it).
    pub api_key: String,
}

impl fmt::Debug for LoginRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoginRequest")
            .field("api_key", &"<redacted>")
            .finish()
    }
}

/// What `POST /api/v1/session` and `GET /api/v1/session` answer: the session's CSRF token,
/// which unsafe requests authenticated by the session cookie send as `X-CSRF-Token`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SessionInfo {
    /// 64 lowercase hex characters.
    pub csrf_token: String,
}

// ---- identity, receipts, conflicts, settings, peer state; the OpenAPI schema of HexId ----

impl utoipa::PartialSchema for HexId {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .description(Some(
                "A 32-byte id (peer id, content id, order id): 64 lowercase hex characters.",
            ))
            .pattern(Some("^[0-9a-f]{64}$"))
            .min_length(Some(2 * ID_BYTES))
            .max_length(Some(2 * ID_BYTES))
            .into()
    }
}

impl ToSchema for HexId {}

/// Whether a peer is connected, as [`PeerInfo::state`] says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum PeerState {
    /// A connection is open: `"connected"`.
    Connected,
    /// No connection now; the node dials it or saw it before: `"disconnected"`.
    Disconnected,
    /// Banned for misbehaving (bad data, bad answers); connections are refused: `"banned"`.
    Banned,
}

/// What `GET /api/v1/identity` answers: who and where this node is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Identity {
    /// This node's peer id (its ed25519 public key).
    pub peer_id: HexId,
    /// The network's name (from the config).
    pub network: String,
    /// The network's id, derived from the name.
    pub network_id: String,
    /// The address the QUIC endpoint is bound to, `HOST:PORT`.
    pub quic_addr: String,
    /// The address this HTTP API is bound to, `HOST:PORT`.
    pub api_addr: String,
    /// The node's version.
    pub version: String,
}

/// Receipts a page holds when the request names no `limit`.
pub const RECEIPTS_DEFAULT_LIMIT: usize = 50;
/// The largest `limit` a receipts request may ask for; more is a 400.
pub const RECEIPTS_MAX_LIMIT: usize = 500;

/// Query of `GET /api/v1/receipts`. Values are taken as strings so that a bad one is a 400
/// that names the parameter; [`ReceiptQuery::check`] parses them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ReceiptQuery {
    /// Only receipts in which this peer (64 lowercase hex) is the uploader or the downloader.
    #[param(value_type = Option<String>, pattern = "^[0-9a-f]{64}$")]
    pub peer: Option<String>,
    /// Receipts per page, 1 to 500; 50 if absent.
    #[param(value_type = Option<u64>, minimum = 1, maximum = 500)]
    pub limit: Option<String>,
    /// Where to go on: the `next_cursor` of the previous page.
    #[param(pattern = "^[0-9a-f]{128}$")]
    pub cursor: Option<String>,
}

/// A [`ReceiptQuery`] whose values have the right shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReceiptFilter {
    /// Only receipts this peer is part of.
    pub peer: Option<HexId>,
    /// Receipts per page, 1 to [`RECEIPTS_MAX_LIMIT`].
    pub limit: usize,
    /// Only receipts after this position.
    pub after: Option<ReceiptCursor>,
}

/// A position in the receipts' order, which is (uploader, downloader) byte order: a page goes
/// on after the pair of the last receipt of the previous one. In URLs it is the two ids'
/// 128 hex characters; clients should treat it as opaque.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ReceiptCursor {
    /// The uploader of the last receipt seen.
    pub uploader: HexId,
    /// Its downloader.
    pub downloader: HexId,
}

impl fmt::Display for ReceiptCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.uploader, self.downloader)
    }
}

impl FromStr for ReceiptCursor {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || "expected the next_cursor of a previous page (128 lowercase hex characters)";
        if s.len() != 4 * ID_BYTES || !s.is_ascii() {
            return Err(bad().into());
        }
        let (up, down) = s.split_at(2 * ID_BYTES);
        match (up.parse(), down.parse()) {
            (Ok(uploader), Ok(downloader)) => Ok(Self {
                uploader,
                downloader,
            }),
            _ => Err(bad().into()),
        }
    }
}

impl ReceiptQuery {
    /// Parses the values; the error names the parameter and says what is expected.
    pub fn check(&self) -> Result<ReceiptFilter, String> {
        let peer = match &self.peer {
            Some(peer) => Some(peer.parse::<HexId>().map_err(|e| format!("peer: {e}"))?),
            None => None,
        };
        let limit = match &self.limit {
            None => RECEIPTS_DEFAULT_LIMIT,
            Some(text) => match text.parse::<usize>() {
                Ok(n) if (1..=RECEIPTS_MAX_LIMIT).contains(&n) && !text.starts_with('+') => n,
                _ => {
                    return Err(format!(
                        "limit: expected a number from 1 to {RECEIPTS_MAX_LIMIT}, not {text:?}"
                    ));
                }
            },
        };
        let after = match &self.cursor {
            Some(cursor) => Some(cursor.parse().map_err(|e| format!("cursor: {e}"))?),
            None => None,
        };
        Ok(ReceiptFilter { peer, limit, after })
    }
}

/// One receipt: what both peers signed. The same object `GET /api/v1/ledger/export` writes
/// per line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ReceiptInfo {
    /// Who uploaded.
    pub uploader: HexId,
    /// Who downloaded and signed for the bytes.
    pub downloader: HexId,
    /// 1, 2, 3, … per (uploader, downloader) pair.
    pub seq: u64,
    /// Payload bytes the downloader received from the uploader, cumulative.
    pub bytes: u64,
    /// Credits the downloader owes the uploader, cumulative.
    pub credits: u64,
    /// The downloader's clock at signing, Unix milliseconds.
    pub time_ms: u64,
    /// The downloader's ed25519 signature, 128 lowercase hex characters.
    #[schema(pattern = "^[0-9a-f]{128}$")]
    pub sig_downloader: String,
    /// The uploader's signature over the same bytes, 128 lowercase hex characters.
    #[schema(pattern = "^[0-9a-f]{128}$")]
    pub sig_uploader: String,
}

/// What `GET /api/v1/receipts` answers: one page of the latest receipt of each pair, in
/// (uploader, downloader) order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ReceiptPage {
    /// The receipts of this page.
    pub receipts: Vec<ReceiptInfo>,
    /// Pass as `cursor` to get the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// One key that a stored conflict proof marks dishonest, as `GET /api/v1/conflicts` lists it.
/// A proof is two receipts of one pair with the same `seq` that neither supersedes: both keys
/// signed both, so the list has an entry for each of the pair's two keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ConflictInfo {
    /// The key marked dishonest.
    pub peer: HexId,
    /// The proof's id: BLAKE3 of its encoding.
    pub proof_id: HexId,
    /// The pair's uploader.
    pub uploader: HexId,
    /// The pair's downloader.
    pub downloader: HexId,
    /// The sequence number both receipts carry.
    pub seq: u64,
    /// The two contradictory receipts, in the proof's canonical order.
    pub receipts: Vec<ReceiptInfo>,
}

/// The smallest upload budget (per day or per month) `PUT /api/v1/settings` takes: one upload
/// request's worth, 16 MiB. A smaller one could never let a request through.
pub const MIN_UPLOAD_BUDGET: u64 = 16 << 20;

/// The settings the API changes at runtime, `GET`/`PUT /api/v1/settings`. `null` is unlimited
/// or no budget. `PUT` replaces all four: an absent field is `null`. They hold until the node
/// stops; `config.toml` keeps the values a start uses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Upload cap in bytes per second (at least 1), or `null` for unlimited.
    #[serde(default)]
    #[schema(minimum = 1)]
    pub upload_bytes_per_s: Option<u64>,
    /// Download cap in bytes per second (at least 1), or `null` for unlimited.
    #[serde(default)]
    #[schema(minimum = 1)]
    pub download_bytes_per_s: Option<u64>,
    /// Bytes this node may upload per UTC day (at least 16 MiB), or `null` for no budget.
    #[serde(default)]
    #[schema(minimum = 16777216)]
    pub upload_budget_daily: Option<u64>,
    /// Bytes this node may upload per UTC month (at least 16 MiB), or `null` for no budget.
    #[serde(default)]
    #[schema(minimum = 16777216)]
    pub upload_budget_monthly: Option<u64>,
}

impl Settings {
    /// Checks the bounds: rates of at least 1, budgets of at least [`MIN_UPLOAD_BUDGET`]. The
    /// values parse, so a failure is a 422, not a 400.
    pub fn check(&self) -> Result<(), String> {
        for (name, rate) in [
            ("upload_bytes_per_s", self.upload_bytes_per_s),
            ("download_bytes_per_s", self.download_bytes_per_s),
        ] {
            if rate == Some(0) {
                return Err(format!(
                    "{name}: must be at least 1 byte per second, or null for unlimited"
                ));
            }
        }
        for (name, budget) in [
            ("upload_budget_daily", self.upload_budget_daily),
            ("upload_budget_monthly", self.upload_budget_monthly),
        ] {
            if let Some(bytes) = budget
                && bytes < MIN_UPLOAD_BUDGET
            {
                return Err(format!(
                    "{name}: {bytes} bytes is below the smallest budget, {MIN_UPLOAD_BUDGET} bytes (16 MiB, one upload request); use null for no budget"
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

    #[test]
    fn hex_ids_round_trip_and_reject_bad_shapes() {
        let id: HexId = ID.parse().unwrap();
        assert_eq!(id.as_bytes()[1], 0x11);
        assert_eq!(id.to_string(), ID);
        assert_eq!(serde_json::to_string(&id).unwrap(), format!("\"{ID}\""));
        assert_eq!(parse_hex32("abc"), Err(HexIdError::Length(3)));
        assert_eq!(
            parse_hex32(&ID.to_uppercase()),
            Err(HexIdError::Char { at: 20, found: 'A' })
        );
        let with_g = format!("g{}", &ID[1..]);
        assert_eq!(
            parse_hex32(&with_g),
            Err(HexIdError::Char { at: 0, found: 'g' })
        );
        // A multi-byte character must not split a char boundary or panic.
        let with_e = format!("é{}", &ID[2..]);
        assert!(matches!(
            parse_hex32(&with_e),
            Err(HexIdError::Char { at: 0, .. })
        ));
        assert!(serde_json::from_str::<HexId>("\"zz\"").is_err());
    }

    #[test]
    fn connect_requests_parse_peer_id_host_and_port() {
        let parse = |peer: String| ConnectRequest { peer }.parse();
        let t = parse(format!("{ID}@127.0.0.1:7420")).unwrap();
        assert_eq!((t.host.as_str(), t.port), ("127.0.0.1", 7420));
        let t = parse(format!("{ID}@[::1]:7420")).unwrap();
        assert_eq!(t.host, "::1");
        let t = parse(format!("{ID}@node-1.example:1")).unwrap();
        assert_eq!(t.host, "node-1.example");
        assert_eq!(parse("x".into()), Err(PeerAddrError::MissingAt));
        assert!(matches!(
            parse("abc@h:1".to_owned()),
            Err(PeerAddrError::PeerId(_))
        ));
        assert_eq!(parse(format!("{ID}@h")), Err(PeerAddrError::MissingPort));
        assert!(matches!(
            parse(format!("{ID}@h:0")),
            Err(PeerAddrError::BadPort(_))
        ));
        assert!(matches!(
            parse(format!("{ID}@h:+1")),
            Err(PeerAddrError::BadPort(_))
        ));
        assert!(matches!(
            parse(format!("{ID}@:1")),
            Err(PeerAddrError::BadHost(_))
        ));
        assert!(matches!(
            parse(format!("{ID}@::1:1")),
            Err(PeerAddrError::BadHost(_))
        ));
        assert!(matches!(
            parse(format!("{ID}@a b:1")),
            Err(PeerAddrError::BadHost(_))
        ));
    }

    #[test]
    fn enums_use_the_documented_spellings() {
        assert_eq!(serde_json::to_string(&Direction::In).unwrap(), "\"in\"");
        assert_eq!(
            serde_json::to_string(&DownloadState::Complete).unwrap(),
            "\"complete\""
        );
        let limits: RateLimits = serde_json::from_str(r#"{"upload_bytes_per_s":5}"#).unwrap();
        assert_eq!(limits.download_bytes_per_s, None);
        assert!(serde_json::from_str::<RateLimits>(r#"{"upload":5}"#).is_err());
    }
}
