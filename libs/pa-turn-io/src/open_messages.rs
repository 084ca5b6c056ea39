//! Which messages and tool calls a run's stream began and left open, and the events that close
//! them.
//!
//! Read back by whoever takes over a stream whose writer died: svc-runs' reaper ending an inline
//! run (then RUN_ERROR), svc-worker withdrawing a dead attempt's message before the turn is
//! asked again (then `message_discarded`). One reader, so both close a stream the same way: an
//! AG-UI client expects every START to be ended, and an END without its START is as wrong.

use pa_proto::v1::{
    AgUiEvent, ReasoningEnd, ReasoningMessageEnd, TextMessageEnd, ToolCallEnd, ag_ui_event::Event,
};

/// The last text and reasoning messages a stream began and the tool calls it announced (its
/// own, not a sub-run's relayed ones), and which of their parts are still open.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OpenMessages {
    text: Option<Begun>,
    reasoning: Option<Begun>,
    /// REASONING_MESSAGE_START seen and its END not (inside REASONING_START … END).
    reasoning_message_open: bool,
    /// Every TOOL_CALL_START, in order.
    tool_calls: Vec<Begun>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Begun {
    id: String,
    open: bool,
}

impl Begun {
    fn open(id: &str) -> Option<Self> {
        Some(Self {
            id: id.to_string(),
            open: true,
        })
    }

    fn end(slot: &mut Option<Self>, id: &str) {
        if let Some(begun) = slot.as_mut().filter(|b| b.id == id) {
            begun.open = false;
        }
    }
}

impl OpenMessages {
    /// Takes the stream's next event. A sub-run's relayed events (`subagentRunId`) are its own
    /// messages, not this run's, and are skipped.
    pub fn saw(&mut self, event: &AgUiEvent) {
        if event.subagent_run_id.is_some() {
            return;
        }
        match &event.event {
            Some(Event::TextMessageStart(m)) => self.text = Begun::open(&m.message_id),
            Some(Event::TextMessageEnd(m)) => Begun::end(&mut self.text, &m.message_id),
            Some(Event::ReasoningStart(m)) => {
                self.reasoning = Begun::open(&m.message_id);
                self.reasoning_message_open = false;
            }
            Some(Event::ReasoningMessageStart(m))
                if self.open_reasoning() == Some(&m.message_id) =>
            {
                self.reasoning_message_open = true;
            }
            Some(Event::ReasoningMessageEnd(m)) if self.open_reasoning() == Some(&m.message_id) => {
                self.reasoning_message_open = false;
            }
            Some(Event::ReasoningEnd(m)) => {
                Begun::end(&mut self.reasoning, &m.message_id);
                if self.open_reasoning().is_none() {
                    self.reasoning_message_open = false;
                }
            }
            Some(Event::ToolCallStart(c)) => {
                self.tool_calls.extend(Begun::open(&c.tool_call_id));
            }
            Some(Event::ToolCallEnd(c)) => {
                if let Some(call) = self
                    .tool_calls
                    .iter_mut()
                    .rev()
                    .find(|b| b.open && b.id == c.tool_call_id)
                {
                    call.open = false;
                }
            }
            _ => {}
        }
    }

    /// The stream began a message of either kind or announced a tool call.
    pub fn began(&self) -> bool {
        self.text.is_some() || self.reasoning.is_some() || !self.tool_calls.is_empty()
    }

    /// The tool calls announced, ended or not, in order.
    pub fn tool_call_ids(&self) -> Vec<&str> {
        self.tool_calls.iter().map(|b| b.id.as_str()).collect()
    }

    /// The last text message begun, open or ended.
    pub fn text_id(&self) -> Option<&str> {
        self.text.as_ref().map(|b| b.id.as_str())
    }

    /// The last reasoning message begun, open or ended.
    pub fn reasoning_id(&self) -> Option<&str> {
        self.reasoning.as_ref().map(|b| b.id.as_str())
    }

    /// A text message begun and not ended.
    pub fn open_text(&self) -> Option<&str> {
        self.text.as_ref().filter(|b| b.open).map(|b| b.id.as_str())
    }

