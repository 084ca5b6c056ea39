//! The chaos harness (docs/src/adr/0180-2026-12-03-chaos-suite.md): the whole mesh as processes of their own
//! (`pa-e2e-service <svc>`), over a Postgres, a Redis and a Temporal dev server that the harness
//! starts itself on its own ports, so any one of the nine can be killed with SIGKILL mid-stream
//! and started again on the same port — while clients follow their runs' SSE streams and resume
//! with `Last-Event-ID` after every break.
//!
//! - [`ChaosMesh::start`] starts the stores and the six services; [`ChaosMesh::kill`] and
//!   [`ChaosMesh::restart`] act on a [`Target`].
//! - [`ChaosMesh::round`] is one row of the chaos table: `runs` inline and `runs` durable runs
//!   in flight, the target killed once every run has streamed some text, restarted, every run
//!   followed to its end, then the checks of issue 24 ([`RoundReport`]).
//!
//! Used by `tests/chaos.rs` (in `make test`) and by `pa-bench chaos` (which prints the table).

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::time::Instant;

use crate::{BoxError, SseEvent, json_answer, port_below_ephemeral_range, read_sse_into};
use crate::{OwnPostgres, OwnRedis, OwnTemporal};

/// What a round kills.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Target {
    Gateway,
    Runs,
    Models,
    Tools,
    Memory,
    Worker,
    Postgres,
    Temporal,
    Redis,
}

impl Target {
    pub const ALL: [Target; 9] = [
        Target::Gateway,
        Target::Runs,
        Target::Models,
        Target::Tools,
        Target::Memory,
        Target::Worker,
        Target::Postgres,
        Target::Temporal,
        Target::Redis,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Target::Gateway => "svc-gateway",
            Target::Runs => "svc-runs",
            Target::Models => "svc-models",
            Target::Tools => "svc-tools",
            Target::Memory => "svc-memory",
            Target::Worker => "svc-worker",
            Target::Postgres => "postgres",
            Target::Temporal => "temporal",
            Target::Redis => "redis",
        }
    }

    pub fn parse(name: &str) -> Option<Target> {
        Target::ALL.into_iter().find(|t| t.name() == name)
    }

    /// One of the six services (not a store).
    pub fn is_service(self) -> bool {
        self.service().is_some()
    }

    fn service(self) -> Option<&'static str> {
        match self {
            Target::Postgres | Target::Temporal | Target::Redis => None,
            other => Some(other.name()),
        }
    }
}

/// The six services, in start order (backends first).
const SERVICES: [&str; 6] = [
    "svc-models",
    "svc-tools",
    "svc-memory",
    "svc-runs",
    "svc-worker",
    "svc-gateway",
];

/// How the services are started.
#[derive(Clone, Debug)]
pub struct ChaosSettings {
    /// The `pa-e2e-service` binary.
    pub binary: PathBuf,
    /// The offline model's delay between tokens.
    pub token_delay: Duration,
    /// Extra environment for every service (e.g. shorter leases).
    pub env: Vec<(String, String)>,
    /// Where the processes' logs go (one file per service, appended across restarts).
    pub log_dir: PathBuf,
    /// Processes per service (each `PA_*_URL` lists them all; ADR 0191). With more than one,
    /// [`ChaosMesh::kill`] and [`ChaosMesh::restart`] act on replica 0 and clients fail over to
    /// another gateway when theirs dies.
    pub replicas: usize,
}

