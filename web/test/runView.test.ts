import { describe, expect, it } from 'vitest';

import { applyEvent, awaitsDecision, newRunView, replyText, runState, toolDurationMs, toolProgress, type ToolPart } from '@/lib/runView';

describe('applyEvent', () => {
  it('folds text, reasoning, tool calls, approvals and sub-runs', () => {
    const v = newRunView('r1');
    const feed = (e: Record<string, unknown>) => applyEvent(v, e as never, null, 1000);
    feed({ type: 'RUN_STARTED', runId: 'r1' });
    feed({ type: 'REASONING_MESSAGE_CONTENT', messageId: 'x', delta: 'thinking' });
    feed({ type: 'REASONING_END', messageId: 'x' });
    feed({ type: 'TOOL_CALL_START', toolCallId: 'c1', toolCallName: 'weather', timestamp: 100 });
    feed({ type: 'TOOL_CALL_ARGS', toolCallId: 'c1', delta: '{"city":' });
    feed({ type: 'TOOL_CALL_ARGS', toolCallId: 'c1', delta: '"Oslo"}' });
    feed({ type: 'CUSTOM', name: 'tool_call_approval', value: { toolCallId: 'c1' } });
    feed({ type: 'TOOL_CALL_RESULT', toolCallId: 'c1', content: 'sunny', timestamp: 350 });
    feed({ type: 'SUBAGENT_STARTED', subagentRunId: 'sub', name: 'delegate', parentToolCallId: 'c2' });
    feed({ type: 'TEXT_MESSAGE_CONTENT', messageId: 's1', delta: 'sub says', subagentRunId: 'sub' });
    feed({ type: 'SUBAGENT_FINISHED', subagentRunId: 'sub', outcome: 'success' });
    feed({ type: 'TEXT_MESSAGE_CONTENT', messageId: 'm1', delta: 'It is ' });
    feed({ type: 'TEXT_MESSAGE_CONTENT', messageId: 'm1', delta: 'sunny.' });
    feed({ type: 'RUN_FINISHED', runId: 'r1' });
    expect(v.status).toBe('finished');
    expect(replyText(v)).toBe('It is sunny.');
    expect(v.parts.map((p) => p.kind)).toEqual(['reasoning', 'tool', 'subrun', 'text']);
    const tool = v.parts[1] as ToolPart;
    expect(tool.args).toBe('{"city":"Oslo"}');
    expect(tool.result).toBe('sunny');
    expect(tool.approval).toBe('approved');
    expect(toolDurationMs(tool)).toBe(250);
    const sub = v.parts[2]!;
    expect(sub.kind === 'subrun' && replyText(sub.run)).toBe('sub says');
    expect(sub.kind === 'subrun' && sub.run.status).toBe('finished');
    expect(sub.kind === 'subrun' && sub.name).toBe('delegate');
  });

  it('drops a message the run discarded (message_discarded) and keeps its retry', () => {
    const v = newRunView('r1');
    const feed = (e: Record<string, unknown>) => applyEvent(v, e as never, null, 1000);
    feed({ type: 'RUN_STARTED', runId: 'r1' });
    feed({ type: 'REASONING_MESSAGE_CONTENT', messageId: 'm1-reasoning', delta: 'hmm' });
    feed({ type: 'TEXT_MESSAGE_START', messageId: 'm1' });
    feed({ type: 'TEXT_MESSAGE_CONTENT', messageId: 'm1', delta: 'Partial ' });
    feed({ type: 'TEXT_MESSAGE_END', messageId: 'm1' });
    feed({
      type: 'CUSTOM', name: 'message_discarded',
      value: { messageId: 'm1', reasoningMessageId: 'm1-reasoning', reason: 'the model relay broke off' },
    });
    feed({ type: 'TEXT_MESSAGE_START', messageId: 'm1-retry1' });
    feed({ type: 'TEXT_MESSAGE_CONTENT', messageId: 'm1-retry1', delta: 'Whole answer.' });
    feed({ type: 'TEXT_MESSAGE_END', messageId: 'm1-retry1' });
    feed({ type: 'RUN_FINISHED', runId: 'r1' });
    expect(replyText(v)).toBe('Whole answer.');
    expect(v.parts.map((p) => (p.kind === 'subrun' ? p.run.runId : p.id))).toEqual(['m1-retry1']);
    expect(v.status).toBe('finished');
  });

  it('drops the tool calls a withdrawn turn announced; a retry may announce the same id again', () => {
    const v = newRunView('r1');
    const feed = (e: Record<string, unknown>) => applyEvent(v, e as never, null, 1000);
    feed({ type: 'RUN_STARTED', runId: 'r1' });
    feed({ type: 'TOOL_CALL_START', toolCallId: 'call_a', toolCallName: 'web_fetch', parentMessageId: 'm' });
    feed({ type: 'TOOL_CALL_ARGS', toolCallId: 'call_a', delta: '{"url":"a"}' });
    feed({ type: 'TOOL_CALL_START', toolCallId: 'call_same', toolCallName: 'web_fetch', parentMessageId: 'm' });
    feed({
      type: 'CUSTOM', name: 'message_discarded',
      value: { toolCallIds: ['call_a', 'call_same'], reason: 'the worker running this turn stopped' },
    });
    expect(v.parts).toEqual([]);
    feed({ type: 'TOOL_CALL_START', toolCallId: 'call_same', toolCallName: 'web_fetch', parentMessageId: 'm-retry1' });
    feed({ type: 'TOOL_CALL_ARGS', toolCallId: 'call_same', delta: '{"url":"b"}' });
    feed({ type: 'TOOL_CALL_RESULT', toolCallId: 'call_same', content: 'seven' });
    const tools = v.parts.filter((p): p is ToolPart => p.kind === 'tool');
    expect(tools.map((t) => [t.id, t.args, t.result])).toEqual([['call_same', '{"url":"b"}', 'seven']]);
  });

  it('says a call the run ended without is not run, and takes no decision for an ended run', () => {
    const v = newRunView('r1');
    const feed = (e: Record<string, unknown>) => applyEvent(v, e as never, null, 1000);
    feed({ type: 'TOOL_CALL_START', toolCallId: 'done', toolCallName: 'web_fetch', timestamp: 1000 });
    feed({ type: 'TOOL_CALL_RESULT', toolCallId: 'done', content: 'ok', timestamp: 1250 });
    feed({ type: 'TOOL_CALL_START', toolCallId: 'asks', toolCallName: 'send_mail' });
    feed({ type: 'CUSTOM', name: 'tool_call_approval', value: { toolCallId: 'asks' } });
    const [done, asks] = v.parts as ToolPart[];
    expect(toolProgress(done!, runState(v))).toBe('250 ms');
    expect(toolProgress(asks!, runState(v))).toBe('running…');
    expect(awaitsDecision(asks!, runState(v))).toBe(true);
    feed({ type: 'RUN_ERROR', code: 'cancelled', message: 'cancelled by the user' });
    expect(toolProgress(done!, runState(v))).toBe('250 ms');
    expect(toolProgress(asks!, runState(v))).toBe('not run');
    expect(awaitsDecision(asks!, runState(v))).toBe(false);
  });

  it('does not say a call of a run whose stream was lost was not run, and still takes its decision', () => {
    const v = newRunView('r1');
    const feed = (e: Record<string, unknown>) => applyEvent(v, e as never, null, 1000);
    feed({ type: 'TOOL_CALL_START', toolCallId: 'asks', toolCallName: 'send_mail' });
    feed({ type: 'CUSTOM', name: 'tool_call_approval', value: { toolCallId: 'asks' } });
    v.status = 'lost'; // what the store sets when the stream fails for good
    const [asks] = v.parts as ToolPart[];
    expect(runState(v)).toBe('lost');
    expect(toolProgress(asks!, runState(v))).toBe('unknown: the stream was lost');
    expect(awaitsDecision(asks!, runState(v))).toBe(true);
    // A sub-run follows its parent: lost with it, ended with it, its own end stands.
    const sub = newRunView('s1');
    expect(runState(sub, runState(v))).toBe('lost');
    expect(runState(sub, 'ended')).toBe('ended');
    sub.status = 'finished';
    expect(runState(sub, 'lost')).toBe('ended');
    // The run's own end, once its stream is back, ends the call.
    v.status = 'running';
    feed({ type: 'RUN_FINISHED' });
    expect(toolProgress(asks!, runState(v))).toBe('not run');
  });

  it('nests a sub-run of a sub-run and keeps each one\'s tool calls and approvals apart', () => {
    const v = newRunView('r1');
    const feed = (e: Record<string, unknown>) => applyEvent(v, e as never, null, 1000);
    feed({ type: 'SUBAGENT_STARTED', subagentRunId: 'a', name: 'delegate', parentToolCallId: 'c1' });
    feed({ type: 'SUBAGENT_STARTED', subagentRunId: 'b', name: 'explore', parentSubagentRunId: 'a' });
    feed({ type: 'TOOL_CALL_START', toolCallId: 't', toolCallName: 'shell', subagentRunId: 'a' });
    feed({ type: 'CUSTOM', name: 'tool_call_approval', value: { toolCallId: 't' }, subagentRunId: 'a' });
    feed({ type: 'TEXT_MESSAGE_CONTENT', messageId: 'bm', delta: 'deep', subagentRunId: 'b' });
    feed({ type: 'SUBAGENT_ERROR', subagentRunId: 'b', message: 'usage limit', code: 'usage_limit' });
    // The parent's own text after its sub-run is not swallowed by the sub-run.
    feed({ type: 'TEXT_MESSAGE_CONTENT', messageId: 'm', delta: 'mine' });
    expect(replyText(v)).toBe('mine');
    const a = v.parts[0]!;
    if (a.kind !== 'subrun') throw new Error('expected a sub-run');
    expect(a.run.runId).toBe('a');
    const tool = a.run.parts.find((p) => p.kind === 'tool') as ToolPart;
    expect(tool.approval).toBe('pending');
    const b = a.run.parts.find((p) => p.kind === 'subrun');
    if (!b || b.kind !== 'subrun') throw new Error('expected a nested sub-run');
    expect(replyText(b.run)).toBe('deep');
    expect(b.run.status).toBe('error');
    expect(b.run.error).toBe('usage limit');
  });

  it('marks a cancelled run', () => {
    const v = newRunView('r1');
    applyEvent(v, { type: 'RUN_ERROR', code: 'cancelled', message: 'cancelled by the user' }, '1-1');
    expect(v.status).toBe('cancelled');
    expect(v.lastEventId).toBe('1-1');
  });
});
