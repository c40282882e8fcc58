//! The command line (SPEC 9). Flags are parsed here; the work is done by the other modules.
//!
//! Exit codes: 0 success (for `kai run`: the run ended done, skipped or paused); 1 the thing
//! asked for failed (a run that failed, manifests that do not validate); 2 kai could not do
//! what was asked (bad arguments, unknown module, unreadable data directory).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, bail, Context as _, Result};
use chrono::{DateTime, NaiveDate, Utc};
use clap::{Parser, Subcommand};
use kai_core::registry::{ManifestSource, Origin, Registry};
use kai_core::{JournalEntry, JournalStatus, LoadedModule, Manifest};
use kai_sdk::{Trigger, TriggerType};
use serde_json::Value;
use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;

use crate::config::{Config, SettingsArgs};
use crate::data_dir::DataDir;
use crate::engine::{Engine, Invocation, Recovered};
use crate::journal::{self, Query};
use crate::ledger::Ledger;
use crate::modules::{load_registry, read_manifest, user_sources};
use crate::runner::{become_subreaper, ProcessRunner};
use crate::scaffold::{self, Lang};

#[derive(Debug, Parser)]
#[command(
    name = "kai",
    version,
    about = "Self-hosted agent host: modules, a durable queue, a plain-file journal"
)]
struct Cli {
    #[command(flatten)]
    settings: SettingsArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the daemon
    Serve,
    /// List modules, or inspect, validate and create them
    Modules {
        #[command(subcommand)]
        command: Option<ModulesCommand>,
        /// Machine-readable output
        #[arg(long)]
        json: bool,
    },
    /// Run a module once, now, in the foreground, and print the result
    Run(RunArgs),
    /// Read the journal, newest first
    Journal(JournalArgs),
    /// Run a journaled run's trigger again, against the module as it is now
    Replay {
        run_id: String,
        /// The module to run it against [default: the run's own module]
        #[arg(long)]
        module: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Open questions, across modules, oldest first
    Pending {
        #[arg(long)]
        json: bool,
    },
    /// Answer a paused run's question: the first answer resumes the run
    Answer {
        run_id: String,
        /// The answer (several words are joined with spaces)
        #[arg(required = true, num_args = 1..)]
        text: Vec<String>,
    },
    /// Check the setup: claude found, tokens set, Telegram reachable, data dir writable,
    /// manifests valid
    Doctor,
    /// Run a built-in module's program (kai starts these itself)
    #[command(hide = true)]
    Builtin { name: String },
}

#[derive(Debug, Subcommand)]
enum ModulesCommand {
    /// One module: manifest summary and recent journal
    Show {
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// Check manifests: every module's, or those at PATH (a module.yaml, a module directory,
    /// or a directory of modules)
    Validate { path: Option<PathBuf> },
    /// Switch a module on (also lifts a reached budget for today)
    Enable { name: String },
    /// Switch a module off: triggers are logged as decisions, no run starts
    Disable { name: String },
    /// Create a module that runs as generated, in $KAI_DATA_DIR/modules/NAME/
    New {
        name: String,
        #[arg(long, value_enum, default_value = "python")]
        lang: Lang,
    },
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    name: String,
    /// Run as if this webhook event arrived (with --payload as its body)
    #[arg(long)]
    event: Option<String>,
    /// The event's action [default: the payload's "action"]
    #[arg(long)]
    action: Option<String>,
    /// The webhook source for --event
    #[arg(long, default_value = "github")]
    source: String,
    /// A JSON file: the webhook body, or the invoke data
    #[arg(long, value_name = "FILE")]
    payload: Option<PathBuf>,
    /// Invoke data as JSON text
    #[arg(long, value_name = "JSON", conflicts_with = "payload")]
    data: Option<String>,
    /// The entity [default: the manifest's template over the payload, or the trigger kind]
    #[arg(long)]
    entity: Option<String>,
    /// Print the journal entry as JSON
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
struct JournalArgs {
    /// One module's journal [default: every module's]
    name: Option<String>,
    #[arg(long)]
    entity: Option<String>,
    /// A duration back from now (2h, 7d), a date (2026-04-04) or an RFC 3339 time
    #[arg(long)]
    since: Option<String>,
    /// done, paused, error, skipped, timeout or interrupted
    #[arg(long)]
    status: Option<String>,
    /// At most this many entries
    #[arg(long, default_value_t = 50)]
    limit: usize,
    /// The why-not log instead: triggers that reached a module but started no run
    #[arg(long)]
    decisions: bool,
    #[arg(long)]
    json: bool,
}

/// Runs the command line; returns the exit code.
pub fn main() -> i32 {
    let cli = Cli::parse();
    if let Command::Builtin { name } = &cli.command {
        return crate::builtin::run(name);
    }
    let config = match Config::resolve(&cli.settings) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("kai: {e:#}");
            return 2;
        }
    };
    let default_log = if matches!(cli.command, Command::Serve) {
        config.log.as_str()
    } else {
        "warn"
    };
    init_logging(default_log);
    let result = match cli.command {
        Command::Serve => crate::serve::run(config).map(|()| 0),
        Command::Modules { command, json } => modules(&config, command, json),
        Command::Run(args) => run(config, args),
        Command::Journal(args) if args.decisions => decisions(&config, args),
        Command::Journal(args) => journal(&config, args),
        Command::Replay {
            run_id,
            module,
            json,
        } => replay(config, &run_id, module.as_deref(), json),
        Command::Pending { json } => pending(config, json),
        Command::Answer { run_id, text } => answer(config, &run_id, &text.join(" ")),
        Command::Doctor => crate::doctor::doctor(&config),
        Command::Builtin { .. } => unreachable!("handled above"),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("kai: {e:#}");
            2
        }
    }
}