/// The mesh as processes, over stores of its own.
pub struct ChaosMesh {
    pub postgres: OwnPostgres,
    pub redis: OwnRedis,
    pub temporal: OwnTemporal,
    settings: ChaosSettings,
    env: Vec<(String, String)>,
    children: BTreeMap<(&'static str, usize), Child>,
    addrs: BTreeMap<&'static str, Vec<String>>,
    /// The gateway clients use now (replica 0 until it is killed with replicas to spare).
    pub gateway_url: String,
    /// Every gateway replica, in order.
    pub gateway_urls: Vec<String>,
    pub http: reqwest::Client,
}

/// A mesh dropped without [`ChaosMesh::stop`] (a failed start, a failed assertion) takes its
/// service processes with it, rather than leaving them to run on as orphans.
impl Drop for ChaosMesh {
    fn drop(&mut self) {
        for child in self.children.values_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn free_addr() -> Result<String, BoxError> {
    Ok(format!("127.0.0.1:{}", port_below_ephemeral_range()?))
}

impl ChaosMesh {
    pub async fn start(settings: ChaosSettings) -> Result<ChaosMesh, BoxError> {
        std::fs::create_dir_all(&settings.log_dir)?;
        let (postgres, redis, temporal) = tokio::try_join!(
            OwnPostgres::start(),
            OwnRedis::start(),
            OwnTemporal::start(),
        )?;
        let database_url = postgres.url();
        let replicas = settings.replicas.max(1);
        let mut addrs = BTreeMap::new();
        for svc in SERVICES {
            addrs.insert(
                svc,
                (0..replicas)
                    .map(|_| free_addr())
                    .collect::<Result<Vec<_>, _>>()?,
            );
        }
        let urls = |svc: &str| {
            addrs[svc]
                .iter()
                .map(|a| format!("http://{a}"))
                .collect::<Vec<_>>()
        };
        let url = |svc: &str| urls(svc).join(",");
        let mut env: Vec<(String, String)> = [
            ("DATABASE_URL", database_url.clone()),
            ("REDIS_URL", redis.url()),
            ("TEMPORAL_ADDRESS", temporal.address()),
            ("PA_TEMPORAL_NAMESPACE", "default".into()),
            (
                "PA_TEMPORAL_TASK_QUEUE",
                format!("chaos-{}", uuid::Uuid::new_v4().simple()),
            ),
            (
                "PA_INTERNAL_SECRET",
                format!("chaos-{}", uuid::Uuid::new_v4()),
            ),
            ("PA_AUTH_MODE", "dev".into()),
            ("PA_GATEWAY_GRPC_ADDR", "none".into()),
            ("PA_METRICS_ADDR", "none".into()),
            ("PA_WEB_DIR", "none".into()),
            ("PA_RUNS_URL", url("svc-runs")),
            ("PA_MODELS_URL", url("svc-models")),
            ("PA_TOOLS_URL", url("svc-tools")),
            ("PA_MEMORY_URL", url("svc-memory")),
            ("PA_WORKER_URL", url("svc-worker")),
            ("PA_RATE_USER_PER_MIN", "0".into()),
            ("PA_RATE_TENANT_PER_MIN", "0".into()),
            ("PA_SSE_KEEPALIVE_MS", "1000".into()),
            (
                "PA_OFFLINE_TOKEN_DELAY_MS",
                settings.token_delay.as_millis().to_string(),
            ),
            // The schedules' first ticks would only add load to a short test.
            ("PA_WORKER_SCHEDULES", "off".into()),
            (
                "RUST_LOG",
                std::env::var("PA_CHAOS_RUST_LOG").unwrap_or_else(|_| "warn".into()),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        if let Ok(dir) = std::env::var("PA_EMBED_MODEL_DIR") {
            env.push(("PA_EMBED_MODEL_DIR".into(), dir));
        }
        env.extend(settings.env.iter().cloned());
        let gateway_urls = urls("svc-gateway");
        let gateway_url = gateway_urls[0].clone();
        let mut mesh = ChaosMesh {
            postgres,
            redis,
            temporal,
            settings,
            env,
            children: BTreeMap::new(),
            addrs,
            gateway_url,
            gateway_urls,
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(64)
                .connect_timeout(Duration::from_secs(2))
                .build()?,
        };
        for svc in SERVICES {
            for replica in 0..replicas {
                // Migrations run at start: one process at a time takes its schema.
                mesh.start_replica(svc, replica).await?;
            }
        }
        mesh.wait_ready(Duration::from_secs(60)).await?;
        Ok(mesh)
    }

    fn log_path(&self, svc: &str, replica: usize) -> PathBuf {
        match replica {
            0 => self.settings.log_dir.join(format!("{svc}.log")),
            n => self.settings.log_dir.join(format!("{svc}-{n}.log")),
        }
    }

    fn spawn(&mut self, svc: &'static str, replica: usize) -> Result<(), BoxError> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(svc, replica))?;
        // The variable each service listens on.
        let listen = match svc {
            "svc-gateway" => "PA_GATEWAY_ADDR",
            "svc-runs" => "PA_RUNS_ADDR",
            "svc-models" => "PA_MODELS_ADDR",
            "svc-tools" => "PA_TOOLS_ADDR",
            "svc-memory" => "PA_MEMORY_ADDR",
            _ => "PA_WORKER_ADDR",
        };
        let child = Command::new(&self.settings.binary)
            .arg(svc)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env(listen, &self.addrs[svc][replica])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", self.settings.binary.display()))?;
        self.children.insert((svc, replica), child);
        Ok(())
    }

    /// Spawns one replica and waits until it listens. A gateway replica whose port was taken
    /// meanwhile (by a process outside the test ports' claims) gets a fresh port: only the
    /// clients know a gateway's address, so it can change before the rounds start.
    async fn start_replica(&mut self, svc: &'static str, replica: usize) -> Result<(), BoxError> {
        let mut attempts = if svc == "svc-gateway" { 3 } else { 1 };
        loop {
            self.spawn(svc, replica)?;
            match self
                .wait_listening(svc, replica, Duration::from_secs(120))
                .await
            {
                Ok(()) => return Ok(()),
                Err(err) if attempts > 1 => {
                    attempts -= 1;
                    eprintln!("{svc} replica {replica} did not start ({err}); on a fresh port");
                    // One that never listened may still run: it goes before its replacement.
                    if let Some(mut stuck) = self.children.remove(&(svc, replica)) {
                        let _ = stuck.kill();
                        let _ = stuck.wait();
                    }
                    let addr = free_addr()?;
                    self.gateway_urls[replica] = format!("http://{addr}");
                    if replica == 0 {
                        self.gateway_url = self.gateway_urls[0].clone();
                    }
                    if let Some(addrs) = self.addrs.get_mut(svc) {
                        addrs[replica] = addr;
                    }
                }
                Err(err) => return Err(err),
            }
        }
    }

    async fn wait_listening(
        &mut self,
        svc: &'static str,
        replica: usize,
        within: Duration,
    ) -> Result<(), BoxError> {
        let deadline = Instant::now() + within;
        let log = self.log_path(svc, replica);
        loop {
            let answered = tokio::net::TcpStream::connect(&self.addrs[svc][replica])
                .await
                .is_ok();
            if answered {
                // Whoever answered may not be our child (a process outside the test ports'
                // claims that took the port): ours must still run once it had time to bind.
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            if let Some(child) = self.children.get_mut(&(svc, replica))
                && let Some(status) = child.try_wait()?
            {
                return Err(format!(
                    "{svc} exited during start-up ({status}); see {}",
                    log.display()
                )
                .into());
            }
            if answered {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("{svc} did not listen within {within:?}").into());
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Waits until the gateway's `/readyz` answers 200.
    pub async fn wait_ready(&self, within: Duration) -> Result<(), BoxError> {
        let deadline = Instant::now() + within;
        let mut last;
        loop {
            match self.http.get(self.url("/readyz")).send().await {
                Ok(r) if r.status().is_success() => return Ok(()),
                Ok(r) => last = format!("{} {}", r.status(), r.text().await.unwrap_or_default()),
                Err(e) => last = e.to_string(),
            }
            if Instant::now() > deadline {
                return Err(format!("mesh not ready within {within:?}: {last}").into());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.gateway_url)
    }

    /// SIGKILL, as an OOM killer or a lost node would (replica 0 of a service).
    pub async fn kill(&mut self, target: Target) -> Result<(), BoxError> {
        match target.service() {
            Some(svc) => {
                if let Some(mut child) = self.children.remove(&(svc, 0)) {
                    child.kill()?;
                    child.wait()?;
                }
                if svc == "svc-gateway" && self.gateway_urls.len() > 1 {
                    // Clients go to another gateway, as a load balancer in front would send them.
                    self.gateway_url = self.gateway_urls[1].clone();
                }
            }
            None => match target {
                Target::Postgres => self.postgres.kill()?,
                Target::Redis => self.redis.kill()?,
                _ => self.temporal.kill()?,
            },
        }
        Ok(())
    }

    /// SIGSTOP (`pause`) or SIGCONT of replica 0 of a service: a process that holds its
    /// connections open and answers nothing, as one stuck in a long GC-like stall or a frozen VM.
    pub fn signal_service(&self, target: Target, pause: bool) -> Result<(), BoxError> {
        let svc = target.service().ok_or("only a service can be paused")?;
        let child = self
            .children
            .get(&(svc, 0))
            .ok_or_else(|| format!("{svc} is not running"))?;
        let signal = if pause { "-STOP" } else { "-CONT" };
        let status = Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status()?;
        if !status.success() {
            return Err(format!("kill {signal} {svc}: {status}").into());
        }
        Ok(())
    }

    /// Starts `target` again on its port (a store on its data).
    pub async fn restart(&mut self, target: Target) -> Result<(), BoxError> {
        match target.service() {
            Some(svc) => {
                let svc = SERVICES
                    .into_iter()
                    .find(|s| *s == svc)
                    .ok_or("unknown service")?;
                self.spawn(svc, 0)?;
                self.wait_listening(svc, 0, Duration::from_secs(60)).await?;
                if svc == "svc-gateway" {
                    self.gateway_url = self.gateway_urls[0].clone();
                }
            }
            None => match target {
                Target::Postgres => self.postgres.restart().await?,
                Target::Redis => self.redis.restart().await?,
                _ => self.temporal.restart().await?,
            },
        }
        Ok(())
    }

    /// Stops the services (SIGTERM, then SIGKILL after 20 s) and the stores.
    pub async fn stop(mut self) -> Result<(), BoxError> {
        // Front to back: gateways first, so nothing new arrives at the services behind them.
        for svc in SERVICES.iter().rev() {
            for ((_, _), child) in self.children.iter().filter(|((s, _), _)| s == svc) {
                // SIGTERM (an orderly stop; std only sends SIGKILL) to our own child's pid.
                let _ = Command::new("kill")
                    .args(["-TERM", &child.id().to_string()])
                    .status();
            }
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        for (_, mut child) in std::mem::take(&mut self.children) {
            while child.try_wait()?.is_none() {
                if Instant::now() > deadline {
                    child.kill()?;
                    child.wait()?;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Ok(())
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> Result<(u16, Value), BoxError> {
        json_answer(self.http.post(self.url(path)).json(body)).await
    }

    pub async fn get_json(&self, path: &str) -> Result<(u16, Value), BoxError> {
        json_answer(self.http.get(self.url(path))).await
    }

    /// gRPC calls each replica of `svc` has served since it started (its `/metrics` on the gRPC
    /// port), in replica order; health checks (the balancer's probes) are not counted.
    pub async fn grpc_calls_per_replica(&self, svc: &str) -> Result<Vec<u64>, BoxError> {
        let addrs = self
            .addrs
            .get(svc)
            .ok_or_else(|| format!("no service {svc}"))?;
        let mut calls = Vec::new();
        for addr in addrs {
            let text = crate::scrape_metrics(&self.http, &format!("http://{addr}")).await?;
            calls.push(grpc_calls_served(&text));
        }
        Ok(calls)
    }

    /// `runs` inline and `runs` durable runs of a short message, concurrently, each followed to
    /// its end; nothing is killed. An error names a run that did not finish.
    pub async fn runs_to_end(&self, runs: usize) -> Result<(), BoxError> {
        let this = self;
        let all = (0..runs * 2).map(|i| async move {
            let chat = this.create_chat(&format!("spread {i}")).await?;
            let (status, accepted) = this
                .post_json(
                    &format!("/v1/chats/{chat}/runs"),
                    &json!({ "message": format!("spread {i}"), "durable": i % 2 == 1 }),
                )
                .await?;
            if status != 202 {
                return Err::<(), BoxError>(format!("start run: {status} {accepted}").into());
            }
            let run_id = accepted["run_id"].as_str().unwrap_or_default().to_string();
            let followed = follow_run(
                &this.http,
                std::slice::from_ref(&this.gateway_url),
                &run_id,
                Instant::now() + FOLLOW_DEADLINE,
                || {},
            )
            .await?;
            match followed.events.last().map(|e| e.event_type()) {
                Some("RUN_FINISHED") => Ok(()),
                other => Err(format!("run {run_id} ended with {other:?}").into()),
            }
        });
        futures::future::try_join_all(all).await.map(|_| ())
    }

    /// One row of the chaos table: `runs` inline and `runs` durable runs, `target` killed once
    /// every run has streamed some text, restarted at once, every run followed to its end.
    pub async fn round(&mut self, target: Target, runs: usize) -> Result<RoundReport, BoxError> {
        self.round_with(target, runs, true).await
    }

    /// As [`Self::round`] on a mesh with replicas: replica 0 of `target` is killed and stays
    /// dead until every run has ended, so the other replica carries them (retries, failover),
    /// then it is started again and the checks after recovery run.
    pub async fn replica_round(
        &mut self,
        target: Target,
        runs: usize,
    ) -> Result<RoundReport, BoxError> {
        if self.settings.replicas < 2 || target.service().is_none() {
            return Err("a replica round needs a service with two replicas".into());
        }
        self.round_with(target, runs, false).await
    }

    /// Runs a round per target ([`Self::round`], or [`Self::replica_round`] when `replicas`),
    /// printing each row as it comes: the table's rows, and every problem seen (a round's own,
    /// an inline run that ended later than `inline_end_bound` after the kill, a round that could
    /// not run — which stops the rounds, as the mesh may be beyond use).
    pub async fn rounds(
        &mut self,
        targets: &[Target],
        runs: usize,
        inline_end_bound: Duration,
        replicas: bool,
    ) -> Rounds {
        let mut rounds = Rounds::default();
        for &target in targets {
            let played = if replicas {
                self.replica_round(target, runs).await
            } else {
                self.round(target, runs).await
            };
            let report = match played {
                Ok(report) => report,
                Err(err) => {
                    rounds
                        .problems
                        .push(format!("{}: round aborted: {err}", target.name()));
                    break;
                }
            };
            eprintln!("{}", report.row());
            rounds.rows.push(report.row());
            let before = rounds.problems.len();
            rounds.problems.extend(
                report
                    .problems()
                    .into_iter()
                    .map(|p| format!("{}: {p}", target.name())),
            );
            if report.inline.longest_silence > inline_end_bound {
                rounds.problems.push(format!(
                    "{}: an inline run's client waited {:.1} s after the kill for its next event or its end (bound {inline_end_bound:?})",
                    target.name(),
                    report.inline.longest_silence.as_secs_f64()
                ));
            }
            if !report.passed() && rounds.problems.len() == before {
                rounds
                    .problems
                    .push(format!("{}: round failed: {}", target.name(), report.row()));
            }
            rounds.reports.push((target, report));
        }
        rounds
    }

    async fn round_with(
        &mut self,
        target: Target,
        runs: usize,
        restart_at_once: bool,
    ) -> Result<RoundReport, BoxError> {
        // Long enough that every run is still streaming when the last has started.
        let words = 250;
        let this = &*self;
        let starts = (0..runs * 2).map(|i| {
            let durable = i % 2 == 1;
            let message = chaos_message(target, i, words);
            async move {
                let chat = this
                    .create_chat(&format!("chaos {} {i}", target.name()))
                    .await?;
                let (status, accepted) = this
                    .post_json(
                        &format!("/v1/chats/{chat}/runs"),
                        &json!({ "message": message, "durable": durable }),
                    )
                    .await?;
                if status != 202 {
                    return Err::<StartedRun, BoxError>(
                        format!("start run: {status} {accepted}").into(),
                    );
                }
                Ok(StartedRun {
                    run_id: accepted["run_id"].as_str().unwrap_or_default().to_string(),
                    chat,
                    durable,
                    expected: format!("{OFFLINE_PREFIX}{message}"),
                })
            }
        });
        let started: Vec<StartedRun> = futures::future::try_join_all(starts).await?;
        // Every client follows its run from the start, through breaks, to its end.
        let (texted, mut all_texted) = tokio::sync::watch::channel(0usize);
        let texted = std::sync::Arc::new(texted);
        let deadline = Instant::now() + FOLLOW_DEADLINE;
        let followers: Vec<_> = started
            .iter()
            .map(|run| {
                // Clients start on the current gateway and move to the next after a break.
                let mut bases = self.gateway_urls.clone();
                let first = bases
                    .iter()
                    .position(|b| *b == self.gateway_url)
                    .unwrap_or(0);
                bases.rotate_left(first);
                let (http, run_id, texted) =
                    (self.http.clone(), run.run_id.clone(), texted.clone());
                tokio::spawn(async move {
                    follow_run(&http, &bases, &run_id, deadline, move || {
                        texted.send_modify(|n| *n += 1);
                    })
                    .await
                })
            })
            .collect();
        // Kill once every run is mid-stream: a signal, not a sleep.
        let total = started.len();
        let all_streaming = tokio::time::timeout(
            Duration::from_secs(60),
            all_texted.wait_for(|n| *n >= total),
        )
        .await;
        if all_streaming.is_err() {
            return Err(format!(
                "{}: not every run streamed text within 60 s before the kill",
                target.name()
            )
            .into());
        }
        let killed_at = Instant::now();
        self.kill(target).await?;
        if restart_at_once {
            self.restart(target).await?;
        }
        let restarted_in = killed_at.elapsed();
        let mut followed = Vec::new();
        for (run, follower) in started.iter().zip(followers) {
            followed.push((run, follower.await??));
        }
        if !restart_at_once {
            self.restart(target).await?;
        }
        self.wait_ready(Duration::from_secs(60)).await?;
        let mut report = RoundReport {
            target: Some(target),
            restarted_in,
            ..RoundReport::default()
        };
        for (run, follow) in &followed {
            report.check_run(run, follow, killed_at);
        }
        // After recovery: every request answers, and no run is left RUNNING.
        report.failed_requests = self.requests_after_recovery(&started).await;
        Ok(report)
    }

    pub async fn create_chat(&self, title: &str) -> Result<String, BoxError> {
        let (status, chat) = self
            .post_json("/v1/chats", &json!({ "title": title }))
            .await?;
        if status != 201 {
            return Err(format!("create chat: {status} {chat}").into());
        }
        Ok(chat["id"].as_str().unwrap_or_default().to_string())
    }

    /// Varied requests once the mesh says it is ready: every one must succeed. Returns what
    /// failed (empty = none), including runs that are still not in a final state.
    async fn requests_after_recovery(&self, runs: &[StartedRun]) -> Vec<String> {
        let mut failed = Vec::new();
        let mut expect =
            |what: String, result: Result<(u16, Value), BoxError>, ok: u16| match result {
                Ok((status, _)) if status == ok => {}
                Ok((status, body)) => failed.push(format!("{what}: {status} {body}")),
                Err(e) => failed.push(format!("{what}: {e}")),
            };
        let chat = self
            .post_json("/v1/chats", &json!({ "title": "after" }))
            .await;
        let chat_id = chat
            .as_ref()
            .ok()
            .and_then(|(_, c)| c["id"].as_str())
            .unwrap_or("none")
            .to_string();
        expect("POST /v1/chats".into(), chat, 201);
        for path in [
            "/v1/chats?limit=50".to_string(),
            "/v1/models".to_string(),
            "/v1/me/usage".to_string(),
            "/v1/me/memories?limit=20".to_string(),
            format!("/v1/chats/{chat_id}/messages?limit=50"),
        ] {
            let r = self.get_json(&path).await;
            expect(format!("GET {path}"), r, 200);
        }
        // A durable run started now completes: Temporal, the worker and every store work
        // together again (and the next round starts from a mesh that has recovered).
        let probe = async {
            let (status, accepted) = self
                .post_json(
                    &format!("/v1/chats/{chat_id}/runs"),
                    &json!({ "message": "after recovery", "durable": true }),
                )
                .await?;
            if status != 202 {
                return Err::<(u16, Value), BoxError>(format!("{status} {accepted}").into());
            }
            let run_id = accepted["run_id"].as_str().unwrap_or_default().to_string();
            let deadline = Instant::now() + RECOVERED_DURABLE_WITHIN;
            let followed = follow_run(
                &self.http,
                std::slice::from_ref(&self.gateway_url),
                &run_id,
                deadline,
                || {},
            )
            .await?;
            match followed.events.last() {
                Some(last) if last.event_type() == "RUN_FINISHED" => Ok((200, Value::Null)),
                other => Err(format!(
                    "a durable run after recovery did not finish within {RECOVERED_DURABLE_WITHIN:?}: {:?}",
                    other.map(|e| e.data.clone())
                )
                .into()),
            }
        };
        expect("a durable run after recovery".into(), probe.await, 200);
        for run in runs {
            let r = self.get_json(&format!("/v1/runs/{}", run.run_id)).await;
            let r = match r {
                Ok((200, body)) if !is_final(&body["status"]) => {
                    Err(format!("still {}", body["status"]).into())
                }
                other => other,
            };
            expect(format!("GET /v1/runs/{}", run.run_id), r, 200);
            let r = self
                .get_json(&format!("/v1/chats/{}/messages?limit=50", run.chat))
                .await;
            expect(format!("GET messages of {}", run.chat), r, 200);
        }
        failed
    }
}

/// The offline model's reply is this, then the user's message.
/// The gRPC calls a Prometheus scrape counts (`pa_grpc_server_handling_seconds_count`), health
/// checks left out.
pub fn grpc_calls_served(metrics: &str) -> u64 {
    metrics
        .lines()
        .filter(|l| l.starts_with("pa_grpc_server_handling_seconds_count{"))
        .filter(|l| !l.contains("grpc.health."))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as u64)
        .sum()
}

pub const OFFLINE_PREFIX: &str = "(offline echo model: no real model is configured) You said: ";

/// How long a durable run started once the mesh says it is ready again may take to finish.
const RECOVERED_DURABLE_WITHIN: Duration = Duration::from_secs(60);

/// How long a client follows a run at most (a run that has not ended by then failed the test).
const FOLLOW_DEADLINE: Duration = Duration::from_secs(90);

/// A distinct message of `words` words, so each run's exact text is known.
fn chaos_message(target: Target, i: usize, words: usize) -> String {
    (0..words)
        .map(|w| format!("{}-{i}-w{w}", target.name()))
        .collect::<Vec<_>>()
        .join(" ")
}

fn is_final(status: &Value) -> bool {
    let s = status.as_str().unwrap_or_default().to_ascii_lowercase();
    ["succeeded", "failed", "cancelled", "canceled"]
        .iter()
        .any(|f| s.ends_with(f))
}

struct StartedRun {
    run_id: String,
    chat: String,
    durable: bool,
    expected: String,
}

/// What a client saw of one run, across every reconnection.
#[derive(Debug, Default)]
pub struct FollowedRun {
    pub events: Vec<SseEvent>,
    /// Connections that broke (or could not be made) before the run's end.
    pub breaks: u32,
    /// When the terminal event arrived.
    pub ended_at: Option<Instant>,
    /// When each of `events` arrived (keep-alives are not events).
    pub arrivals: Vec<Instant>,
}

/// Follows a run's SSE stream to its terminal event, reconnecting with `Last-Event-ID` after
/// every break until `deadline` — to the next of `gateway_urls` (a client behind a load balancer
/// that takes a dead gateway out). `on_text` is called once, at the run's first text.
pub async fn follow_run(
    http: &reqwest::Client,
    gateway_urls: &[String],
    run_id: &str,
    deadline: Instant,
    on_text: impl FnOnce() + Send,
) -> Result<FollowedRun, BoxError> {
    let mut followed = FollowedRun::default();
    let mut on_text = Some(on_text);
    let mut arrivals = Vec::new();
    if gateway_urls.is_empty() {
        return Err("no gateway to follow a run through".into());
    }
    while Instant::now() < deadline {
        let base = &gateway_urls[followed.breaks as usize % gateway_urls.len()];
        let mut request = http.get(format!("{base}/v1/runs/{run_id}/events"));
        if let Some(id) = followed.events.iter().rev().find_map(|e| e.id.clone()) {
            request = request.header("last-event-id", id);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let attempt = tokio::time::timeout(left, async {
            let response = request.send().await?;
            if !response.status().is_success() {
                return Err::<bool, BoxError>(format!("events: {}", response.status()).into());
            }
            read_sse_into(response, &mut followed.events, &mut |event| {
                arrivals.push(Instant::now());
                if event.event_type() == "TEXT_MESSAGE_CONTENT"
                    && let Some(f) = on_text.take()
                {
                    f();
                }
            })
            .await
        })
        .await;
        match attempt {
            Ok(Ok(true)) => {
                followed.ended_at = Some(Instant::now());
                followed.arrivals = arrivals;
                return Ok(followed);
            }
            Ok(_) => {
                followed.breaks += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(_) => break,
        }
    }
    followed.arrivals = arrivals;
    Ok(followed)
}

/// What [`ChaosMesh::rounds`] saw: each round's report and table row, and the problems.
#[derive(Default)]
pub struct Rounds {
    pub reports: Vec<(Target, RoundReport)>,
    pub rows: Vec<String>,
    pub problems: Vec<String>,
}

/// One row of the chaos table, and what went wrong in it.
#[derive(Debug, Default)]
pub struct RoundReport {
    pub target: Option<Target>,
    pub restarted_in: Duration,
    pub inline: ModeReport,
    pub durable: ModeReport,
    /// Requests after recovery that did not succeed, and runs not in a final state.
    pub failed_requests: Vec<String>,
}

/// What became of one mode's runs in a round.
#[derive(Debug, Default)]
pub struct ModeReport {
    pub runs: usize,
    /// Ended with RUN_FINISHED and exactly the expected text.
    pub completed: usize,
    /// Ended with a RUN_ERROR whose code is retryable (inline runs only).
    pub ended_retryable: usize,
    /// The slowest end after the kill.
    pub slowest_end: Duration,
    /// The longest a client waited, after the kill, for its run's next event or its end: a run
    /// that streams on under load is slow, one that goes silent is hung (issue 24's bound).
    pub longest_silence: Duration,
    /// Runs with a model turn withdrawn (`message_discarded`) and run again: a relay died
    /// under the turn.
    pub retried_turns: usize,
    /// What is wrong (a run that did not end, a duplicate event id, a wrong text, …).
    pub problems: Vec<String>,
}

/// The longest gap, after `killed_at`, between consecutive event arrivals of a run that ended at
/// `ended_at` (0 for a run that ended before the kill).
fn longest_silence_after(arrivals: &[Instant], killed_at: Instant, ended_at: Instant) -> Duration {
    if ended_at <= killed_at {
        return Duration::ZERO;
    }
    let mut previous = killed_at;
    let mut longest = Duration::ZERO;
    for &at in arrivals
        .iter()
        .filter(|&&at| at > killed_at)
        .chain(std::iter::once(&ended_at))
    {
        longest = longest.max(at.saturating_duration_since(previous));
        previous = at;
    }
    longest
}

/// RUN_ERROR codes a client may retry (docs/src/api.md lists them).
pub const RETRYABLE_CODES: [&str; 4] =
    ["owner_lost", "unavailable", "deadline_exceeded", "aborted"];

impl RoundReport {
    fn check_run(&mut self, run: &StartedRun, followed: &FollowedRun, killed_at: Instant) {
        let mode = if run.durable {
            &mut self.durable
        } else {
            &mut self.inline
        };
        mode.runs += 1;
        let id = &run.run_id;
        if followed
            .events
            .iter()
            .any(|e| e.event_type() == "CUSTOM" && e.data["name"] == "message_discarded")
        {
            mode.retried_turns += 1;
        }
        let mut seen = HashSet::new();
        for event in &followed.events {
            if let Some(event_id) = &event.id
                && !seen.insert(event_id.clone())
            {
                mode.problems
                    .push(format!("{id}: event id {event_id} twice"));
            }
        }
        let Some(ended_at) = followed.ended_at else {
            mode.problems
                .push(format!("{id}: did not end ({} breaks)", followed.breaks));
            return;
        };
        mode.slowest_end = mode
            .slowest_end
            .max(ended_at.saturating_duration_since(killed_at));
        mode.longest_silence = mode.longest_silence.max(longest_silence_after(
            &followed.arrivals,
            killed_at,
            ended_at,
        ));
        let last = followed.events.last();
        let kind = last.map(|e| e.event_type()).unwrap_or_default();
        let text = visible_text(&followed.events);
        match kind {
            "RUN_FINISHED" if text == run.expected => mode.completed += 1,
            "RUN_FINISHED" => mode.problems.push(format!(
                "{id}: finished with other text ({} chars, expected {})",
                text.len(),
                run.expected.len()
            )),
            _ => {
                let code = last
                    .and_then(|e| e.data["code"].as_str())
                    .unwrap_or_default();
                if !run.durable && RETRYABLE_CODES.contains(&code) {
                    mode.ended_retryable += 1;
                } else {
                    mode.problems.push(format!(
                        "{id}: ended {kind} {code}: {}",
                        last.map(|e| e.data["message"].to_string())
                            .unwrap_or_default()
                    ));
                }
            }
        }
    }

    /// Whether the round meets issue 24: durable runs all complete, inline runs all end
    /// (finished or retryable), within 15 s of the kill for inline runs, nothing failed after.
    pub fn passed(&self) -> bool {
        self.durable.completed == self.durable.runs
            && self.inline.completed + self.inline.ended_retryable == self.inline.runs
            && self.inline.problems.is_empty()
            && self.durable.problems.is_empty()
            && self.failed_requests.is_empty()
    }

    /// The row as the chaos table prints it.
    pub fn row(&self) -> String {
        let name = self.target.map(Target::name).unwrap_or("?");
        format!(
            "| {name} | inline {}/{} ended ({} finished, {} retryable error), slowest {:.1} s, longest silence {:.1} s | durable {}/{} completed ({} turns retried) | failed after recovery: {} | restart {:.1} s |",
            self.inline.completed + self.inline.ended_retryable,
            self.inline.runs,
            self.inline.completed,
            self.inline.ended_retryable,
            self.inline.slowest_end.as_secs_f64(),
            self.inline.longest_silence.as_secs_f64(),
            self.durable.completed,
            self.durable.runs,
            self.durable.retried_turns,
            self.failed_requests.len(),
            self.restarted_in.as_secs_f64(),
        )
    }

    /// Everything that went wrong, one line each.
    pub fn problems(&self) -> Vec<String> {
        self.inline
            .problems
            .iter()
            .chain(&self.durable.problems)
            .chain(&self.failed_requests)
            .cloned()
            .collect()
    }
}

/// The assistant text a client shows: every TEXT_MESSAGE_CONTENT delta, minus the messages a
/// CUSTOM `message_discarded` event withdrew (a model turn retried after its relay died).
pub fn visible_text(events: &[SseEvent]) -> String {
    let discarded: HashSet<&str> = events
        .iter()
        .filter(|e| e.event_type() == "CUSTOM" && e.data["name"] == "message_discarded")
        .filter_map(|e| e.data["value"]["messageId"].as_str())
        .collect();
    events
        .iter()
        .filter(|e| e.event_type() == "TEXT_MESSAGE_CONTENT")
        .filter(|e| !discarded.contains(e.data["messageId"].as_str().unwrap_or_default()))
        .filter_map(|e| e.data["delta"].as_str())
        .collect()
}

/// The `pa-e2e-service` binary next to the running test or bench (same target dir).
pub fn service_binary() -> Result<PathBuf, BoxError> {
    if let Ok(path) = std::env::var("PA_E2E_SERVICE_BIN") {
        return Ok(PathBuf::from(path));
    }
    let exe = std::env::current_exe()?;
    // A test runs from target/<profile>/deps/, a bench binary from target/<profile>/.
    let candidates = exe
        .ancestors()
        .skip(1)
        .take(2)
        .map(|dir| dir.join("pa-e2e-service"))
        .collect::<Vec<_>>();
    candidates
        .into_iter()
        .find(|p| Path::new(p).is_file())
        .ok_or_else(|| "pa-e2e-service is not built (cargo build -p tests-e2e --bins)".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silence_is_the_longest_wait_after_the_kill_for_the_next_event_or_the_end() {
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        let killed = at(1_000);
        // Streaming on through the kill: gaps of 2 s, then the end 3 s after the last event.
        let arrivals = [at(500), at(2_000), at(4_000), at(6_000)];
        assert_eq!(
            longest_silence_after(&arrivals, killed, at(9_000)),
            Duration::from_secs(3)
        );
        // Silent from the kill until an end 14 s later.
        assert_eq!(
            longest_silence_after(&[at(500)], killed, at(15_000)),
            Duration::from_secs(14)
        );
        // Ended before the kill.
        assert_eq!(
            longest_silence_after(&[at(500)], killed, at(800)),
            Duration::ZERO
        );
    }
}
