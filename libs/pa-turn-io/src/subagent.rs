//! Sub-agent tool calls — `explore`, `delegate` and `run_agents_script` — for both drivers. The
//! call becomes one sub-run per step, started by svc-runs' launch_run (StartSubRun: its own Run
//! row, usage, toolset and tag gate); this side follows the sub-run's stream, relays its events
//! into the parent's stream attributed to it (AG-UI `subagentRunId`, between SUBAGENT_STARTED and
//! SUBAGENT_FINISHED / SUBAGENT_ERROR), and turns its reply into the tool result.

use std::time::Duration;

use pa_agent::{Input, ToolCall, add_usage};
use pa_kit::{InternalAuth, PaError};
use pa_proto::subagents::{DELEGATE, EXPLORE, RUN_AGENTS_SCRIPT};
use pa_proto::v1::run_ledger_service_client::RunLedgerServiceClient;
use pa_proto::v1::run_service_client::RunServiceClient;
use pa_proto::v1::{
    AgUiEvent, GetRunRequest, Identity, RunSpec, StartSubRunRequest, SubagentError,
    SubagentFinished, SubagentStarted, Usage, ag_ui_event::Event,
};
use serde_json::{Value, json};
use tonic::transport::Channel;

/// The most steps one run_agents_script may have.
pub const MAX_SCRIPT_STEPS: usize = 8;
/// How long a read of the sub-run's stream waits before the run row is looked at instead (a
/// sub-run whose stream expired must not keep its parent waiting forever).
const FOLLOW_BLOCK: Duration = Duration::from_secs(5);

/// Where a sub-run's events go: the parent's stream, written the parent driver's way (the inline
/// driver appends; the durable one writes under ids of its step, idempotently).
pub trait EventRelay: Send {
    fn relay(
        &mut self,
        events: Vec<AgUiEvent>,
    ) -> impl std::future::Future<Output = Result<(), PaError>> + Send;
}

/// The clients sub-agent calls need. Cheap to clone.
#[derive(Clone)]
pub struct SubAgentIo {
    pub ledger: RunLedgerServiceClient<Channel>,
    pub runs: RunServiceClient<Channel>,
    pub redis: pa_kit::redis::Pool,
    pub auth: InternalAuth,
}

/// One sub-run to start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubTask {
    /// explore | delegate
    pub agent: String,
    pub task: String,
    /// "" = the parent's model.
    pub model: String,
}

/// How a sub-run ended.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SubRunOutcome {
    pub run_id: String,
    pub succeeded: bool,
    /// The sub-run's reply, or why it failed.
    pub text: String,
    pub usage: Usage,
    /// The sub-run ingested untrusted content (its run row says so): its report is untrusted.
    pub tainted: bool,
}

/// Reads a sub-agent call's arguments: one task (explore, delegate) or a script's steps.
pub fn parse_call(call: &ToolCall) -> Result<Vec<SubTask>, String> {
    let args: Value = serde_json::from_str(if call.arguments_json.trim().is_empty() {
        "{}"
    } else {
        &call.arguments_json
    })
    .map_err(|e| format!("the arguments are not valid JSON: {e}"))?;
    let task_of = |value: &Value, agent: &str| -> Result<SubTask, String> {
        let task = value
            .get("task")
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or("each sub-agent needs a non-empty \"task\"")?;
        let model = value
            .get("model")
            .and_then(Value::as_str)
            .unwrap_or("")
            .trim();
        Ok(SubTask {
            agent: agent.to_string(),
            task: task.to_string(),
            model: model.to_string(),
        })
    };
    match call.name.as_str() {
        EXPLORE | DELEGATE => Ok(vec![task_of(&args, &call.name)?]),
        RUN_AGENTS_SCRIPT => {
            let steps = args
                .get("steps")
                .and_then(Value::as_array)
                .filter(|s| !s.is_empty())
                .ok_or("run_agents_script needs a non-empty \"steps\" array")?;
            if steps.len() > MAX_SCRIPT_STEPS {
                return Err(format!(
                    "run_agents_script takes at most {MAX_SCRIPT_STEPS} steps"
                ));
            }
            steps
                .iter()
                .map(|step| {
                    let agent = step.get("agent").and_then(Value::as_str).unwrap_or(EXPLORE);
                    if agent != EXPLORE && agent != DELEGATE {
                        return Err(format!(
                            "a step's \"agent\" is \"explore\" or \"delegate\", not {agent:?}"
                        ));
                    }
                    task_of(step, agent)
                })
                .collect()
        }
        other => Err(format!("{other} is not a sub-agent tool")),
    }
}