fn init_logging(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .try_init();
}

fn open_data(config: &Config) -> Result<DataDir> {
    DataDir::open(&config.data_dir).with_context(|| {
        format!(
            "cannot use the data directory {}",
            config.data_dir.display()
        )
    })
}

fn find_module<'a>(registry: &'a Registry, name: &str) -> Result<&'a LoadedModule> {
    kai_core::name::check(name).map_err(anyhow::Error::msg)?;
    if let Some(m) = registry.get(name) {
        return Ok(m);
    }
    let dir_part = format!("/{name}/module.yaml");
    match registry
        .errors()
        .iter()
        .find(|e| e.file.ends_with(&dir_part))
    {
        Some(e) => bail!("module {name} did not load: {e}"),
        None => bail!("there is no module named {name} (kai modules lists them)"),
    }
}

fn modules(config: &Config, command: Option<ModulesCommand>, json: bool) -> Result<i32> {
    if let Some(ModulesCommand::Validate { path }) = &command {
        // Validation only reads: it must not create a data directory as a side effect.
        return Ok(validate(&DataDir::at(&config.data_dir), path.as_deref()));
    }
    let data = open_data(config)?;
    match command {
        None => {
            let registry = load_registry(&data.modules_dir());
            list_modules(&registry, json)?;
            Ok(0)
        }
        Some(ModulesCommand::Show { name, json }) => {
            let registry = load_registry(&data.modules_dir());
            let module = find_module(&registry, &name)?;
            show_module(&data, module, json)?;
            Ok(0)
        }
        Some(ModulesCommand::Validate { .. }) => unreachable!("handled above"),
        Some(ModulesCommand::Enable { name }) | Some(ModulesCommand::Disable { name })
            if kai_core::name::check(&name).is_err() =>
        {
            bail!("{}", kai_core::name::check(&name).unwrap_err())
        }
        Some(ModulesCommand::Enable { name }) => {
            let registry = load_registry(&data.modules_dir());
            find_module(&registry, &name)?;
            Ledger::open(&data.ledger_file())?.switch(&name, None)?;
            println!("{name} is enabled (and its budget is lifted for today)");
            Ok(0)
        }
        Some(ModulesCommand::Disable { name }) => {
            let registry = load_registry(&data.modules_dir());
            find_module(&registry, &name)?;
            Ledger::open(&data.ledger_file())?
                .switch(&name, Some("switched off with kai modules disable"))?;
            println!("{name} is disabled");
            Ok(0)
        }
        Some(ModulesCommand::New { name, lang }) => {
            let dir = scaffold::create(&data.modules_dir(), &name, lang)?;
            println!("created {}", dir.display());
            println!("try it: kai run {name}");
            Ok(0)
        }
    }
}

