//! The Curator (ADR 0242): turns finished chats into memories. svc-runs queues a chat's finished
//! turns where it records each run's end (one row per chat, `CurationService`); this sweep claims
//! the chats whose turns have paused for the debounce, curates each (one model call for a rolling
//! summary and durable facts, written to svc-memory: `RunActivities::curate`) and settles the
//! claim. No Temporal work per turn or per curation: a chat costs one row upsert per turn and one
//! claim per curation.
//!
//! Claims are leases: a worker killed mid-curation leaves its chats to be claimed again once the
//! lease runs out, and a curation never runs past 4/5 of its lease, so a live worker's claim is
//! not taken from under it. A worker that is stopped (SIGTERM: a deploy, a scale-down) hands the
//! claims of its unfinished curations back (`RELEASED`), so another worker takes them at once
//! rather than after the lease. Curation is idempotent (the summary has a fixed id per chat, facts go
//! through svc-memory's near-duplicate check), so a chat curated twice changes nothing twice.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use pa_kit::identity::internal_identity;
use pa_kit::{InternalAuth, PaError, Shutdown};
use pa_proto::v1::curation_service_client::CurationServiceClient;
use pa_proto::v1::{ClaimCurationsRequest, CurationClaim, CurationOutcome, FinishCurationRequest};
use tonic::transport::Channel;

use crate::activities::RunActivities;
use crate::payloads::{CurateInput, TurnFinished};

/// The default of `PA_CURATOR_DEBOUNCE_MS`: how long a chat's turns must pause before it is
/// curated.
pub const DEFAULT_CURATOR_DEBOUNCE_MS: u64 = 5000;

/// The default of `PA_CURATOR_LEASE_MS`: how long a claimed chat is the claiming worker's.
pub const DEFAULT_CURATOR_LEASE_MS: u64 = 120_000;

/// When and how the Curator curates (`PA_CURATOR=off` disables it).
#[derive(Clone, Copy, Debug)]
pub struct CuratorSettings {
    /// `PA_CURATOR_DEBOUNCE_MS`, default 5000: how long a chat's turns must pause.
    pub debounce_ms: u64,
    /// `PA_CURATOR_LEASE_MS`, default 120000: how long a claim is held; a curation whose worker
    /// died is taken up again after it.
    pub lease_ms: u64,
}

impl CuratorSettings {
    /// How often the queue is asked for due chats when the last ask found none: a fifth of the
    /// debounce, between 50 ms and 1 s (the debounce is a floor, so this adds at most a fifth).
    pub fn sweep_every(&self) -> Duration {
        (Duration::from_millis(self.debounce_ms) / 5)
            .clamp(Duration::from_millis(50), Duration::from_secs(1))
    }

    /// How long one curation may run: 4/5 of the lease, so it ends before anyone may claim the
    /// chat again.
    fn curation_timeout(&self) -> Duration {
        Duration::from_millis(self.lease_ms) * 4 / 5
    }
}

/// The sweep of one worker; several workers sweep side by side (claims are disjoint).
pub struct CurationSweeper {
    pub queue: CurationServiceClient<Channel>,
    pub auth: InternalAuth,
    pub activities: Arc<RunActivities>,
    pub settings: CuratorSettings,
    /// Curations at once (`PA_WORKER_BACKGROUND_ACTIVITIES`).
    pub concurrency: usize,
}

/// The claims whose curation has not been settled yet: (tenant, chat) → the claim's version.
type InFlight = Arc<Mutex<HashMap<(String, String), i64>>>;

/// A claim's key in [`InFlight`].
fn in_flight_key(claim: &CurationClaim) -> (String, String) {
    let tenant_id = claim.identity.as_ref().map(|i| i.tenant_id.clone());
    (tenant_id.unwrap_or_default(), claim.chat_id.clone())
}

/// How long a stopping worker waits for svc-runs to take its claims back.
const RELEASE_WITHIN: Duration = Duration::from_secs(2);

/// How long the sweep waits after the queue could not be reached, at most.
const MAX_RETRY: Duration = Duration::from_secs(10);

impl CurationSweeper {
    /// Sweeps until `shutdown` fires. Curations in flight then are stopped and their claims
    /// handed back (a claim svc-runs does not take back in time runs out with its lease). The
    /// handle ends once that is done.
    pub fn spawn(self, shutdown: Shutdown) -> tokio::task::JoinHandle<()> {
        let token = shutdown.token();
        tokio::spawn(async move {
            let in_flight = InFlight::default();
            tokio::select! {
                _ = token.cancelled() => {}
                _ = self.run(&in_flight) => {}
            }
            self.release(&in_flight).await;
        })
    }

