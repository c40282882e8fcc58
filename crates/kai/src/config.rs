//! Settings. Each one is a flag, an environment variable, and a key of the optional
//! `$KAI_DATA_DIR/kai.toml`; precedence is flag > environment > file > default.
//!
//! In `kai.toml` a key is the variable's name without `KAI_`, in lower case (`http_addr`); the
//! variable's own name (`KAI_HTTP_ADDR`) is accepted too. `data_dir` cannot be set there.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use clap::Args;
use serde::Deserialize;

/// A value that must never be printed: its `Debug` and `Display` show `[secret]`.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[secret]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[secret]")
    }
}

/// The settings as flags (and, through clap, environment variables).
#[derive(Debug, Clone, Default, Args)]
pub struct SettingsArgs {
    /// All state: modules' data, journal, database [default: ~/.local/share/kai]
    #[arg(long, env = "KAI_DATA_DIR", global = true, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Listen address of the HTTP server [default: 127.0.0.1:8080]
    #[arg(long, env = "KAI_HTTP_ADDR", global = true, value_name = "ADDR")]
    pub http_addr: Option<String>,
    /// Admin bearer token for /api/* [default: generated on first start]
    #[arg(
        long,
        env = "KAI_API_TOKEN",
        global = true,
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub api_token: Option<String>,
    /// HMAC secret for /webhook/github [default: none, GitHub webhooks refused]
    #[arg(
        long,
        env = "KAI_GITHUB_WEBHOOK_SECRET",
        global = true,
        hide_env_values = true,
        value_name = "SECRET"
    )]
    pub github_webhook_secret: Option<String>,
    /// Telegram bot token [default: none, Telegram off]
    #[arg(
        long,
        env = "KAI_TELEGRAM_TOKEN",
        global = true,
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub telegram_token: Option<String>,
    /// Bot API base URL [default: https://api.telegram.org]
    #[arg(long, env = "KAI_TELEGRAM_API_URL", global = true, value_name = "URL")]
    pub telegram_api_url: Option<String>,
    /// Comma list of Telegram user ids allowed to talk to the bot; the first is the owner
    #[arg(long, env = "KAI_ALLOWED_USERS", global = true, value_name = "IDS")]
    pub allowed_users: Option<String>,
    /// Longest an invoke with "wait": true holds its request [default: 30s]
    #[arg(
        long,
        env = "KAI_API_WAIT_LIMIT",
        global = true,
        value_name = "DURATION"
    )]
    pub api_wait_limit: Option<String>,
    /// Least time between two messages to one Telegram chat [default: 1s]
    #[arg(
        long,
        env = "KAI_TELEGRAM_PACING",
        global = true,
        value_name = "DURATION"
    )]
    pub telegram_pacing: Option<String>,
    /// Chat id where modules post [default: the owner's private chat]
    #[arg(long, env = "KAI_NOTIFY_CHAT", global = true, value_name = "CHAT_ID")]
    pub notify_chat: Option<String>,
    /// The Claude Code CLI [default: claude]
    #[arg(long, env = "KAI_CLAUDE_BIN", global = true, value_name = "PATH")]
    pub claude_bin: Option<String>,
    /// Token modules use for GitHub's REST API
    #[arg(
        long,
        env = "KAI_GITHUB_TOKEN",
        global = true,
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub github_token: Option<String>,
    /// GitHub REST base URL [default: https://api.github.com]
    #[arg(long, env = "KAI_GITHUB_API_URL", global = true, value_name = "URL")]
    pub github_api_url: Option<String>,
    /// Directory under which /workspace NAME resolves
    #[arg(long, env = "KAI_WORKSPACE_BASE", global = true, value_name = "DIR")]
    pub workspace_base: Option<PathBuf>,
    /// kai's own GitHub login: events it caused do not trigger modules [default: none]
    #[arg(long, env = "KAI_GITHUB_LOGIN", global = true, value_name = "LOGIN")]
    pub github_login: Option<String>,
    /// Log filter [default: info]
    #[arg(long, env = "KAI_LOG", global = true, value_name = "FILTER")]
    pub log: Option<String>,
}

