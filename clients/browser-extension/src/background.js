// The extension's service worker: after the user allowed it on the options page and enrolled
// with a one-time code, it keeps one WebSocket to the gateway (svc-gateway/src/devices.rs) and
// answers tool calls. A browser cannot set Authorization on a WebSocket, so the device token
// travels as the subprotocol `pa-device-token.<token>` (the gateway selects `pa-device`).
// An app-level ping every 20 s keeps both the socket and this worker alive; an alarm brings the
// connection back after the browser suspended the worker. The frames are built and read in
// frames.js, which the Rust definition (libs/pa-device-wire) checks.

import { ENROLL_PATH, KEEPALIVE_MS, enrollBody, helloFrame, parseGatewayFrame, pingFrame, protocols, resultFrame } from './frames.js';
import { TOOLS, ToolError, connectUrl, nextBackoff, runTool } from './tools.js';

const state = { socket: null, status: 'not enrolled', detail: '', backoff: 0, retry: null, keepalive: null };

async function saved() {
  return chrome.storage.local.get(['gateway', 'device_id', 'device_token', 'name', 'consented']);
}

function setStatus(status, detail = '') {
  state.status = status;
  state.detail = detail;
  chrome.action?.setBadgeText({ text: status === 'connected' ? 'on' : '' }).catch(() => {});
}

function scheduleReconnect() {
  clearTimeout(state.retry);
  state.backoff = nextBackoff(state.backoff);
  state.retry = setTimeout(() => connect().catch(() => {}), state.backoff);
}

async function connect() {
  const s = await saved();
  if (!s.consented || !s.device_token || !s.gateway) {
    setStatus('not enrolled');
    return;
  }
  if (state.socket && state.socket.readyState <= WebSocket.OPEN) return;
  clearTimeout(state.retry);
  setStatus('connecting');
  const socket = new WebSocket(connectUrl(s.gateway), protocols(s.device_token));
  state.socket = socket;
  const cancelled = new Set();
  socket.onopen = () => {
    socket.send(
      helloFrame({
        agentVersion: chrome.runtime.getManifest().version,
        platform: `chrome-extension/${navigator.platform || 'unknown'}`,
        readOnly: false,
        tools: TOOLS,
      }),
    );
    state.keepalive = setInterval(() => {
      if (socket.readyState === WebSocket.OPEN) socket.send(pingFrame());
    }, KEEPALIVE_MS);
  };
  socket.onmessage = async (event) => {
    const message = parseGatewayFrame(event.data);
    if (message === null) return;
    if (message.type === 'welcome') {
      state.backoff = 0;
      setStatus('connected', `as ${message.name}`);
    } else if (message.type === 'error') {
      setStatus('refused', message.message);
    } else if (message.type === 'cancel') {
      cancelled.add(message.id);
    } else if (message.type === 'call') {
      let content;
      let isError = false;
      try {
        content = await runTool(message.tool, message.arguments);
      } catch (err) {
        content = err instanceof ToolError ? err.message : `the browser failed: ${err?.message ?? err}`;
        isError = true;
      }
      if (cancelled.delete(message.id) || socket.readyState !== WebSocket.OPEN) return;
      socket.send(resultFrame(message.id, content, isError));
    }
  };
  socket.onclose = () => {
    clearInterval(state.keepalive);
    if (state.socket !== socket) return;
    state.socket = null;
    if (state.status !== 'refused') setStatus('disconnected', 'reconnecting');
    scheduleReconnect();
  };
}

async function enroll({ gateway, code, name, consent }) {
  if (consent !== true) throw new Error('the extension connects only after you allow it');
  const base = new URL(String(gateway));
  if (base.protocol !== 'https:' && base.protocol !== 'http:') throw new Error('the gateway URL must be http(s)');
  const response = await fetch(new URL(ENROLL_PATH, base), {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: enrollBody({ code, name }),
  });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.detail || body.title || `enrollment refused (${response.status})`);
  await chrome.storage.local.set({
    gateway: base.origin,
    device_id: body.device_id,
    device_token: body.device_token,
    name: body.name,
    consented: true,
  });
  state.backoff = 0;
  await connect();
  return { device_id: body.device_id, name: body.name };
}

async function forget() {
  await chrome.storage.local.clear();
  const socket = state.socket;
  state.socket = null;
  socket?.close(1000);
  clearTimeout(state.retry);
  setStatus('not enrolled');
}

chrome.runtime.onMessage.addListener((message, sender, reply) => {
  // Only this extension's own pages talk to the worker.
  if (sender.id !== chrome.runtime.id) return false;
  const answer = async () => {
    if (message?.type === 'enroll') return enroll(message);
    if (message?.type === 'forget') return forget();
    const s = await saved();
    return { status: state.status, detail: state.detail, gateway: s.gateway ?? '', name: s.name ?? '', device_id: s.device_id ?? '' };
  };
  answer().then(
    (value) => reply({ ok: true, value }),
    (err) => reply({ ok: false, error: err?.message ?? String(err) }),
  );
  return true;
});

chrome.alarms.create('pa-reconnect', { periodInMinutes: 1 });
chrome.alarms.onAlarm.addListener((alarm) => {
  if (alarm.name === 'pa-reconnect') connect().catch(() => {});
});
chrome.runtime.onStartup.addListener(() => connect().catch(() => {}));
connect().catch(() => {});
