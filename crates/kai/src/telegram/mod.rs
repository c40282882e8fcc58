//! The Telegram adapter (SPEC 6): the Bot API client, the sender that empties the outbox into
//! the chat (a topic per module), and the poller that takes updates in and acts on them
//! (commands, answers to questions). Without a token, [`log_outbox`] empties the outbox into
//! the log instead, so what kai says is never lost nor kept waiting for ever.

pub mod api;
pub mod commands;
pub mod send;
pub mod updates;

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::daemon::Daemon;
use crate::engine::{off_runtime, Engine};

/// Starts the sender and the poller on the daemon's task tracker; `false` when no token is
/// set (Telegram is off).
pub fn start(daemon: &Arc<Daemon>) -> anyhow::Result<bool> {
    let config = &daemon.engine.config;
    let Some(token) = &config.telegram_token else {
        return Ok(false);
    };
    let api = api::BotApi::new(&config.telegram_api_url, token)?;
    if config.allowed_users.is_empty() {
        tracing::warn!("KAI_ALLOWED_USERS is empty: the bot answers nobody");
    }
    let sender = send::Sender::new(daemon.engine.clone(), api.clone(), config.telegram_pacing);
    daemon.tasks.spawn(sender.run(daemon.shutdown.clone()));
    let poller = updates::Poller::new(daemon.clone(), api);
    daemon.tasks.spawn(poller.run(daemon.shutdown.clone()));
    info!(
        "Telegram is on: notify chat {}",
        config
            .chat_id()
            .map(|c| c.to_string())
            .unwrap_or_else(|| "none (set KAI_NOTIFY_CHAT or KAI_ALLOWED_USERS)".into())
    );
    Ok(true)
}

/// Without Telegram, what kai says goes to the log (target `kai::notify`), in order.
pub async fn log_outbox(engine: Arc<Engine>, shutdown: CancellationToken) {
    let wake = engine.outbox_wake.clone();
    loop {
        let waiting = off_runtime(|| engine.ledger.outbox_waiting(500)).unwrap_or_default();
        for row in &waiting {
            match &row.module {
                Some(m) => info!(target: "kai::notify", "[{m}] {}", row.text),
                None => info!(target: "kai::notify", "{}", row.text),
            }
            let _ = off_runtime(|| engine.ledger.outbox_sent(row.id, 0, None, 0));
        }
        if !waiting.is_empty() {
            continue;
        }
        tokio::select! {
            _ = wake.notified() => {}
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}
