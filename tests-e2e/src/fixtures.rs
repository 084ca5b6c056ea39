//! Real peers a test starts beside the mesh: the dev IdP, a user signed in through it, a
//! svc-runs replica of its own, a proxy that cuts connections on demand.

use std::time::Duration;

use pa_kit::Shutdown;
use serde_json::Value;
use tokio::net::TcpListener;

use crate::{BoxError, Mesh, SseEvent, read_sse};

/// The real dev OpenID Provider (deploy/dev-idp, npm oidc-provider) on a free port, with its
/// realm's users (alice and bob of acme, carol of globex, pat the platform administrator).
pub struct DevIdp {
    pub issuer: String,
    _process: tokio::process::Child,
}

impl DevIdp {
    pub async fn start() -> Result<DevIdp, BoxError> {
        use tokio::io::AsyncBufReadExt;
        let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/dev-idp");
        if !dir.join("node_modules/oidc-provider").exists() {
            return Err(
                "deploy/dev-idp has no node_modules: run `make test` (it installs them)".into(),
            );
        }
        let mut process = tokio::process::Command::new("node")
            .arg("server.mjs")
            .current_dir(&dir)
            .env("PA_IDP_PORT", "0")
            .env("PA_IDP_JWKS_FILE", "memory")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        let stdout = process.stdout.take().ok_or("no stdout")?;
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        // As long as any store of the tests' may take to start: on a loaded machine (CI runs
        // tests beside each other, and the helm test starts Postgres, Temporal and Redis
        // together with it) node loading oidc-provider once took more than 20 s.
        let issuer = tokio::time::timeout(crate::stores::READY_DEADLINE, async {
            while let Some(line) = lines.next_line().await? {
                if line.contains("dev IdP listening")
                    && let Some(issuer) = line
                        .split_whitespace()
                        .find_map(|w| w.strip_prefix("issuer="))
                {
                    return Ok::<_, std::io::Error>(issuer.to_string());
                }
            }
            Err(std::io::Error::other("the IdP exited"))
        })
        .await
        .map_err(|_| {
            format!(
                "the dev IdP did not say it listens within {:?}",
                crate::stores::READY_DEADLINE
            )
        })??;
        // Keep draining its log so it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(DevIdp {
            issuer,
            _process: process,
        })
    }

    /// The gateway's OIDC settings for this provider (RS256, audience `pa-api`).
    pub fn oidc_config(&self) -> Result<svc_gateway::oidc::OidcConfig, BoxError> {
        Ok(svc_gateway::oidc::OidcConfig {
            issuer: self.issuer.clone(),
            audience: "pa-api".into(),
            client_id: "pa-web".into(),
            tenant_claim: "tenant".into(),
            roles_claim: "roles".into(),
            platform_admin_role: "platform-admin".into(),
            algorithms: svc_gateway::oidc::parse_algorithms("RS256")?,
            leeway_secs: 30,
            jwks_min_refetch: Duration::from_secs(10),
            jwks_max_age: Duration::from_secs(600),
        })
    }

    /// An access token for `user` (password grant of the `pa-cli` client).
    pub async fn token(&self, http: &reqwest::Client, user: &str) -> Result<String, BoxError> {
        let body =
            format!("grant_type=password&username={user}&password={user}-password&scope=openid");
        let r = http
            .post(format!("{}/token", self.issuer))
            .basic_auth("pa-cli", Some("pa-cli-secret"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await?;
        let status = r.status();
        let answer: Value = r.json().await?;
        let token = answer["access_token"]
            .as_str()
            .ok_or_else(|| format!("{status}: {answer}"))?;
        Ok(token.to_string())
    }
}

/// An HTTP client of the mesh's gateway acting as one signed-in user (a bearer token).
#[derive(Clone)]
pub struct AsUser {
    pub http: reqwest::Client,
    pub base: String,
    pub token: String,
}

impl AsUser {
    pub fn new(mesh: &Mesh, token: String) -> AsUser {
        AsUser {
            http: mesh.http.clone(),
            base: mesh.gateway_url.clone(),
            token,
        }
    }

    /// Sends `method path` with an optional JSON body; returns the status and the JSON answer
    /// (`Null` when the body is not JSON).
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value), BoxError> {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(body);
        }
        let r = request.send().await?;
        let status = r.status().as_u16();
        let text = r.text().await?;
        Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
    }

    pub async fn get(&self, path: &str) -> Result<(u16, Value), BoxError> {
        self.call(reqwest::Method::GET, path, None).await
    }
    pub async fn post(&self, path: &str, body: &Value) -> Result<(u16, Value), BoxError> {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }
    pub async fn put(&self, path: &str, body: &Value) -> Result<(u16, Value), BoxError> {
        self.call(reqwest::Method::PUT, path, Some(body)).await
    }
    pub async fn patch(&self, path: &str, body: &Value) -> Result<(u16, Value), BoxError> {
        self.call(reqwest::Method::PATCH, path, Some(body)).await
    }

    /// Creates a chat, runs `body` in it and reads the run's events to the end (30 s at most).
    pub async fn run_in_new_chat(&self, body: &Value) -> Result<(Value, Vec<SseEvent>), BoxError> {
        let (status, chat) = self.post("/v1/chats", &serde_json::json!({})).await?;
        if status != 201 {
            return Err(format!("create chat: {status} {chat}").into());
        }
        let chat_id = chat["id"].as_str().unwrap_or_default().to_string();
        let (run_id, events) = self
            .start_and_read(&chat_id, body, Duration::from_secs(30))
            .await?;
        let (_, run) = self.get(&format!("/v1/runs/{run_id}")).await?;
        Ok((run, events))
    }

    /// Starts a run of `body` in `chat_id` and reads its events to the end (`within` at most):
    /// the run id and the events.
    pub async fn start_and_read(
        &self,
        chat_id: &str,
        body: &Value,
        within: Duration,
    ) -> Result<(String, Vec<SseEvent>), BoxError> {
        let (status, run) = self
            .post(&format!("/v1/chats/{chat_id}/runs"), body)
            .await?;
        if status != 202 {
            return Err(format!("start run: {status} {run}").into());
        }
        let run_id = run["run_id"].as_str().unwrap_or_default().to_string();
        let response = self
            .http
            .get(format!("{}/v1/runs/{run_id}/events", self.base))
            .bearer_auth(&self.token)
            .send()
            .await?;
        let events = tokio::time::timeout(within, read_sse(response, None)).await??;
        Ok((run_id, events))
    }
}

