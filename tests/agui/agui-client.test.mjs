// Interop check: the real, unmodified `@ag-ui/client` (HttpAgent) chatting with
// the gateway's standard AG-UI endpoint, POST /v1/ag-ui.
//
// Run against a running gateway (dev mode, offline model):
//   cd tests/agui && npm ci && PA_GATEWAY_URL=http://127.0.0.1:8080 npm test
//
// PA_GATEWAY_URL is required: without it every test FAILS (it never skips), so
// a CI job that forgot to start or point at the gateway cannot pass silently.
import { test } from "node:test";
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { HttpAgent } from "@ag-ui/client";

// Generous: a loaded machine must not trip it (a run takes well under a second when idle).
const TEST_TIMEOUT_MS = 90_000;
const PROMPT = "hello from ag-ui";

function gatewayBaseUrl() {
  const raw = process.env.PA_GATEWAY_URL;
  if (raw === undefined || raw.trim() === "") {
    assert.fail(
      "PA_GATEWAY_URL is not set. Start the gateway and point the test at it, e.g. " +
        "PA_GATEWAY_URL=http://127.0.0.1:8080 npm test",
    );
  }
  return raw.trim().replace(/\/+$/, "");
}

function endpoint() {
  return `${gatewayBaseUrl()}/v1/ag-ui`;
}

function newAgent(threadId, firstUserText) {
  return new HttpAgent({
    url: endpoint(),
    // Dev-mode auth needs no header; this one only marks where a token would go.
    headers: { "X-Client": "pa-agui-interop-test" },
    threadId,
    initialMessages: [{ id: randomUUID(), role: "user", content: firstUserText }],
  });
}

/**
 * Runs one AG-UI run and records everything the client saw. Ties the run to
 * the test's abort signal, so a timed-out test also drops its HTTP stream.
 *
 * Note: in @ag-ui/client 1.0.0 a RUN_ERROR event or a stream that simply ends
 * does NOT reject runAgent(); only transport/validation errors do. So the
 * caller has to check the recorded events, not just that the promise resolved.
 */
async function runOnce(t, agent, runId) {
  const events = [];
  const warnings = [];
  let failure;
  let runError;
  const abortController = new AbortController();
  const onAbort = () => abortController.abort();
  t.signal.addEventListener("abort", onAbort, { once: true });

  // The client reports stripped unknown fields/events via console.warn
  // ("[ag-ui][enforce] ..."); surface them as diagnostics.
  const originalWarn = console.warn;
  console.warn = (...args) => {
    warnings.push(args.map(String).join(" "));
  };

  let result;
  try {
    result = await agent.runAgent(
      { runId, abortController },
      {
        onEvent: ({ event }) => {
          events.push(structuredClone(event));
        },
        onRunErrorEvent: ({ event }) => {
          runError = event;
        },
        onRunFailed: ({ error }) => {
          failure = error;
        },
      },
    );
  } catch (error) {
    failure ??= error;
  } finally {
    console.warn = originalWarn;
    t.signal.removeEventListener("abort", onAbort);
  }

  for (const w of warnings) t.diagnostic(`client warning: ${w}`);
  t.diagnostic(`run ${runId}: ${events.map((e) => e.type).join(" -> ") || "(no events)"}`);
  return { events, failure, runError, result };
}

/** Asserts a well-formed single-text-message run and returns the assistant reply. */
function assertTextRun({ events, failure, runError }, { threadId, runId }) {
  assert.equal(failure, undefined, `runAgent failed: ${failure?.stack ?? failure}`);
  assert.equal(
    runError,
    undefined,
    `server sent RUN_ERROR: ${JSON.stringify(runError)}`,
  );

  const types = events.map((e) => e.type);
  const seen = types.join(" -> ");
  assert.ok(types.length > 0, "no AG-UI events were received");
  assert.equal(types[0], "RUN_STARTED", `first event must be RUN_STARTED; got: ${seen}`);
  assert.equal(types.at(-1), "RUN_FINISHED", `last event must be RUN_FINISHED; got: ${seen}`);

  // RUN_STARTED, TEXT_MESSAGE_START, TEXT_MESSAGE_CONTENT+, TEXT_MESSAGE_END, RUN_FINISHED in order.
  const iStart = types.indexOf("TEXT_MESSAGE_START");
  const iEnd = types.indexOf("TEXT_MESSAGE_END");
  const contentIdx = types.flatMap((ty, i) => (ty === "TEXT_MESSAGE_CONTENT" ? [i] : []));
  assert.ok(iStart > 0, `TEXT_MESSAGE_START missing after RUN_STARTED; got: ${seen}`);
  assert.ok(contentIdx.length >= 1, `no TEXT_MESSAGE_CONTENT event; got: ${seen}`);
  assert.ok(iEnd > iStart, `TEXT_MESSAGE_END missing after TEXT_MESSAGE_START; got: ${seen}`);
  assert.ok(
    contentIdx.every((i) => i > iStart && i < iEnd),
    `TEXT_MESSAGE_CONTENT must lie between START and END; got: ${seen}`,
  );
  assert.ok(iEnd < types.length - 1, `RUN_FINISHED must follow TEXT_MESSAGE_END; got: ${seen}`);
  assert.ok(!types.includes("RUN_ERROR"), `unexpected RUN_ERROR; got: ${seen}`);

  const started = events[0];
  assert.equal(started.threadId, threadId, "RUN_STARTED.threadId must echo the threadId we sent");
  assert.equal(started.runId, runId, "RUN_STARTED.runId must echo the runId we sent");
  const finished = events.at(-1);
  assert.equal(finished.threadId, threadId, "RUN_FINISHED.threadId must echo the threadId we sent");
  assert.equal(finished.runId, runId, "RUN_FINISHED.runId must echo the runId we sent");

  const start = events[iStart];
  assert.equal(start.role, "assistant", "TEXT_MESSAGE_START.role must be 'assistant'");
  assert.equal(typeof start.messageId, "string");
  assert.ok(start.messageId.length > 0, "TEXT_MESSAGE_START.messageId must be non-empty");
  for (const i of [...contentIdx, iEnd]) {
    assert.equal(events[i].messageId, start.messageId, `${types[i]} must carry the START's messageId`);
  }

  const reply = contentIdx.map((i) => events[i].delta).join("");
  assert.ok(reply.length > 0, "concatenated TEXT_MESSAGE_CONTENT deltas are empty");
  return { reply, messageId: start.messageId };
}