/// `kai.toml`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSettings {
    #[serde(alias = "KAI_HTTP_ADDR")]
    http_addr: Option<String>,
    #[serde(alias = "KAI_API_TOKEN")]
    api_token: Option<String>,
    #[serde(alias = "KAI_GITHUB_WEBHOOK_SECRET")]
    github_webhook_secret: Option<String>,
    #[serde(alias = "KAI_TELEGRAM_TOKEN")]
    telegram_token: Option<String>,
    #[serde(alias = "KAI_TELEGRAM_API_URL")]
    telegram_api_url: Option<String>,
    #[serde(alias = "KAI_ALLOWED_USERS")]
    allowed_users: Option<toml::Value>,
    #[serde(alias = "KAI_NOTIFY_CHAT")]
    notify_chat: Option<toml::Value>,
    #[serde(alias = "KAI_TELEGRAM_PACING")]
    telegram_pacing: Option<String>,
    #[serde(alias = "KAI_API_WAIT_LIMIT")]
    api_wait_limit: Option<String>,
    #[serde(alias = "KAI_CLAUDE_BIN")]
    claude_bin: Option<String>,
    #[serde(alias = "KAI_GITHUB_TOKEN")]
    github_token: Option<String>,
    #[serde(alias = "KAI_GITHUB_API_URL")]
    github_api_url: Option<String>,
    #[serde(alias = "KAI_WORKSPACE_BASE")]
    workspace_base: Option<PathBuf>,
    #[serde(alias = "KAI_GITHUB_LOGIN")]
    github_login: Option<String>,
    #[serde(alias = "KAI_LOG")]
    log: Option<String>,
    /// Generic webhook sources: `[sources.<name>]`.
    #[serde(default)]
    sources: BTreeMap<String, SourceConfig>,
}

/// A generic webhook source, `POST /webhook/<name>`, from `[sources.<name>]` in `kai.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// HMAC-SHA256 key: the body's signature comes in `X-Kai-Signature-256: sha256=<hex>`.
    pub secret: Option<Secret>,
    /// Or a bearer token: `Authorization: Bearer <token>`.
    pub token: Option<Secret>,
    /// The header that names the event...
    pub event_header: Option<String>,
    /// ...or the payload field (dotted path) that does. Default: header `X-Kai-Event`.
    pub event_field: Option<String>,
    /// The header carrying a delivery id, for duplicate detection. Default: `X-Kai-Delivery`.
    pub delivery_header: Option<String>,
}

/// The resolved settings.
#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    pub http_addr: String,
    pub api_token: Option<Secret>,
    pub github_webhook_secret: Option<Secret>,
    pub telegram_token: Option<Secret>,
    pub telegram_api_url: String,
    pub allowed_users: Vec<i64>,
    pub notify_chat: Option<i64>,
    /// Least time between two messages to one chat (Telegram asks for about one a second).
    pub telegram_pacing: std::time::Duration,
    /// Longest an invoke with `"wait": true` holds its request; `None`: the API's default.
    pub api_wait_limit: Option<std::time::Duration>,
    pub claude_bin: String,
    pub github_token: Option<Secret>,
    pub github_api_url: String,
    pub workspace_base: Option<PathBuf>,
    pub github_login: Option<String>,
    pub log: String,
    pub sources: BTreeMap<String, SourceConfig>,
    /// The chat token, once `kai serve` has set it up: not a setting, kept here so that it is
    /// redacted like every other secret.
    pub chat_token: Option<Secret>,
}

