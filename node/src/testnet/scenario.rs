//! Scenario files: what a testnet runs. A TOML file names groups of peers and their behaviour,
//! the content and who holds and wants it when, market orders, the duration and the seed.
//! [`Scenario::load`] refuses a file that does not parse or does not make sense before anything
//! starts, naming the file, the line and the key at fault.
//!
//! The real runner and the simulator both take a [`Scenario`]: it holds no I/O and no tokio.

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer, Serialize};

use crate::rate::Rate;

/// The most peers a scenario may describe (the simulator's reach; the real runner has a lower
/// cap of its own).
pub const MAX_PEERS: u64 = 100_000;
/// The longest a scenario may run, in seconds: a day.
pub const MAX_DURATION_S: u64 = 24 * 3600;
/// The largest content item: 16 GiB.
pub const MAX_CONTENT_BYTES: u64 = 16 << 30;
/// The smallest credit window a scenario may set: four chunks, so a transfer is never held
/// back by the window alone.
pub const MIN_CREDIT_WINDOW: u64 = 1 << 20;
/// What a sybil clique's members claim to have given one another by default: 1 TiB each way.
pub const DEFAULT_SYBIL_CLAIM: u64 = 1 << 40;

/// How a group of peers behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Holds content from the start, uploads, never downloads.
    Seeder,
    /// Downloads what it wants and uploads what it has: a contributor.
    Leecher,
    /// Downloads, never uploads, never signs a receipt.
    Freerider,
    /// A clique of identities that sign huge receipts among themselves; one of them (the
    /// gateway) uploads to honest peers like a leecher — the attack edge — and the rest download
    /// like freeriders, hoping the clique's standing carries them.
    Sybil,
    /// A freerider that takes a new identity after each download.
    Whitewasher,
    /// A leecher that joins at `join_at_s`.
    LateJoiner,
    /// A leecher that leaves and rejoins: online `online_s`, then offline `offline_s`, again.
    Churner,
}

impl Role {
    /// Whether peers of this role upload what they hold.
    pub fn uploads(self) -> bool {
        matches!(
            self,
            Role::Seeder | Role::Leecher | Role::LateJoiner | Role::Churner
        )
    }

    /// Whether peers of this role sign receipts for what they receive.
    pub fn signs(self) -> bool {
        !matches!(self, Role::Freerider | Role::Whitewasher)
    }

    /// Whether the role contributes what it can: its peers' downloads are the reference
    /// against which freeriders are compared.
    pub fn contributes(self) -> bool {
        matches!(self, Role::Leecher | Role::LateJoiner | Role::Churner)
    }

    /// The role's name as scenario files write it.
    pub fn name(self) -> &'static str {
        match self {
            Role::Seeder => "seeder",
            Role::Leecher => "leecher",
            Role::Freerider => "freerider",
            Role::Sybil => "sybil",
            Role::Whitewasher => "whitewasher",
            Role::LateJoiner => "late_joiner",
            Role::Churner => "churner",
        }
    }
}

/// A group of peers of one behaviour.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Group {
    /// Its name, unique in the scenario.
    pub name: String,
    /// How its peers behave.
    pub role: Role,
    /// How many peers.
    pub count: u32,
    /// Each peer's upload limit, bytes per second; `None` is unlimited.
    pub upload_limit: Option<u64>,
    /// Each peer's download limit, bytes per second; `None` is unlimited.
    pub download_limit: Option<u64>,
    /// When its peers start, seconds into the run (0 but for late joiners).
    pub join_at_s: u64,
    /// A churner's cycle.
    pub churn: Option<Churn>,
    /// What a sybil clique's members claim to have given one another, bytes (sybils only).
    pub sybil_claim: Option<u64>,
    /// Between which members a sybil clique claims it (sybils only; `Mesh` by default).
    pub claim_shape: ClaimShape,
}

/// Between which members a sybil clique claims its `claim`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClaimShape {
    /// Every member to every other, both ways.
    #[default]
    Mesh,
    /// Every other member to the gateway (the first member), one way only: receipts no
    /// netting of the pair's two directions cancels.
    Star,
}

impl ClaimShape {
    /// Whether the clique claims that member `up` gave member `down` (ordinals in the group;
    /// the gateway is 0).
    pub fn claims(self, up: u32, down: u32) -> bool {
        up != down
            && match self {
                ClaimShape::Mesh => true,
                ClaimShape::Star => down == 0,
            }
    }
}