/// Whether the next sub-run starts tainted: its parent was tainted when it asked, or (a script's
/// later step) its task carries the report of an earlier step that was.
fn starts_tainted(parent_tainted: bool, earlier: &[SubRunOutcome]) -> bool {
    parent_tainted || earlier.iter().any(|o| o.tainted)
}

/// A script step's task, with what the earlier steps found in front of it.
fn with_earlier_results(task: &str, earlier: &[SubRunOutcome]) -> String {
    if earlier.is_empty() {
        return task.to_string();
    }
    let mut text = String::from("Results of the earlier steps:\n");
    for (i, outcome) in earlier.iter().enumerate() {
        let status = if outcome.succeeded { "" } else { " (failed)" };
        text.push_str(&format!("{}.{status} {}\n", i + 1, outcome.text));
    }
    text.push_str("\nYour task: ");
    text.push_str(task);
    text
}

fn tool_result(
    call_id: String,
    content: String,
    is_error: bool,
    untrusted: bool,
    nested: Usage,
) -> Input {
    Input::ToolResult {
        tool_call_id: call_id,
        content,
        is_error,
        untrusted,
        nested,
    }
}

impl SubAgentIo {
    /// Runs a sub-agent tool call to its end and returns its tool result, with the sub-runs'
    /// usage as `nested` (counted against the parent's limits). `spent` is what the parent has
    /// used so far, its earlier sub-runs included. Nothing here fails the parent: every problem
    /// is a tool error the model sees.
    ///
    /// Taint follows the data both ways: a parent that had ingested untrusted content
    /// (`tainted`) wrote the task under its influence, so the sub-run starts tainted (and a
    /// script's later step, whose task carries an earlier tainted step's report, too); a
    /// sub-run that ingested untrusted content makes its report untrusted, so the parent is
    /// tainted when it reads it.
    pub async fn run(
        &self,
        spec: &RunSpec,
        call: ToolCall,
        spent: Usage,
        tainted: bool,
        relay: &mut impl EventRelay,
    ) -> Input {
        let tasks = match parse_call(&call) {
            Ok(tasks) => tasks,
            Err(message) => return tool_result(call.id, message, true, false, Usage::default()),
        };
        let scripted = call.name == RUN_AGENTS_SCRIPT;
        let mut nested = Usage::default();
        let mut outcomes: Vec<SubRunOutcome> = Vec::new();
        for (step, task) in tasks.iter().enumerate() {
            let mut spent_now = spent;
            add_usage(&mut spent_now, &nested);
            let request = StartSubRunRequest {
                parent_run_id: spec.run_id.clone(),
                tool_call_id: call.id.clone(),
                kind: task.agent.clone(),
                task: if scripted {
                    with_earlier_results(&task.task, &outcomes)
                } else {
                    task.task.clone()
                },
                model: task.model.clone(),
                parent_usage: Some(spent_now),
                scripted,
                step: step as u32,
                tainted: starts_tainted(tainted, &outcomes),
            };
            match self.one(spec, &call.id, request, relay).await {
                Ok(outcome) => {
                    add_usage(&mut nested, &outcome.usage);
                    outcomes.push(outcome);
                }
                Err(err) if outcomes.is_empty() => {
                    return tool_result(call.id, err.message, true, false, nested);
                }
                Err(err) => {
                    outcomes.push(SubRunOutcome {
                        text: err.message,
                        ..Default::default()
                    });
                    break;
                }
            }
        }
        let untrusted = outcomes.iter().any(|o| o.tainted);
        if !scripted {
            let outcome = outcomes.pop().unwrap_or_default();
            let content = if outcome.succeeded {
                outcome.text
            } else {
                format!("the sub-agent failed: {}", outcome.text)
            };
            return tool_result(call.id, content, !outcome.succeeded, untrusted, nested);
        }
        let all_ok = outcomes.len() == tasks.len() && outcomes.iter().all(|o| o.succeeded);
        let steps: Vec<Value> = outcomes
            .iter()
            .zip(&tasks)
            .enumerate()
            .map(|(i, (outcome, task))| {
                json!({
                    "step": i + 1,
                    "agent": task.agent,
                    "runId": outcome.run_id,
                    "status": if outcome.succeeded { "succeeded" } else { "failed" },
                    "result": outcome.text,
                })
            })
            .collect();
        let content = json!({ "steps": steps }).to_string();
        tool_result(call.id, content, !all_ok, untrusted, nested)
    }

