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
