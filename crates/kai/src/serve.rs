//! `kai serve`: the daemon. It recovers what a previous run of kai left in flight, loads the
//! modules, sets up the API's tokens, serves HTTP, dispatches, schedules, and runs until Ctrl-C or SIGTERM. Shutdown is explicit: one cancellation token
//! goes to every task, a task tracker says when all are done, and runs still going after the
//! grace period are killed and journaled as interrupted.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use tracing::{info, warn};

use crate::config::Config;
use crate::daemon::Daemon;
use crate::engine::{Engine, Recovered};
use crate::runner::{become_subreaper, reap_strays, ProcessRunner};

/// How long runs in flight get to finish when kai is asked to stop.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// How often schedules are looked at.
const SCHEDULE_TICK: Duration = Duration::from_secs(1);
/// How often questions are checked for reminders and expiry.
const QUESTION_TICK: Duration = Duration::from_secs(1);
/// How often manifests are checked for changes.
const MANIFEST_POLL: Duration = Duration::from_secs(1);

pub fn run(config: Config) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(serve(config))
}

async fn serve(mut config: Config) -> Result<()> {
    become_subreaper();
    let addr = config.http_addr.clone();
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .with_context(|| format!("cannot listen on {addr} (KAI_HTTP_ADDR)"))?;
    let bound = listener.local_addr()?;
    if addr.ends_with(":0") {
        // Modules reach the API at KAI_API_URL, made from this address: give them the port
        // the system picked, not `:0`.
        config.http_addr = bound.to_string();
    }
    let mut engine = Engine::open(config, Arc::new(ProcessRunner))?;
    engine.data.clean_tmp()?;
    engine
        .ledger
        .checkpoint_in_background(&engine.data.ledger_file())?;
    let api_options = crate::api::ApiOptions::from_config(&engine.config);
    let tokens = crate::api::ApiTokens::open(engine.data.root(), engine.config.api_token.as_ref())?;
    if let Some(path) = &tokens.created_admin {
        show_new_token(path, tokens.tokens.admin().expose());
    }
    // Generated tokens are secrets like configured ones: whatever a module prints is scrubbed
    // of them too.
    engine.config.api_token = Some(tokens.tokens.admin().clone());
    engine.config.chat_token = Some(tokens.tokens.chat().clone());
    if let Some(path) = &tokens.created_chat {
        info!(
            "a chat token for the Claude process was stored in {}",
            path.display()
        );
    }
    for r in engine.recover()? {
        log_recovered(&r);
    }
    let daemon = Daemon::new(Arc::new(engine));
    let registry = daemon.registry();
    for e in registry.errors() {
        warn!("module not loaded: {e}");
    }
    if daemon.engine.config.github_webhook_secret.is_none() {
        info!("GitHub webhooks are off: set KAI_GITHUB_WEBHOOK_SECRET to accept them");
    }

    let tasks = daemon.tasks.clone();
    let shutdown = daemon.shutdown.clone();
    tasks.spawn(daemon.clone().pump());
    tasks.spawn(daemon.clone().run_schedules(SCHEDULE_TICK));
    tasks.spawn(daemon.clone().watch_manifests(MANIFEST_POLL));
    crate::questions::tidy(&daemon.engine)?;
    tasks.spawn(daemon.clone().watch_questions(QUESTION_TICK));
    if !crate::telegram::start(&daemon)? {
        info!(
            "Telegram is off: set KAI_TELEGRAM_TOKEN to talk to kai there; messages go to the log"
        );
        tasks.spawn(crate::telegram::log_outbox(
            daemon.engine.clone(),
            shutdown.clone(),
        ));
    }
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
    let server = {
        let shutdown = shutdown.clone();
        let api = crate::api::ApiState::new(daemon.clone(), tokens.tokens, api_options);
        api.warm_up();
        let app = crate::http::app(daemon.clone(), api);
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move { shutdown.cancelled().await })
                .await
        })
    };
    // Tests and scripts read this line to find the port when KAI_HTTP_ADDR ends in :0.
    info!(
        addr = %bound,
        data_dir = %daemon.engine.data.root().display(),
        modules = registry.len(),
        "kai is listening on http://{bound}; Ctrl-C stops it"
    );

    wait_for_stop().await;
    info!("stopping: runs in flight get {}s", SHUTDOWN_GRACE.as_secs());
    shutdown.cancel();
    tasks.close();
    if tokio::time::timeout(SHUTDOWN_GRACE, tasks.wait())
        .await
        .is_err()
    {
        warn!(
            "runs still going after {}s are killed and journaled as interrupted",
            SHUTDOWN_GRACE.as_secs()
        );
        daemon.kill_runs.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(5), tasks.wait()).await;
    }
    let _ = server.await;
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

/// A generated admin token is shown once, on standard output and never in the log; after this
/// only its file has it.
fn show_new_token(path: &std::path::Path, token: &str) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "kai: generated the admin token for the API, stored in {} (readable by you only).\n\
         It is shown this once; send it as `Authorization: Bearer <token>`:\n\n    {token}\n",
        path.display()
    );
    let _ = out.flush();
}

fn log_recovered(r: &Recovered) {
    match r {
        Recovered::Finished(f) => {
            let e = &f.entry;
            info!(run = %e.run_id, module = %e.module, status = %e.status, "recovered a run left in flight");
        }
        Recovered::Requeued {
            run_id,
            module,
            attempt,
        } => {
            info!(run = %run_id, module = %module, attempt, "requeued a run left in flight");
        }
    }
}
