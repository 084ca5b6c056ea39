//! The AG-UI JSON wire form of [`AgUiEvent`].

use crate::v1::{AgUiEvent, ag_ui_event::Event};

/// Why an event could not be turned into or read from its wire JSON.
#[derive(Debug)]
pub struct WireError(pub String);

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AG-UI event JSON: {}", self.0)
    }
}

impl std::error::Error for WireError {}

/// The wire name of [`AgUiEvent::subagent_run_id`].
const SUBAGENT_RUN_ID: &str = "subagentRunId";

impl AgUiEvent {
    pub fn new(event: Event) -> Self {
        Self {
            event: Some(event),
            subagent_run_id: None,
        }
    }

    /// The AG-UI JSON: `{"type":"TEXT_MESSAGE_CONTENT","messageId":"…","delta":"…"}`.
    pub fn to_json(&self) -> Result<String, WireError> {
        let event = self
            .event
            .as_ref()
            .ok_or_else(|| WireError("empty event".into()))?;
        let Some(subagent_run_id) = &self.subagent_run_id else {
            return serde_json::to_string(event).map_err(|e| WireError(e.to_string()));
        };
        // Attribution sits beside the event's own fields, as AG-UI puts it.
        let mut value = serde_json::to_value(event).map_err(|e| WireError(e.to_string()))?;
        if let Some(object) = value.as_object_mut() {
            object.insert(
                SUBAGENT_RUN_ID.into(),
                serde_json::Value::String(subagent_run_id.clone()),
            );
        }
        serde_json::to_string(&value).map_err(|e| WireError(e.to_string()))
    }

    pub fn from_json(json: &str) -> Result<Self, WireError> {
        if !json.contains(SUBAGENT_RUN_ID) {
            let event: Event = serde_json::from_str(json).map_err(|e| WireError(e.to_string()))?;
            return Ok(Self::new(event));
        }
        let mut value: serde_json::Value =
            serde_json::from_str(json).map_err(|e| WireError(e.to_string()))?;
        // SUBAGENT_STARTED / _FINISHED / _ERROR name their sub-run in a field of their own.
        let own_field = value["type"]
            .as_str()
            .is_some_and(|t| t.starts_with("SUBAGENT_"));
        let subagent_run_id = if own_field {
            None
        } else {
            value
                .as_object_mut()
                .and_then(|o| o.remove(SUBAGENT_RUN_ID))
                .and_then(|v| v.as_str().map(str::to_string))
        };
        let event: Event = serde_json::from_value(value).map_err(|e| WireError(e.to_string()))?;
        Ok(Self {
            event: Some(event),
            subagent_run_id,
        })
    }

    /// This event, attributed to the sub-agent run `subagent_run_id` (relayed into a parent's
    /// stream).
    pub fn attributed_to(mut self, subagent_run_id: &str) -> Self {
        self.subagent_run_id = Some(subagent_run_id.to_string());
        self
    }

    /// The AG-UI `type` name, e.g. `RUN_FINISHED`.
    pub fn type_name(&self) -> &'static str {
        match &self.event {
            None => "UNSPECIFIED",
            Some(event) => event.type_name(),
        }
    }

    /// RUN_FINISHED and RUN_ERROR end a run's stream.
    pub fn is_terminal(&self) -> bool {
        matches!(
            self.event,
            Some(Event::RunFinished(_)) | Some(Event::RunError(_))
        )
    }
}

