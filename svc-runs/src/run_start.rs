//! What a run starts with besides its spec, for either driver (plain data: the drivers and the
//! launch path depend on this module, never on each other for it).

use pa_agent::TurnMessage;
use pa_proto::v1::ChatToolDefinition;

/// What a run starts with besides its spec: the tools offered to the model and the notices
/// reported as steps (tools a gate removed).
#[derive(Clone, Debug, Default)]
pub struct RunStart {
    pub tools: Vec<ChatToolDefinition>,
    pub notices: Vec<String>,
    /// The toolset's high-privilege tools (the untrusted-content gate).
    pub high_privilege_tools: Vec<String>,
    /// Tools every call of which waits for approval, tainted or not.
    pub approval_always_tools: Vec<String>,
    /// What the run starts from holds untrusted content (a task from a tainted parent, an
    /// untrusted recalled memory or document): it starts tainted.
    pub tainted: bool,
}

/// A durable run's context (see [`ContextRead::finish_or_hand_over`]).
pub struct DurableContext {
    pub history: Vec<TurnMessage>,
    pub start: RunStart,
    /// 0: the recall is in `history` and `start`. Otherwise it is handed over to the run's
    /// workflow when it is done, and the workflow waits up to this long for it.
    pub recall_wait_ms: u64,
}
