// Folds a run's AG-UI events into what the chat shows: text, reasoning, tool-call cards,
// approval requests and nested sub-agent runs. Pure: the same events give the same view.

import type { AgUiEvent } from './sse';

export interface TextPart { kind: 'text'; id: string; text: string }
export interface ReasoningPart { kind: 'reasoning'; id: string; text: string; done: boolean }
export interface ToolPart {
  kind: 'tool';
  id: string;
  name: string;
  args: string;
  result: string | null;
  startedAt: number | null;
  endedAt: number | null;
  /** Set while the tool call waits for the user's decision. */
  approval: 'pending' | 'approved' | 'denied' | null;
}
/** A sub-agent run (explore, delegate, a script step) started by the tool call `toolCallId`. */
export interface SubRunPart { kind: 'subrun'; name: string; toolCallId: string; run: RunView }
export type Part = TextPart | ReasoningPart | ToolPart | SubRunPart;

/**
 * `lost`: this client's event stream failed for good (the gateway refused it, or gave up
 * reconnecting); the run itself may go on, and following it again may pick it up.
 */
export type RunStatus = 'running' | 'finished' | 'error' | 'cancelled' | 'lost';

/**
 * What a client can say of a run's open parts: `live` while its stream is followed, `ended` once
 * the run (or a run around it) ended, `lost` while this client has lost its stream (the run may
 * still be going).
 */
export type RunState = 'live' | 'ended' | 'lost';

/** The state of `view`, inside a parent run in state `parent` (an ended parent ends it). */
export function runState(view: RunView, parent: RunState = 'live'): RunState {
  if (parent === 'ended' || !['running', 'lost'].includes(view.status)) return 'ended';
  return parent === 'lost' || view.status === 'lost' ? 'lost' : 'live';
}

export interface RunView {
  runId: string;
  status: RunStatus;
  parts: Part[];
  error: string | null;
  lastEventId: string | null;
}

export function newRunView(runId: string): RunView {
  return { runId, status: 'running', parts: [], error: null, lastEventId: null };
}

/** The (possibly nested) sub-run view with this run id. */
function findSubRun(view: RunView, runId: string): RunView | undefined {
  for (const p of view.parts) {
    if (p.kind !== 'subrun') continue;
    if (p.run.runId === runId) return p.run;
    const inner = findSubRun(p.run, runId);
    if (inner) return inner;
  }
  return undefined;
}

function findTool(view: RunView, id: string): ToolPart | undefined {
  for (const p of view.parts) {
    if (p.kind === 'tool' && p.id === id) return p;
    if (p.kind === 'subrun') {
      const t = findTool(p.run, id);
      if (t) return t;
    }
  }
  return undefined;
}

const str = (v: unknown): string => (typeof v === 'string' ? v : v == null ? '' : String(v));
const ts = (e: AgUiEvent, now: number): number => (typeof e.timestamp === 'number' ? e.timestamp : now);