function assertAssistantMessage(agent, messageId, reply) {
  const msg = agent.messages.find((m) => m.id === messageId);
  assert.ok(
    msg,
    `agent.messages has no message with id ${messageId}: ${JSON.stringify(agent.messages)}`,
  );
  assert.equal(msg.role, "assistant");
  assert.equal(msg.content, reply, "assistant message content must equal the concatenated deltas");
}

test("HttpAgent chats with POST /v1/ag-ui", { timeout: TEST_TIMEOUT_MS }, async (t) => {
  const threadId = randomUUID();
  const runId = randomUUID();
  const agent = newAgent(threadId, PROMPT);

  const run = await runOnce(t, agent, runId);
  const { reply, messageId } = assertTextRun(run, { threadId, runId });

  assert.ok(
    reply.includes(PROMPT),
    `the offline model should echo the user's message; reply was ${JSON.stringify(reply)}`,
  );
  assertAssistantMessage(agent, messageId, reply);
  assert.equal(agent.messages.length, 2, "expected [user, assistant] after one run");
  assert.deepEqual(
    run.result.newMessages.map((m) => m.id),
    [messageId],
    "runAgent() should report exactly the assistant reply as new",
  );
});

test("a second run on the same agent reuses the thread", { timeout: TEST_TIMEOUT_MS }, async (t) => {
  const threadId = randomUUID();
  const agent = newAgent(threadId, PROMPT);

  const runId1 = randomUUID();
  const first = assertTextRun(await runOnce(t, agent, runId1), { threadId, runId: runId1 });
  assertAssistantMessage(agent, first.messageId, first.reply);

  const followUp = "second message on the same thread";
  agent.addMessage({ id: randomUUID(), role: "user", content: followUp });

  const runId2 = randomUUID();
  assert.notEqual(runId2, runId1);
  const second = assertTextRun(await runOnce(t, agent, runId2), { threadId, runId: runId2 });
  assert.notEqual(second.messageId, first.messageId, "second reply must be a new message");
  assert.ok(
    second.reply.includes(followUp),
    `second reply should echo the follow-up; reply was ${JSON.stringify(second.reply)}`,
  );
  assertAssistantMessage(agent, second.messageId, second.reply);
  assert.equal(agent.threadId, threadId);
  assert.deepEqual(
    agent.messages.map((m) => m.role),
    ["user", "assistant", "user", "assistant"],
  );
});

test("malformed JSON yields 400 application/problem+json", { timeout: TEST_TIMEOUT_MS }, async (t) => {
  const res = await fetch(endpoint(), {
    method: "POST",
    headers: { "Content-Type": "application/json", Accept: "text/event-stream" },
    body: '{"threadId": "t-1", "runId": ', // truncated on purpose
    signal: t.signal,
  });
  const text = await res.text();
  assert.equal(res.status, 400, `expected HTTP 400, got ${res.status}: ${text}`);
  const contentType = res.headers.get("content-type") ?? "";
  assert.match(
    contentType,
    /^application\/problem\+json\b/i,
    `expected application/problem+json, got ${JSON.stringify(contentType)}`,
  );
  let body;
  assert.doesNotThrow(() => {
    body = JSON.parse(text);
  }, `problem body is not JSON: ${text}`);
  assert.equal(typeof body.code, "string", `problem body needs a string "code": ${text}`);
  assert.ok(body.code.length > 0, `problem "code" must be non-empty: ${text}`);
});