    /// Starts one sub-run (or finds the one a retried call started), relays its events until it
    /// ends, and reads its usage from its run row.
    async fn one(
        &self,
        spec: &RunSpec,
        tool_call_id: &str,
        request: StartSubRunRequest,
        relay: &mut impl EventRelay,
    ) -> Result<SubRunOutcome, PaError> {
        let identity: Identity = spec.identity.clone().unwrap_or_default();
        let name = request.kind.clone();
        let description = request.task.clone();
        let child = self
            .ledger
            .clone()
            .start_sub_run(self.auth.request(&identity, request))
            .await
            .map_err(PaError::from)?
            .into_inner()
            .run_id;
        relay
            .relay(vec![AgUiEvent::new(Event::SubagentStarted(
                SubagentStarted {
                    subagent_run_id: child.clone(),
                    name,
                    description: Some(description),
                    parent_tool_call_id: Some(tool_call_id.to_string()),
                    parent_subagent_run_id: None,
                    timestamp: None,
                },
            ))])
            .await?;
        let mut outcome = self.follow(&identity, &child, relay).await?;
        let run = self
            .runs
            .clone()
            .get_run(self.auth.request(
                &identity,
                GetRunRequest {
                    run_id: child.clone(),
                },
            ))
            .await
            .map_err(PaError::from)?
            .into_inner();
        // The whole subtree counts against the parent, not only the sub-run's own turns.
        outcome.usage = run.usage_with_sub_runs.or(run.usage).unwrap_or_default();
        // Recorded with its end, before its RUN_FINISHED / RUN_ERROR was written.
        outcome.tainted = run.tainted;
        Ok(outcome)
    }

    /// Relays the sub-run's events until its RUN_FINISHED / RUN_ERROR; collects its reply.
    async fn follow(
        &self,
        identity: &Identity,
        child: &str,
        relay: &mut impl EventRelay,
    ) -> Result<SubRunOutcome, PaError> {
        let mut after = String::from("0");
        let mut text = String::new();
        let mut message_id = String::new();
        loop {
            let stored =
                pa_bus::run_events::read_after(&self.redis, child, &after, Some(FOLLOW_BLOCK))
                    .await?;
            if stored.is_empty() {
                if let Some(ended) = self.ended_without_stream(identity, child).await? {
                    return Ok(ended);
                }
                continue;
            }
            let mut out = Vec::with_capacity(stored.len());
            let mut ending: Option<(bool, String)> = None;
            for item in stored {
                after = item.stream_id;
                let event = item.event;
                if event.subagent_run_id.is_some() {
                    // A grandchild's event keeps its own attribution.
                    out.push(event);
                    continue;
                }
                match event.event {
                    Some(Event::RunStarted(_)) => {}
                    Some(Event::RunFinished(_)) => {
                        out.push(AgUiEvent::new(Event::SubagentFinished(SubagentFinished {
                            subagent_run_id: child.to_string(),
                            result: Some(text.clone()),
                            outcome: Some("success".into()),
                            timestamp: None,
                        })));
                        ending = Some((true, text.clone()));
                    }
                    Some(Event::RunError(error)) => {
                        out.push(AgUiEvent::new(Event::SubagentError(SubagentError {
                            subagent_run_id: child.to_string(),
                            message: error.message.clone(),
                            code: error.code.clone(),
                            timestamp: None,
                        })));
                        ending = Some((false, error.message));
                    }
                    Some(Event::SubagentStarted(mut started)) => {
                        // A sub-run of the sub-run: nested under it.
                        started
                            .parent_subagent_run_id
                            .get_or_insert_with(|| child.to_string());
                        out.push(AgUiEvent::new(Event::SubagentStarted(started)));
                    }
                    Some(Event::SubagentFinished(_)) | Some(Event::SubagentError(_)) => {
                        out.push(event);
                    }
                    Some(Event::TextMessageContent(ref content)) => {
                        if content.message_id != message_id {
                            if !text.is_empty() {
                                text.push('\n');
                            }
                            message_id = content.message_id.clone();
                        }
                        text.push_str(&content.delta);
                        out.push(event.attributed_to(child));
                    }
                    _ => out.push(event.attributed_to(child)),
                }
            }
            relay.relay(out).await?;
            if let Some((succeeded, text)) = ending {
                return Ok(SubRunOutcome {
                    run_id: child.to_string(),
                    succeeded,
                    text,
                    usage: Usage::default(),
                    tainted: false,
                });
            }
        }
    }