impl Config {
    /// Resolves the settings: flags and environment (already merged by clap), then
    /// `kai.toml`, then defaults.
    pub fn resolve(args: &SettingsArgs) -> Result<Config> {
        let data_dir = match &args.data_dir {
            Some(dir) => dir.clone(),
            None => default_data_dir()?,
        };
        let file = read_file(&data_dir.join("kai.toml"))?;
        let pick =
            |flag: &Option<String>, file: &Option<String>| flag.clone().or_else(|| file.clone());
        let secret = |flag: &Option<String>, file: &Option<String>| {
            pick(flag, file).filter(|s| !s.is_empty()).map(Secret)
        };
        let allowed_users = match (&args.allowed_users, &file.allowed_users) {
            (Some(text), _) => parse_ids(text).context("KAI_ALLOWED_USERS")?,
            (None, Some(toml::Value::String(text))) => {
                parse_ids(text).context("kai.toml: allowed_users")?
            }
            (None, Some(toml::Value::Array(items))) => items
                .iter()
                .map(|v| {
                    v.as_integer()
                        .context("kai.toml: allowed_users must hold user ids")
                })
                .collect::<Result<_>>()?,
            (None, Some(_)) => bail!("kai.toml: allowed_users must be a list of user ids"),
            (None, None) => Vec::new(),
        };
        let notify_chat = match (&args.notify_chat, &file.notify_chat) {
            (Some(text), _) => Some(parse_id(text).context("KAI_NOTIFY_CHAT")?),
            (None, Some(toml::Value::Integer(id))) => Some(*id),
            (None, Some(toml::Value::String(text))) => {
                Some(parse_id(text).context("kai.toml: notify_chat")?)
            }
            (None, Some(_)) => bail!("kai.toml: notify_chat must be a chat id"),
            (None, None) => None,
        };
        Ok(Config {
            http_addr: pick(&args.http_addr, &file.http_addr)
                .unwrap_or_else(|| "127.0.0.1:8080".into()),
            api_token: secret(&args.api_token, &file.api_token),
            github_webhook_secret: secret(&args.github_webhook_secret, &file.github_webhook_secret),
            telegram_token: secret(&args.telegram_token, &file.telegram_token),
            telegram_api_url: pick(&args.telegram_api_url, &file.telegram_api_url)
                .unwrap_or_else(|| "https://api.telegram.org".into()),
            allowed_users,
            notify_chat,
            telegram_pacing: duration(
                "KAI_TELEGRAM_PACING",
                pick(&args.telegram_pacing, &file.telegram_pacing),
            )?
            .unwrap_or(std::time::Duration::from_secs(1)),
            api_wait_limit: duration(
                "KAI_API_WAIT_LIMIT",
                pick(&args.api_wait_limit, &file.api_wait_limit),
            )?,
            claude_bin: pick(&args.claude_bin, &file.claude_bin).unwrap_or_else(|| "claude".into()),
            github_token: secret(&args.github_token, &file.github_token),
            github_api_url: pick(&args.github_api_url, &file.github_api_url)
                .unwrap_or_else(|| "https://api.github.com".into()),
            workspace_base: args.workspace_base.clone().or(file.workspace_base),
            github_login: pick(&args.github_login, &file.github_login).filter(|l| !l.is_empty()),
            log: pick(&args.log, &file.log).unwrap_or_else(|| "info".into()),
            sources: check_sources(file.sources)?,
            chat_token: None,
            data_dir,
        })
    }

    /// The chat modules post to: `KAI_NOTIFY_CHAT`, else the owner's private chat (a private
    /// chat's id is the user's id), else none.
    pub fn chat_id(&self) -> Option<i64> {
        self.notify_chat
            .or_else(|| self.allowed_users.first().copied())
    }

    /// The base URL modules reach the host API at.
    pub fn api_url(&self) -> String {
        format!("http://{}", self.http_addr)
    }

    /// Every secret value, for redaction of what modules print.
    pub fn secrets(&self) -> Vec<&str> {
        let sources = self.sources.values().flat_map(|s| [&s.secret, &s.token]);
        [
            &self.api_token,
            &self.github_webhook_secret,
            &self.telegram_token,
            &self.github_token,
            &self.chat_token,
        ]
        .into_iter()
        .chain(sources)
        .flatten()
        .map(Secret::expose)
        .collect()
    }
}

fn check_sources(
    sources: BTreeMap<String, SourceConfig>,
) -> Result<BTreeMap<String, SourceConfig>> {
    for (name, s) in &sources {
        let ok = !name.is_empty()
            && name.len() <= 64
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
        if !ok || name == "github" {
            bail!("kai.toml: [sources.{name}]: a source name is lower-case letters, digits, - and _, and not github");
        }
        if s.secret.is_some() == s.token.is_some() {
            bail!("kai.toml: [sources.{name}] needs exactly one of `secret` (HMAC) or `token` (bearer)");
        }
        if s.event_header.is_some() && s.event_field.is_some() {
            bail!("kai.toml: [sources.{name}] takes event_header or event_field, not both");
        }
    }
    Ok(sources)
}

