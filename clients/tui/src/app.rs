//! The interactive client's state and its reducers: AG-UI events and key presses go in, the
//! state changes and, for keys, an [`Action`] for the I/O loop comes out. No terminal, no
//! network here, so all of it is unit-tested.

use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use serde_json::Value;

use crate::api::{Chat, Message};

/// What a tool call shows once its run ended without its result.
pub const NOT_RUN: &str = "(not run: the run ended)";

/// What a tool call without a result shows once this client lost its run's stream for good:
/// the run may go on, so nothing is said of the call but that.
pub const STREAM_LOST: &str = "(unknown: the stream was lost)";

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Entry {
    User(String),
    Assistant(String),
    Tool {
        id: String,
        name: String,
        args: String,
        result: Option<String>,
    },
    Error(String),
    Info(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Approval {
    pub run_id: String,
    pub tool_call_id: String,
    pub name: String,
    pub args: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Focus {
    Chats,
    Input,
}

/// What the I/O loop must do after a key press.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    Quit,
    /// Start a run (in a new chat when `chat_id` is None).
    Send {
        chat_id: Option<String>,
        message: String,
        model: String,
    },
    Cancel {
        run_id: String,
    },
    Decide {
        run_id: String,
        tool_call_id: String,
        approve: bool,
    },
    OpenChat {
        chat_id: String,
    },
}

pub struct App {
    pub chats: Vec<Chat>,
    /// Index into `chats` of the highlighted entry in the list.
    pub selected: usize,
    /// The chat shown on the right (None = a new chat, created on the first message).
    pub chat_id: Option<String>,
    pub entries: Vec<Entry>,
    pub input: String,
    pub focus: Focus,
    /// The run being streamed.
    pub run_id: Option<String>,
    pub approval: Option<Approval>,
    pub models: Vec<String>,
    pub model: String,
    /// The model picker's highlighted index while it is open (F2).
    pub picker: Option<usize>,
    pub status: String,
    /// The streamed assistant messages: AG-UI messageId → index into `entries` (a discarded one
    /// is removed by its id).
    streamed: Vec<(String, usize)>,
}

impl Default for App {
    fn default() -> Self {
        Self::new("auto")
    }
}

impl App {
    pub fn new(model: &str) -> Self {
        Self {
            chats: Vec::new(),
            selected: 0,
            chat_id: None,
            entries: Vec::new(),
            input: String::new(),
            focus: Focus::Input,
            run_id: None,
            approval: None,
            models: Vec::new(),
            model: model.to_string(),
            picker: None,
            streamed: Vec::new(),
            status: "Enter: send · Tab: chats · F2: model · Esc: cancel run · Ctrl-C: quit".into(),
        }
    }

    pub fn running(&self) -> bool {
        self.run_id.is_some()
    }

    pub fn set_chats(&mut self, chats: Vec<Chat>) {
        self.chats = chats;
        self.selected = self.selected.min(self.chats.len().saturating_sub(1));
    }

    pub fn show_messages(&mut self, chat_id: &str, messages: Vec<Message>) {
        self.chat_id = Some(chat_id.to_string());
        self.streamed.clear();
        self.entries = messages
            .into_iter()
            .map(|m| match m.role.as_str() {
                "user" => Entry::User(m.content),
                _ => Entry::Assistant(m.content),
            })
            .collect();
    }

    /// A run of ours was accepted by the gateway.
    pub fn run_started(&mut self, chat_id: &str, run_id: &str) {
        self.chat_id = Some(chat_id.to_string());
        self.run_id = Some(run_id.to_string());
    }

    pub fn error(&mut self, message: impl Into<String>) {
        self.entries.push(Entry::Error(message.into()));
    }

    pub fn info(&mut self, message: impl Into<String>) {
        self.entries.push(Entry::Info(message.into()));
    }

    /// Folds one AG-UI event of the streamed run into the transcript.
    pub fn handle_event(&mut self, event: &Value) {
        let s = |k: &str| event[k].as_str().unwrap_or_default().to_string();
        let own = self
            .run_id
            .as_deref()
            .is_some_and(|id| event["runId"].as_str().is_none_or(|r| r == id));
        // A sub-agent run's events (relayed, with subagentRunId): its start and end are shown,
        // its approval requests answered on its own run; the rest stays in its own stream.
        if let Some(sub_run) = event["subagentRunId"].as_str() {
            match event["type"].as_str().unwrap_or_default() {
                "SUBAGENT_STARTED" => self.info(format!(
                    "Sub-agent {} started: {}",
                    s("name"),
                    s("description")
                )),
                "SUBAGENT_FINISHED" => self.info(format!("Sub-agent {sub_run} finished.")),
                "SUBAGENT_ERROR" => {
                    self.info(format!("Sub-agent {sub_run} failed: {}", s("message")))
                }
                "CUSTOM" if event["name"] == "tool_call_approval" => {
                    let value = &event["value"];
                    self.approval = Some(Approval {
                        run_id: sub_run.to_string(),
                        tool_call_id: value["toolCallId"].as_str().unwrap_or_default().to_string(),
                        name: value["toolCallName"]
                            .as_str()
                            .unwrap_or_default()
                            .to_string(),
                        args: value["args"].as_str().unwrap_or_default().to_string(),
                    });
                }
                _ => {}
            }
            return;
        }
        match event["type"].as_str().unwrap_or_default() {
            "TEXT_MESSAGE_START" => {
                self.streamed.push((s("messageId"), self.entries.len()));
                self.entries.push(Entry::Assistant(String::new()));
            }
            "TEXT_MESSAGE_CONTENT" => {
                let delta = s("delta");
                match self.entries.last_mut() {
                    Some(Entry::Assistant(text)) => text.push_str(&delta),
                    _ => {
                        self.streamed.push((s("messageId"), self.entries.len()));
                        self.entries.push(Entry::Assistant(delta));
                    }
                }
            }
            // A durable run's model turn broke off and is asked again: the partial message and
            // the tool calls it announced go away (a retry may announce a call id again).
            "CUSTOM" if event["name"] == "message_discarded" => {
                let id = event["value"]["messageId"].as_str().unwrap_or_default();
                self.discard_message(id);
                let calls = event["value"]["toolCallIds"].as_array();
                for call in calls.into_iter().flatten().filter_map(|c| c.as_str()) {
                    self.discard_tool_call(call);
                }
            }
            "TOOL_CALL_START" => self.entries.push(Entry::Tool {
                id: s("toolCallId"),
                name: s("toolCallName"),
                args: String::new(),
                result: None,
            }),
            "TOOL_CALL_ARGS" => {
                if let Some(Entry::Tool { args, .. }) = self.tool_mut(&s("toolCallId")) {
                    args.push_str(&s("delta"));
                }
            }
            "TOOL_CALL_RESULT" => {
                let id = s("toolCallId");
                if let Some(Entry::Tool { result, .. }) = self.tool_mut(&id) {
                    *result = Some(s("content"));
                }
                if self.approval.as_ref().is_some_and(|a| a.tool_call_id == id) {
                    self.approval = None;
                }
            }
            "CUSTOM" if event["name"] == "tool_call_approval" => {
                let value = &event["value"];
                let field = |a: &str, b: &str| {
                    value[a]
                        .as_str()
                        .or(value[b].as_str())
                        .unwrap_or_default()
                        .to_string()
                };
                let args = match &value["args"] {
                    Value::String(a) => a.clone(),
                    Value::Null => String::new(),
                    other => other.to_string(),
                };
                if let Some(run_id) = self.run_id.clone() {
                    self.approval = Some(Approval {
                        run_id,
                        tool_call_id: field("toolCallId", "tool_call_id"),
                        name: field("toolCallName", "name"),
                        args,
                    });
                }
            }
            "RUN_ERROR" if own => {
                let message = s("message");
                if event["code"] == "cancelled" {
                    self.info("The run was cancelled.");
                } else if message.is_empty() {
                    self.error("The run failed.");
                } else {
                    self.error(message);
                }
                self.run_ended();
            }
            "RUN_FINISHED" if own => self.run_ended(),
            _ => {}
        }
    }

    /// The run ended. A call it announced and never answered (a cancelled run, one whose
    /// driver died) says so, rather than waiting on screen forever.
    pub fn run_ended(&mut self) {
        self.stop_following(NOT_RUN);
    }

    /// The run's stream could not be resumed: the run may go on, so its unanswered calls say
    /// only that this client cannot tell.
    pub fn stream_lost(&mut self) {
        self.stop_following(STREAM_LOST);
    }

    fn stop_following(&mut self, unanswered: &str) {
        self.run_id = None;
        self.approval = None;
        for entry in &mut self.entries {
            if let Entry::Tool {
                result: result @ None,
                ..
            } = entry
            {
                *result = Some(unanswered.into());
            }
        }
    }

    /// Removes the streamed assistant message `message_id` from the transcript.
    fn discard_message(&mut self, message_id: &str) {
        let Some(pos) = self.streamed.iter().position(|(id, _)| id == message_id) else {
            return;
        };
        let (_, index) = self.streamed.remove(pos);
        if matches!(self.entries.get(index), Some(Entry::Assistant(_))) {
            self.entries.remove(index);
            for (_, i) in &mut self.streamed {
                if *i > index {
                    *i -= 1;
                }
            }
        }
    }

    fn discard_tool_call(&mut self, call_id: &str) {
        let Some(index) = self
            .entries
            .iter()
            .rposition(|e| matches!(e, Entry::Tool { id, .. } if id == call_id))
        else {
            return;
        };
        self.entries.remove(index);
        for (_, i) in &mut self.streamed {
            if *i > index {
                *i -= 1;
            }
        }
    }

    fn tool_mut(&mut self, id: &str) -> Option<&mut Entry> {
        self.entries
            .iter_mut()
            .rev()
            .find(|e| matches!(e, Entry::Tool { id: i, .. } if i == id))
    }

    pub fn handle_key(&mut self, key: KeyEvent) -> Option<Action> {
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        if ctrl && matches!(key.code, KeyCode::Char('c') | KeyCode::Char('q')) {
            return Some(Action::Quit);
        }
        if let Some(approval) = self.approval.clone() {
            let approve = match key.code {
                KeyCode::Char('y' | 'Y') => true,
                KeyCode::Char('n' | 'N') => false,
                KeyCode::Esc => {
                    return self.run_id.clone().map(|run_id| Action::Cancel { run_id });
                }
                _ => return None,
            };
            self.approval = None;
            return Some(Action::Decide {
                run_id: approval.run_id,
                tool_call_id: approval.tool_call_id,
                approve,
            });
        }
        if let Some(i) = self.picker {
            match key.code {
                KeyCode::Up => self.picker = Some(i.saturating_sub(1)),
                KeyCode::Down => {
                    self.picker = Some((i + 1).min(self.models.len().saturating_sub(1)))
                }
                KeyCode::Enter => {
                    if let Some(m) = self.models.get(i) {
                        self.model = m.clone();
                    }
                    self.picker = None;
                }
                KeyCode::Esc | KeyCode::F(2) => self.picker = None,
                _ => {}
            }
            return None;
        }
        match key.code {
            KeyCode::F(2) => {
                let current = self.models.iter().position(|m| *m == self.model);
                self.picker = Some(current.unwrap_or(0));
                None
            }
            KeyCode::Esc => self.run_id.clone().map(|run_id| Action::Cancel { run_id }),
            KeyCode::Tab => {
                self.focus = match self.focus {
                    Focus::Chats => Focus::Input,
                    Focus::Input => Focus::Chats,
                };
                None
            }
            _ if self.focus == Focus::Chats => self.chat_list_key(key),
            KeyCode::Enter => {
                let message = self.input.trim().to_string();
                if message.is_empty() {
                    return None;
                }
                if self.running() {
                    self.status = "A run is still streaming: wait, or Esc to cancel it.".into();
                    return None;
                }
                self.input.clear();
                self.entries.push(Entry::User(message.clone()));
                Some(Action::Send {
                    chat_id: self.chat_id.clone(),
                    message,
                    model: self.model.clone(),
                })
            }
            KeyCode::Backspace => {
                self.input.pop();
                None
            }
            KeyCode::Char(c) if !ctrl => {
                self.input.push(c);
                None
            }
            _ => None,
        }
    }

    fn chat_list_key(&mut self, key: KeyEvent) -> Option<Action> {
        match key.code {
            KeyCode::Up => self.selected = self.selected.saturating_sub(1),
            KeyCode::Down => {
                self.selected = (self.selected + 1).min(self.chats.len().saturating_sub(1))
            }
            KeyCode::Char('n') if !self.running() => {
                self.chat_id = None;
                self.entries.clear();
                self.streamed.clear();
                self.focus = Focus::Input;
            }
            KeyCode::Enter if !self.running() => {
                let chat = self.chats.get(self.selected)?;
                self.focus = Focus::Input;
                return Some(Action::OpenChat {
                    chat_id: chat.id.clone(),
                });
            }
            _ => {}
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn key(code: KeyCode) -> KeyEvent {
        KeyEvent::new(code, KeyModifiers::NONE)
    }

    fn typed(app: &mut App, text: &str) {
        for c in text.chars() {
            assert_eq!(app.handle_key(key(KeyCode::Char(c))), None);
        }
    }

    #[test]
    fn text_deltas_accumulate_into_one_reply() {
        let mut app = App::new("auto");
        typed(&mut app, "hi");
        let action = app.handle_key(key(KeyCode::Enter));
        assert_eq!(
            action,
            Some(Action::Send {
                chat_id: None,
                message: "hi".into(),
                model: "auto".into()
            })
        );
        assert!(app.input.is_empty());
        app.run_started("c1", "r1");
        app.handle_event(&json!({"type": "RUN_STARTED", "runId": "r1"}));
        app.handle_event(&json!({"type": "TEXT_MESSAGE_START", "messageId": "m"}));
        for d in ["Hel", "lo ", "**you**"] {
            app.handle_event(
                &json!({"type": "TEXT_MESSAGE_CONTENT", "messageId": "m", "delta": d}),
            );
        }
        app.handle_event(&json!({"type": "TEXT_MESSAGE_END", "messageId": "m"}));
        assert_eq!(
            app.entries,
            vec![
                Entry::User("hi".into()),
                Entry::Assistant("Hello **you**".into())
            ]
        );
        assert!(app.running());
        app.handle_event(&json!({"type": "RUN_FINISHED", "runId": "r1"}));
        assert!(!app.running());
        assert_eq!(app.chat_id.as_deref(), Some("c1"));
    }

    #[test]
    fn a_run_error_is_shown_and_ends_the_run_but_a_sub_runs_does_not() {
        let mut app = App::new("auto");
        app.run_started("c", "r1");
        app.handle_event(&json!({"type": "RUN_ERROR", "runId": "sub", "message": "inner"}));
        assert!(app.running(), "a sub-run's end is not ours");
        app.handle_event(
            &json!({"type": "RUN_ERROR", "runId": "r1", "message": "model unavailable"}),
        );
        assert!(!app.running());
        assert_eq!(
            app.entries.last(),
            Some(&Entry::Error("model unavailable".into()))
        );
    }

    #[test]
    fn tool_calls_collect_args_and_results() {
        let mut app = App::new("auto");
        app.run_started("c", "r");
        app.handle_event(
            &json!({"type": "TOOL_CALL_START", "toolCallId": "t1", "toolCallName": "weather"}),
        );
        app.handle_event(
            &json!({"type": "TOOL_CALL_ARGS", "toolCallId": "t1", "delta": "{\"city\":"}),
        );
        app.handle_event(
            &json!({"type": "TOOL_CALL_ARGS", "toolCallId": "t1", "delta": "\"Oslo\"}"}),
        );
        app.handle_event(
            &json!({"type": "TOOL_CALL_RESULT", "toolCallId": "t1", "content": "4°C"}),
        );
        assert_eq!(
            app.entries,
            vec![Entry::Tool {
                id: "t1".into(),
                name: "weather".into(),
                args: "{\"city\":\"Oslo\"}".into(),
                result: Some("4°C".into())
            }]
        );
    }

    #[test]
    fn a_discarded_message_is_removed_and_its_retry_shown() {
        let mut app = App::new("auto");
        app.run_started("c", "r1");
        app.handle_event(&json!({"type": "TEXT_MESSAGE_START", "messageId": "m1"}));
        app.handle_event(
            &json!({"type": "TEXT_MESSAGE_CONTENT", "messageId": "m1", "delta": "Partial "}),
        );
        app.handle_event(&json!({"type": "TEXT_MESSAGE_END", "messageId": "m1"}));
        app.handle_event(&json!({"type": "CUSTOM", "name": "message_discarded",
            "value": {"messageId": "m1", "reason": "the model relay broke off"}}));
        app.handle_event(&json!({"type": "TEXT_MESSAGE_START", "messageId": "m1-retry1"}));
        app.handle_event(
            &json!({"type": "TEXT_MESSAGE_CONTENT", "messageId": "m1-retry1", "delta": "Whole."}),
        );
        // A discard of a message it never saw changes nothing.
        app.handle_event(&json!({"type": "CUSTOM", "name": "message_discarded",
            "value": {"messageId": "other", "reason": "x"}}));
        app.handle_event(&json!({"type": "RUN_FINISHED", "runId": "r1"}));
        assert_eq!(app.entries, vec![Entry::Assistant("Whole.".into())]);
    }

    #[test]
    fn a_withdrawn_turns_tool_calls_are_removed_and_a_retry_may_reuse_their_ids() {
        let mut app = App::new("auto");
        app.run_started("c", "r1");
        app.handle_event(&json!({"type": "TOOL_CALL_START", "toolCallId": "call_a",
            "toolCallName": "web_fetch"}));
        app.handle_event(
            &json!({"type": "TOOL_CALL_START", "toolCallId": "call_same",
            "toolCallName": "web_fetch"}),
        );
        app.handle_event(&json!({"type": "CUSTOM", "name": "message_discarded",
            "value": {"toolCallIds": ["call_a", "call_same"], "reason": "the worker stopped"}}));
        assert_eq!(app.entries, vec![]);
        app.handle_event(
            &json!({"type": "TOOL_CALL_START", "toolCallId": "call_same",
            "toolCallName": "web_fetch"}),
        );
        app.handle_event(
            &json!({"type": "TOOL_CALL_RESULT", "toolCallId": "call_same", "content": "seven"}),
        );
        app.handle_event(&json!({"type": "TEXT_MESSAGE_START", "messageId": "m-retry1"}));
        app.handle_event(
            &json!({"type": "TEXT_MESSAGE_CONTENT", "messageId": "m-retry1", "delta": "Seven."}),
        );
        assert_eq!(
            app.entries,
            vec![
                Entry::Tool {
                    id: "call_same".into(),
                    name: "web_fetch".into(),
                    args: String::new(),
                    result: Some("seven".into()),
                },
                Entry::Assistant("Seven.".into()),
            ]
        );
    }

    #[test]
    fn a_call_of_a_run_whose_stream_was_lost_is_not_said_to_be_not_run() {
        let mut app = App::new("auto");
        app.run_started("c", "r1");
        app.handle_event(&json!({"type": "TOOL_CALL_START", "toolCallId": "open",
            "toolCallName": "web_fetch"}));
        app.stream_lost();
        assert!(app.run_id.is_none());
        assert!(app.entries.iter().any(|e| matches!(e,
            Entry::Tool { result: Some(r), .. } if r == STREAM_LOST)));
    }

    #[test]
    fn a_call_the_run_ended_without_says_it_was_not_run() {
        let mut app = App::new("auto");
        app.run_started("c", "r1");
        for id in ["done", "never"] {
            app.handle_event(&json!({"type": "TOOL_CALL_START", "toolCallId": id,
                "toolCallName": "web_fetch"}));
        }
        app.handle_event(
            &json!({"type": "TOOL_CALL_RESULT", "toolCallId": "done", "content": "seven"}),
        );
        app.handle_event(
            &json!({"type": "RUN_ERROR", "runId": "r1", "code": "cancelled",
            "message": "cancelled by the user"}),
        );
        let results: Vec<Option<String>> = app
            .entries
            .iter()
            .filter_map(|e| match e {
                Entry::Tool { result, .. } => Some(result.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(
            results,
            vec![Some("seven".to_string()), Some(NOT_RUN.to_string())]
        );
    }

    #[test]
    fn approvals_are_asked_and_answered_with_y_or_n() {
        let mut app = App::new("auto");
        app.run_started("c", "r9");
        app.handle_event(&json!({"type": "CUSTOM", "name": "tool_call_approval",
            "value": {"toolCallId": "t7", "toolCallName": "send_mail", "args": {"to": "x"}}}));
        let approval = app.approval.clone().expect("an approval prompt");
        assert_eq!(approval.name, "send_mail");
        assert_eq!(approval.args, r#"{"to":"x"}"#);
        // Other keys do not type into the input while the prompt is open.
        assert_eq!(app.handle_key(key(KeyCode::Char('a'))), None);
        assert!(app.input.is_empty());
        assert_eq!(
            app.handle_key(key(KeyCode::Char('n'))),
            Some(Action::Decide {
                run_id: "r9".into(),
                tool_call_id: "t7".into(),
                approve: false
            })
        );
        assert!(app.approval.is_none());
    }

    #[test]
    fn esc_cancels_only_a_running_run_and_ctrl_c_quits() {
        let mut app = App::new("auto");
        assert_eq!(app.handle_key(key(KeyCode::Esc)), None);
        app.run_started("c", "r2");
        assert_eq!(
            app.handle_key(key(KeyCode::Esc)),
            Some(Action::Cancel {
                run_id: "r2".into()
            })
        );
        typed(&mut app, "more");
        assert_eq!(
            app.handle_key(key(KeyCode::Enter)),
            None,
            "one run at a time"
        );
        assert_eq!(
            app.handle_key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL)),
            Some(Action::Quit)
        );
    }

    #[test]
    fn the_model_picker_selects_a_model() {
        let mut app = App::new("auto");
        app.models = vec!["auto".into(), "offline:echo".into(), "big".into()];
        app.handle_key(key(KeyCode::F(2)));
        assert_eq!(app.picker, Some(0));
        app.handle_key(key(KeyCode::Down));
        app.handle_key(key(KeyCode::Enter));
        assert_eq!(app.model, "offline:echo");
        assert_eq!(app.picker, None);
        typed(&mut app, "q");
        match app.handle_key(key(KeyCode::Enter)) {
            Some(Action::Send { model, .. }) => assert_eq!(model, "offline:echo"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_chat_list_opens_a_chat() {
        let mut app = App::new("auto");
        app.set_chats(vec![
            Chat {
                id: "a".into(),
                title: "A".into(),
            },
            Chat {
                id: "b".into(),
                title: "B".into(),
            },
        ]);
        app.handle_key(key(KeyCode::Tab));
        assert_eq!(app.focus, Focus::Chats);
        app.handle_key(key(KeyCode::Down));
        app.handle_key(key(KeyCode::Down));
        assert_eq!(
            app.handle_key(key(KeyCode::Enter)),
            Some(Action::OpenChat {
                chat_id: "b".into()
            })
        );
        assert_eq!(app.focus, Focus::Input);
    }
}