fn trigger_list(m: &Manifest) -> String {
    if m.triggers.is_empty() {
        return "invoke only".into();
    }
    m.triggers
        .iter()
        .map(|t| t.to_string())
        .collect::<Vec<_>>()
        .join("; ")
}

fn origin_text(m: &LoadedModule) -> String {
    match &m.origin {
        Origin::BuiltIn => "built-in".into(),
        Origin::User { dir } => dir.display().to_string(),
    }
}

fn list_modules(registry: &Registry, json: bool) -> Result<()> {
    if json {
        let modules: Vec<Value> = registry
            .modules()
            .map(|m| {
                serde_json::json!({
                    "name": m.name(),
                    "version": m.manifest.version,
                    "description": m.manifest.description,
                    "builtin": m.is_builtin(),
                    "enabled": m.manifest.enabled,
                    "triggers": m.manifest.triggers,
                    "manifest": m.manifest_file,
                })
            })
            .collect();
        let errors: Vec<String> = registry.errors().iter().map(|e| e.to_string()).collect();
        println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({"modules": modules, "errors": errors})
            )?
        );
        return Ok(());
    }
    let width = registry
        .modules()
        .map(|m| m.name().len())
        .max()
        .unwrap_or(4)
        .max(4);
    for m in registry.modules() {
        let state = if m.manifest.enabled {
            ""
        } else {
            " (disabled)"
        };
        println!(
            "{:width$}  {:8}  {}{}\n{:width$}  {:8}  {}",
            m.name(),
            m.manifest.version.as_str(),
            m.manifest.description,
            state,
            "",
            if m.is_builtin() { "built-in" } else { "user" },
            trigger_list(&m.manifest),
        );
    }
    for e in registry.errors() {
        eprintln!("error: {e}");
    }
    Ok(())
}