/// One more svc-runs replica on a runtime of its own, which [`RunsReplica::kill`] drops at once:
/// its tasks die where they are, without draining — as a `kill -9` of the process would leave
/// its runs.
pub struct RunsReplica {
    runtime: Option<tokio::runtime::Runtime>,
    pub url: String,
}

impl RunsReplica {
    /// Starts svc-runs with `config` (e.g. [`Mesh::runs_config`] with another database URL)
    /// and waits until it answers.
    pub async fn start(config: svc_runs::Config) -> Result<RunsReplica, BoxError> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let url = format!("http://{}", listener.local_addr()?);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        runtime.spawn(async move {
            let result = match TcpListener::from_std(listener) {
                Ok(listener) => svc_runs::run(config, listener, Shutdown::new())
                    .await
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            if let Err(err) = result {
                tracing::error!(%err, "svc-runs replica stopped");
            }
        });
        let replica = RunsReplica {
            runtime: Some(runtime),
            url,
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            // Any answer (this one is refused: no identity) means it serves.
            let mut runs = pa_proto::v1::run_service_client::RunServiceClient::new(
                tonic::transport::Endpoint::from_shared(replica.url.clone())?.connect_lazy(),
            );
            let asked = tokio::time::timeout(
                Duration::from_secs(1),
                runs.get_run(pa_proto::v1::GetRunRequest::default()),
            )
            .await;
            if let Ok(answer) = asked
                && !matches!(&answer, Err(s) if s.code() == tonic::Code::Unavailable)
            {
                return Ok(replica);
            }
            if tokio::time::Instant::now() > deadline {
                return Err("the svc-runs replica did not start".into());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Kills the replica: its runtime goes at once, every task of it with it.
    pub fn kill(mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl Drop for RunsReplica {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}
