// The device socket's frames as the extension writes and reads them. The one definition is the
// Rust crate libs/pa-device-wire (ADR 0205; its JSON schema: device-frames.schema.json there);
// its test `roundtrip` runs these functions through the Rust types, with
// test/frames-roundtrip.mjs. Pure functions: no chrome.* API, so Node runs them too.

/** Where the socket connects, and its subprotocols (the token travels as the second one). */
export const CONNECT_PATH = '/v1/devices/connect';
export const ENROLL_PATH = '/v1/devices/enroll';
export const DEVICE_PROTOCOL = 'pa-device';
export const TOKEN_PROTOCOL_PREFIX = 'pa-device-token.';
/** The app-level ping; it also keeps the MV3 worker alive (the gateway drops a device after 45 s). */
export const KEEPALIVE_MS = 20000;

/** The subprotocols a browser offers: it cannot set Authorization on a WebSocket. */
export function protocols(token) {
  return [DEVICE_PROTOCOL, `${TOKEN_PROTOCOL_PREFIX}${token}`];
}

/** The first frame: what the device is and its tools ({name, description, parameters}). */
export function helloFrame({ agentVersion, platform, readOnly = false, tools }) {
  return JSON.stringify({
    type: 'hello',
    agent_version: String(agentVersion),
    platform: String(platform),
    read_only: Boolean(readOnly),
    tools,
  });
}

/** The answer to the call `id`. */
export function resultFrame(id, content, isError = false) {
  return JSON.stringify({ type: 'result', id: String(id), content: String(content), is_error: Boolean(isError) });
}

/** A browser cannot send WebSocket pings: this frame keeps the connection alive. */
export function pingFrame() {
  return JSON.stringify({ type: 'ping' });
}

/** The body of POST /v1/devices/enroll. */
export function enrollBody({ code, name }) {
  return JSON.stringify({
    code: String(code ?? '').trim(),
    name: String(name ?? '').trim() || 'browser',
    kind: 'browser_extension',
    platform: 'chrome-extension',
  });
}

const isString = (v) => typeof v === 'string';
const stringOr = (v, fallback) => (isString(v) ? v : fallback);

/**
 * A gateway frame, read: `{type: 'welcome', device_id, name}`, `{type: 'call', id, tool,
 * arguments, run_id}`, `{type: 'cancel', id}` or `{type: 'error', message}`, with the defaults
 * filled in; null for anything else (not JSON, an unknown type, a required field missing or not
 * a string), which the socket ignores.
 */
export function parseGatewayFrame(text) {
  if (!isString(text)) return null;
  let frame;
  try {
    frame = JSON.parse(text);
  } catch {
    return null;
  }
  if (frame === null || typeof frame !== 'object' || Array.isArray(frame)) return null;
  switch (frame.type) {
    case 'welcome':
      if (!isString(frame.device_id)) return null;
      return { type: 'welcome', device_id: frame.device_id, name: stringOr(frame.name, '') };
    case 'call': {
      if (!isString(frame.id) || !isString(frame.tool)) return null;
      const args = frame.arguments;
      return {
        type: 'call',
        id: frame.id,
        tool: frame.tool,
        arguments: args !== null && typeof args === 'object' && !Array.isArray(args) ? args : {},
        run_id: stringOr(frame.run_id, ''),
      };
    }
    case 'cancel':
      if (!isString(frame.id)) return null;
      return { type: 'cancel', id: frame.id };
    case 'error':
      if (!isString(frame.message)) return null;
      return { type: 'error', message: frame.message };
    default:
      return null;
  }
}