fn show_module(data: &DataDir, m: &LoadedModule, json: bool) -> Result<()> {
    let recent = journal::list(
        data,
        &[m.name().to_owned()],
        &Query {
            limit: Some(10),
            ..Default::default()
        },
    );
    if json {
        let entries: Vec<&JournalEntry> = recent.entries.iter().map(|l| &l.entry).collect();
        let out = serde_json::json!({
            "name": m.name(),
            "builtin": m.is_builtin(),
            "manifest_file": m.manifest_file,
            "data_dir": data.module_dir(m.name()),
            "manifest": m.manifest,
            "recent": entries,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    let mf = &m.manifest;
    println!("{} {}: {}", m.name(), mf.version, mf.description);
    println!("  origin      {}", origin_text(m));
    println!("  data        {}", data.module_dir(m.name()).display());
    println!("  run         {}", mf.run.as_slice().join(" "));
    println!("  triggers    {}", trigger_list(mf));
    if let Some(t) = &mf.entity {
        println!("  entity      {t}");
    }
    println!(
        "  timeout     {}{}",
        mf.timeout.0,
        mf.idle_timeout
            .map(|t| format!(", idle {}", t.0))
            .unwrap_or_default()
    );
    println!(
        "  guardrails  concurrency {}, per_entity {:?}, cooldown {}{}",
        mf.concurrency.0,
        mf.per_entity,
        mf.cooldown,
        mf.budget
            .map(|b| format!(", budget ${}/day", b.usd_per_day.0))
            .unwrap_or_default()
    );
    println!(
        "  notify      {:?}{}",
        mf.notify,
        if mf.enabled { "" } else { "  (disabled)" }
    );
    if recent.entries.is_empty() {
        println!("  no runs yet");
    } else {
        println!("  recent runs:");
        for l in &recent.entries {
            println!("    {}", journal_line(&l.entry, false));
        }
    }
    Ok(())
}

fn validate(data: &DataDir, path: Option<&Path>) -> i32 {
    let sources: Vec<ManifestSource> = match path {
        None => {
            let registry = load_registry(&data.modules_dir());
            return report_validation(&registry);
        }
        Some(p) if p.is_file() => vec![ManifestSource {
            origin: Origin::User {
                dir: p.parent().unwrap_or(Path::new(".")).to_path_buf(),
            },
            expected_name: None,
            file: p.display().to_string(),
            text: read_manifest(p),
        }],
        Some(p) if p.join("module.yaml").is_file() => {
            let file = p.join("module.yaml");
            vec![ManifestSource {
                origin: Origin::User {
                    dir: p.to_path_buf(),
                },
                expected_name: None,
                file: file.display().to_string(),
                text: read_manifest(&file),
            }]
        }
        Some(p) if p.is_dir() => user_sources(p),
        Some(p) => {
            eprintln!("{}: no such file or directory", p.display());
            return 1;
        }
    };
    report_validation(&Registry::build(sources))
}

fn report_validation(registry: &Registry) -> i32 {
    for m in registry.modules() {
        println!(
            "ok    {} {} ({})",
            m.name(),
            m.manifest.version,
            m.manifest_file
        );
    }
    for e in registry.errors() {
        eprintln!("{e}");
    }
    i32::from(!registry.errors().is_empty())
}

const MAX_PAYLOAD_BYTES: u64 = 25 * 1024 * 1024;

fn read_payload(args: &RunArgs) -> Result<Value> {
    if let Some(text) = &args.data {
        return serde_json::from_str(text).map_err(|e| anyhow!("--data is not valid JSON: {e}"));
    }
    let Some(path) = &args.payload else {
        return Ok(Value::Object(Default::default()));
    };
    let meta =
        std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
    if meta.len() > MAX_PAYLOAD_BYTES {
        bail!("{} is bigger than 25 MiB", path.display());
    }
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_slice(&bytes).map_err(|e| anyhow!("{} is not valid JSON: {e}", path.display()))
}

fn run(config: Config, args: RunArgs) -> Result<i32> {
    let data = open_data(&config)?;
    let registry = load_registry(&data.modules_dir());
    let module = find_module(&registry, &args.name)?.clone();
    let payload = read_payload(&args)?;
    let delivery_id = Some(format!("d_{}", ulid::Ulid::new()));
    let trigger = match &args.event {
        Some(event) => Trigger {
            kind: TriggerType::Webhook,
            source: Some(args.source.clone()),
            event: Some(event.clone()),
            action: args.action.clone().or_else(|| {
                payload
                    .get("action")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            }),
            delivery_id,
            payload,
        },
        None => Trigger {
            kind: TriggerType::Invoke,
            source: None,
            event: None,
            action: None,
            delivery_id,
            payload,
        },
    };
    let entity = match &args.entity {
        Some(e) => kai_core::template::clean_entity(e),
        None => match module
            .manifest
            .entity_for(&trigger.payload, trigger.kind.as_str())
        {
            Ok(e) => e,
            Err(e) => {
                eprintln!(
                    "note: entity template ({e}); using `{}`",
                    trigger.kind.as_str()
                );
                trigger.kind.as_str().to_owned()
            }
        },
    };
    let chat_id = config.chat_id();
    let invocation = Invocation {
        trigger,
        entity,
        chat_id,
    };
    run_foreground(config, &module, invocation, args.json)
}

/// Runs one invocation in the foreground and prints its journal entry.
fn run_foreground(
    config: Config,
    module: &LoadedModule,
    invocation: Invocation,
    json: bool,
) -> Result<i32> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let finished = runtime.block_on(async {
        become_subreaper();
        let engine = Engine::open(config, Arc::new(ProcessRunner))?;
        for r in engine.recover()? {
            if let Recovered::Finished(f) = r {
                let e = &f.entry;
                eprintln!("recovered run {} of {}: {}", e.run_id, e.module, e.status);
            }
        }
        let cancel = CancellationToken::new();
        let on_signal = cancel.clone();
        let mut term = signal(SignalKind::terminate())?;
        let mut hangup = signal(SignalKind::hangup())?;
        tokio::spawn(async move {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
                _ = hangup.recv() => {}
            }
            on_signal.cancel();
        });
        engine.run_now(module, invocation, cancel).await
    })?;
    let entry = &finished.entry;
    if json {
        println!("{}", serde_json::to_string_pretty(entry)?);
    } else {
        println!("{}", journal_line(entry, true));
        if let Some(tail) = &entry.stderr_tail {
            println!("stderr (tail):\n{tail}");
        }
        println!("journal: {}", finished.journal_path.display());
    }
    let ok = matches!(
        entry.status,
        JournalStatus::Done | JournalStatus::Skipped | JournalStatus::Paused
    );
    Ok(if ok { 0 } else { 1 })
}

fn replay(config: Config, run_id: &str, module: Option<&str>, json: bool) -> Result<i32> {
    let data = open_data(&config)?;
    let ledger = Ledger::open(&data.ledger_file())?;
    let Some(row) = ledger.get(run_id)? else {
        bail!("there is no run {run_id} in the ledger (kai journal shows run ids)");
    };
    drop(ledger);
    let registry = load_registry(&data.modules_dir());
    let module = find_module(&registry, module.unwrap_or(&row.module))?.clone();
    let chat_id = row.chat_id.or(config.chat_id());
    // A replay is a new occurrence: a module that skips deliveries it has seen must not skip it.
    let mut trigger = row.trigger;
    trigger.delivery_id = Some(format!("d_{}", ulid::Ulid::new()));
    let invocation = Invocation {
        trigger,
        entity: row.entity,
        chat_id,
    };
    run_foreground(config, &module, invocation, json)
}

fn decisions(config: &Config, args: JournalArgs) -> Result<i32> {
    let data = DataDir::at(&config.data_dir);
    if let Some(name) = &args.name {
        kai_core::name::check(name).map_err(anyhow::Error::msg)?;
    }
    let since = args
        .since
        .as_deref()
        .map(|s| parse_since(s, Utc::now()))
        .transpose()?;
    let list = if data.ledger_file().exists() {
        Ledger::open(&data.ledger_file())?.decisions(args.name.as_deref(), since, args.limit)?
    } else {
        Vec::new()
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(0);
    }
    for d in &list {
        println!(
            "{}  {}  {:<15} {}  {}  ({}{})",
            d.at.format("%Y-%m-%d %H:%M:%S"),
            d.module.as_deref().unwrap_or("-"),
            d.reason,
            d.entity.as_deref().unwrap_or("-"),
            d.detail,
            d.trigger,
            d.delivery_id
                .as_deref()
                .map(|id| format!(", delivery {id}"))
                .unwrap_or_default(),
        );
    }
    Ok(0)
}

fn journal_line(e: &JournalEntry, with_module: bool) -> String {
    let module = if with_module {
        format!("{}  ", e.module)
    } else {
        String::new()
    };
    let summary = e.summary.lines().next().unwrap_or("");
    format!(
        "{}  {module}{:<11} {}  {}  ({:.1}s, {})",
        e.timestamp.format("%Y-%m-%d %H:%M:%S"),
        e.status.as_str(),
        e.entity,
        summary,
        e.duration_seconds,
        e.trigger
    )
}

/// `2h`, `7d`, `2026-04-04` or `2026-04-04T14:23:01Z`.
pub fn parse_since(text: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>> {
    if let Ok(d) = text.parse::<kai_core::Duration>() {
        return Ok(now - chrono::Duration::seconds(d.as_secs() as i64));
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&Utc));
    }
    if let Ok(day) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return Ok(day.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc());
    }
    bail!(
        "--since `{text}` is neither a duration (2h, 7d), a date (2026-04-04) nor an RFC 3339 time"
    )
}