/** Applies one event in place (callers keep the object reactive) and returns the view. */
export function applyEvent(view: RunView, e: AgUiEvent, id: string | null, now = Date.now()): RunView {
  if (id) view.lastEventId = id;
  // AG-UI subagent attribution: a sub-run's events carry its id (subagentRunId).
  const attributed = str(e.subagentRunId);
  const target = (attributed && findSubRun(view, attributed)) || view;
  switch (e.type) {
    case 'SUBAGENT_STARTED': {
      const runId = str(e.subagentRunId);
      const parentId = str(e.parentSubagentRunId);
      const parent = (parentId && findSubRun(view, parentId)) || view;
      if (runId && !findSubRun(view, runId)) {
        parent.parts.push({
          kind: 'subrun', name: str(e.name), toolCallId: str(e.parentToolCallId), run: newRunView(runId),
        });
      }
      break;
    }
    case 'SUBAGENT_FINISHED': {
      const sub = findSubRun(view, str(e.subagentRunId));
      if (sub) sub.status = 'finished';
      break;
    }
    case 'SUBAGENT_ERROR': {
      const sub = findSubRun(view, str(e.subagentRunId));
      if (sub) {
        sub.status = str(e.code) === 'cancelled' ? 'cancelled' : 'error';
        sub.error = str(e.message) || 'the sub-agent failed';
      }
      break;
    }
    case 'RUN_FINISHED':
      target.status = target.status === 'cancelled' ? 'cancelled' : 'finished';
      break;
    case 'RUN_ERROR': {
      const code = str(e.code);
      target.status = code === 'cancelled' ? 'cancelled' : 'error';
      target.error = str(e.message) || 'the run failed';
      break;
    }
    case 'TEXT_MESSAGE_START':
      target.parts.push({ kind: 'text', id: str(e.messageId), text: '' });
      break;
    case 'TEXT_MESSAGE_CONTENT': {
      const mid = str(e.messageId);
      let part = [...target.parts].reverse().find((p): p is TextPart => p.kind === 'text' && p.id === mid);
      if (!part) {
        part = { kind: 'text', id: mid, text: '' };
        target.parts.push(part);
      }
      part.text += str(e.delta);
      break;
    }
    case 'REASONING_START':
    case 'REASONING_MESSAGE_START': {
      const mid = str(e.messageId);
      if (!target.parts.some((p) => p.kind === 'reasoning' && p.id === mid)) {
        target.parts.push({ kind: 'reasoning', id: mid, text: '', done: false });
      }
      break;
    }
    case 'REASONING_MESSAGE_CONTENT': {
      const mid = str(e.messageId);
      let part = target.parts.find((p): p is ReasoningPart => p.kind === 'reasoning' && p.id === mid);
      if (!part) {
        part = { kind: 'reasoning', id: mid, text: '', done: false };
        target.parts.push(part);
      }
      part.text += str(e.delta);
      break;
    }
    case 'REASONING_MESSAGE_END':
    case 'REASONING_END': {
      const mid = str(e.messageId);
      const part = target.parts.find((p): p is ReasoningPart => p.kind === 'reasoning' && p.id === mid);
      if (part) part.done = true;
      break;
    }
    case 'TOOL_CALL_START':
      target.parts.push({
        kind: 'tool', id: str(e.toolCallId), name: str(e.toolCallName), args: '', result: null,
        startedAt: ts(e, now), endedAt: null, approval: null,
      });
      break;
    case 'TOOL_CALL_ARGS': {
      const t = findTool(target, str(e.toolCallId));
      if (t) t.args += str(e.delta);
      break;
    }
    case 'TOOL_CALL_RESULT': {
      const t = findTool(target, str(e.toolCallId));
      if (t) {
        t.result = str(e.content);
        t.endedAt = ts(e, now);
        if (t.approval === 'pending') t.approval = 'approved';
      }
      break;
    }
    case 'CUSTOM': {
      // Approval requests: {name: "tool_call_approval", value: {toolCallId, toolCallName?, args?}}.
      const name = str(e.name);
      const value = (e.value ?? {}) as Record<string, unknown>;
      const toolCallId = str(value.toolCallId ?? value.tool_call_id);
      if (name === 'tool_call_approval' || name === 'approval_request') {
        let t = findTool(target, toolCallId);
        if (!t) {
          t = {
            kind: 'tool', id: toolCallId, name: str(value.toolCallName ?? value.name), args: str(value.args),
            result: null, startedAt: ts(e, now), endedAt: null, approval: null,
          };
          target.parts.push(t);
        }
        t.approval = 'pending';
      } else if (name === 'tool_call_decision') {
        const t = findTool(target, toolCallId);
        if (t) t.approval = value.approved ? 'approved' : 'denied';
      } else if (name === 'message_discarded') {
        // A durable run's model turn broke off (the model relay or its worker died) and is asked
        // again: {messageId?, reason, reasoningMessageId?, toolCallIds?}. What it showed so far
        // goes away; a later TOOL_CALL_START may reuse a call id (the model answered the same).
        const gone = [str(value.messageId), str(value.reasoningMessageId)].filter((m) => m !== '');
        const calls = Array.isArray(value.toolCallIds) ? value.toolCallIds.map((c) => str(c)) : [];
        for (let i = target.parts.length - 1; i >= 0; i--) {
          const p = target.parts[i]!;
          const withdrawn =
            p.kind === 'tool' ? calls.includes(p.id) : (p.kind === 'text' || p.kind === 'reasoning') && gone.includes(p.id);
          if (withdrawn) target.parts.splice(i, 1);
        }
      }
      break;
    }
    default:
      break;
  }
  return view;
}

/** The run's reply text (what the assistant said), sub-runs excluded. */
export function replyText(view: RunView): string {
  return view.parts.filter((p): p is TextPart => p.kind === 'text').map((p) => p.text).join('');
}

/**
 * What a tool card says of its call: how long it took; `running…` while its run may still give
 * it a result; `not run` once the run (or a run around it) ended without one — a cancelled run,
 * or one whose driver died, leaves calls that never ran; and, while this client has lost the
 * run's stream, that it cannot tell.
 */
export function toolProgress(t: ToolPart, state: RunState): string {
  const ms = toolDurationMs(t);
  if (ms !== null) return ms < 1000 ? `${ms} ms` : `${(ms / 1000).toFixed(1)} s`;
  if (t.result !== null) return '';
  if (state === 'ended') return 'not run';
  return state === 'lost' ? 'unknown: the stream was lost' : 'running…';
}

/**
 * The call still waits for the user's decision: pending, and its run has not ended (a run whose
 * stream this client lost may still wait, and the decision still reaches it).
 */
export function awaitsDecision(t: ToolPart, state: RunState): boolean {
  return t.approval === 'pending' && state !== 'ended';
}

export function toolDurationMs(t: ToolPart): number | null {
  return t.startedAt != null && t.endedAt != null ? Math.max(0, t.endedAt - t.startedAt) : null;
}