    /// A quiet stream: has the sub-run ended anyway (its stream trimmed or lost)?
    async fn ended_without_stream(
        &self,
        identity: &Identity,
        child: &str,
    ) -> Result<Option<SubRunOutcome>, PaError> {
        let run = self
            .runs
            .clone()
            .get_run(self.auth.request(
                identity,
                GetRunRequest {
                    run_id: child.to_string(),
                },
            ))
            .await
            .map_err(PaError::from)?
            .into_inner();
        if !pa_proto::run_status_is_terminal(run.status) {
            return Ok(None);
        }
        let succeeded = run.status == pa_proto::v1::RunStatus::Succeeded as i32;
        Ok(Some(SubRunOutcome {
            run_id: child.to_string(),
            succeeded,
            text: run
                .error_message
                .unwrap_or_else(|| "the sub-agent's reply is no longer available".into()),
            usage: Usage::default(),
            tainted: run.tainted,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(name: &str, args: &str) -> ToolCall {
        ToolCall {
            id: "tc".into(),
            name: name.into(),
            arguments_json: args.into(),
        }
    }

    #[test]
    fn explore_and_delegate_take_one_task() {
        let tasks =
            parse_call(&call(EXPLORE, r#"{"task":" look around ","model":"x:y"}"#)).unwrap();
        assert_eq!(
            tasks,
            [SubTask {
                agent: "explore".into(),
                task: "look around".into(),
                model: "x:y".into()
            }]
        );
        assert!(parse_call(&call(DELEGATE, r#"{"task":""}"#)).is_err());
        assert!(parse_call(&call(DELEGATE, "not json")).is_err());
    }

    #[test]
    fn a_script_has_bounded_explore_or_delegate_steps() {
        let tasks = parse_call(&call(
            RUN_AGENTS_SCRIPT,
            r#"{"steps":[{"task":"a"},{"agent":"delegate","task":"b"}]}"#,
        ))
        .unwrap();
        assert_eq!(tasks.len(), 2);
        assert_eq!(tasks[0].agent, "explore");
        assert_eq!(tasks[1].agent, "delegate");
        assert!(parse_call(&call(RUN_AGENTS_SCRIPT, r#"{"steps":[]}"#)).is_err());
        assert!(
            parse_call(&call(
                RUN_AGENTS_SCRIPT,
                r#"{"steps":[{"agent":"run_agents_script","task":"x"}]}"#
            ))
            .is_err()
        );
        let many = format!(
            r#"{{"steps":[{}]}}"#,
            [r#"{"task":"t"}"#; MAX_SCRIPT_STEPS + 1].join(",")
        );
        assert!(parse_call(&call(RUN_AGENTS_SCRIPT, &many)).is_err());
    }

    #[test]
    fn a_sub_run_starts_tainted_after_a_tainted_parent_or_step() {
        let clean = SubRunOutcome {
            succeeded: true,
            ..Default::default()
        };
        let hostile = SubRunOutcome {
            tainted: true,
            ..clean.clone()
        };
        assert!(!starts_tainted(false, &[]));
        assert!(starts_tainted(true, &[]));
        assert!(!starts_tainted(false, std::slice::from_ref(&clean)));
        // A later step's task carries the earlier steps' reports.
        assert!(starts_tainted(false, &[clean, hostile]));
    }

    #[test]
    fn later_script_steps_see_earlier_results() {
        let earlier = [SubRunOutcome {
            succeeded: true,
            text: "found 3 files".into(),
            ..Default::default()
        }];
        let task = with_earlier_results("summarise", &earlier);
        assert!(task.contains("1. found 3 files"));
        assert!(task.ends_with("Your task: summarise"));
        assert_eq!(with_earlier_results("first", &[]), "first");
    }
}