fn journal(config: &Config, args: JournalArgs) -> Result<i32> {
    let data = DataDir::at(&config.data_dir);
    let modules: Vec<String> = match &args.name {
        Some(name) => {
            kai_core::name::check(name).map_err(anyhow::Error::msg)?;
            let known = data.module_dir(name).is_dir()
                || crate::modules::BUILTIN_MANIFESTS
                    .iter()
                    .any(|(n, _)| n == name);
            if !known {
                bail!("there is no module named {name} (kai modules lists them)");
            }
            vec![name.clone()]
        }
        None => Vec::new(),
    };
    let query = Query {
        entity: args.entity.clone(),
        status: args
            .status
            .as_deref()
            .map(str::parse)
            .transpose()
            .map_err(anyhow::Error::msg)?,
        since: args
            .since
            .as_deref()
            .map(|s| parse_since(s, Utc::now()))
            .transpose()?,
        limit: Some(args.limit),
    };
    let listing = journal::list(&data, &modules, &query);
    for w in &listing.warnings {
        eprintln!("warning: skipped {w}");
    }
    if args.json {
        let entries: Vec<&JournalEntry> = listing.entries.iter().map(|l| &l.entry).collect();
        println!("{}", serde_json::to_string_pretty(&entries)?);
    } else {
        for l in &listing.entries {
            println!("{}", journal_line(&l.entry, modules.is_empty()));
        }
    }
    Ok(0)
}

