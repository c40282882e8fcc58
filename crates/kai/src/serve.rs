//! `kai serve`: the daemon. It recovers what a previous run of kai left in flight, loads the
//! modules, and runs until Ctrl-C or SIGTERM. Shutdown is explicit: one cancellation token
//! goes to every task, a task tracker says when all are done, and runs still going after the
//! grace period are killed and journaled as interrupted.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::config::Config;
use crate::engine::Engine;
use crate::modules::load_registry;
use crate::runner::{become_subreaper, reap_strays, ProcessRunner};

/// How long runs in flight get to finish when kai is asked to stop.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

pub fn run(config: Config) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(serve(config))
}

async fn serve(config: Config) -> Result<()> {
    become_subreaper();
    let engine = Arc::new(Engine::open(config, Arc::new(ProcessRunner))?);
    engine.data.clean_tmp()?;
    for r in engine.recover()? {
        info!(run = %r.entry.run_id, module = %r.entry.module, status = %r.entry.status, "recovered a run left in flight");
    }
    let registry = load_registry(&engine.data.modules_dir());
    for e in registry.errors() {
        warn!("module not loaded: {e}");
    }
    info!(
        data_dir = %engine.data.root().display(),
        modules = registry.len(),
        "kai is running; Ctrl-C stops it"
    );

    let shutdown = CancellationToken::new();
    let tasks = TaskTracker::new();
    tasks.spawn({
        let shutdown = shutdown.clone();
        async move {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            loop {
                tokio::select! {
                    _ = tick.tick() => reap_strays(),
                    _ = shutdown.cancelled() => return,
                }
            }
        }
    });

    wait_for_stop().await;
    info!("stopping: runs in flight get {}s", SHUTDOWN_GRACE.as_secs());
    shutdown.cancel();
    tasks.close();
    if tokio::time::timeout(SHUTDOWN_GRACE + Duration::from_secs(5), tasks.wait())
        .await
        .is_err()
    {
        warn!("some tasks did not stop in time");
    }
    info!("stopped");
    Ok(())
}

async fn wait_for_stop() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    let sigterm = async {
        match term.as_mut() {
            Some(t) => {
                t.recv().await;
            }
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = sigterm => {}
    }
}