fn default_data_dir() -> Result<PathBuf> {
    if let Some(xdg) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(xdg).join("kai"));
    }
    let home = std::env::var_os("HOME").filter(|v| !v.is_empty()).context(
        "neither KAI_DATA_DIR nor HOME is set: say where kai keeps its data with --data-dir",
    )?;
    Ok(PathBuf::from(home).join(".local/share/kai"))
}

fn read_file(path: &Path) -> Result<FileSettings> {
    match std::fs::read_to_string(path) {
        Ok(text) => toml::from_str(&text)
            .map_err(|e| anyhow::anyhow!("{}: {}", path.display(), e.message())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(FileSettings::default()),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

fn parse_id(text: &str) -> Result<i64> {
    text.trim()
        .parse()
        .map_err(|_| anyhow::anyhow!("`{}` is not a Telegram id (a whole number)", text.trim()))
}

fn parse_ids(text: &str) -> Result<Vec<i64>> {
    text.split(',')
        .filter(|s| !s.trim().is_empty())
        .map(parse_id)
        .collect()
}

/// A duration setting (`30s`, `5m`); blank is unset.
fn duration(name: &str, text: Option<String>) -> Result<Option<std::time::Duration>> {
    match text.filter(|t| !t.trim().is_empty()) {
        Some(t) => Ok(Some(
            t.trim()
                .parse::<kai_core::Duration>()
                .map_err(|e| anyhow::anyhow!("{name}: {e}"))?
                .std(),
        )),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(dir: &Path) -> SettingsArgs {
        SettingsArgs {
            data_dir: Some(dir.to_path_buf()),
            ..Default::default()
        }
    }

    #[test]
    fn defaults_with_nothing_set() {
        let tmp = tempfile::tempdir().unwrap();
        let c = Config::resolve(&args(tmp.path())).unwrap();
        assert_eq!(c.http_addr, "127.0.0.1:8080");
        assert_eq!(c.claude_bin, "claude");
        assert_eq!(c.telegram_api_url, "https://api.telegram.org");
        assert!(c.api_token.is_none() && c.allowed_users.is_empty());
        assert_eq!(c.chat_id(), None);
    }

    #[test]
    fn flag_beats_file_beats_default() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(
            tmp.path().join("kai.toml"),
            "http_addr = \"127.0.0.1:9\"\nKAI_CLAUDE_BIN = \"/x/claude\"\nallowed_users = [5, 6]\ngithub_token = \"ghp_abcdefgh\"\n",
        )
        .unwrap();
        let mut a = args(tmp.path());
        let c = Config::resolve(&a).unwrap();
        assert_eq!(c.http_addr, "127.0.0.1:9");
        assert_eq!(c.claude_bin, "/x/claude");
        assert_eq!(c.chat_id(), Some(5));
        assert_eq!(format!("{:?}", c.github_token), "Some([secret])");
        a.http_addr = Some("127.0.0.1:10".into());
        a.notify_chat = Some("-100".into());
        let c = Config::resolve(&a).unwrap();
        assert_eq!(c.http_addr, "127.0.0.1:10");
        assert_eq!(c.chat_id(), Some(-100));
    }

    #[test]
    fn durations_come_from_the_file_too() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(
            tmp.path().join("kai.toml"),
            "api_wait_limit = \"1m\"\ntelegram_pacing = \"250ms\"\n",
        )
        .unwrap();
        let err = Config::resolve(&args(tmp.path())).unwrap_err().to_string();
        assert!(err.contains("KAI_TELEGRAM_PACING"), "{err}");
        std::fs::write(
            tmp.path().join("kai.toml"),
            "api_wait_limit = \"1m\"\ntelegram_pacing = \"0s\"\n",
        )
        .unwrap();
        let c = Config::resolve(&args(tmp.path())).unwrap();
        assert_eq!(c.api_wait_limit, Some(std::time::Duration::from_secs(60)));
        assert_eq!(c.telegram_pacing, std::time::Duration::ZERO);
    }

    #[test]
    fn a_typo_in_the_file_is_an_error() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("kai.toml"), "http_adr = \"x\"\n").unwrap();
        let err = Config::resolve(&args(tmp.path())).unwrap_err().to_string();
        assert!(err.contains("unknown field `http_adr`"), "{err}");
    }
}
