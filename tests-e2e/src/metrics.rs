//! Prometheus samples as the tests read them.

use crate::{BoxError, Mesh};

/// The value of the Prometheus sample `name{labels…}` in `text` (every given label must match;
/// the largest when several series do), if present.
pub fn metric_sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.rsplit_once(' '))
        .filter(|(series, _)| {
            series.split('{').next() == Some(name)
                && labels
                    .iter()
                    .all(|(k, v)| series.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|(_, value)| value.parse::<f64>().ok())
        .reduce(f64::max)
}

/// The Prometheus text a service serves at `base` (`http://host:port`) `/metrics`.
pub async fn scrape_metrics(http: &reqwest::Client, base: &str) -> Result<String, BoxError> {
    Ok(http
        .get(format!("{base}/metrics"))
        .send()
        .await?
        .error_for_status()?
        .text()
        .await?)
}

impl Mesh {
    /// How many calls of `service`/`method` the service at `base` (a gRPC URL) has answered
    /// (its `/metrics`), 0 before the first.
    pub async fn grpc_calls(
        &self,
        base: &str,
        service: &str,
        method: &str,
    ) -> Result<f64, BoxError> {
        let text = scrape_metrics(&self.http, base).await?;
        Ok(metric_sample(
            &text,
            "pa_grpc_server_handling_seconds_count",
            &[("grpc_service", service), ("grpc_method", method)],
        )
        .unwrap_or(0.0))
    }
}
