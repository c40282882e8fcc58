//! Who is calling: the three kinds of bearer token and what each may do (SPEC 5).
//!
//! - the admin token (`KAI_API_TOKEN`, or `$KAI_DATA_DIR/api_token`, generated on first start):
//!   everything but `POST /api/notify`, which needs a module to post as;
//! - the chat token (`$KAI_DATA_DIR/chat_token`, generated on first start), for the Claude
//!   process of the chat: reads everything and invokes modules, but cannot switch them;
//! - a run token (`KAI_RUN_TOKEN`, one per run): notes into its own module's topic and reads of
//!   its own module, while its run is in flight.
//!
//! Tokens are compared through their SHA-256 digests in constant time, so neither their content
//! nor their length shows in the timing. They never reach the log.

use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use axum::http::{header, HeaderMap, StatusCode};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::ApiError;
use crate::config::Secret;
use crate::engine::RunTokens;

/// Where the generated admin token is kept.
pub fn admin_token_file(data_root: &Path) -> PathBuf {
    data_root.join("api_token")
}

/// Where the chat token is kept.
pub fn chat_token_file(data_root: &Path) -> PathBuf {
    data_root.join("chat_token")
}

/// The admin and chat tokens, kept as digests for comparison and as secrets for redaction.
pub struct ApiTokens {
    admin: Secret,
    chat: Secret,
    admin_digest: [u8; 32],
    chat_digest: [u8; 32],
}

/// What [`ApiTokens::open`] did.
pub struct TokenSetup {
    pub tokens: ApiTokens,
    /// Set when the admin token was generated just now: it is shown once, then only the file
    /// has it.
    pub created_admin: Option<PathBuf>,
    pub created_chat: Option<PathBuf>,
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl ApiTokens {
    pub fn new(admin: impl Into<String>, chat: impl Into<String>) -> ApiTokens {
        let (admin, chat) = (admin.into(), chat.into());
        ApiTokens {
            admin_digest: digest(&admin),
            chat_digest: digest(&chat),
            admin: Secret::new(admin),
            chat: Secret::new(chat),
        }
    }

    /// The admin token from the settings, or from `api_token` in the data directory (created
    /// on first start); the chat token from `chat_token` (likewise).
    pub fn open(data_root: &Path, configured_admin: Option<&Secret>) -> Result<TokenSetup> {
        let tmp = data_root.join("tmp");
        let (admin, created_admin) = match configured_admin {
            Some(t) => (t.expose().trim().to_owned(), None),
            None => {
                let path = admin_token_file(data_root);
                let (token, created) = load_or_create(&path, &tmp)?;
                (token, created.then_some(path))
            }
        };
        let path = chat_token_file(data_root);
        let (chat, created) = load_or_create(&path, &tmp)?;
        if bool::from(digest(&chat).ct_eq(&digest(&admin))) {
            bail!(
                "{} holds the admin token; the chat token must differ (delete the file and kai makes a new one)",
                path.display()
            );
        }
        Ok(TokenSetup {
            tokens: ApiTokens::new(admin, chat),
            created_admin,
            created_chat: created.then_some(path),
        })
    }

    pub fn admin(&self) -> &Secret {
        &self.admin
    }

    pub fn chat(&self) -> &Secret {
        &self.chat
    }
}

/// A fresh token: 32 random bytes, in hex.
pub fn generate() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the system's random source works");
    hex::encode(bytes)
}

fn check_token_text(text: &str, path: &Path) -> Result<String> {
    let token = text.trim();
    let ok =
        !token.is_empty() && token.len() <= 1024 && token.bytes().all(|b| b.is_ascii_graphic());
    if !ok {
        bail!(
            "{} does not hold a token (one line of printable characters); delete it and kai makes a new one",
            path.display()
        );
    }
    Ok(token.to_owned())
}

/// Reads the token in `path`, or creates the file with a new one, readable by its owner only.
/// Two kai processes starting at once agree on one token: the file appears whole, through a
/// hard link from a temporary file, or not at all.
fn load_or_create(path: &Path, tmp_dir: &Path) -> Result<(String, bool)> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let token = check_token_text(&text, path)?;
            let mode = std::fs::metadata(path)?.permissions().mode();
            if mode & 0o077 != 0 {
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
                    .with_context(|| format!("cannot make {} private", path.display()))?;
                tracing::warn!(
                    "{} was readable by others; it is now readable by its owner only",
                    path.display()
                );
            }
            return Ok((token, false));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
    let token = generate();
    std::fs::create_dir_all(tmp_dir)?;
    let tmp = tmp_dir.join(format!(
        "{}-token-{}",
        std::process::id(),
        ulid::Ulid::new()
    ));
    let write = || -> std::io::Result<()> {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(format!("{token}\n").as_bytes())?;
        file.sync_all()
    };
    let linked = write().and_then(|()| std::fs::hard_link(&tmp, path));
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => {
            if let Some(dir) = path.parent() {
                std::fs::File::open(dir)?.sync_all()?;
            }
            Ok((token, true))
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            Ok((check_token_text(&text, path)?, false))
        }
        Err(e) => Err(e).with_context(|| format!("cannot create {}", path.display())),
    }
}

/// The caller of an API route, once its token is known.
#[derive(Clone)]
pub enum Caller {
    Admin,
    Chat,
    /// A module's run, while it is in flight. The token is kept to scrub it from notes.
    Run {
        module: String,
        run_id: String,
        token: Secret,
    },
}

impl Caller {
    /// For the log: the kind of token, never the token.
    pub fn kind(&self) -> &'static str {
        match self {
            Caller::Admin => "admin",
            Caller::Chat => "chat",
            Caller::Run { .. } => "run",
        }
    }
}

fn unauthorized(message: &str) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
}