fn pending(config: Config, json: bool) -> Result<i32> {
    let data = open_data(&config)?;
    let ledger = Ledger::open(&data.ledger_file())?;
    let open = ledger.open_questions(None)?;
    let now = Utc::now();
    if json {
        let list: Vec<Value> = open
            .iter()
            .map(|q| {
                serde_json::json!({
                    "run_id": q.run_id,
                    "module": q.module,
                    "entity": q.entity,
                    "question": q.question,
                    "asked_at": q.timeline.asked_at,
                    "expires_at": q.timeline.expires_at,
                    "file": data.pending_dir(&q.module).join(format!("{}.json", q.run_id)),
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(0);
    }
    if open.is_empty() {
        println!("no open questions");
    }
    for q in &open {
        let left = kai_core::question::human_span((q.timeline.expires_at - now).num_seconds());
        println!(
            "{}  {}  {}  (expires in {left})",
            q.run_id, q.module, q.entity
        );
        println!("    {}", q.question.text);
        if !q.question.options.is_empty() {
            println!("    options: {}", q.question.options.join(" / "));
        }
    }
    Ok(0)
}

fn answer(config: Config, run_id: &str, text: &str) -> Result<i32> {
    use crate::ledger::{Answer, Answered};
    let text = text.trim();
    if text.is_empty() {
        bail!("an answer needs some text");
    }
    let engine = Engine::open(config, Arc::new(ProcessRunner))?;
    let by = std::env::var("USER")
        .map(|u| format!("cli ({u})"))
        .unwrap_or_else(|_| "cli".into());
    let a = Answer {
        text: text.to_owned(),
        by,
        at: Utc::now(),
        via: "cli".into(),
    };
    match crate::questions::answer(&engine, run_id, a, |_, _| Ok(()))? {
        Answered::Accepted(q) => {
            println!(
                "answered: {} resumes with \"{text}\" (kai serve starts the run)",
                q.module
            );
            Ok(0)
        }
        Answered::Already(q) => {
            eprintln!("kai: {}", crate::questions::already_text(&q));
            Ok(1)
        }
        Answered::Unknown => {
            eprintln!("kai: there is no question of run {run_id} (`kai pending` lists them)");
            Ok(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn since_takes_durations_dates_and_times() {
        let now = Utc.with_ymd_and_hms(2026, 4, 4, 12, 0, 0).unwrap();
        assert_eq!(
            parse_since("2h", now).unwrap(),
            Utc.with_ymd_and_hms(2026, 4, 4, 10, 0, 0).unwrap()
        );
        assert_eq!(
            parse_since("2026-04-01", now).unwrap(),
            Utc.with_ymd_and_hms(2026, 4, 1, 0, 0, 0).unwrap()
        );
        assert_eq!(
            parse_since("2026-04-01T10:00:00+02:00", now).unwrap(),
            Utc.with_ymd_and_hms(2026, 4, 1, 8, 0, 0).unwrap()
        );
        assert!(parse_since("yesterday", now).is_err());
    }
}
