//! kai's domain. It knows modules, triggers, runs, outcomes and journal entries; it knows
//! nothing of HTTP, Telegram, SQLite or processes. Adapters in the `kai` crate feed it facts
//! (a manifest's text, a webhook's payload, what a process printed) and act on its answers.

pub mod announce;
pub mod duration;
pub mod filter;
pub mod guard;
pub mod journal;
pub mod manifest;
pub mod name;
pub mod outcome;
pub mod question;
pub mod registry;
pub mod schedule;
pub mod template;
pub mod text;

pub use duration::Duration;
pub use journal::{JournalEntry, JournalStatus};
pub use manifest::{Manifest, ManifestError, Trigger};
pub use name::ModuleName;
pub use registry::{LoadedModule, Origin, Registry};
