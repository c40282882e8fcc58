//! Notifications: what kai tells its owner (module outcomes under `notify:`, budgets reached,
//! events no module takes). Until Telegram is configured they go to the log.

/// One message, in a module's topic or (without a module) the notify chat itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub module: Option<String>,
    pub text: String,
}

/// Where notes go. Sending must not block a run: implementations queue.
pub trait Notifier: Send + Sync {
    fn send(&self, note: Note);
}

/// Writes notes to the log (target `kai::notify`), the notifier of a kai without Telegram.
#[derive(Debug, Default)]
pub struct LogNotifier;

impl Notifier for LogNotifier {
    fn send(&self, note: Note) {
        match &note.module {
            Some(module) => tracing::info!(target: "kai::notify", "[{module}] {}", note.text),
            None => tracing::info!(target: "kai::notify", "{}", note.text),
        }
    }
}
