//! The overview page of a running testnet: its progress and a link to every node's dashboard,
//! refreshed every two seconds. Served on loopback only, and only to requests whose Host header
//! names it (the links carry the nodes' API keys in their fragments).

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;

use super::real::Overview;

/// The page being served; [`Page::stop`] ends it.
pub struct Page {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Page {
    /// Where it is served.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops serving it.
    pub fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[derive(Clone)]
struct PageState {
    overview: Arc<Mutex<Overview>>,
    name: String,
    host: String,
}

/// Serves the overview of `overview` on 127.0.0.1 (a free port), on a thread of its own.
pub fn serve(overview: Arc<Mutex<Overview>>, name: &str) -> anyhow::Result<Page> {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0))?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let state = PageState {
        overview,
        name: name.to_owned(),
        host: addr.to_string(),
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the overview's runtime")?;
    let thread = std::thread::Builder::new()
        .name("tally-overview".into())
        .spawn(move || {
            runtime.block_on(async move {
                let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                    return;
                };
                let router = Router::new().route("/", get(page)).with_state(state);
                let served = axum::serve(listener, router)
                    .with_graceful_shutdown(async {
                        let _ = stopped.await;
                    })
                    .await;
                if let Err(error) = served {
                    tracing::warn!("the overview page stopped: {error}");
                }
            });
        })?;
    Ok(Page {
        addr,
        stop: Some(stop),
        thread: Some(thread),
    })
}

async fn page(State(state): State<PageState>, headers: HeaderMap) -> Response {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    let port = state.host.rsplit(':').next().unwrap_or("");
    if host != state.host && host != format!("localhost:{port}") {
        return (StatusCode::FORBIDDEN, "host not allowed").into_response();
    }
    let overview = state
        .overview
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let esc = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
    };
    let p = &overview.progress;
    let mut html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"2\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>testnet {name}</title><style>body{{font-family:system-ui,sans-serif;margin:2rem}}\
         td,th{{padding:.2rem .6rem;text-align:left}}</style></head><body>\
         <h1>testnet {name}</h1><p>{phase}: {elapsed:.0} of {duration} s; {done} of {downloads} \
         downloads done; {running} nodes running.</p><table><tr><th>group</th><th>behaviour</th>\
         <th>peer</th><th>dashboard</th></tr>",
        name = esc(&state.name),
        phase = p.phase,
        elapsed = p.elapsed_s,
        duration = p.duration_s,
        done = p.completed,
        downloads = p.downloads,
        running = p.running,
    );
    for row in &overview.nodes {
        let link = match &row.dashboard {
            Some(url) => format!("<a href=\"{}\">open</a>", esc(url)),
            None => "not running".to_owned(),
        };
        let _ = write!(
            html,
            "<tr><td>{}</td><td>{}</td><td><code>{}</code></td><td>{link}</td></tr>",
            esc(&row.group),
            row.role.name(),
            esc(row.peer_id.get(..16).unwrap_or(&row.peer_id)),
        );
    }
    html.push_str("</table></body></html>");
    Html(html).into_response()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::testnet::real::{OverviewRow, Progress};
    use crate::testnet::scenario::Role;

    fn get(addr: SocketAddr, host: &str) -> (u16, String) {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .proxy(None)
            .build()
            .into();
        let mut response = agent
            .get(&format!("http://{addr}/"))
            .header("Host", host)
            .call()
            .unwrap();
        let status = response.status().as_u16();
        (status, response.body_mut().read_to_string().unwrap())
    }

    #[test]
    fn the_page_links_every_dashboard_and_refuses_other_hosts() {
        let overview = Arc::new(Mutex::new(Overview {
            progress: Progress {
                phase: "running",
                elapsed_s: 12.0,
                duration_s: 60,
                completed: 3,
                downloads: 7,
                running: 8,
            },
            nodes: vec![
                OverviewRow {
                    group: "seeders".into(),
                    role: Role::Seeder,
                    peer_id: "ab".repeat(32),
                    dashboard: Some("http://127.0.0.1:9/#key=k".into()),
                },
                OverviewRow {
                    group: "<late>".into(),
                    role: Role::LateJoiner,
                    peer_id: "cd".repeat(32),
                    dashboard: None,
                },
            ],
        }));
        let page = serve(overview, "demo").unwrap();
        let (status, body) = get(page.addr(), &page.addr().to_string());
        assert_eq!(status, 200);
        assert!(
            body.contains("running: 12 of 60 s; 3 of 7 downloads done"),
            "{body}"
        );
        assert!(
            body.contains("href=\"http://127.0.0.1:9/#key=k\""),
            "{body}"
        );
        assert!(
            body.contains("&lt;late&gt;") && body.contains("not running"),
            "{body}"
        );
        let (status, _) = get(page.addr(), "evil.example");
        assert_eq!(status, 403, "a rebound name is refused");
        page.stop();
    }
}
