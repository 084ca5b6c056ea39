//! Where a run's start spends its time: the mean of every gRPC call and HTTP request the mesh
//! served during a measurement, from the metrics each server keeps (`pa_kit::metrics`). The
//! bench runs the whole mesh in its own process, so one registry holds every service's calls.

use std::collections::BTreeMap;

use prometheus::core::Collector;

/// Calls served so far, by what was called: (count, seconds summed).
#[derive(Clone, Debug, Default)]
pub struct ServedCalls(BTreeMap<String, (u64, f64)>);

impl ServedCalls {
    /// What the servers of this process have served until now.
    pub fn now() -> Self {
        let mut calls = BTreeMap::new();
        let families = pa_kit::metrics::GRPC_SERVER_SECONDS
            .collect()
            .into_iter()
            .chain(pa_kit::metrics::HTTP_SERVER_SECONDS.collect());
        for family in families {
            for metric in family.get_metric() {
                let label = |name: &str| {
                    metric
                        .get_label()
                        .iter()
                        .find(|l| l.name() == name)
                        .map(|l| l.value().to_string())
                        .unwrap_or_default()
                };
                let key = if family.name().starts_with("pa_grpc") {
                    format!("gRPC {}/{}", label("grpc_service"), label("grpc_method"))
                } else {
                    format!("HTTP {} {}", label("method"), label("route"))
                };
                let histogram = metric.get_histogram();
                let entry = calls.entry(key).or_insert((0, 0.0));
                entry.0 += histogram.get_sample_count();
                entry.1 += histogram.get_sample_sum();
            }
        }
        Self(calls)
    }

    /// A table of the calls served since `before`, per run: how many, and their mean time.
    /// Streaming calls count to the end of their stream.
    pub fn print_since(&self, before: &ServedCalls, runs: usize) {
        println!("calls served per run (mean time to the end of the answer, streams included)");
        println!("| call | per run | mean ms |");
        println!("|---|---:|---:|");
        for (key, (count, sum)) in &self.0 {
            let (count_before, sum_before) = before.0.get(key).copied().unwrap_or((0, 0.0));
            let count = count - count_before;
            if count == 0 {
                continue;
            }
            let mean_ms = (sum - sum_before) * 1000.0 / count as f64;
            println!(
                "| {key} | {:.2} | {mean_ms:.3} |",
                count as f64 / runs.max(1) as f64
            );
        }
    }
}

/// CPU and context switches so far, for the work a measurement costs rather than its latency
/// (which the machine's other load moves): this process (the mesh and its load client) and the
/// Postgres backends serving the bench's database. Linux `/proc`; CPU in clock ticks of 10 ms
/// (USER_HZ is 100 on Linux).
#[derive(Clone, Debug, Default)]
pub struct WorkDone {
    cpu_ticks: u64,
    context_switches: u64,
    postgres_ticks: u64,
}

const TICK_MS: f64 = 10.0;

/// utime + stime of `/proc/<pid>/stat`.
fn cpu_ticks_of(pid: &str) -> Option<u64> {
    cpu_ticks_in_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Fields 14 and 15 of a `stat` line, counted after the parenthesised name (which may hold
/// spaces and parentheses itself).
fn cpu_ticks_in_stat(stat: &str) -> Option<u64> {
    let mut after_name = stat.rsplit_once(')')?.1.split_whitespace().skip(11);
    Some(after_name.next()?.parse::<u64>().ok()? + after_name.next()?.parse::<u64>().ok()?)
}

/// Voluntary and involuntary context switches summed over this process's threads.
fn context_switches() -> u64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("status")).ok())
        .map(|status| {
            status
                .lines()
                .filter(|l| l.contains("ctxt_switches:"))
                .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
                .sum::<u64>()
        })
        .sum()
}

impl WorkDone {
    /// Now; `postgres_pids` are the backends of the bench's database (see [`postgres_pids`]).
    pub fn now(postgres_pids: &[String]) -> Self {
        Self {
            cpu_ticks: cpu_ticks_of("self").unwrap_or_default(),
            context_switches: context_switches(),
            postgres_ticks: postgres_pids.iter().filter_map(|p| cpu_ticks_of(p)).sum(),
        }
    }

    /// One line: the work per run since `before`.
    pub fn print_since(&self, before: &WorkDone, runs: usize, what: &str) {
        let runs = runs.max(1) as f64;
        let per_run = |now: u64, then: u64| now.saturating_sub(then) as f64 / runs;
        println!(
            "work per {what}: CPU {:.2} ms in this process (the mesh and its load client), \
             {:.2} ms in the bench database's Postgres backends; {:.0} context switches in \
             this process",
            per_run(self.cpu_ticks, before.cpu_ticks) * TICK_MS,
            per_run(self.postgres_ticks, before.postgres_ticks) * TICK_MS,
            per_run(self.context_switches, before.context_switches),
        );
    }
}

/// The pids of the Postgres backends connected to the database of `database_url` (empty when
/// they cannot be read, e.g. a Postgres on another host).
pub async fn postgres_pids(database_url: &str) -> Vec<String> {
    let Ok(pool) = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(database_url)
        .await
    else {
        return Vec::new();
    };
    let pids: Vec<i32> = sqlx::query_scalar(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() \
         AND pid <> pg_backend_pid()",
    )
    .fetch_all(&pool)
    .await
    .unwrap_or_default();
    pool.close().await;
    pids.iter()
        .map(i32::to_string)
        .filter(|p| std::path::Path::new(&format!("/proc/{p}")).exists())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::cpu_ticks_in_stat;

    #[test]
    fn cpu_ticks_are_read_after_a_name_with_spaces_and_parentheses() {
        let stat = "42 (tokio (rt) worker) S 1 42 42 0 -1 4194560 100 0 0 0 17 5 0 0 20 0 3";
        assert_eq!(cpu_ticks_in_stat(stat), Some(22));
        assert_eq!(cpu_ticks_in_stat("42 (short) S 1 2"), None);
    }
}