/// A churner's cycle: online, then offline, repeated from its start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Churn {
    /// Seconds online in each cycle.
    pub online_s: u64,
    /// Seconds offline in each cycle.
    pub offline_s: u64,
}

/// A content item: its size, who holds it from the start and who wants it when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Content {
    /// Its name, unique in the scenario.
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
    /// Groups (indexes into [`Scenario::groups`]) whose every peer holds it from the start.
    pub holders: Vec<usize>,
    /// Groups whose every peer wants it.
    pub wanted_by: Vec<usize>,
    /// When the wanting peers start fetching it, seconds into the run (or when they join, if
    /// later).
    pub at_s: u64,
    /// Each wanting peer starts at a uniformly drawn moment in `[at_s, at_s + spread_s]`.
    pub spread_s: u64,
}

/// A side of a market order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderSide {
    /// Sell upload.
    Offer,
    /// Buy upload.
    Bid,
}

/// An order every peer of a group posts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Order {
    /// The posting group (index into [`Scenario::groups`]).
    pub group: usize,
    /// Offer or bid.
    pub side: OrderSide,
    /// Bytes.
    pub bytes: u64,
    /// An offer's price or a bid's maximum, credits per GiB.
    pub price_per_gib: u64,
    /// When it is posted, seconds into the run.
    pub at_s: u64,
    /// How long it lives, seconds.
    pub ttl_s: u64,
}

/// A scenario, checked: every reference resolved, every number in range.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Scenario {
    /// Its name (the file's stem unless the file names it).
    pub name: String,
    /// What it is for.
    pub description: String,
    /// The seed every random choice derives from.
    pub seed: u64,
    /// How long it runs, seconds.
    pub duration_s: u64,
    /// The network's name its nodes use.
    pub network: String,
    /// Every node's credit window at the floor (`[node] credit_window`), when the scenario sets
    /// one; else the node's default.
    pub credit_window: Option<u64>,
    /// Groups of peers.
    pub groups: Vec<Group>,
    /// Content.
    pub content: Vec<Content>,
    /// Market orders.
    pub orders: Vec<Order>,
}

/// Why a scenario was refused: the file, the line (when known) and the key at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ScenarioError {
    /// The scenario file.
    pub file: PathBuf,
    /// 1-based line, when the fault has a place in the file.
    pub line: Option<usize>,
    /// The key at fault, as a path such as `group[2].count`; empty for the whole file.
    pub key: String,
    /// What is wrong and what to write instead.
    pub message: String,
}

impl fmt::Display for ScenarioError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if !self.key.is_empty() {
            write!(f, ": `{}`", self.key)?;
        }
        write!(f, ": {}", self.message)
    }
}

