//! Confirmed durable starts (ADR 0243): a durable run is its svc-runs instance's own until
//! svc-worker has started its workflow; then the run is recorded as its workflow's. The records
//! are written in batches, one statement for every start confirmed while the previous statement
//! ran (group commit), so a burst of durable runs costs Postgres a few commits, not one per run
//! (the closing note of ADR 0243's stop has what `pa-bench durable` showed of either).

use tokio::sync::mpsc;

use crate::inline::InlineDriver;

/// How many runs one statement records at most.
const BATCH: usize = 500;

/// Cheap to clone; the writer task ends with the last clone.
#[derive(Clone)]
pub struct StartConfirmer {
    confirmed: mpsc::UnboundedSender<String>,
}

impl StartConfirmer {
    /// Starts the writer. Until a run's record is written, `driver` holds it (the instance beats
    /// for it); a record that cannot be written is tried again, backing off up to 5 s, and given
    /// up when the process stops (a replica then finds the run's events and hands it over).
    pub fn spawn(driver: InlineDriver) -> Self {
        let (confirmed, mut arrivals) = mpsc::unbounded_channel::<String>();
        tokio::spawn(async move {
            while let Some(first) = arrivals.recv().await {
                let mut batch = vec![first];
                while batch.len() < BATCH {
                    match arrivals.try_recv() {
                        Ok(run_id) => batch.push(run_id),
                        Err(_) => break,
                    }
                }
                let mut wait = std::time::Duration::from_millis(200);
                while let Err(err) = driver.leases.hand_to_workflow(&batch).await {
                    if driver.shutdown.is_triggered() {
                        tracing::warn!(%err, runs = batch.len(), "stopping with durable starts unconfirmed");
                        break;
                    }
                    tracing::warn!(%err, runs = batch.len(), "cannot record confirmed durable starts; retrying");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(std::time::Duration::from_secs(5));
                }
                for run_id in &batch {
                    driver.forget(run_id);
                }
            }
        });
        Self { confirmed }
    }

    /// Records that `run_id`'s workflow started.
    pub fn confirm(&self, run_id: String) {
        // The writer lives as long as the sender: a send cannot fail while `self` exists.
        let _ = self.confirmed.send(run_id);
    }
}