/// Finds the caller from `Authorization: Bearer <token>`; anything else is `401`.
pub fn authenticate(
    headers: &HeaderMap,
    tokens: &ApiTokens,
    runs: &RunTokens,
) -> Result<Caller, ApiError> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Err(unauthorized(
            "this route needs a token: send `Authorization: Bearer <token>`",
        ));
    };
    if values.next().is_some() {
        return Err(unauthorized("send one Authorization header, not several"));
    }
    let token = value
        .to_str()
        .ok()
        .and_then(|v| {
            let (scheme, rest) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
        })
        .filter(|t| !t.is_empty() && !t.contains(char::is_whitespace));
    let Some(token) = token else {
        return Err(unauthorized(
            "malformed Authorization header: expected `Bearer <token>`",
        ));
    };
    let given = digest(token);
    let admin = given.ct_eq(&tokens.admin_digest);
    let chat = given.ct_eq(&tokens.chat_digest);
    if bool::from(admin) {
        return Ok(Caller::Admin);
    }
    if bool::from(chat) {
        return Ok(Caller::Chat);
    }
    match runs.lookup(token) {
        Some((module, run_id)) => Ok(Caller::Run {
            module,
            run_id,
            token: Secret::new(token),
        }),
        None => Err(unauthorized(
            "unknown token, or the token of a run that has ended",
        )),
    }
}

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// No token: `/health`.
    Public,
    /// Not bearer tokens but the webhook's own signature (served by `crate::http`).
    Signed,
    /// Admin and chat tokens.
    Read,
    /// Admin and chat tokens: starting runs.
    Invoke,
    /// Admin token only: changing modules.
    Manage,
    /// Admin and chat tokens, and the run token of the module named in the path.
    OwnModule,
    /// Run tokens only: the note goes into the calling module's topic.
    Notify,
}

impl Access {
    /// The token kinds this access admits, for the document (`x-kai-tokens`).
    pub fn token_kinds(self) -> &'static [&'static str] {
        match self {
            Access::Public | Access::Signed => &[],
            Access::Read | Access::Invoke => &["admin", "chat"],
            Access::Manage => &["admin"],
            Access::OwnModule => &["admin", "chat", "run (own module only)"],
            Access::Notify => &["run"],
        }
    }

    pub fn needs_bearer(self) -> bool {
        !matches!(self, Access::Public | Access::Signed)
    }

    /// Whether `caller` may call a route of this access; `module` is the `{name}` of the path,
    /// already checked to be a valid name.
    pub fn allows(self, caller: &Caller, module: Option<&str>) -> Result<(), ApiError> {
        let forbidden =
            |code: &str, msg: String| Err(ApiError::new(StatusCode::FORBIDDEN, code, msg));
        match (self, caller) {
            (Access::Public | Access::Signed, _) => Ok(()),
            (Access::Notify, Caller::Run { .. }) => Ok(()),
            (Access::Notify, _) => forbidden(
                "run_token_required",
                "POST /api/notify posts into the calling module's topic: it takes the run token a module gets in KAI_RUN_TOKEN".into(),
            ),
            (Access::Manage, Caller::Admin) => Ok(()),
            (Access::Manage, Caller::Chat) => forbidden(
                "forbidden",
                "the chat token can read and invoke modules but not switch them; use the admin token".into(),
            ),
            (Access::OwnModule, Caller::Run { module: own, .. }) => {
                if module == Some(own.as_str()) {
                    Ok(())
                } else {
                    forbidden(
                        "forbidden",
                        format!("a run token reads its own module ({own}) only"),
                    )
                }
            }
            (_, Caller::Run { .. }) => forbidden(
                "forbidden",
                "a run token can only post notes (POST /api/notify) and read its own module".into(),
            ),
            (Access::Read | Access::Invoke | Access::OwnModule, Caller::Admin | Caller::Chat) => {
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, value.parse().unwrap());
        h
    }

    #[test]
    fn bearer_tokens_are_told_apart() {
        let tokens = ApiTokens::new("a".repeat(64), "c".repeat(64));
        let runs = RunTokens::default();
        let who = |v: &str| authenticate(&headers(v), &tokens, &runs).map(|c| c.kind());
        assert_eq!(
            who(&format!("Bearer {}", "a".repeat(64))).ok(),
            Some("admin")
        );
        assert_eq!(
            who(&format!("bearer  {} ", "c".repeat(64))).ok(),
            Some("chat")
        );
        for bad in [
            "Bearer",
            "Bearer ",
            "Basic abc",
            "a".repeat(64).as_str(),
            "Bearer a b",
        ] {
            assert_eq!(
                who(bad).unwrap_err().status,
                StatusCode::UNAUTHORIZED,
                "{bad}"
            );
        }
        assert!(who(&format!("Bearer {}", "a".repeat(63))).is_err());
    }

    #[test]
    fn token_files_are_private_and_stable() {
        let tmp = tempfile::tempdir().unwrap();
        let first = ApiTokens::open(tmp.path(), None).unwrap();
        assert!(first.created_admin.is_some() && first.created_chat.is_some());
        for file in [admin_token_file(tmp.path()), chat_token_file(tmp.path())] {
            let mode = std::fs::metadata(&file).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{}", file.display());
        }
        let again = ApiTokens::open(tmp.path(), None).unwrap();
        assert!(again.created_admin.is_none() && again.created_chat.is_none());
        assert_eq!(again.tokens.admin(), first.tokens.admin());
        assert_eq!(first.tokens.admin().expose().len(), 64);
        assert_ne!(first.tokens.admin(), first.tokens.chat());
        let configured = Secret::new("from-the-environment");
        let set = ApiTokens::open(tmp.path(), Some(&configured)).unwrap();
        assert_eq!(set.tokens.admin().expose(), "from-the-environment");
    }
}