// ---- the file as written ----

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    name: Option<String>,
    #[serde(default)]
    description: String,
    seed: u64,
    duration_s: u64,
    network: Option<String>,
    #[serde(default, deserialize_with = "size_opt")]
    credit_window: Option<u64>,
    #[serde(default)]
    defaults: Limits,
    #[serde(default, rename = "group")]
    groups: Vec<GroupFile>,
    #[serde(default)]
    content: Vec<ContentFile>,
    #[serde(default, rename = "order")]
    orders: Vec<OrderFile>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Limits {
    #[serde(default, deserialize_with = "limit")]
    upload_limit: Option<Option<u64>>,
    #[serde(default, deserialize_with = "limit")]
    download_limit: Option<Option<u64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GroupFile {
    name: String,
    #[serde(rename = "behaviour")]
    role: Role,
    count: u32,
    #[serde(default, deserialize_with = "limit")]
    upload_limit: Option<Option<u64>>,
    #[serde(default, deserialize_with = "limit")]
    download_limit: Option<Option<u64>>,
    join_at_s: Option<u64>,
    online_s: Option<u64>,
    offline_s: Option<u64>,
    #[serde(default, deserialize_with = "size_opt")]
    claim: Option<u64>,
    claim_shape: Option<ClaimShape>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ContentFile {
    name: String,
    #[serde(deserialize_with = "size")]
    size: u64,
    holders: Vec<String>,
    #[serde(default)]
    wanted_by: Vec<String>,
    #[serde(default)]
    at_s: u64,
    #[serde(default)]
    spread_s: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OrderFile {
    group: String,
    side: OrderSide,
    #[serde(deserialize_with = "size")]
    bytes: u64,
    price_per_gib: u64,
    #[serde(default)]
    at_s: u64,
    #[serde(default = "default_ttl")]
    ttl_s: u64,
}

fn default_ttl() -> u64 {
    3600
}

/// A size or a rate: a number of bytes, or a string such as `32MiB` or `2MiB/s`.
#[derive(Deserialize)]
#[serde(untagged)]
enum SizeText {
    Number(u64),
    Text(String),
}

fn parse_size_text(value: SizeText, what: &str, example: &str) -> Result<u64, String> {
    match value {
        SizeText::Number(n) => Ok(n),
        SizeText::Text(text) => text
            .trim()
            .parse::<Rate>()
            .map(|r| r.0)
            .map_err(|_| format!("`{text}` is not {what}: write {example}")),
    }
}

fn size<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    parse_size_text(
        SizeText::deserialize(d)?,
        "a size",
        "bytes such as 32MiB, 1.5GB, 1TiB or 4096",
    )
    .map_err(serde::de::Error::custom)
}

fn size_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    size(d).map(Some)
}

/// A limit: a rate, or `unlimited` (also `0`).
fn limit<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<u64>>, D::Error> {
    match SizeText::deserialize(d)? {
        SizeText::Number(0) => Ok(Some(None)),
        SizeText::Text(text) if text.trim().eq_ignore_ascii_case("unlimited") => Ok(Some(None)),
        other => parse_size_text(
            other,
            "a rate",
            "bytes per second such as 2MiB/s, 500KiB/s or `unlimited`",
        )
        .map(|bytes| Some(Some(bytes)))
        .map_err(serde::de::Error::custom),
    }
}

// ---- loading and checking ----

/// One step of a key's path in the file.
#[derive(Debug, Clone)]
enum Step {
    Key(&'static str),
    Index(usize),
}

struct Checker<'a> {
    file: &'a Path,
    text: &'a str,
}

impl Checker<'_> {
    fn fail(&self, path: &[Step], message: impl Into<String>) -> ScenarioError {
        ScenarioError {
            file: self.file.to_path_buf(),
            line: locate(self.text, path),
            key: key_name(path),
            message: message.into(),
        }
    }
}