impl Event {
    pub fn type_name(&self) -> &'static str {
        match self {
            Event::RunStarted(_) => "RUN_STARTED",
            Event::RunFinished(_) => "RUN_FINISHED",
            Event::RunError(_) => "RUN_ERROR",
            Event::StepStarted(_) => "STEP_STARTED",
            Event::StepFinished(_) => "STEP_FINISHED",
            Event::TextMessageStart(_) => "TEXT_MESSAGE_START",
            Event::TextMessageContent(_) => "TEXT_MESSAGE_CONTENT",
            Event::TextMessageEnd(_) => "TEXT_MESSAGE_END",
            Event::ToolCallStart(_) => "TOOL_CALL_START",
            Event::ToolCallArgs(_) => "TOOL_CALL_ARGS",
            Event::ToolCallEnd(_) => "TOOL_CALL_END",
            Event::ToolCallResult(_) => "TOOL_CALL_RESULT",
            Event::StateSnapshot(_) => "STATE_SNAPSHOT",
            Event::StateDelta(_) => "STATE_DELTA",
            Event::MessagesSnapshot(_) => "MESSAGES_SNAPSHOT",
            Event::ReasoningStart(_) => "REASONING_START",
            Event::ReasoningMessageStart(_) => "REASONING_MESSAGE_START",
            Event::ReasoningMessageContent(_) => "REASONING_MESSAGE_CONTENT",
            Event::ReasoningMessageEnd(_) => "REASONING_MESSAGE_END",
            Event::ReasoningEnd(_) => "REASONING_END",
            Event::Custom(_) => "CUSTOM",
            Event::Raw(_) => "RAW",
            Event::SubagentStarted(_) => "SUBAGENT_STARTED",
            Event::SubagentFinished(_) => "SUBAGENT_FINISHED",
            Event::SubagentError(_) => "SUBAGENT_ERROR",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v1::{RunStarted, StateSnapshot, TextMessageContent};

    #[test]
    fn text_content_serializes_as_ag_ui_json() {
        let event = AgUiEvent::new(Event::TextMessageContent(TextMessageContent {
            message_id: "m1".into(),
            delta: "Hel".into(),
            timestamp: None,
        }));
        assert_eq!(
            event.to_json().unwrap(),
            r#"{"type":"TEXT_MESSAGE_CONTENT","messageId":"m1","delta":"Hel"}"#
        );
    }

    #[test]
    fn absent_optionals_are_omitted_and_round_trip() {
        let event = AgUiEvent::new(Event::RunStarted(RunStarted {
            thread_id: "t".into(),
            run_id: "r".into(),
            parent_run_id: None,
            timestamp: Some(5),
        }));
        let json = event.to_json().unwrap();
        assert_eq!(
            json,
            r#"{"type":"RUN_STARTED","threadId":"t","runId":"r","timestamp":5}"#
        );
        assert_eq!(AgUiEvent::from_json(&json).unwrap(), event);
    }

    #[test]
    fn json_fields_embed_json() {
        let event = AgUiEvent::new(Event::StateSnapshot(StateSnapshot {
            snapshot_json: r#"{"a":[1,2]}"#.into(),
            timestamp: None,
        }));
        let json = event.to_json().unwrap();
        assert_eq!(json, r#"{"type":"STATE_SNAPSHOT","snapshot":{"a":[1,2]}}"#);
        assert_eq!(AgUiEvent::from_json(&json).unwrap(), event);
        assert_eq!(event.type_name(), "STATE_SNAPSHOT");
    }

    #[test]
    fn subagent_attribution_rides_beside_the_event_fields_and_round_trips() {
        let event = AgUiEvent::new(Event::TextMessageContent(TextMessageContent {
            message_id: "m1".into(),
            delta: "hi".into(),
            timestamp: None,
        }))
        .attributed_to("sub-1");
        let json = event.to_json().unwrap();
        assert_eq!(
            json,
            r#"{"delta":"hi","messageId":"m1","subagentRunId":"sub-1","type":"TEXT_MESSAGE_CONTENT"}"#
        );
        assert_eq!(AgUiEvent::from_json(&json).unwrap(), event);
        let plain = AgUiEvent::from_json(
            r#"{"type":"TEXT_MESSAGE_CONTENT","messageId":"m1","delta":"hi"}"#,
        )
        .unwrap();
        assert_eq!(plain.subagent_run_id, None);
        // A SUBAGENT_* event's own subagentRunId is its field, not an attribution.
        let started = AgUiEvent::from_json(
            r#"{"type":"SUBAGENT_STARTED","subagentRunId":"sub-2","name":"explore"}"#,
        )
        .unwrap();
        assert_eq!(started.subagent_run_id, None);
        match started.event {
            Some(Event::SubagentStarted(s)) => assert_eq!(s.subagent_run_id, "sub-2"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn unknown_type_is_an_error() {
        assert!(AgUiEvent::from_json(r#"{"type":"NOPE"}"#).is_err());
    }
}
