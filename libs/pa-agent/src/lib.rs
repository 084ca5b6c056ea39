//! The agent loop as a sans-IO state machine.
//!
//! A driver (the inline task in svc-runs, or a Temporal workflow) feeds [`Input`]s into
//! [`AgentLoop::step`] and performs the [`Action`]s it returns: call the model, call a tool, emit
//! an AG-UI event, finish. Nothing in here does I/O, reads a clock or draws random numbers, so the
//! same inputs always give the same actions — which is what lets a durable workflow replay it and
//! makes the inline and durable paths emit identical events.

mod agent_loop;

pub use agent_loop::{
    Action, AgentLoop, Input, LoopError, ModelRequest, Outcome, RunIds, ToolCall, TurnMessage,
    WireError, add_usage,
};
pub use pa_proto::v1::{AgUiEvent, Usage, UsageLimits, ag_ui_event::Event};