fn key_name(path: &[Step]) -> String {
    let mut out = String::new();
    for step in path {
        match step {
            Step::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            Step::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

/// The 1-based line of the key `path` names (or of the closest enclosing part that exists).
fn locate(text: &str, path: &[Step]) -> Option<usize> {
    let doc = toml_edit::Document::parse(text).ok()?;
    let mut best = None;
    let mut item: Option<&toml_edit::Item> = None;
    let mut table: Option<&toml_edit::Table> = Some(doc.as_table());
    for step in path {
        match step {
            Step::Key(key) => {
                let found = match (table, item) {
                    (Some(t), _) => t.get_key_value(key),
                    (None, Some(i)) => i.as_table_like().and_then(|t| t.get_key_value(key)),
                    _ => None,
                };
                let Some((k, v)) = found else { break };
                best = k.span().or(best);
                table = v.as_table();
                item = Some(v);
            }
            Step::Index(index) => {
                let Some(current) = item else { break };
                if let Some(array) = current.as_array_of_tables() {
                    let Some(t) = array.get(*index) else { break };
                    best = t.span().or(best);
                    table = Some(t);
                    item = None;
                } else if let Some(array) = current.as_array() {
                    let Some(v) = array.get(*index) else { break };
                    best = v.span().or(best);
                    table = None;
                    item = None;
                } else {
                    break;
                }
            }
        }
    }
    best.map(|span| text[..span.start.min(text.len())].matches('\n').count() + 1)
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

impl Scenario {
    /// Reads and checks the scenario at `path`.
    pub fn load(path: &Path) -> Result<Self, ScenarioError> {
        let text = std::fs::read_to_string(path).map_err(|e| ScenarioError {
            file: path.to_path_buf(),
            line: None,
            key: String::new(),
            message: format!("cannot read it: {e}"),
        })?;
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "scenario".into());
        Self::parse(&text, path, &stem)
    }

    /// Parses and checks scenario `text`; `file` names it in errors, `default_name` names the
    /// scenario when the text does not.
    pub fn parse(text: &str, file: &Path, default_name: &str) -> Result<Self, ScenarioError> {
        let raw: File = toml::from_str(text).map_err(|e| {
            let line = e
                .span()
                .map(|span| text[..span.start.min(text.len())].matches('\n').count() + 1);
            ScenarioError {
                file: file.to_path_buf(),
                line,
                key: String::new(),
                message: e.message().trim().to_owned(),
            }
        })?;
        let checker = Checker { file, text };
        check(raw, &checker, default_name)
    }

    /// Peers in all.
    pub fn peers(&self) -> u64 {
        self.groups.iter().map(|g| u64::from(g.count)).sum()
    }

    /// The group named `name`.
    pub fn group(&self, name: &str) -> Option<usize> {
        self.groups.iter().position(|g| g.name == name)
    }
}

fn check(raw: File, c: &Checker<'_>, default_name: &str) -> Result<Scenario, ScenarioError> {
    use Step::{Index, Key};
    if raw.duration_s == 0 || raw.duration_s > MAX_DURATION_S {
        return Err(c.fail(
            &[Key("duration_s")],
            format!("must be from 1 to {MAX_DURATION_S} seconds"),
        ));
    }
    if let Some(window) = raw.credit_window
        && !(MIN_CREDIT_WINDOW..=1 << 40).contains(&window)
    {
        return Err(c.fail(
            &[Key("credit_window")],
            "must be from 1MiB (four chunks) to 1TiB",
        ));
    }
    let name = raw.name.unwrap_or_else(|| default_name.to_owned());
    if !valid_name(&name) {
        return Err(c.fail(&[Key("name")], "must be 1–64 letters, digits, `-` or `_`"));
    }
    if raw.groups.is_empty() {
        return Err(c.fail(
            &[],
            "names no peers: add at least one [[group]] with a name, a behaviour and a count",
        ));
    }
    let mut names = HashSet::new();
    let mut groups = Vec::new();
    let mut total = 0u64;
    for (i, g) in raw.groups.into_iter().enumerate() {
        let at = |key| [Key("group"), Index(i), Key(key)];
        if !valid_name(&g.name) {
            return Err(c.fail(&at("name"), "must be 1–64 letters, digits, `-` or `_`"));
        }
        if !names.insert(g.name.clone()) {
            return Err(c.fail(
                &at("name"),
                format!("a second group named `{}`: group names must differ", g.name),
            ));
        }
        if g.count == 0 {
            return Err(c.fail(&at("count"), "must be at least 1"));
        }
        if g.role == Role::Sybil && g.count < 2 {
            return Err(c.fail(&at("count"), "a sybil clique needs at least 2 identities"));
        }
        total += u64::from(g.count);
        if total > MAX_PEERS {
            return Err(c.fail(
                &at("count"),
                format!("the scenario would have more than {MAX_PEERS} peers"),
            ));
        }
        let join_at_s = match (g.role, g.join_at_s) {
            (Role::LateJoiner, Some(t)) if t < raw.duration_s => t,
            (Role::LateJoiner, Some(_)) => {
                return Err(c.fail(&at("join_at_s"), "must be before the end (duration_s)"));
            }
            (Role::LateJoiner, None) => {
                return Err(c.fail(
                    &[Key("group"), Index(i)],
                    "a late_joiner group needs `join_at_s`: when its peers join",
                ));
            }
            (_, Some(_)) => {
                return Err(c.fail(&at("join_at_s"), "only a late_joiner group joins late"));
            }
            (_, None) => 0,
        };
        let churn = match (g.role, g.online_s, g.offline_s) {
            (Role::Churner, Some(on), Some(off)) if on > 0 && off > 0 => Some(Churn {
                online_s: on,
                offline_s: off,
            }),
            (Role::Churner, Some(_), Some(_)) => {
                return Err(c.fail(&at("online_s"), "online_s and offline_s must be at least 1"));
            }
            (Role::Churner, _, _) => {
                return Err(c.fail(
                    &[Key("group"), Index(i)],
                    "a churner group needs `online_s` and `offline_s`: its cycle",
                ));
            }
            (_, Some(_), _) => {
                return Err(c.fail(&at("online_s"), "only a churner group has a cycle"));
            }
            (_, _, Some(_)) => {
                return Err(c.fail(&at("offline_s"), "only a churner group has a cycle"));
            }
            _ => None,
        };
        let sybil_claim = match (g.role, g.claim) {
            (Role::Sybil, Some(0)) => {
                return Err(c.fail(&at("claim"), "must be at least 1 byte"));
            }
            (Role::Sybil, claim) => Some(claim.unwrap_or(DEFAULT_SYBIL_CLAIM)),
            (_, Some(_)) => {
                return Err(c.fail(&at("claim"), "only a sybil group claims receipts"));
            }
            (_, None) => None,
        };
        if g.role != Role::Sybil && g.claim_shape.is_some() {
            return Err(c.fail(&at("claim_shape"), "only a sybil group claims receipts"));
        }
        let claim_shape = g.claim_shape.unwrap_or_default();
        let pick =
            |own: Option<Option<u64>>, default: Option<Option<u64>>| own.or(default).flatten();
        groups.push(Group {
            name: g.name,
            role: g.role,
            count: g.count,
            upload_limit: pick(g.upload_limit, raw.defaults.upload_limit),
            download_limit: pick(g.download_limit, raw.defaults.download_limit),
            join_at_s,
            churn,
            sybil_claim,
            claim_shape,
        });
    }
    let find = |name: &str| groups.iter().position(|g| g.name == name);
    let mut content = Vec::new();
    let mut content_names = HashSet::new();
    for (i, item) in raw.content.into_iter().enumerate() {
        let at = |key| [Key("content"), Index(i), Key(key)];
        if !valid_name(&item.name) {
            return Err(c.fail(&at("name"), "must be 1–64 letters, digits, `-` or `_`"));
        }
        if !content_names.insert(item.name.clone()) {
            return Err(c.fail(
                &at("name"),
                format!("a second content item named `{}`", item.name),
            ));
        }
        if item.size == 0 || item.size > MAX_CONTENT_BYTES {
            return Err(c.fail(&at("size"), "must be from 1 byte to 16GiB"));
        }
        if item.holders.is_empty() {
            return Err(c.fail(&at("holders"), "name at least one group that holds it"));
        }
        let resolve = |list: &[String], key: &'static str| {
            list.iter()
                .enumerate()
                .map(|(j, name)| {
                    find(name).ok_or_else(|| {
                        c.fail(
                            &[Key("content"), Index(i), Key(key), Index(j)],
                            format!("no group is named `{name}`"),
                        )
                    })
                })
                .collect::<Result<Vec<_>, _>>()
        };
        let holders = resolve(&item.holders, "holders")?;
        let wanted_by = resolve(&item.wanted_by, "wanted_by")?;
        for (j, &g) in wanted_by.iter().enumerate() {
            if groups[g].role == Role::Seeder {
                return Err(c.fail(
                    &[Key("content"), Index(i), Key("wanted_by"), Index(j)],
                    format!(
                        "`{}` are seeders, and seeders never download",
                        groups[g].name
                    ),
                ));
            }
            if holders.contains(&g) {
                return Err(c.fail(
                    &[Key("content"), Index(i), Key("wanted_by"), Index(j)],
                    format!("`{}` already hold it", groups[g].name),
                ));
            }
        }
        if item.at_s >= raw.duration_s {
            return Err(c.fail(&at("at_s"), "must be before the end (duration_s)"));
        }
        content.push(Content {
            name: item.name,
            size: item.size,
            holders,
            wanted_by,
            at_s: item.at_s,
            spread_s: item.spread_s,
        });
    }
    let mut orders = Vec::new();
    for (i, order) in raw.orders.into_iter().enumerate() {
        let at = |key| [Key("order"), Index(i), Key(key)];
        let Some(group) = find(&order.group) else {
            return Err(c.fail(&at("group"), format!("no group is named `{}`", order.group)));
        };
        if order.bytes == 0 {
            return Err(c.fail(&at("bytes"), "must be at least 1 byte"));
        }
        if order.at_s >= raw.duration_s {
            return Err(c.fail(&at("at_s"), "must be before the end (duration_s)"));
        }
        if order.ttl_s == 0 || order.ttl_s > 7 * 24 * 3600 {
            return Err(c.fail(&at("ttl_s"), "must be from 1 second to 7 days"));
        }
        orders.push(Order {
            group,
            side: order.side,
            bytes: order.bytes,
            price_per_gib: order.price_per_gib,
            at_s: order.at_s,
            ttl_s: order.ttl_s,
        });
    }
    Ok(Scenario {
        network: raw.network.unwrap_or_else(|| format!("testnet-{name}")),
        credit_window: raw.credit_window,
        name,
        description: raw.description,
        seed: raw.seed,
        duration_s: raw.duration_s,
        groups,
        content,
        orders,
    })
}

#[cfg(test)]
mod tests;
