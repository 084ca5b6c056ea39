// The device side of the gateway's device socket (see docs/src/devices.md and
// svc-gateway/src/devices.rs): one outbound WebSocket, `hello` first, then `call` → `result`;
// `cancel` drops a call's answer. Reconnects with exponential backoff and jitter; stops when
// the gateway refuses the token (the device was deleted: enroll again).

import WebSocket from 'ws';

export const CONNECT_PATH = '/v1/devices/connect';
export const ENROLL_PATH = '/v1/devices/enroll';
const PING_INTERVAL_MS = 15_000;
const DEAD_AFTER_MS = 45_000;
const MAX_BACKOFF_MS = 30_000;

export class TokenRefused extends Error {}

/** `https://gw` → `wss://gw/v1/devices/connect`. */
export function connectUrl(gateway) {
  const url = new URL(CONNECT_PATH, gateway.endsWith('/') ? gateway : `${gateway}/`);
  url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
  return url.href;
}

/** Trades a one-time code for the device's id and token. */
export async function enroll({ gateway, code, name, kind, platform }) {
  const response = await fetch(new URL(ENROLL_PATH, gateway), {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ code, name, kind, platform }),
  });
  const text = await response.text();
  let body;
  try {
    body = JSON.parse(text);
  } catch {
    body = {};
  }
  if (!response.ok) throw new Error(`enrollment refused (${response.status}): ${body.detail ?? body.title ?? text}`);
  return body;
}

/** Next wait: doubles up to MAX_BACKOFF_MS, with ±25 % jitter. */
export function nextBackoff(previousMs) {
  const base = Math.min(MAX_BACKOFF_MS, previousMs ? previousMs * 2 : 500);
  return Math.round(base * (0.75 + Math.random() * 0.5));
}

/**
 * Keeps the device connected until `signal` aborts. `handle(tool, args, runId)` returns the
 * result text or throws (the message becomes an error result).
 */
export async function serve({ gateway, token, hello, handle, signal, log = console.error }) {
  let backoff = 0;
  while (!signal?.aborted) {
    const outcome = await connectOnce({ gateway, token, hello, handle, signal, log });
    if (outcome === 'refused') throw new TokenRefused('the gateway refused the device token: enroll again');
    if (signal?.aborted) return;
    backoff = outcome === 'was-connected' ? 0 : backoff;
    backoff = nextBackoff(backoff);
    log(`disconnected; reconnecting in ${backoff} ms`);
    await new Promise((resolve) => {
      const timer = setTimeout(resolve, backoff);
      signal?.addEventListener('abort', () => { clearTimeout(timer); resolve(); }, { once: true });
    });
  }
}

function connectOnce({ gateway, token, hello, handle, signal, log }) {
  return new Promise((resolve) => {
    let welcomed = false;
    let settled = false;
    const cancelled = new Set();
    const ws = new WebSocket(connectUrl(gateway), ['pa-device'], {
      headers: { authorization: `Bearer ${token}` },
      maxPayload: 4 * 1024 * 1024,
    });
    let lastHeard = Date.now();
    const finish = (outcome) => {
      if (settled) return;
      settled = true;
      clearInterval(pinger);
      signal?.removeEventListener('abort', onAbort);
      resolve(outcome);
    };
    const onAbort = () => ws.close(1000);
    signal?.addEventListener('abort', onAbort, { once: true });
    const pinger = setInterval(() => {
      if (Date.now() - lastHeard > DEAD_AFTER_MS) return ws.terminate();
      if (ws.readyState === WebSocket.OPEN) ws.ping();
    }, PING_INTERVAL_MS);
    ws.on('unexpected-response', (_req, res) => {
      log(`the gateway answered ${res.statusCode}`);
      finish(res.statusCode === 401 || res.statusCode === 403 ? 'refused' : 'failed');
      ws.terminate();
    });
    ws.on('open', () => ws.send(JSON.stringify({ type: 'hello', ...hello })));
    ws.on('pong', () => { lastHeard = Date.now(); });
    ws.on('ping', () => { lastHeard = Date.now(); });
    ws.on('message', async (data) => {
      lastHeard = Date.now();
      let message;
      try {
        message = JSON.parse(data.toString());
      } catch {
        return;
      }
      if (message.type === 'welcome') {
        welcomed = true;
        log(`online as ${message.name} (${message.device_id})`);
      } else if (message.type === 'error') {
        log(`the gateway says: ${message.message}`);
      } else if (message.type === 'cancel') {
        cancelled.add(message.id);
      } else if (message.type === 'call') {
        let content;
        let isError = false;
        try {
          content = await handle(message.tool, message.arguments ?? {}, message.run_id ?? '');
        } catch (err) {
          content = err?.message ?? String(err);
          isError = true;
        }
        if (cancelled.delete(message.id) || ws.readyState !== WebSocket.OPEN) return;
        ws.send(JSON.stringify({ type: 'result', id: message.id, content: String(content), is_error: isError }));
      }
    });
    ws.on('error', (err) => log(`socket error: ${err.message}`));
    ws.on('close', () => finish(welcomed ? 'was-connected' : 'failed'));
  });
}
