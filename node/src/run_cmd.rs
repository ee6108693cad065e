//! `tally run`: starts the node in the foreground and stops it cleanly on Ctrl-C, SIGTERM or
//! the API's shutdown: connections closed with a reason, tasks awaited, the store flushed,
//! `node.json` removed.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;

use crate::cli::{InitArgs, RunArgs};
use crate::daemon::api::NodeHandle;
use crate::daemon::{Behaviour, Node, NodeFile, NodeParts, node_file_path};
use crate::id_cmd::{self, write_json_line};
use crate::{Context, Status};

/// How long shutdown waits for tasks before it stops anyway.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Runs `tally run` on a new tokio runtime until the node is told to stop.
pub fn run(
    args: &RunArgs,
    context: &Context,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> anyhow::Result<Status> {
    ensure_initialised(context, err)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("tally")
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(run_node(args, context, out))
}

/// Initialises a missing data directory as `tally init` would, reporting on `err`.
fn ensure_initialised(context: &Context, err: &mut dyn Write) -> anyhow::Result<()> {
    if context.data_dir.identity_file().exists() {
        return Ok(());
    }
    writeln!(
        err,
        "no node in {} yet: initialising it as `tally init` would",
        context.data_dir.root().display()
    )?;
    let args = InitArgs {
        network: None,
        force: false,
        json: false,
    };
    crate::init::run(&args, context, err)?;
    Ok(())
}

async fn run_node(
    args: &RunArgs,
    context: &Context,
    out: &mut dyn Write,
) -> anyhow::Result<Status> {
    let data_dir = &context.data_dir;
    let identity = id_cmd::load_identity(data_dir)?;
    let api_key = id_cmd::read_api_key(data_dir)?;
    let behaviour = Behaviour {
        never_sign: args.never_sign,
        never_upload: args.never_upload,
        ..Behaviour::default()
    };
    let parts = NodeParts::open(data_dir.root(), identity, context.config.clone(), behaviour)?;
    let node = Node::start(parts).await?;
    let shared = Arc::clone(node.shared());

    let (api_addr, api) = start_api(&shared, context.config.node.api_listen, api_key).await?;

    let quic_addr = node.quic_addr()?;
    let info = NodeFile {
        peer_id: shared.me.to_string(),
        network_id: shared.network.to_string(),
        quic_addr,
        api_addr,
        pid: std::process::id(),
    };
    let node_file = node_file_path(data_dir.root());
    let text = serde_json::to_vec_pretty(&info)?;
    crate::data_dir::write_atomic(&node_file, &text, crate::data_dir::Access::Default)
        .with_context(|| format!("cannot write {}", node_file.display()))?;
    if args.json {
        write_json_line(out, &info)?;
    } else {
        writeln!(out, "peer_id     {}", info.peer_id)?;
        writeln!(
            out,
            "network_id  {} ({})",
            info.network_id, context.config.network
        )?;
        writeln!(out, "quic_addr   {quic_addr}")?;
        writeln!(out, "api_addr    http://{api_addr}")?;
        writeln!(out, "running; stop with Ctrl-C")?;
    }
    out.flush()?;
    tracing::info!(%quic_addr, %api_addr, "node running");

    let why = wait_for_stop(&shared.stop_requested).await;
    tracing::info!("stopping: {why}");
    node.shutdown(SHUTDOWN_GRACE).await?;
    match tokio::time::timeout(SHUTDOWN_GRACE, api).await {
        Ok(Ok(Err(error))) => tracing::warn!("the HTTP API stopped with an error: {error}"),
        Ok(Err(error)) => tracing::warn!("the HTTP API task failed: {error}"),
        Err(_) => tracing::warn!("the HTTP API did not stop within {SHUTDOWN_GRACE:?}"),
        Ok(Ok(Ok(()))) => {}
    }
    if let Err(error) = std::fs::remove_file(&node_file)
        && error.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!("cannot remove {}: {error}", node_file.display());
    }
    if !args.json {
        writeln!(out, "stopped ({why})")?;
    }
    Ok(Status::Success)
}

/// Waits for Ctrl-C, SIGTERM or a shutdown asked through the API, and says which.
/// Serves `shared`'s HTTP API on `listen` with `api_key` until the node is cancelled; returns
/// the address bound and the server's task. Warns when the address is not loopback.
pub async fn start_api(
    shared: &Arc<crate::daemon::Shared>,
    listen: std::net::SocketAddr,
    api_key: String,
) -> anyhow::Result<(
    std::net::SocketAddr,
    tokio::task::JoinHandle<std::io::Result<()>>,
)> {
    let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| {
        format!("cannot listen for the HTTP API on {listen}; is another node using it? pick another with --api-listen")
    })?;
    let api_addr = listener.local_addr()?;
    if !api_addr.ip().is_loopback() {
        tracing::warn!(
            %api_addr,
            "the HTTP API listens beyond this machine; it still needs the API key"
        );
    }
    *shared
        .api_addr
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(api_addr);
    let auth = tally_web::server::ApiAuth::new(api_key, api_addr);
    let router = tally_web::server::router(Arc::new(NodeHandle::new(Arc::clone(shared))), auth);
    let api_stop = shared.cancel.clone();
    let api = tokio::spawn(tally_web::server::serve(listener, router, async move {
        api_stop.cancelled().await;
    }));
    Ok((api_addr, api))
}

async fn wait_for_stop(requested: &tokio_util::sync::CancellationToken) -> &'static str {
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::warn!("cannot listen for SIGTERM: {error}");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        result = tokio::signal::ctrl_c() => match result {
            Ok(()) => "Ctrl-C",
            Err(_) => "Ctrl-C handler failed",
        },
        () = terminate => "SIGTERM",
        () = requested.cancelled() => "shutdown asked through the API",
    }
}