    /// Hands back the claims of the curations that were stopped unfinished.
    async fn release(&self, in_flight: &InFlight) {
        let claims: Vec<_> = in_flight
            .lock()
            .map(|mut claims| claims.drain().collect())
            .unwrap_or_default();
        let releases = claims.into_iter().map(|((tenant_id, chat_id), version)| async move {
            let request = FinishCurationRequest {
                tenant_id,
                chat_id: chat_id.clone(),
                version,
                outcome: CurationOutcome::Released as i32,
            };
            let mut queue = self.queue.clone();
            let sent = queue
                .finish_curation(self.auth.request(&internal_identity("svc-worker"), request));
            match tokio::time::timeout(RELEASE_WITHIN, sent).await {
                Ok(Ok(_)) => tracing::info!(%chat_id, "a stopped curation's claim was handed back"),
                Ok(Err(status)) => tracing::warn!(%chat_id, %status, "a stopped curation's claim was not handed back; its lease will run out"),
                Err(_) => tracing::warn!(%chat_id, "a stopped curation's claim was not handed back in time; its lease will run out"),
            }
        });
        futures::future::join_all(releases).await;
    }

    async fn run(&self, in_flight: &InFlight) {
        let every = self.settings.sweep_every();
        let mut retry = every;
        loop {
            match self.sweep_once(in_flight).await {
                // A full batch: more may be due at once.
                Ok(claimed) if claimed >= self.batch() => continue,
                Ok(_) => {
                    retry = every;
                    tokio::time::sleep(every).await;
                }
                Err(err) => {
                    tracing::warn!(%err, "the Curator cannot reach its queue (svc-runs); retrying");
                    tokio::time::sleep(retry).await;
                    retry = (retry * 2).min(MAX_RETRY);
                }
            }
        }
    }

    fn batch(&self) -> usize {
        self.concurrency.max(1) * 2
    }

    /// Claims the chats due now and curates them, `concurrency` at a time, each claim listed in
    /// `in_flight` until it is settled. Returns how many it claimed.
    async fn sweep_once(&self, in_flight: &InFlight) -> Result<usize, PaError> {
        let request = ClaimCurationsRequest {
            quiet_ms: self.settings.debounce_ms,
            limit: self.batch() as u32,
            lease_ms: self.settings.lease_ms,
        };
        let claims = self
            .queue
            .clone()
            .claim_curations(self.auth.request(&internal_identity("svc-worker"), request))
            .await
            .map_err(|s| PaError::from_status(&s))?
            .into_inner()
            .claims;
        let claimed = claims.len();
        if let Ok(mut listed) = in_flight.lock() {
            for claim in &claims {
                listed.insert(in_flight_key(claim), claim.version);
            }
        }
        futures::stream::iter(claims)
            .for_each_concurrent(self.concurrency.max(1), |claim| async move {
                let key = in_flight_key(&claim);
                self.curate(claim).await;
                // Settled (or left to its lease by a settlement that failed): not handed back.
                if let Ok(mut listed) = in_flight.lock() {
                    listed.remove(&key);
                }
            })
            .await;
        Ok(claimed)
    }

    /// Curates one claimed chat and settles the claim. A settlement that does not arrive leaves
    /// the lease to run out (the chat is curated again: idempotent).
    async fn curate(&self, claim: CurationClaim) {
        let identity = claim.identity.clone().unwrap_or_default();
        let _running = self
            .activities
            .running
            .enter("curate_chat", &claim.chat_id, claim.attempt);
        let input = CurateInput {
            identity: Some(identity.clone()),
            chat_id: claim.chat_id.clone(),
            turns: vec![TurnFinished {
                run_id: claim.run_id.clone(),
                label: claim.label.clone(),
                idle_close_ms: 0,
            }],
        };
        let curated = tokio::time::timeout(
            self.settings.curation_timeout(),
            self.activities.curate(input),
        )
        .await;
        let outcome = match curated {
            Ok(Ok(_)) => CurationOutcome::Curated,
            // The chat went (deleted after the claim): nothing is left to curate, or to retry.
            Ok(Err(err)) if err.code == pa_kit::ErrorCode::NotFound => {
                tracing::info!(chat_id = %claim.chat_id, %err, "a claimed chat is gone; its turns are dropped");
                CurationOutcome::Curated
            }
            Ok(Err(err)) => {
                tracing::warn!(chat_id = %claim.chat_id, attempt = claim.attempt, ?err, "a curation failed; it is retried after a back-off");
                CurationOutcome::Failed
            }
            Err(_) => {
                tracing::warn!(chat_id = %claim.chat_id, attempt = claim.attempt, "a curation ran out of time; it is retried after a back-off");
                CurationOutcome::Failed
            }
        };
        let request = FinishCurationRequest {
            tenant_id: identity.tenant_id.clone(),
            chat_id: claim.chat_id.clone(),
            version: claim.version,
            outcome: outcome as i32,
        };
        if let Err(status) = self
            .queue
            .clone()
            .finish_curation(self.auth.request(&internal_identity("svc-worker"), request))
            .await
        {
            tracing::warn!(chat_id = %claim.chat_id, %status, "a curation's claim was not settled; its lease will run out");
        }
    }
}
