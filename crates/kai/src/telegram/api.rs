//! A thin typed layer over the Telegram Bot API (`{base}/bot{token}/{method}`, JSON in and
//! out), with only the methods and fields kai uses. Errors keep Telegram's own code,
//! description and `retry_after`; nothing here ever prints the token (reqwest's errors carry
//! the URL, which holds it: they are stripped of it).

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::config::Secret;

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct User {
    pub id: i64,
    #[serde(default)]
    pub is_bot: bool,
    #[serde(default)]
    pub first_name: String,
    #[serde(default)]
    pub username: Option<String>,
}

impl User {
    /// How kai names a person: `@username`, else the first name and id.
    pub fn display(&self) -> String {
        match &self.username {
            Some(u) => format!("@{u}"),
            None => format!("{} ({})", self.first_name, self.id),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct Chat {
    pub id: i64,
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default)]
    pub title: Option<String>,
    #[serde(default)]
    pub is_forum: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct Message {
    pub message_id: i64,
    #[serde(default)]
    pub from: Option<User>,
    pub chat: Chat,
    #[serde(default)]
    pub date: i64,
    #[serde(default)]
    pub text: Option<String>,
    #[serde(default)]
    pub message_thread_id: Option<i64>,
    #[serde(default)]
    pub is_topic_message: Option<bool>,
    #[serde(default)]
    pub reply_to_message: Option<Box<Message>>,
}

impl Message {
    /// The forum topic this message is in: only when Telegram says it is a topic message
    /// (`message_thread_id` alone also marks reply threads, and General has none).
    pub fn topic(&self) -> Option<i64> {
        match self.is_topic_message {
            Some(true) => self.message_thread_id,
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct CallbackQuery {
    pub id: String,
    pub from: User,
    #[serde(default)]
    pub message: Option<Message>,
    #[serde(default)]
    pub data: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct Update {
    pub update_id: i64,
    #[serde(default)]
    pub message: Option<Message>,
    #[serde(default)]
    pub callback_query: Option<CallbackQuery>,
}

impl Update {
    /// Who sent it, when it is something a person did.
    pub fn from(&self) -> Option<&User> {
        if let Some(m) = &self.message {
            return m.from.as_ref();
        }
        self.callback_query.as_ref().map(|c| &c.from)
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct ForumTopic {
    pub message_thread_id: i64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ChatMember {
    pub status: String,
    #[serde(default)]
    pub can_manage_topics: Option<bool>,
}

/// A failed call.
#[derive(Debug, Clone, PartialEq)]
pub enum ApiError {
    /// Telegram answered `ok: false`.
    Telegram {
        code: i64,
        description: String,
        retry_after: Option<u64>,
    },
    /// No answer, or one that is not the Bot API's: the network, a timeout, a proxy's page.
    Network(String),
}

impl ApiError {
    pub fn code(&self) -> Option<i64> {
        match self {
            ApiError::Telegram { code, .. } => Some(*code),
            ApiError::Network(_) => None,
        }
    }

    /// Telegram's description contains `what` (case-insensitive).
    pub fn says(&self, what: &str) -> bool {
        match self {
            ApiError::Telegram { description, .. } => description
                .to_ascii_lowercase()
                .contains(&what.to_ascii_lowercase()),
            ApiError::Network(_) => false,
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ApiError::Telegram {
                code, description, ..
            } => write!(f, "Telegram answered {code}: {description}"),
            ApiError::Network(e) => write!(f, "cannot reach the Bot API: {e}"),
        }
    }
}

impl std::error::Error for ApiError {}

#[derive(Deserialize)]
struct Envelope {
    ok: bool,
    #[serde(default)]
    result: Option<Value>,
    #[serde(default)]
    error_code: Option<i64>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    parameters: Option<Parameters>,
}

#[derive(Deserialize)]
struct Parameters {
    #[serde(default)]
    retry_after: Option<u64>,
}

/// The Bot API of one bot.
#[derive(Clone)]
pub struct BotApi {
    http: reqwest::Client,
    /// `{base}/bot{token}/`: holds the token, never printed.
    endpoint: Secret,
}

/// Long polls wait this long at Telegram; requests get this much more before they time out.
pub const POLL_SECONDS: u64 = 25;

impl BotApi {
    pub fn new(api_url: &str, token: &Secret) -> anyhow::Result<BotApi> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(POLL_SECONDS + 15))
            .build()?;
        Ok(BotApi {
            http,
            endpoint: Secret::new(format!(
                "{}/bot{}/",
                api_url.trim_end_matches('/'),
                token.expose()
            )),
        })
    }

    /// Calls `method` with `params` (a JSON object) and returns its `result`.
    pub async fn call<T: DeserializeOwned>(
        &self,
        method: &str,
        params: &Value,
    ) -> Result<T, ApiError> {
        let url = format!("{}{method}", self.endpoint.expose());
        let response = self
            .http
            .post(url)
            .json(params)
            .send()
            .await
            .map_err(|e| ApiError::Network(e.without_url().to_string()))?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|e| ApiError::Network(e.without_url().to_string()))?;
        let envelope: Envelope = serde_json::from_slice(&body).map_err(|_| {
            ApiError::Network(format!(
                "HTTP {status} with a body that is not the Bot API's"
            ))
        })?;
        if !envelope.ok {
            return Err(ApiError::Telegram {
                code: envelope.error_code.unwrap_or(status.as_u16() as i64),
                description: envelope.description.unwrap_or_default(),
                retry_after: envelope.parameters.and_then(|p| p.retry_after),
            });
        }
        serde_json::from_value(envelope.result.unwrap_or(Value::Null))
            .map_err(|e| ApiError::Network(format!("unexpected answer to {method}: {e}")))
    }

    pub async fn get_me(&self) -> Result<User, ApiError> {
        self.call("getMe", &json!({})).await
    }

    /// The updates from `offset` on (which confirms those before it), waiting up to
    /// `timeout` seconds for one.
    pub async fn get_updates(
        &self,
        offset: Option<i64>,
        timeout: u64,
    ) -> Result<Vec<Value>, ApiError> {
        let mut params = json!({
            "timeout": timeout,
            "allowed_updates": ["message", "callback_query"],
        });
        if let Some(o) = offset {
            params["offset"] = json!(o);
        }
        self.call("getUpdates", &params).await
    }

    pub async fn get_chat(&self, chat_id: i64) -> Result<Chat, ApiError> {
        self.call("getChat", &json!({ "chat_id": chat_id })).await
    }

    pub async fn get_chat_member(
        &self,
        chat_id: i64,
        user_id: i64,
    ) -> Result<ChatMember, ApiError> {
        self.call(
            "getChatMember",
            &json!({ "chat_id": chat_id, "user_id": user_id }),
        )
        .await
    }

    pub async fn create_forum_topic(
        &self,
        chat_id: i64,
        name: &str,
    ) -> Result<ForumTopic, ApiError> {
        self.call(
            "createForumTopic",
            &json!({ "chat_id": chat_id, "name": name }),
        )
        .await
    }

    pub async fn answer_callback_query(
        &self,
        id: &str,
        text: &str,
        alert: bool,
    ) -> Result<bool, ApiError> {
        self.call(
            "answerCallbackQuery",
            &json!({ "callback_query_id": id, "text": text, "show_alert": alert }),
        )
        .await
    }
}
