//! The commands that are clients of a running node: `status`, `peers`, `connect`, `share`,
//! `get`, and `ledger export` while a node runs. They find the node through `DATA_DIR/node.json`
//! and authenticate with `DATA_DIR/api_key`, as the ipfs and syncthing command lines do.

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use tally_web::model::{
    BidRequest, ConnectRequest, Direction, DownloadInfo, DownloadState, GetRequest, HexId,
    MAX_ORDER_TTL_S, OfferRequest, OrderInfo, OrderSide, ShareRequest,
};

use crate::cli::{
    BidArgs, CancelArgs, ConnectArgs, DashboardArgs, GetArgs, JsonArgs, OfferArgs, ShareArgs,
    StandingArgs,
};
use crate::client::ApiClient;
use crate::daemon::{NodeFile, node_file_path};
use crate::id_cmd::{self, write_json_line};
use crate::{Context, Status};

/// How often `get` polls the node for progress.
const POLL: Duration = Duration::from_millis(200);

/// The running node of this data directory, or an error that says how to start one.
pub fn node_client(context: &Context) -> anyhow::Result<ApiClient> {
    let info = running_node(context)?;
    let key = id_cmd::read_api_key(&context.data_dir)?;
    Ok(ApiClient::new(&format!("http://{}", info.api_addr), key))
}

