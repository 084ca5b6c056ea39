//! Deployment parity, Compose (issue 20 item 2): `deploy/compose.yaml` started as processes with
//! exactly the environment the file gives each service (see `tests_e2e::compose`), then used as
//! its users would — through the dev IdP's tokens: a chat turn, a durable run, an uploaded
//! document recalled, and the maintenance schedules the worker registers, one triggered.

use std::time::Duration;

use serde_json::{Value, json};
use tests_e2e::compose::ComposeDeployment;

type R = Result<(), Box<dyn std::error::Error + Send + Sync>>;

struct User {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl User {
    async fn call(
        &self,
        req: reqwest::RequestBuilder,
    ) -> Result<(u16, Value), tests_e2e::BoxError> {
        let r = req.bearer_auth(&self.token).send().await?;
        let status = r.status().as_u16();
        let text = r.text().await?;
        Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
    }

    async fn post(&self, path: &str, body: Value) -> Result<(u16, Value), tests_e2e::BoxError> {
        self.call(self.http.post(format!("{}{path}", self.base)).json(&body))
            .await
    }

    async fn get(&self, path: &str) -> Result<(u16, Value), tests_e2e::BoxError> {
        self.call(self.http.get(format!("{}{path}", self.base)))
            .await
    }

    /// A run of `message` in `chat`, read to its end over SSE: the last event and the text.
    async fn run(
        &self,
        chat: &str,
        message: &str,
        durable: bool,
    ) -> Result<(String, String), tests_e2e::BoxError> {
        let (status, run) = self
            .post(
                &format!("/v1/chats/{chat}/runs"),
                json!({ "message": message, "durable": durable }),
            )
            .await?;
        if status != 202 {
            return Err(format!("run: {status} {run}").into());
        }
        let run_id = run["run_id"].as_str().unwrap_or_default();
        let events = self
            .http
            .get(format!("{}/v1/runs/{run_id}/events", self.base))
            .bearer_auth(&self.token)
            .send()
            .await?;
        let events =
            tokio::time::timeout(Duration::from_secs(90), tests_e2e::read_sse(events, None))
                .await??;
        let last = events
            .last()
            .map(|e| e.event_type().to_string())
            .unwrap_or_default();
        Ok((last, tests_e2e::chaos::visible_text(&events)))
    }
}

#[tokio::test]
async fn the_compose_file_runs_chat_durable_runs_documents_and_maintenance() -> R {
    let logs = std::env::temp_dir().join(format!(
        "pa-compose-parity-{}",
        uuid::Uuid::new_v4().simple()
    ));
    let deployment = ComposeDeployment::start(&logs).await?;
    let http = reqwest::Client::new();
    // The gateway answers ready, as its healthcheck already said.
    let ready = http
        .get(format!("{}/readyz", deployment.gateway_url))
        .send()
        .await?;
    assert_eq!(ready.status(), 200);
    // Compose's choices reached the processes: OIDC from the IdP, the application role.
    let gateway_env = &deployment.environments["gateway"];
    assert_eq!(gateway_env["PA_AUTH_MODE"], "oidc");
    assert_eq!(gateway_env["PA_DB_APP_USER"], "pa_app");

    let user = |token: String| User {
        http: http.clone(),
        base: deployment.gateway_url.clone(),
        token,
    };
    let alice = user(deployment.idp.token(&http, "alice").await?);
    // Without a token: refused.
    let anonymous = http
        .get(format!("{}/v1/chats", deployment.gateway_url))
        .send()
        .await?;
    assert_eq!(anonymous.status(), 401);

    let (status, chat) = alice
        .post("/v1/chats", json!({ "title": "compose" }))
        .await?;
    assert_eq!(status, 201, "{chat}");
    let chat = chat["id"].as_str().unwrap_or_default().to_string();
    let (last, text) = alice.run(&chat, "hello from compose", false).await?;
    assert_eq!(last, "RUN_FINISHED", "inline: {}", deployment.log("runs"));
    assert!(!text.is_empty());
    let (last, text) = alice.run(&chat, "a durable hello", true).await?;
    assert_eq!(
        last,
        "RUN_FINISHED",
        "durable: {}\n{}",
        deployment.log("runs"),
        deployment.log("worker")
    );
    assert!(!text.is_empty());

    // A document, chunked, embedded and found again.
    let upload = http
        .post(format!(
            "{}/v1/chats/{chat}/files?filename=notes.md",
            deployment.gateway_url
        ))
        .bearer_auth(&alice.token)
        .header("content-type", "text/markdown")
        .body("# Notes\n\nThe spare key of the garden shed hangs behind the blue watering can.\n")
        .send()
        .await?;
    assert_eq!(upload.status(), 201, "{}", upload.text().await?);
    let (status, found) = alice
        .get(&format!(
            "/v1/me/memories?q=where%20is%20the%20spare%20key&chat_id={chat}&limit=3"
        ))
        .await?;
    assert_eq!(status, 200, "{found}");
    assert!(
        found["items"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|m| m["text"].as_str().unwrap_or("").contains("watering can")),
        "{found}"
    );

    // The worker registered the maintenance schedules; the platform administrator runs one.
    let pat = user(deployment.idp.token(&http, "pat").await?);
    let (status, listed) = pat.get("/v1/admin/schedules").await?;
    assert_eq!(status, 200, "{listed}");
    let items = listed["items"].as_array().cloned().unwrap_or_default();
    assert!(items.len() >= 3, "{listed}");
    let trim = items
        .iter()
        .find(|s| s["task"] == "trim_run_streams")
        .ok_or("no trim_run_streams schedule")?;
    let id = trim["id"].as_str().unwrap_or_default().to_string();
    let (status, body) = pat
        .post(&format!("/v1/admin/schedules/{id}/trigger"), json!({}))
        .await?;
    assert_eq!(status, 202, "{body}");
    let mut ran = 0;
    for _ in 0..150 {
        let (_, listed) = pat.get("/v1/admin/schedules").await?;
        ran = listed["items"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|s| s["id"] == id.as_str())
            .and_then(|s| s["runs"].as_u64())
            .unwrap_or(0);
        if ran >= 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        ran >= 1,
        "the triggered schedule never ran: {}",
        deployment.log("worker")
    );
    drop(deployment);
    let _ = std::fs::remove_dir_all(&logs);
    Ok(())
}
