//! What the deployment parity tests share (issue 20 item 2): the processes a deployment file
//! describes, each started with exactly the environment the file gives it, and the walk its
//! users take through a started deployment.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::{AsUser, BoxError, DevIdp};

/// The services of one deployment as processes of `pa-e2e-service <binary>`, by name, each
/// logging to `<log_dir>/<name>.log`; killed when dropped.
pub struct Processes {
    log_dir: PathBuf,
    children: Vec<(String, Child)>,
    /// How often a name was started (a restart counts).
    starts: BTreeMap<String, u32>,
}

impl Processes {
    pub fn new(log_dir: &Path) -> Result<Processes, BoxError> {
        std::fs::create_dir_all(log_dir)?;
        Ok(Processes {
            log_dir: log_dir.to_path_buf(),
            children: Vec::new(),
            starts: BTreeMap::new(),
        })
    }

    fn log_path(&self, name: &str) -> PathBuf {
        self.log_dir.join(format!("{name}.log"))
    }

    /// The tail of a process' log.
    pub fn log(&self, name: &str) -> String {
        let text = std::fs::read_to_string(self.log_path(name)).unwrap_or_default();
        let start = text.len().saturating_sub(3000);
        let start = (start..text.len())
            .find(|i| text.is_char_boundary(*i))
            .unwrap_or(text.len());
        text[start..].to_string()
    }