    /// A reasoning message begun and not ended.
    pub fn open_reasoning(&self) -> Option<&str> {
        self.reasoning
            .as_ref()
            .filter(|b| b.open)
            .map(|b| b.id.as_str())
    }

    /// The events that end what is open, inner parts first: REASONING_MESSAGE_END (when its
    /// START was seen), REASONING_END, TOOL_CALL_END for each call announced and not ended,
    /// TEXT_MESSAGE_END. Nothing that was ended already.
    pub fn closing_events(&self) -> Vec<AgUiEvent> {
        let mut events = Vec::new();
        if let Some(id) = self.open_reasoning() {
            if self.reasoning_message_open {
                events.push(AgUiEvent::new(Event::ReasoningMessageEnd(
                    ReasoningMessageEnd {
                        message_id: id.to_string(),
                        timestamp: None,
                    },
                )));
            }
            events.push(AgUiEvent::new(Event::ReasoningEnd(ReasoningEnd {
                message_id: id.to_string(),
                timestamp: None,
            })));
        }
        for call in self.tool_calls.iter().filter(|b| b.open) {
            events.push(AgUiEvent::new(Event::ToolCallEnd(ToolCallEnd {
                tool_call_id: call.id.clone(),
                timestamp: None,
            })));
        }
        if let Some(id) = self.open_text() {
            events.push(AgUiEvent::new(Event::TextMessageEnd(TextMessageEnd {
                message_id: id.to_string(),
                timestamp: None,
            })));
        }
        events
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pa_proto::v1::{
        ReasoningMessageContent, ReasoningMessageStart, ReasoningStart, TextMessageContent,
        TextMessageStart, ToolCallArgs, ToolCallStart,
    };

    fn text_start(id: &str) -> AgUiEvent {
        AgUiEvent::new(Event::TextMessageStart(TextMessageStart {
            message_id: id.into(),
            role: "assistant".into(),
            timestamp: None,
        }))
    }

    fn text_delta(id: &str) -> AgUiEvent {
        AgUiEvent::new(Event::TextMessageContent(TextMessageContent {
            message_id: id.into(),
            delta: "x".into(),
            timestamp: None,
        }))
    }

    fn text_end(id: &str) -> AgUiEvent {
        AgUiEvent::new(Event::TextMessageEnd(TextMessageEnd {
            message_id: id.into(),
            timestamp: None,
        }))
    }

    fn reasoning_start(id: &str) -> Vec<AgUiEvent> {
        vec![
            AgUiEvent::new(Event::ReasoningStart(ReasoningStart {
                message_id: id.into(),
                timestamp: None,
            })),
            AgUiEvent::new(Event::ReasoningMessageStart(ReasoningMessageStart {
                message_id: id.into(),
                role: "assistant".into(),
                timestamp: None,
            })),
            AgUiEvent::new(Event::ReasoningMessageContent(ReasoningMessageContent {
                message_id: id.into(),
                delta: "hmm".into(),
                timestamp: None,
            })),
        ]
    }

    fn kinds(events: &[AgUiEvent]) -> Vec<String> {
        events
            .iter()
            .map(|e| match &e.event {
                Some(Event::TextMessageEnd(m)) => format!("text_end:{}", m.message_id),
                Some(Event::ReasoningMessageEnd(m)) => {
                    format!("reasoning_msg_end:{}", m.message_id)
                }
                Some(Event::ReasoningEnd(m)) => format!("reasoning_end:{}", m.message_id),
                Some(Event::ToolCallEnd(c)) => format!("tool_end:{}", c.tool_call_id),
                other => format!("{other:?}"),
            })
            .collect()
    }

    fn read(events: &[AgUiEvent]) -> OpenMessages {
        let mut open = OpenMessages::default();
        events.iter().for_each(|e| open.saw(e));
        open
    }

    #[test]
    fn open_parts_are_closed_inner_first_and_nothing_ended_is_ended_again() {
        assert!(!read(&[]).began());
        assert!(read(&[]).closing_events().is_empty());
        let mut events = reasoning_start("r");
        events.extend([text_start("m"), text_delta("m")]);
        let open = read(&events);
        assert_eq!(
            (open.text_id(), open.reasoning_id()),
            (Some("m"), Some("r"))
        );
        assert_eq!(
            kinds(&open.closing_events()),
            ["reasoning_msg_end:r", "reasoning_end:r", "text_end:m"]
        );
        // The reasoning message ended but not the reasoning: only REASONING_END is owed.
        events.push(AgUiEvent::new(Event::ReasoningMessageEnd(
            ReasoningMessageEnd {
                message_id: "r".into(),
                timestamp: None,
            },
        )));
        assert_eq!(
            kinds(&read(&events).closing_events()),
            ["reasoning_end:r", "text_end:m"]
        );
        events.push(AgUiEvent::new(Event::ReasoningEnd(ReasoningEnd {
            message_id: "r".into(),
            timestamp: None,
        })));
        events.push(text_end("m"));
        let ended = read(&events);
        assert!(ended.closing_events().is_empty());
        assert!(ended.began(), "ended messages are still the ones begun");
        assert_eq!((ended.open_text(), ended.text_id()), (None, Some("m")));
    }

    #[test]
    fn a_reasoning_start_without_its_message_start_gets_no_message_end() {
        let events = reasoning_start("r");
        assert_eq!(
            kinds(&read(&events[..1]).closing_events()),
            ["reasoning_end:r"]
        );
    }

    #[test]
    fn ends_of_other_messages_and_a_sub_runs_relayed_events_change_nothing() {
        let mut events = vec![text_start("m-1"), text_delta("m-1")];
        // An END for a message this stream did not leave open (an earlier one, or a stray).
        events.push(text_end("m-0"));
        // A sub-run's relayed messages are its own: neither begun nor closed here.
        events.push(text_start("child").attributed_to("sub-1"));
        events.push(text_end("m-1").attributed_to("sub-1"));
        events.extend(
            reasoning_start("child-r")
                .into_iter()
                .map(|e| e.attributed_to("sub-1")),
        );
        let open = read(&events);
        assert_eq!(open.reasoning_id(), None);
        assert_eq!(kinds(&open.closing_events()), ["text_end:m-1"]);
    }

    #[test]
    fn the_last_message_begun_is_the_one_closed() {
        let events = [text_start("m"), text_end("m"), text_start("m-1")];
        assert_eq!(kinds(&read(&events).closing_events()), ["text_end:m-1"]);
    }

    fn tool_start(id: &str) -> Vec<AgUiEvent> {
        vec![
            AgUiEvent::new(Event::ToolCallStart(ToolCallStart {
                tool_call_id: id.into(),
                tool_call_name: "web_fetch".into(),
                parent_message_id: Some("m".into()),
                timestamp: None,
            })),
            AgUiEvent::new(Event::ToolCallArgs(ToolCallArgs {
                tool_call_id: id.into(),
                delta: "{}".into(),
                timestamp: None,
            })),
        ]
    }

    fn tool_end(id: &str) -> AgUiEvent {
        AgUiEvent::new(Event::ToolCallEnd(ToolCallEnd {
            tool_call_id: id.into(),
            timestamp: None,
        }))
    }

    #[test]
    fn tool_calls_announced_are_begun_and_those_not_ended_are_closed() {
        // A turn of tool calls only (no text): begun all the same.
        let mut events = tool_start("call_a");
        events.push(tool_end("call_a"));
        events.extend(tool_start("call_b"));
        // A sub-run's relayed call is not this run's.
        events.extend(
            tool_start("child")
                .into_iter()
                .map(|e| e.attributed_to("sub-1")),
        );
        let open = read(&events);
        assert!(open.began());
        assert_eq!(open.tool_call_ids(), ["call_a", "call_b"]);
        assert_eq!(kinds(&open.closing_events()), ["tool_end:call_b"]);
        events.push(tool_end("call_b"));
        assert!(read(&events).closing_events().is_empty());
    }
}
