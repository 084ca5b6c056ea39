//! Relays a run's Redis event stream as Server-Sent Events: `id: <stream id>` and
//! `data: <AG-UI JSON>` per event, keep-alive comments while idle, the end after
//! RUN_FINISHED/RUN_ERROR. Resumes strictly after `Last-Event-ID` (or `?after=`).

use std::convert::Infallible;

use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures::{Stream, StreamExt};
use pa_kit::PaError;
use pa_kit::error::ErrorCodeExt;
use pa_proto::v1::{AgUiEvent, GetRunRequest, Identity, RunError, ag_ui_event::Event};

use crate::problem::ApiError;
use crate::state::AppState;

/// Where to resume: the `Last-Event-ID` header wins over `?after=`; both must be stream ids.
pub fn resume_point(headers: &HeaderMap, after: Option<&str>) -> Result<String, ApiError> {
    let from_header = headers
        .get("last-event-id")
        .map(|v| v.to_str().unwrap_or("\u{0}"));
    let point = from_header.or(after).unwrap_or("").trim();
    let valid = point.is_empty()
        || point == "0"
        || point
            .split_once('-')
            .is_some_and(|(ms, seq)| ms.parse::<u64>().is_ok() && seq.parse::<u64>().is_ok());
    if valid {
        Ok(point.to_string())
    } else {
        Err(PaError::bad_request(
            "Last-Event-ID / after must be an event id such as 1700000000000-0",
        )
        .into())
    }
}

fn error_event(err: &PaError) -> SseEvent {
    let event = AgUiEvent::new(Event::RunError(RunError {
        message: err.message.clone(),
        code: Some(err.code.slug().to_string()),
        timestamp: None,
    }));
    SseEvent::default().data(event.to_json().unwrap_or_default())
}

/// The SSE response following `run_id`'s events after `after`.
pub fn follow_run(
    state: &AppState,
    identity: Identity,
    run_id: String,
    after: String,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>> + use<>> {
    let runs = state.runs.clone();
    let auth = state.auth.clone();
    let id = run_id.clone();
    // Asked only when the stream is idle: is the run still going?
    let still_live = move || {
        let mut runs = runs.clone();
        let request = auth.request(&identity, GetRunRequest { run_id: id.clone() });
        async move {
            match runs.get_run(request).await {
                Ok(run) => !pa_proto::run_status_is_terminal(run.get_ref().status),
                Err(status) => PaError::from_status(&status).code == pa_kit::ErrorCode::Unavailable,
            }
        }
    };
    let stop = state.shutdown.token().cancelled_owned();
    // Counted while the stream lives: the guard goes with it when the client leaves.
    let client = SseClient::connect();
    let events = state
        .events
        .follow(run_id, after, still_live)
        .take_until(stop)
        .map(move |item| {
            let _counted = &client;
            Ok(match item {
                // As stored: the writer made it with `to_json`.
                Ok(stored) => SseEvent::default().id(stored.stream_id).data(&*stored.json),
                Err(err) => error_event(&err),
            })
        });
    Sse::new(events).keep_alive(KeepAlive::new().interval(state.sse_keepalive))
}

/// One open SSE stream in `pa_sse_clients`.
struct SseClient;

impl SseClient {
    fn connect() -> Self {
        pa_kit::metrics::SSE_CLIENTS.inc();
        Self
    }
}

impl Drop for SseClient {
    fn drop(&mut self) {
        pa_kit::metrics::SSE_CLIENTS.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resume_point_accepts_stream_ids_only() {
        let mut headers = HeaderMap::new();
        assert_eq!(resume_point(&headers, None).unwrap(), "");
        assert_eq!(resume_point(&headers, Some("1700-3")).unwrap(), "1700-3");
        assert!(resume_point(&headers, Some("abc")).is_err());
        headers.insert("last-event-id", "5-1".parse().unwrap());
        assert_eq!(resume_point(&headers, Some("1700-3")).unwrap(), "5-1");
        headers.insert("last-event-id", "5-x".parse().unwrap());
        assert!(resume_point(&headers, None).is_err());
    }
}