    /// Starts `binary` as `name` with exactly `env`: nothing is inherited from the test. A
    /// name started before is replaced (its old process must have exited).
    pub fn spawn(
        &mut self,
        name: &str,
        binary: &str,
        env: &BTreeMap<String, String>,
    ) -> Result<(), BoxError> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(name))?;
        // With a soft limit of 1,024 open files, as a login shell, systemd and containerd's
        // recent releases start processes (under a far higher hard limit): a service must not
        // stay there (it raises its own, `pa_kit::process::raise_open_files_limit`).
        let child = Command::new("/bin/sh")
            .arg("-c")
            .arg(r#"ulimit -Sn 1024 2>/dev/null; exec "$0" "$@""#)
            .arg(crate::chaos::service_binary()?)
            .arg(binary)
            .env_clear()
            .envs(env)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        self.children.retain(|(n, _)| n != name);
        self.children.push((name.to_string(), child));
        *self.starts.entry(name.to_string()).or_default() += 1;
        Ok(())
    }

    /// The soft and hard limits of open files of every process still running, by name, as the
    /// kernel reports them (`/proc/<pid>/limits`).
    pub fn open_files_limits(&mut self) -> Result<Vec<(String, u64, u64)>, BoxError> {
        let mut limits = Vec::new();
        for (name, child) in &mut self.children {
            if child.try_wait()?.is_some() {
                continue;
            }
            let text = std::fs::read_to_string(format!("/proc/{}/limits", child.id()))?;
            let line = text
                .lines()
                .find(|l| l.starts_with("Max open files"))
                .ok_or("no open files line in /proc/<pid>/limits")?;
            let numbers: Vec<u64> = line
                .split_whitespace()
                .filter_map(|w| w.parse().ok())
                .collect();
            let [soft, hard] = numbers[..] else {
                return Err(format!("cannot read {line:?}").into());
            };
            limits.push((name.clone(), soft, hard));
        }
        Ok(limits)
    }

    /// How many times `name` was started.
    pub fn starts(&self, name: &str) -> u32 {
        self.starts.get(name).copied().unwrap_or(0)
    }

    /// The exit status of `name`, once it has exited.
    pub fn exited(&mut self, name: &str) -> Result<Option<std::process::ExitStatus>, BoxError> {
        let child = self
            .children
            .iter_mut()
            .find(|(n, _)| n == name)
            .map(|(_, c)| c)
            .ok_or_else(|| format!("{name} was never started"))?;
        Ok(child.try_wait()?)
    }

    /// Waits until `name` exits with status 0.
    pub async fn wait_exit_ok(&mut self, name: &str, within: Duration) -> Result<(), BoxError> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.exited(name)? {
                if status.success() {
                    return Ok(());
                }
                return Err(format!("{name} failed ({status}): {}", self.log(name)).into());
            }
            if Instant::now() > deadline {
                return Err(
                    format!("{name} did not finish in {within:?}: {}", self.log(name)).into(),
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until `probe` passes while `name` runs; its exit is an error.
    pub async fn wait_healthy(
        &mut self,
        name: &str,
        probe: &pa_ops::Probe,
        within: Duration,
    ) -> Result<(), BoxError> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.exited(name)? {
                return Err(format!("{name} exited ({status}): {}", self.log(name)).into());
            }
            if probe.check().await {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{name} not healthy ({probe:?}) in {within:?}: {}",
                    self.log(name)
                )
                .into());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for Processes {
    fn drop(&mut self) {
        for (_, child) in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A path of an image of `deploy/Dockerfile` in the test's checkout: the web app and the
/// embedding model.
pub fn local_image_path(value: &str) -> Result<String, BoxError> {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    match value {
        "/app/web/dist" => {
            let dist = repo.join("web/dist");
            Ok(if dist.join("index.html").exists() {
                dist.display().to_string()
            } else {
                "none".into()
            })
        }
        v if v.starts_with("/app/models/") => std::env::var("PA_EMBED_MODEL_DIR")
            .map_err(|_| "PA_EMBED_MODEL_DIR is unset (eval \"$(scripts/stack.sh env)\")".into()),
        v if v.starts_with('/') => Err(format!("no local equivalent of the image path {v}").into()),
        v => Ok(v.to_string()),
    }
}

impl AsUser {
    /// A user of the deployment at `base` with an IdP's access token.
    pub fn at(http: &reqwest::Client, base: &str, token: String) -> AsUser {
        AsUser {
            http: http.clone(),
            base: base.to_string(),
            token,
        }
    }

    /// A run of `message` in `chat`, read to its end over SSE (90 s at most): the last event's
    /// type and the visible text.
    pub async fn run_to_end(
        &self,
        chat: &str,
        message: &str,
        durable: bool,
    ) -> Result<(String, String), BoxError> {
        let body = json!({ "message": message, "durable": durable });
        let (_, events) = self
            .start_and_read(chat, &body, Duration::from_secs(90))
            .await?;
        let last = events
            .last()
            .map(|e| e.event_type().to_string())
            .unwrap_or_default();
        Ok((last, crate::chaos::visible_text(&events)))
    }
}

/// The walk of a started deployment's users, through the dev IdP's tokens: refused without a
/// token; alice's chat turn and durable run; a document uploaded, chunked, embedded and found by
/// search; the maintenance schedules the worker registered, listed and one triggered by the
/// platform administrator (pat) until it has run. `log` gives a service's log tail for failures
/// (by the names `runs` and `worker`).
pub async fn walk_through(
    gateway_url: &str,
    idp: &DevIdp,
    log: &dyn Fn(&str) -> String,
) -> Result<(), BoxError> {
    let http = reqwest::Client::new();
    let ready = http.get(format!("{gateway_url}/readyz")).send().await?;
    if ready.status() != 200 {
        return Err(format!("/readyz: {}", ready.text().await?).into());
    }
    let anonymous = http.get(format!("{gateway_url}/v1/chats")).send().await?;
    if anonymous.status() != 401 {
        return Err(format!("no token: {} instead of 401", anonymous.status()).into());
    }
    let alice = AsUser::at(&http, gateway_url, idp.token(&http, "alice").await?);
    let (status, chat) = alice
        .post("/v1/chats", &json!({ "title": "deployment" }))
        .await?;
    if status != 201 {
        return Err(format!("create chat: {status} {chat}").into());
    }
    let chat = chat["id"].as_str().unwrap_or_default().to_string();
    for durable in [false, true] {
        let (last, text) = alice
            .run_to_end(&chat, "hello from the deployment", durable)
            .await?;
        if last != "RUN_FINISHED" || text.is_empty() {
            return Err(format!(
                "durable={durable}: ended {last:?} with {text:?}\n{}\n{}",
                log("runs"),
                log("worker")
            )
            .into());
        }
    }

    // A document, chunked, embedded and found again.
    let upload = http
        .post(format!(
            "{gateway_url}/v1/chats/{chat}/files?filename=notes.md"
        ))
        .bearer_auth(&alice.token)
        .header("content-type", "text/markdown")
        .body("# Notes\n\nThe spare key of the garden shed hangs behind the blue watering can.\n")
        .send()
        .await?;
    if upload.status() != 201 {
        return Err(format!("upload: {}", upload.text().await?).into());
    }
    let (status, found) = alice
        .get(&format!(
            "/v1/me/memories?q=where%20is%20the%20spare%20key&chat_id={chat}&limit=3"
        ))
        .await?;
    let recalled = found["items"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|m| m["text"].as_str().unwrap_or("").contains("watering can"));
    if status != 200 || !recalled {
        return Err(format!("search: {status} {found}").into());
    }

    // The worker registered the maintenance schedules; the platform administrator runs one.
    let pat = AsUser::at(&http, gateway_url, idp.token(&http, "pat").await?);
    let (status, listed) = pat.get("/v1/admin/schedules").await?;
    let items = listed["items"].as_array().cloned().unwrap_or_default();
    if status != 200 || items.len() < 3 {
        return Err(format!("schedules: {status} {listed}").into());
    }
    let id = items
        .iter()
        .find(|s| s["task"] == "trim_run_streams")
        .and_then(|s| s["id"].as_str())
        .ok_or_else(|| format!("no trim_run_streams schedule: {listed}"))?
        .to_string();
    let (status, body) = pat
        .post(&format!("/v1/admin/schedules/{id}/trigger"), &json!({}))
        .await?;
    if status != 202 {
        return Err(format!("trigger: {status} {body}").into());
    }
    for _ in 0..150 {
        let (_, listed) = pat.get("/v1/admin/schedules").await?;
        let ran = listed["items"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|s| s["id"] == id.as_str())
            .and_then(|s| s["runs"].as_u64())
            .unwrap_or(0);
        if ran >= 1 {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(format!("the triggered schedule never ran: {}", log("worker")).into())
}
