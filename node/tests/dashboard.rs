//! The dashboard in a real browser: headless Chromium driven over WebDriver (chromedriver +
//! fantoccini) against real `tally run` processes on 127.0.0.1 port 0, logged in through the
//! URL `tally dashboard` prints. Each test saves a screenshot under
//! `$CARGO_TARGET_DIR/screenshots/` (or `target/screenshots/`).
//!
//! `scripts/install-browser.sh` installs Chromium and chromedriver (`.ci/run` calls it). Without
//! them these tests fail and say so, unless `TALLY_SKIP_BROWSER=1` is set.
// Test helpers panic on failure by design.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/process.rs"]
mod process;

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::error::{CmdError, ErrorStatus};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

const DEADLINE: Duration = Duration::from_secs(60);
const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// One browser at a time: two cores do not run several Chromiums and nodes well.
/// (A tokio mutex: it is held across awaits, and each test has its own runtime.)
static BROWSER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

// ---- nodes ----

fn tally(data: &Path) -> Command {
    process::tally(data, "info")
}

fn run_ok(data: &Path, args: &[&str]) -> String {
    let output = tally(data).args(args).output().unwrap();
    assert!(
        output.status.success(),
        "tally {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// A `tally run` process in its own temporary data dir, killed when dropped.
struct Daemon {
    child: Child,
    info: Value,
    dir: tempfile::TempDir,
}

impl Daemon {
    fn start(extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut child = tally(dir.path())
            .args([
                "run",
                "--listen",
                "127.0.0.1:0",
                "--api-listen",
                "127.0.0.1:0",
                "--json",
            ])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(!line.is_empty(), "tally run printed nothing and exited");
        let info = serde_json::from_str(&line).unwrap();
        Self { child, info, dir }
    }

    fn data(&self) -> &Path {
        self.dir.path()
    }

    fn peer(&self) -> String {
        format!(
            "{}@{}",
            self.info["peer_id"].as_str().unwrap(),
            self.info["quic_addr"].as_str().unwrap()
        )
    }

    /// The URL `tally dashboard` prints: the API address with the key in the fragment.
    fn dashboard_url(&self) -> String {
        let url = run_ok(self.data(), &["dashboard"]).trim().to_owned();
        let api = self.info["api_addr"].as_str().unwrap();
        assert!(url.starts_with(&format!("http://{api}/#key=")), "{url}");
        url
    }

    fn market(&self) -> Value {
        serde_json::from_str(&run_ok(self.data(), &["market", "--json"])).unwrap()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---- the browser ----

/// Whether the browser tests should run; panics with what to do if the browser is missing.
fn browser_available() -> bool {
    if std::env::var("TALLY_SKIP_BROWSER").is_ok_and(|v| v == "1") {
        eprintln!("TALLY_SKIP_BROWSER=1: skipping a dashboard browser test");
        return false;
    }
    for path in [CHROMIUM, CHROMEDRIVER] {
        assert!(
            Path::new(path).exists(),
            "{path} is missing: the dashboard's browser tests need Debian's chromium and \
             chromium-driver. Run scripts/install-browser.sh, or set TALLY_SKIP_BROWSER=1 to \
             skip these tests"
        );
    }
    true
}

/// chromedriver on a free port, killed when dropped, with its own Chromium profile dir.
struct Driver {
    child: Child,
    port: u16,
    profile: tempfile::TempDir,
}

impl Driver {
    /// chromedriver cannot take port 0: pick a free port by binding one and letting it go, and
    /// try again with another if something took it meanwhile.
    fn start() -> Self {
        let profile = tempfile::tempdir().unwrap();
        for _ in 0..5 {
            let port = TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let mut child = Command::new(CHROMEDRIVER)
                .arg(format!("--port={port}"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            let start = Instant::now();
            while start.elapsed() < DEADLINE {
                if child.try_wait().unwrap().is_some() {
                    break; // the port was taken: try another
                }
                if driver_ready(port) {
                    return Self {
                        child,
                        port,
                        profile,
                    };
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("chromedriver did not start on any of 5 free ports");
    }

    async fn client(&self) -> Client {
        let args = [
            "--headless".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-quic".to_owned(),
            "--no-first-run".to_owned(),
            "--disable-background-networking".to_owned(),
            "--disable-component-update".to_owned(),
            "--disable-sync".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            "--window-size=1280,800".to_owned(),
            format!("--user-data-dir={}", self.profile.path().display()),
        ];
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            json!({ "binary": CHROMIUM, "args": args }),
        );
        capabilities.insert("goog:loggingPrefs".into(), json!({ "browser": "ALL" }));
        ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(capabilities)
            .connect(&format!("http://127.0.0.1:{}", self.port))
            .await
            .expect("cannot start a Chromium session through chromedriver")
    }

    /// What the browser logged since the last call (chromedriver's `goog:loggingPrefs` log).
    async fn browser_log(&self, client: &Client) -> Vec<Value> {
        let session = client.session_id().await.unwrap().unwrap();
        let agent = agent();
        let mut response = agent
            .post(format!(
                "http://127.0.0.1:{}/session/{session}/se/log",
                self.port
            ))
            .send_json(json!({ "type": "browser" }))
            .unwrap();
        let body: Value = response.body_mut().read_json().unwrap();
        body["value"].as_array().cloned().unwrap_or_default()
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .proxy(None)
            .build(),
    )
}

fn driver_ready(port: u16) -> bool {
    agent()
        .get(format!("http://127.0.0.1:{port}/status"))
        .call()
        .ok()
        .and_then(|mut r| r.body_mut().read_json::<Value>().ok())
        .is_some_and(|v| v["value"]["ready"] == json!(true))
}

/// Runs `script` (which returns a value) in the page until it returns `true`.
async fn wait_js(client: &Client, what: &str, script: &str) {
    let start = Instant::now();
    loop {
        let value = client.execute(script, vec![]).await.unwrap();
        if value == json!(true) {
            return;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "timed out after {DEADLINE:?} waiting for {what}; the page says: {}",
            page_state(client).await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The page's errors and messages, for a failure message.
async fn page_state(client: &Client) -> Value {
    client
        .execute(
            "return {errors: window.__tallyErrors, state: document.body.dataset.state, \
             feed: (document.getElementById('feed-state') || {}).textContent, \
             msgs: [...document.querySelectorAll('.msg')].map(e => e.id + ': ' + e.textContent)};",
            vec![],
        )
        .await
        .unwrap_or(Value::Null)
}

async fn text(client: &Client, id: &str) -> String {
    client
        .find(Locator::Id(id))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

async fn type_into(client: &Client, id: &str, value: &str) {
    let input = client.find(Locator::Id(id)).await.unwrap();
    input.clear().await.unwrap();
    input.send_keys(value).await.unwrap();
}

async fn submit(client: &Client, form: &str) {
    client
        .find(Locator::Css(&format!("#{form} button[type=submit]")))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

fn screenshot_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let dir = target.join("screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn scroll_to(client: &Client, id: &str) {
    client
        .execute(
            "document.getElementById(arguments[0]).scrollIntoView({block: 'center'}); return null;",
            vec![json!(id)],
        )
        .await
        .unwrap();
}

async fn screenshot(client: &Client, name: &str) {
    let png = client.screenshot().await.unwrap();
    std::fs::write(screenshot_dir().join(format!("{name}.png")), png).unwrap();
}

/// Opens `url` (a `tally dashboard` URL) and waits until the page has logged in and loaded.
async fn open_dashboard(client: &Client, url: &str) {
    client.goto(url).await.unwrap();
    wait_js(
        client,
        "the dashboard to log in and load",
        "return document.body.dataset.state === 'ready';",
    )
    .await;
    // Marks this page load, to show later that updates came without a reload.
    client
        .execute("window.__loadMark = true; return null;", vec![])
        .await
        .unwrap();
}

/// Errors the page's own capture saw: uncaught errors, rejections, CSP violations,
/// console.error.
async fn page_errors(client: &Client) -> Vec<Value> {
    let errors = client
        .execute("return window.__tallyErrors;", vec![])
        .await
        .unwrap();
    errors
        .as_array()
        .cloned()
        .expect("app.js did not run: window.__tallyErrors is missing")
}

/// SEVERE entries of the browser's own log, except the 401 of the session probe before login
/// (the page asks whether its cookie is still valid, and it is not yet).
fn severe(log: &[Value]) -> Vec<Value> {
    log.iter()
        .filter(|entry| entry["level"] == "SEVERE")
        .filter(|entry| {
            let message = entry["message"].as_str().unwrap_or_default();
            let expected = entry["source"] == "network"
                && message.contains("/api/v1/session")
                && message.contains("401");
            !expected
        })
        .cloned()
        .collect()
}

// ---- tests ----

#[tokio::test]
async fn the_dashboard_loads_without_errors_and_shows_the_balance() {
    if !browser_available() {
        return;
    }
    let _one = BROWSER.lock().await;
    let node = Daemon::start(&[]);
    let driver = Driver::start();
    let client = driver.client().await;
    let url = node.dashboard_url();
    let key = url.rsplit("#key=").next().unwrap().to_owned();
    open_dashboard(&client, &url).await;

    // The key left the address bar, and is nowhere in the page.
    let href = client.current_url().await.unwrap().to_string();
    assert!(!href.contains(&key) && !href.contains('#'), "{href}");
    let html = client.source().await.unwrap();
    assert!(!html.contains(&key));
    // A fresh node owes nothing and is owed nothing.
    wait_js(
        &client,
        "the balance",
        "return document.getElementById('balance').textContent === '0';",
    )
    .await;
    let peer_id = node.info["peer_id"].as_str().unwrap();
    assert!(
        text(&client, "identity")
            .await
            .contains(&peer_id[..12].to_string())
    );
    // Live from the event stream.
    wait_js(
        &client,
        "the event stream to be live",
        "return document.getElementById('feed-state').textContent === 'live';",
    )
    .await;
    // Every panel has its route: receipts, conflicts and settings are shown, not "not available".
    wait_js(
        &client,
        "the receipts, conflicts and settings panels",
        "return document.getElementById('receipts-empty').textContent === 'No receipts yet.' && \
         document.getElementById('conflicts-empty').textContent.startsWith('No conflicts') && \
         !document.getElementById('settings-form').hidden;",
    )
    .await;
    screenshot(&client, "dashboard-1280x800").await;

    // Readable at phone width too: nothing wider than the screen.
    client.set_window_size(390, 844).await.unwrap();
    wait_js(
        &client,
        "the page to fit a phone's width",
        "return document.documentElement.clientWidth <= 390 && \
         document.documentElement.scrollWidth <= document.documentElement.clientWidth;",
    )
    .await;
    screenshot(&client, "dashboard-390x844").await;
    client.set_window_size(1280, 800).await.unwrap();

    // A reload keeps the session (the cookie) without the key.
    client.refresh().await.unwrap();
    wait_js(
        &client,
        "the reloaded page to load",
        "return document.body.dataset.state === 'ready';",
    )
    .await;

    assert_eq!(page_errors(&client).await, Vec::<Value>::new());
    let log = driver.browser_log(&client).await;
    assert_eq!(severe(&log), Vec::<Value>::new(), "browser log: {log:#?}");

    // Logging out ends the session: the login form comes back.
    client
        .find(Locator::Id("logout"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_js(
        &client,
        "the login form",
        "return document.body.dataset.state === 'login' && !document.getElementById('login').hidden;",
    )
    .await;
    client.refresh().await.unwrap();
    wait_js(
        &client,
        "the login form after a reload",
        "return document.body.dataset.state === 'login';",
    )
    .await;
    // The form logs in with the key typed in.
    type_into(&client, "login-key", &key).await;
    submit(&client, "login-form").await;
    wait_js(
        &client,
        "the login through the form",
        "return document.body.dataset.state === 'ready';",
    )
    .await;
    assert_eq!(page_errors(&client).await, Vec::<Value>::new());
    client.close().await.unwrap();
}

#[tokio::test]
async fn a_file_shared_through_the_form_on_a_downloads_on_b_with_live_progress() {
    if !browser_available() {
        return;
    }
    let _one = BROWSER.lock().await;
    // A slow seeder, so the download is watched while it runs.
    let a = Daemon::start(&["--upload-limit", "1MiB"]);
    let b = Daemon::start(&[]);
    let driver = Driver::start();
    let client = driver.client().await;

    let payload: Vec<u8> = (0..3u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let file = a.data().join("movie.bin");
    std::fs::write(&file, &payload).unwrap();

    open_dashboard(&client, &a.dashboard_url()).await;
    type_into(&client, "share-path", file.to_str().unwrap()).await;
    submit(&client, "share-form").await;
    wait_js(
        &client,
        "the shared file in the content table",
        "return document.querySelector('#content-table tbody tr[data-cid]') !== null;",
    )
    .await;
    let cid = client
        .execute(
            "return document.querySelector('#content-table tbody tr[data-cid]').dataset.cid;",
            vec![],
        )
        .await
        .unwrap();
    let cid = cid.as_str().unwrap().to_owned();
    assert!(text(&client, "share-msg").await.contains(&cid));
    assert_eq!(page_errors(&client).await, Vec::<Value>::new());

    open_dashboard(&client, &b.dashboard_url()).await;
    type_into(&client, "connect-peer", &a.peer()).await;
    submit(&client, "connect-form").await;
    wait_js(
        &client,
        "A in B's peers table",
        "return document.querySelectorAll('#peers-table tbody tr').length === 1;",
    )
    .await;
    let out = b.data().join("movie.out");
    type_into(&client, "get-cid", &cid).await;
    type_into(&client, "get-out", out.to_str().unwrap()).await;
    submit(&client, "get-form").await;
    let bar = format!("document.querySelector('[role=progressbar][data-cid=\"{cid}\"]')");
    wait_js(
        &client,
        "the download's progress bar",
        &format!("return {bar} !== null;"),
    )
    .await;
    wait_js(
        &client,
        "the download to reach 100% on the page",
        &format!("return {bar}.getAttribute('aria-valuenow') === '100';"),
    )
    .await;
    // The same page load saw it through: the progress came live, not by a reload.
    let same_page = client
        .execute("return window.__loadMark === true;", vec![])
        .await
        .unwrap();
    assert_eq!(same_page, json!(true));
    // 100% means every chunk is stored; the file is written out after that, by `complete`.
    wait_js(
        &client,
        "the download's state",
        &format!(
            "return document.querySelector('#downloads-table tr[data-cid=\"{cid}\"]').textContent.includes('complete');"
        ),
    )
    .await;
    assert_eq!(std::fs::read(&out).unwrap(), payload);
    scroll_to(&client, "downloads-table").await;
    screenshot(&client, "dashboard-download").await;
    assert_eq!(page_errors(&client).await, Vec::<Value>::new());
    let log = driver.browser_log(&client).await;
    assert_eq!(severe(&log), Vec::<Value>::new(), "browser log: {log:#?}");
    client.close().await.unwrap();
}

#[tokio::test]
async fn an_offer_is_created_and_cancelled_through_the_forms() {
    if !browser_available() {
        return;
    }
    let _one = BROWSER.lock().await;
    let node = Daemon::start(&[]);
    let driver = Driver::start();
    let client = driver.client().await;
    open_dashboard(&client, &node.dashboard_url()).await;

    type_into(&client, "offer-bytes", "1048576").await;
    type_into(&client, "offer-price", "3").await;
    submit(&client, "offer-form").await;
    wait_js(
        &client,
        "the offer in my orders",
        "return document.querySelector('#orders-table tbody tr[data-order]') !== null;",
    )
    .await;
    let order = client
        .execute(
            "return document.querySelector('#orders-table tbody tr[data-order]').dataset.order;",
            vec![],
        )
        .await
        .unwrap();
    let order = order.as_str().unwrap().to_owned();
    let mine = node.market()["mine"].clone();
    assert!(
        mine.as_array()
            .unwrap()
            .iter()
            .any(|o| o["order_id"] == order
                && o["side"] == "offer"
                && o["price_per_gib"] == 3
                && o["bytes"] == 1_048_576),
        "{mine}"
    );
    scroll_to(&client, "orders-table").await;
    screenshot(&client, "dashboard-offer").await;

    // Cancel with the keyboard: focus the row's button and press Enter. A live event may
    // re-render the row between finding the button and pressing it: then find it again.
    let deadline = Instant::now() + DEADLINE;
    loop {
        let button = client
            .find(Locator::Css(&format!(
                "button[data-cancel-order=\"{order}\"]"
            )))
            .await
            .unwrap();
        match button.send_keys("\u{E007}").await {
            Ok(()) => break,
            Err(CmdError::Standard(error))
                if error.error == ErrorStatus::StaleElementReference
                    && Instant::now() < deadline => {}
            Err(error) => panic!("cannot press the cancel button: {error:?}"),
        }
    }
    wait_js(
        &client,
        "the offer to leave my orders",
        "return document.querySelector('#orders-table tbody tr[data-order]') === null;",
    )
    .await;
    assert!(text(&client, "orders-msg").await.contains("cancelled"));
    let mine = node.market()["mine"].clone();
    assert!(
        mine.as_array()
            .unwrap()
            .iter()
            .all(|o| o["order_id"] != order || o["cancelled"] == true),
        "{mine}"
    );
    assert_eq!(page_errors(&client).await, Vec::<Value>::new());
    let log = driver.browser_log(&client).await;
    assert_eq!(severe(&log), Vec::<Value>::new(), "browser log: {log:#?}");
    client.close().await.unwrap();
}
