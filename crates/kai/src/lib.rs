//! The kai daemon and command line: the adapters around `kai-core`.
//!
//! - [`config`]: settings from flags, environment, `kai.toml`, defaults.
//! - [`data_dir`]: the layout of `$KAI_DATA_DIR` and atomic file writes.
//! - [`ledger`]: the run ledger in SQLite, the durable record of every run's phase.
//! - [`runner`]: starts a module's process under the run protocol and reports what happened.
//! - [`engine`]: one run's lifecycle, from the ledger through the runner to the journal, and
//!   recovery after a crash.
//! - [`journal`]: reading journal files back.
//! - [`modules`]: finding manifests (built-in and user) and building the registry.
//! - [`builtin`]: the built-in modules' programs.
//! - [`http`] and [`api`]: the HTTP server: webhooks, and the management API with its tokens
//!   and OpenAPI document.
//! - [`telegram`]: the Bot API client, the outbox's sender, the poller and chat commands.
//! - [`questions`]: answering questions by every route, reminders and expiry.
//! - [`cli`] and [`serve`]: the command line and the daemon.

pub mod api;
pub mod builtin;
pub mod cli;
pub mod config;
pub mod crash;
pub mod daemon;
pub mod data_dir;
pub mod doctor;
pub mod engine;
pub mod http;
pub mod journal;
pub mod ledger;
pub mod modules;
pub mod questions;
pub mod runner;
pub mod scaffold;
pub mod serve;
pub mod telegram;
