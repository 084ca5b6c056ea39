//! The gateway's REST API as the terminal client uses it.

use serde_json::{Value, json};

#[derive(Debug)]
pub struct ApiError {
    /// 0 when the request never got an answer (connection refused, timeout).
    pub status: u16,
    pub message: String,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.status == 0 {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{} ({})", self.message, self.status)
        }
    }
}

impl std::error::Error for ApiError {}

impl From<reqwest::Error> for ApiError {
    fn from(e: reqwest::Error) -> Self {
        Self {
            status: 0,
            message: format!("cannot reach the gateway: {e}"),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chat {
    pub id: String,
    pub title: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub role: String,
    pub content: String,
}

#[derive(Clone)]
pub struct Api {
    pub http: reqwest::Client,
    pub base_url: String,
    pub token: Option<String>,
}

impl Api {
    pub fn new(base_url: &str, token: Option<String>) -> Self {
        Self {
            http: reqwest::Client::new(),
            base_url: base_url.trim_end_matches('/').to_string(),
            token,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    fn auth(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.token {
            Some(t) => request.bearer_auth(t),
            None => request,
        }
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Result<Value, ApiError> {
        let response = self.auth(request).send().await?;
        let status = response.status().as_u16();
        let text = response.text().await?;
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if (200..300).contains(&status) {
            return Ok(body);
        }
        // problem+json: `detail` says what went wrong; fall back to the title or the raw body.
        let message = body["detail"]
            .as_str()
            .or(body["title"].as_str())
            .map(str::to_string)
            .unwrap_or_else(|| text.chars().take(300).collect());
        Err(ApiError { status, message })
    }

    pub async fn auth_config(&self) -> Result<Value, ApiError> {
        self.send(self.http.get(self.url("/v1/auth/config"))).await
    }

    pub async fn list_chats(&self) -> Result<Vec<Chat>, ApiError> {
        let page = self.send(self.http.get(self.url("/v1/chats"))).await?;
        Ok(items(&page)
            .map(|c| Chat {
                id: str_of(&c["id"]),
                title: str_of(&c["title"]),
            })
            .collect())
    }

    pub async fn create_chat(&self, title: &str) -> Result<Chat, ApiError> {
        let chat = self
            .send(
                self.http
                    .post(self.url("/v1/chats"))
                    .json(&json!({ "title": title })),
            )
            .await?;
        Ok(Chat {
            id: str_of(&chat["id"]),
            title: str_of(&chat["title"]),
        })
    }

    pub async fn list_messages(&self, chat_id: &str) -> Result<Vec<Message>, ApiError> {
        let page = self
            .send(
                self.http
                    .get(self.url(&format!("/v1/chats/{chat_id}/messages"))),
            )
            .await?;
        Ok(items(&page)
            .map(|m| Message {
                role: str_of(&m["role"]),
                content: str_of(&m["content"]),
            })
            .collect())
    }

    /// The labels of the models the caller may use.
    pub async fn list_models(&self) -> Result<Vec<String>, ApiError> {
        let page = self.send(self.http.get(self.url("/v1/models"))).await?;
        Ok(items(&page).map(|m| str_of(&m["label"])).collect())
    }

    /// Starts a run; returns its id.
    pub async fn start_run(
        &self,
        chat_id: &str,
        message: &str,
        model: &str,
    ) -> Result<String, ApiError> {
        let run = self
            .send(
                self.http
                    .post(self.url(&format!("/v1/chats/{chat_id}/runs")))
                    .json(&json!({ "message": message, "model": model })),
            )
            .await?;
        Ok(str_of(&run["run_id"]))
    }

    pub async fn cancel_run(&self, run_id: &str) -> Result<(), ApiError> {
        self.send(
            self.http
                .post(self.url(&format!("/v1/runs/{run_id}/cancel"))),
        )
        .await
        .map(|_| ())
    }

    pub async fn decide_approval(
        &self,
        run_id: &str,
        tool_call_id: &str,
        approve: bool,
    ) -> Result<(), ApiError> {
        self.send(
            self.http
                .post(self.url(&format!("/v1/runs/{run_id}/approvals/{tool_call_id}")))
                .json(&json!({ "approve": approve })),
        )
        .await
        .map(|_| ())
    }

    pub fn events_url(&self, run_id: &str) -> String {
        self.url(&format!("/v1/runs/{run_id}/events"))
    }
}

fn items(page: &Value) -> impl Iterator<Item = &Value> {
    page["items"].as_array().into_iter().flatten()
}

fn str_of(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_string()
}