/// What the running node of this data directory wrote to `node.json`.
fn running_node(context: &Context) -> anyhow::Result<NodeFile> {
    let root = context.data_dir.root();
    let path = node_file_path(root);
    let no_node = || {
        anyhow::anyhow!(
            "no tally node is running for {}: start one with `tally --data-dir {} run`",
            root.display(),
            root.display()
        )
    };
    let text = match std::fs::read(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(no_node()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    serde_json::from_slice(&text).with_context(|| {
        format!(
            "{} is damaged; restart the node to rewrite it",
            path.display()
        )
    })
}

/// Whether a running node answers for this data directory.
pub fn node_is_running(context: &Context) -> bool {
    node_client(context).is_ok_and(|client| client.status().is_ok())
}

/// `tally status`.
pub fn status(args: &JsonArgs, context: &Context, out: &mut dyn Write) -> anyhow::Result<Status> {
    let status = node_client(context)?.status()?;
    if args.json {
        write_json_line(out, &status)?;
        return Ok(Status::Success);
    }
    writeln!(out, "peer_id      {}", status.peer_id)?;
    writeln!(
        out,
        "network      {} ({})",
        status.network, status.network_id
    )?;
    writeln!(out, "version      {}", status.version)?;
    writeln!(out, "quic_addr    {}", status.quic_addr)?;
    writeln!(out, "api_addr     http://{}", status.api_addr)?;
    writeln!(out, "uptime       {} s", status.uptime_s)?;
    writeln!(out, "peers        {} connected", status.peers_connected)?;
    writeln!(
        out,
        "store        {} receipts ({} between other peers), {} conflicts, {} keys marked dishonest",
        status.store.receipts,
        status.store.third_party,
        status.store.conflicts,
        status.store.dishonest
    )?;
    for peer in &status.dishonest_peers {
        writeln!(out, "  dishonest  {peer}")?;
    }
    let gossip = &status.gossip;
    writeln!(
        out,
        "gossip       {} sessions ({} failed), {} receipts in, {} out, {} rejected; {} in, {} out; {} peers known, {} provider records",
        gossip.sessions,
        gossip.sessions_failed,
        gossip.receipts_received,
        gossip.receipts_sent,
        gossip.receipts_rejected,
        human_bytes(gossip.bytes_received),
        human_bytes(gossip.bytes_sent),
        gossip.known_peers,
        gossip.provider_records
    )?;
    let period = |p: &tally_web::model::BudgetPeriod| match p.limit {
        Some(limit) => format!("{} of {}", human_bytes(p.used), human_bytes(limit)),
        None => format!("{} (no budget)", human_bytes(p.used)),
    };
    writeln!(
        out,
        "uploaded     {} today, {} this month",
        period(&status.upload_budget.day),
        period(&status.upload_budget.month)
    )?;
    writeln!(
        out,
        "transferred  {} up, {} down",
        human_bytes(status.transfer.bytes_up),
        human_bytes(status.transfer.bytes_down)
    )?;
    let limit =
        |l: Option<u64>| l.map_or("unlimited".to_owned(), |r| format!("{}/s", human_bytes(r)));
    writeln!(
        out,
        "limits       up {}, down {}",
        limit(status.limits.upload_bytes_per_s),
        limit(status.limits.download_bytes_per_s)
    )?;
    Ok(Status::Success)
}

/// `tally peers`.
pub fn peers(args: &JsonArgs, context: &Context, out: &mut dyn Write) -> anyhow::Result<Status> {
    let peers = node_client(context)?.peers()?;
    if args.json {
        write_json_line(out, &peers)?;
        return Ok(Status::Success);
    }
    if peers.is_empty() {
        writeln!(
            out,
            "no peers connected; add one with `tally connect PEERID@HOST:PORT`"
        )?;
        return Ok(Status::Success);
    }
    writeln!(
        out,
        "{:<16} {:<22} {:<4} {:>10} {:>10} {:>8} {:>8}",
        "peer", "address", "dir", "sent", "received", "seq up", "seq down"
    )?;
    for peer in peers {
        let seq = |s: Option<u64>| s.map_or("-".to_owned(), |s| s.to_string());
        writeln!(
            out,
            "{:<16} {:<22} {:<4} {:>10} {:>10} {:>8} {:>8}",
            &peer.peer_id.to_string()[..16],
            peer.addr,
            match peer.direction {
                Direction::In => "in",
                Direction::Out => "out",
            },
            human_bytes(peer.bytes_sent),
            human_bytes(peer.bytes_received),
            seq(peer.receipts.up),
            seq(peer.receipts.down),
        )?;
    }
    Ok(Status::Success)
}

/// `tally standing`.
pub fn standing(
    args: &StandingArgs,
    context: &Context,
    out: &mut dyn Write,
) -> anyhow::Result<Status> {
    let peer: HexId = args.peer.parse().map_err(|e| {
        anyhow::anyhow!(
            "{:?} is not a peer id ({e}); give the 64 hex characters `tally id` prints on that node",
            args.peer
        )
    })?;
    let standing = node_client(context)?.standing(&peer)?;
    if args.json {
        write_json_line(out, &standing)?;
        return Ok(Status::Success);
    }
    let state = if standing.dishonest {
        "dishonest: signed two different receipts for one seq; no standing"
    } else if standing.at_floor {
        "at the floor (as a newcomer or a freerider)"
    } else {
        "above the floor"
    };
    writeln!(out, "peer        {}", standing.peer_id)?;
    writeln!(out, "standing    {:.4} — {state}", standing.score)?;
    writeln!(
        out,
        "direct      gave this node {}, took {}",
        human_bytes(standing.given),
        human_bytes(standing.taken)
    )?;
    if standing.passed > 0.0 {
        writeln!(
            out,
            "passed on   {} (of its direct balance, to those who gave to it)",
            human_bytes(standing.passed as u64)
        )?;
    }
    writeln!(
        out,
        "transitive  {} (a share of what this node received, passed back along chains of contributions)",
        human_bytes(standing.transitive.max(0.0) as u64)
    )?;
    if standing.raw < 0.0 {
        writeln!(
            out,
            "raw         -{} in credits (took more than it gave)",
            human_bytes((-standing.raw) as u64)
        )?;
    } else {
        writeln!(
            out,
            "raw         {} in credits",
            human_bytes(standing.raw as u64)
        )?;
    }
    writeln!(
        out,
        "upload      weight {:.2}; credit window {}",
        standing.weight,
        human_bytes(standing.credit_window)
    )?;
    match &standing.queue {
        Some(q) => writeln!(
            out,
            "queue       {} of {} waiting in the {} class, {} requests, {:.1}% of the upload now",
            q.rank,
            q.waiting_in_class,
            q.class,
            q.requests,
            100.0 * q.share
        )?,
        None => writeln!(out, "queue       nothing waiting")?,
    }
    for path in &standing.paths {
        let chain: Vec<String> = path
            .via
            .iter()
            .rev()
            .map(|p| p.to_string()[..16].to_owned())
            .collect();
        writeln!(
            out,
            "  via       {} → this node: {}",
            chain.join(" → "),
            human_bytes(path.credits.max(0.0) as u64)
        )?;
    }
    Ok(Status::Success)
}

/// `tally connect`.
pub fn connect(
    args: &ConnectArgs,
    context: &Context,
    out: &mut dyn Write,
) -> anyhow::Result<Status> {
    let peer = node_client(context)?.connect(&ConnectRequest {
        peer: args.peer.clone(),
    })?;
    if args.json {
        write_json_line(out, &peer)?;
    } else {
        writeln!(out, "connected to {} at {}", peer.peer_id, peer.addr)?;
    }
    Ok(Status::Success)
}

/// `tally share`.
pub fn share(args: &ShareArgs, context: &Context, out: &mut dyn Write) -> anyhow::Result<Status> {
    let path = absolute(&args.path)?;
    let client = node_client(context)?;
    let content = client.share(&ShareRequest {
        path: path.display().to_string(),
    })?;
    if args.json {
        write_json_line(out, &content)?;
    } else {
        writeln!(out, "{}", content.content_id)?;
    }
    Ok(Status::Success)
}

/// `tally get`: starts the download, shows progress, and exits 0 only when the file is complete
/// and verified.
pub fn get(args: &GetArgs, context: &Context, out: &mut dyn Write) -> anyhow::Result<Status> {
    let content_id: HexId = args
        .content_id
        .parse()
        .map_err(|e| anyhow::anyhow!("`{}` is not a content id: {e}", args.content_id))?;
    let out_path = absolute(&args.out)?;
    let client = node_client(context)?;
    let mut info = client.get(&GetRequest {
        content_id,
        out: out_path.display().to_string(),
    })?;
    let bar = (!args.json && std::io::stderr().is_terminal()).then(|| {
        let bar = indicatif::ProgressBar::new(info.size.max(1));
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta} {msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar
    });
    while info.state == DownloadState::Running {
        if let Some(bar) = &bar {
            bar.set_length(info.size.max(1));
            bar.set_position(info.bytes_have);
            bar.set_message(format!("{} providers", info.providers));
        }
        std::thread::sleep(POLL);
        info = client.download(&content_id)?;
    }
    if let Some(bar) = &bar {
        bar.set_position(info.bytes_have);
        bar.finish_and_clear();
    }
    report_download(&info, args.json, out)
}

fn report_download(info: &DownloadInfo, json: bool, out: &mut dyn Write) -> anyhow::Result<Status> {
    if json {
        write_json_line(out, info)?;
    }
    match info.state {
        DownloadState::Complete => {
            if !json {
                writeln!(
                    out,
                    "{} ({}) written to {}",
                    info.content_id,
                    human_bytes(info.size),
                    info.out
                )?;
            }
            Ok(Status::Success)
        }
        DownloadState::Cancelled => anyhow::bail!(
            "the download of {} was cancelled (through the API); `tally get` again resumes it",
            info.content_id
        ),
        _ => anyhow::bail!(
            "the download of {} failed: {}",
            info.content_id,
            info.error.as_deref().unwrap_or("no reason given")
        ),
    }
}

/// `tally ledger export` through a running node.
pub fn export(context: &Context, out: &mut dyn Write) -> anyhow::Result<Status> {
    node_client(context)?.ledger_export(out)?;
    Ok(Status::Success)
}

/// `tally offer`.
pub fn offer(args: &OfferArgs, context: &Context, out: &mut dyn Write) -> anyhow::Result<Status> {
    let request = OfferRequest {
        bytes: parse_size(&args.bytes, "--bytes")?,
        price_per_gib: args.price,
        max_rate: args
            .rate
            .as_deref()
            .map(|r| parse_size(r, "--rate"))
            .transpose()?,
        ttl_s: args.ttl.as_deref().map(parse_ttl).transpose()?,
    };
    let order = node_client(context)?.post_offer(&request)?;
    report_order(&order, args.json, out)
}

/// `tally bid`.
pub fn bid(args: &BidArgs, context: &Context, out: &mut dyn Write) -> anyhow::Result<Status> {
    let content_id = args
        .content
        .as_deref()
        .map(|c| {
            c.parse::<HexId>()
                .map_err(|e| anyhow::anyhow!("--content `{c}` is not a content id: {e}"))
        })
        .transpose()?;
    let request = BidRequest {
        bytes: parse_size(&args.bytes, "--bytes")?,
        max_price_per_gib: args.max_price,
        content_id,
        ttl_s: args.ttl.as_deref().map(parse_ttl).transpose()?,
    };
    let order = node_client(context)?.post_bid(&request)?;
    report_order(&order, args.json, out)
}

fn report_order(order: &OrderInfo, json: bool, out: &mut dyn Write) -> anyhow::Result<Status> {
    if json {
        write_json_line(out, order)?;
    } else {
        writeln!(out, "{}", order.order_id)?;
    }
    Ok(Status::Success)
}

/// `tally market`.
pub fn market(args: &JsonArgs, context: &Context, out: &mut dyn Write) -> anyhow::Result<Status> {
    let market = node_client(context)?.market()?;
    if args.json {
        write_json_line(out, &market)?;
        return Ok(Status::Success);
    }
    let line = |out: &mut dyn Write, o: &OrderInfo| -> std::io::Result<()> {
        writeln!(
            out,
            "  {:<5} {:<16} {:>10} of {:>10} at {:>6}/GiB  by {}{}",
            match o.side {
                OrderSide::Offer => "offer",
                OrderSide::Bid => "bid",
            },
            &o.order_id.to_string()[..16],
            human_bytes(o.remaining),
            human_bytes(o.bytes),
            o.price_per_gib,
            &o.owner.to_string()[..16],
            if o.cancelled { " (cancelled)" } else { "" }
        )
    };
    writeln!(out, "offers ({} in the book)", market.offers_total)?;
    for o in &market.offers {
        line(out, o)?;
    }
    writeln!(out, "bids ({} in the book)", market.bids_total)?;
    for o in &market.bids {
        line(out, o)?;
    }
    writeln!(out, "my orders ({})", market.mine.len())?;
    for o in &market.mine {
        line(out, o)?;
    }
    writeln!(out, "my trades ({})", market.trades.len())?;
    for t in &market.trades {
        writeln!(
            out,
            "  {:<6} {:<16} {:>10} of {:>10} at {:>6}/GiB, {} credits paid, {} owed  {}{}",
            t.role,
            t.state,
            human_bytes(t.delivered_bytes),
            human_bytes(t.bytes),
            t.price_per_gib,
            t.settled_credits,
            t.owed_credits,
            &t.trade_id.to_string()[..16],
            t.note
                .as_deref()
                .map(|n| format!(" ({n})"))
                .unwrap_or_default()
        )?;
    }
    Ok(Status::Success)
}

/// `tally cancel`.
pub fn cancel(args: &CancelArgs, context: &Context, out: &mut dyn Write) -> anyhow::Result<Status> {
    let order_id: HexId = args.order_id.parse().map_err(|e| {
        anyhow::anyhow!(
            "`{}` is not an order id ({e}); `tally market` lists this node's orders",
            args.order_id
        )
    })?;
    node_client(context)?.cancel_order(&order_id)?;
    if args.json {
        write_json_line(
            out,
            &serde_json::json!({ "order_id": order_id, "cancelled": true }),
        )?;
    } else {
        writeln!(out, "cancelled {order_id}")?;
    }
    Ok(Status::Success)
}

/// A size such as `10MiB`, `1.5GB` or `4096` (an optional `/s` is accepted, for rates).
pub fn parse_size(text: &str, flag: &str) -> anyhow::Result<u64> {
    text.parse::<crate::rate::Rate>().map(|r| r.0).map_err(|_| {
        anyhow::anyhow!(
            "{flag} `{text}` is not a size: write bytes such as 10MiB, 500KiB, 1.5GB or 4096"
        )
    })
}

/// A lifetime such as `90s`, `30m`, `6h` or `2d` (a bare number is seconds), in seconds: from
/// 1 second to 7 days.
pub fn parse_ttl(text: &str) -> anyhow::Result<u64> {
    let bad = || {
        anyhow::anyhow!(
            "--ttl `{text}` is not a duration: write 90s, 30m, 6h or 2d (from 1s to 7d)"
        )
    };
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(split);
    let number: u64 = number.parse().map_err(|_| bad())?;
    let factor = match unit.trim() {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(bad()),
    };
    match number.checked_mul(factor) {
        Some(seconds) if (1..=MAX_ORDER_TTL_S).contains(&seconds) => Ok(seconds),
        _ => Err(bad()),
    }
}

fn absolute(path: &Path) -> anyhow::Result<std::path::PathBuf> {
    std::path::absolute(path).with_context(|| format!("cannot resolve {}", path.display()))
}

/// `1.5 MiB`-style sizes for people.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// `tally dashboard`: prints `http://API_ADDR/#key=KEY` and, with `--open`, opens it.
pub fn dashboard(
    args: &DashboardArgs,
    context: &Context,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> anyhow::Result<Status> {
    let info = running_node(context)?;
    let key = id_cmd::read_api_key(&context.data_dir)?;
    let url = dashboard_url(info.api_addr, &key);
    writeln!(out, "{url}")?;
    if args.open {
        out.flush()?;
        if let Err(error) = open_in_browser(&url) {
            writeln!(err, "cannot open a browser ({error}); open the URL above")?;
        }
    }
    Ok(Status::Success)
}

/// The dashboard's URL with the key in the fragment. A node listening on every interface
/// (`0.0.0.0`, `::`) is reached on loopback, a name its Host check accepts.
pub fn dashboard_url(api_addr: std::net::SocketAddr, key: &str) -> String {
    let mut addr = api_addr;
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr.ip() {
            std::net::IpAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::IpAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    format!("http://{addr}/#key={key}")
}

/// Hands `url` to the desktop's opener without waiting for the browser.
fn open_in_browser(url: &str) -> std::io::Result<()> {
    let opener = if cfg!(target_os = "macos") {
        "open"
    } else {
        "xdg-open"
    };
    std::process::Command::new(opener)
        .arg(url)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dashboard_url_keeps_the_key_in_the_fragment_and_names_loopback() {
        let key = "ab".repeat(32);
        assert_eq!(
            dashboard_url("127.0.0.1:7421".parse().unwrap(), &key),
            format!("http://127.0.0.1:7421/#key={key}")
        );
        assert_eq!(
            dashboard_url("0.0.0.0:80".parse().unwrap(), "k"),
            "http://127.0.0.1:80/#key=k"
        );
        assert_eq!(
            dashboard_url("[::]:7421".parse().unwrap(), "k"),
            "http://[::1]:7421/#key=k"
        );
    }

    #[test]
    fn sizes_and_lifetimes_parse_or_say_what_to_write() {
        assert_eq!(parse_size("10MiB", "--bytes").unwrap(), 10 << 20);
        assert_eq!(parse_size("2MiB/s", "--rate").unwrap(), 2 << 20);
        assert_eq!(parse_size("4096", "--bytes").unwrap(), 4096);
        let error = parse_size("ten", "--bytes").unwrap_err().to_string();
        assert!(error.contains("--bytes `ten` is not a size"), "{error}");
        assert_eq!(parse_ttl("90s").unwrap(), 90);
        assert_eq!(parse_ttl("30m").unwrap(), 1800);
        assert_eq!(parse_ttl("6h").unwrap(), 21_600);
        assert_eq!(parse_ttl("7d").unwrap(), MAX_ORDER_TTL_S);
        assert_eq!(parse_ttl("15").unwrap(), 15);
        for bad in ["8d", "0s", "1w", "", "h", "-1m"] {
            let error = parse_ttl(bad).unwrap_err().to_string();
            assert!(error.contains("is not a duration"), "{bad}: {error}");
        }
    }
}
