//! `kai doctor`: checks the setup and says what to fix. Each check prints one line, `ok`,
//! `note` (works, but worth knowing) or `FAIL`; the exit code is 1 when any check failed.

use std::path::Path;

use crate::config::Config;
use crate::data_dir::DataDir;
use crate::modules::load_registry;
use crate::telegram::api::{ApiError, BotApi};

#[derive(Default)]
struct Report {
    failed: bool,
}

impl Report {
    fn ok(&self, text: impl AsRef<str>) {
        println!("ok    {}", text.as_ref());
    }
    fn note(&self, text: impl AsRef<str>) {
        println!("note  {}", text.as_ref());
    }
    fn fail(&mut self, text: impl AsRef<str>) {
        self.failed = true;
        println!("FAIL  {}", text.as_ref());
    }
}

pub fn doctor(config: &Config) -> anyhow::Result<i32> {
    let mut r = Report::default();
    match DataDir::open(&config.data_dir) {
        Ok(data) => {
            let probe = data.root().join("tmp").join("doctor-probe");
            match data.write_atomic(&probe, b"ok\n") {
                Ok(()) => {
                    let _ = std::fs::remove_file(&probe);
                    r.ok(format!(
                        "data directory {} is writable",
                        data.root().display()
                    ));
                }
                Err(e) => r.fail(format!("cannot write in {}: {e}", data.root().display())),
            }
            let registry = load_registry(&data.modules_dir());
            if registry.errors().is_empty() {
                r.ok(format!(
                    "{} modules loaded, every manifest valid",
                    registry.len()
                ));
            } else {
                for e in registry.errors() {
                    r.fail(format!("manifest: {e}"));
                }
            }
        }
        Err(e) => r.fail(format!(
            "cannot create the data directory {}: {e}",
            config.data_dir.display()
        )),
    }
    match find_program(&config.claude_bin) {
        Some(path) => r.ok(format!("claude found: {}", path.display())),
        None => r.fail(format!(
            "claude not found: `{}` (KAI_CLAUDE_BIN); install it with `npm install -g @anthropic-ai/claude-code`",
            config.claude_bin
        )),
    }
    match &config.github_webhook_secret {
        Some(_) => r.ok("KAI_GITHUB_WEBHOOK_SECRET is set: GitHub webhooks are accepted"),
        None => r.note("KAI_GITHUB_WEBHOOK_SECRET is not set: GitHub webhooks are refused"),
    }
    match &config.github_token {
        Some(_) => r.ok("KAI_GITHUB_TOKEN is set"),
        None => r.note("KAI_GITHUB_TOKEN is not set: modules cannot call GitHub's API"),
    }
    telegram(config, &mut r);
    Ok(if r.failed { 1 } else { 0 })
}

fn find_program(name: &str) -> Option<std::path::PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let runnable = |p: &Path| {
        p.metadata()
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    };
    if name.contains('/') {
        let p = Path::new(name);
        return runnable(p).then(|| p.to_path_buf());
    }
    std::env::var_os("PATH")?
        .to_string_lossy()
        .split(':')
        .map(|dir| Path::new(dir).join(name))
        .find(|p| runnable(p))
}

fn telegram(config: &Config, r: &mut Report) {
    let Some(token) = &config.telegram_token else {
        r.note("KAI_TELEGRAM_TOKEN is not set: Telegram is off, messages go to the log");
        return;
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return r.fail(format!("cannot start an async runtime: {e}")),
    };
    let api = match BotApi::new(&config.telegram_api_url, token) {
        Ok(api) => api,
        Err(e) => return r.fail(format!("cannot set up the Bot API client: {e}")),
    };
    runtime.block_on(async {
        let bot = match api.get_me().await {
            Ok(bot) => {
                r.ok(format!(
                    "Telegram token works: the bot is {}",
                    bot.display()
                ));
                bot
            }
            Err(ApiError::Telegram { code: 401 | 404, .. }) => {
                return r.fail("Telegram refused KAI_TELEGRAM_TOKEN (401 Unauthorized)")
            }
            Err(e) => {
                return r.fail(format!(
                    "cannot reach Telegram at {}: {e}",
                    config.telegram_api_url
                ))
            }
        };
        if config.allowed_users.is_empty() {
            r.fail("KAI_ALLOWED_USERS is empty: the bot would answer nobody");
        } else {
            r.ok(format!("allowed users: {:?}", config.allowed_users));
        }
        let Some(chat) = config.chat_id() else {
            return r.fail("no chat to post in: set KAI_NOTIFY_CHAT or KAI_ALLOWED_USERS");
        };
        let info = match api.get_chat(chat).await {
            Ok(c) => c,
            Err(e) => {
                return r.fail(format!(
                    "the notify chat {chat} is not reachable: {e} (has the owner started the bot, or is it a member of the group?)"
                ))
            }
        };
        if info.is_forum != Some(true) {
            r.note(format!(
                "the notify chat {chat} is not a forum: messages carry a [module] prefix instead of a topic per module"
            ));
            return;
        }
        match api.get_chat_member(chat, bot.id).await {
            Ok(m) if m.status == "creator" || (m.status == "administrator" && m.can_manage_topics == Some(true)) => {
                r.ok(format!("the notify chat {chat} is a forum and the bot can manage its topics"))
            }
            Ok(m) => r.fail(format!(
                "the notify chat {chat} is a forum, but the bot cannot create topics (status {}): make it an admin with \"Manage topics\"",
                m.status
            )),
            Err(e) => r.fail(format!("cannot read the bot's rights in {chat}: {e}")),
        }
    });
}
