//! Starting a durable run's workflow for svc-worker's DurableRunService, whose client shares a
//! connection with this worker: Temporal hands the first workflow task back in the start call's
//! reply (eager start). svc-worker is Temporal's only client (ADR 0190).

use pa_proto::v1::StartDurableRunRequest;
use temporalio_client::errors::WorkflowStartError;
use temporalio_client::{Client, WorkflowIdReusePolicy, WorkflowStartOptions};

use crate::chat::{ChatAgentWorkflow, ChatRunInput};

/// What a start did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Started {
    New,
    /// The run's workflow existed already (a retried start).
    Existing,
}

/// Starts `input`'s run as ChatAgentWorkflow on `task_queue`. The workflow id is the run id and is
/// never reused, so a retried start finds the workflow it made, running or ended, and starts
/// nothing.
pub async fn start_chat_run(
    client: &Client,
    task_queue: &str,
    input: ChatRunInput,
) -> Result<Started, String> {
    let run_id = crate::payloads::required(input.spec.as_ref(), "spec")
        .map_err(|e| e.to_string())?
        .run_id
        .clone();
    let options = WorkflowStartOptions::new(task_queue.to_string(), run_id)
        .id_reuse_policy(WorkflowIdReusePolicy::RejectDuplicate)
        .enable_eager_workflow_start(true)
        .build();
    match client
        .start_workflow(ChatAgentWorkflow::run, input, options)
        .await
    {
        Ok(_) => Ok(Started::New),
        Err(WorkflowStartError::AlreadyStarted { .. }) => Ok(Started::Existing),
        Err(err) => Err(err.to_string()),
    }
}

/// The request that describes this input (svc-runs builds its own from the run's context; the
/// test below checks that nothing is lost on the way back).
#[cfg(test)]
fn to_request(input: &ChatRunInput) -> StartDurableRunRequest {
    let this = input;
    StartDurableRunRequest {
        spec: this.spec.clone(),
        history: this
            .history
            .iter()
            .cloned()
            .map(pa_turn_io::to_chat_message)
            .collect(),
        tools: this.tools.clone(),
        notices: this.notices.clone(),
        high_privilege_tools: this.high_privilege_tools.clone(),
        approval_always_tools: this.approval_always_tools.clone(),
        approval_timeout_ms: this.approval_timeout_ms,
        recall_wait_ms: this.recall_wait_ms,
        tainted: this.tainted,
    }
}

/// The workflow input a request describes; None without a spec or a run id.
pub fn chat_run_input(request: StartDurableRunRequest) -> Option<ChatRunInput> {
    let spec = request.spec.filter(|s| !s.run_id.is_empty())?;
    Some(ChatRunInput {
        spec: Some(spec),
        history: request
            .history
            .into_iter()
            .map(pa_turn_io::from_chat_message)
            .collect(),
        tools: request.tools,
        notices: request.notices,
        high_privilege_tools: request.high_privilege_tools,
        approval_always_tools: request.approval_always_tools,
        approval_timeout_ms: request.approval_timeout_ms,
        recall_wait_ms: request.recall_wait_ms,
        tainted: request.tainted,
        // This worker's code: the workflow it starts runs it from its first task.
        code_revision: crate::chat::CHAT_RUN_REVISION,
    })
}

#[cfg(test)]
mod tests {
    use pa_agent::{ToolCall, TurnMessage};
    use pa_proto::v1::{ChatToolDefinition, RunSpec};

    use super::*;

    #[test]
    fn a_run_input_survives_the_trip_through_the_request() {
        let mut tool_reply = TurnMessage::new("tool", "42");
        tool_reply.tool_call_id = Some("call-1".into());
        let mut asking = TurnMessage::new("assistant", "");
        asking.tool_calls = vec![ToolCall {
            id: "call-1".into(),
            name: "calc".into(),
            arguments_json: "{\"x\":1}".into(),
        }];
        let input = ChatRunInput {
            spec: Some(RunSpec {
                run_id: "run-1".into(),
                chat_id: "chat-1".into(),
                ..Default::default()
            }),
            history: vec![TurnMessage::new("user", "hi"), asking, tool_reply],
            tools: vec![ChatToolDefinition {
                name: "calc".into(),
                ..Default::default()
            }],
            notices: vec!["recalled 2 memories".into()],
            high_privilege_tools: vec!["shell".into()],
            approval_always_tools: vec!["read_tab".into()],
            approval_timeout_ms: 1234,
            recall_wait_ms: 5000,
            tainted: true,
            code_revision: crate::chat::CHAT_RUN_REVISION,
        };
        let back = chat_run_input(to_request(&input)).expect("valid request");
        assert_eq!(
            serde_json::to_value(&back).unwrap(),
            serde_json::to_value(&input).unwrap()
        );
    }

    #[test]
    fn a_request_without_a_run_is_refused() {
        assert!(chat_run_input(StartDurableRunRequest::default()).is_none());
        let unnamed = StartDurableRunRequest {
            spec: Some(RunSpec::default()),
            ..Default::default()
        };
        assert!(chat_run_input(unnamed).is_none());
    }
}
