// The tools this browser offers its owner's agent, run with the chrome.* APIs. svc-tools decides
// their privilege from the device kind: reading tabs and screenshots are reads; navigating,
// clicking and typing act in this (logged-in) browser and go through the approval gate once a
// run has read untrusted content. Everything a page says reaches the model marked untrusted.
//
// The helpers at the top use no chrome.* API, so Node's test runner checks them directly.

import { CONNECT_PATH } from './frames.js';

export const MAX_TEXT = 12000;
const LOAD_TIMEOUT_MS = 15000;
const MAX_SCREENSHOT_CHARS = 700 * 1024;

const str = (description) => ({ type: 'string', description });
const tabId = { type: 'integer', minimum: 0, description: 'A tab id from list_tabs (default: the active tab)' };

export const TOOLS = [
  {
    name: 'list_tabs',
    description: "The user's open tabs: id, title, URL, and which is active.",
    parameters: { type: 'object', properties: {}, additionalProperties: false },
  },
  {
    name: 'read_tab',
    description: 'The visible text of a tab (the active one by default), from an offset.',
    parameters: {
      type: 'object',
      properties: { tab_id: tabId, offset: { type: 'integer', minimum: 0, description: 'Character offset to continue from' } },
      additionalProperties: false,
    },
  },
  {
    name: 'navigate',
    description: 'Open an http(s) URL in a tab of the user\'s browser (the active one by default) and wait for it to load.',
    parameters: { type: 'object', properties: { url: str('The http:// or https:// URL'), tab_id: tabId }, required: ['url'], additionalProperties: false },
  },
  {
    name: 'click',
    description: 'Click an element of a tab, found by CSS selector or by its visible text.',
    parameters: {
      type: 'object',
      properties: { selector: str('CSS selector'), text: str('Visible text of a button or link'), tab_id: tabId },
      additionalProperties: false,
    },
  },
  {
    name: 'type_text',
    description: 'Type into a field of a tab (by CSS selector), optionally submitting its form.',
    parameters: {
      type: 'object',
      properties: { selector: str('CSS selector of the field'), text: str('What to type'), submit: { type: 'boolean' }, tab_id: tabId },
      required: ['selector', 'text'],
      additionalProperties: false,
    },
  },
  {
    name: 'screenshot',
    description: 'A JPEG of the visible part of the active tab, as a data: URL.',
    parameters: { type: 'object', properties: {}, additionalProperties: false },
  },
];

export class ToolError extends Error {}

/** `https://gw` → `wss://gw/v1/devices/connect`. */
export function connectUrl(gateway) {
  const url = new URL(CONNECT_PATH, gateway);
  url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
  return url.href;
}

/** Only web pages are opened (no file:, chrome:, javascript: or data: URLs). */
export function webUrl(raw) {
  let url;
  try {
    url = new URL(String(raw ?? ''));
  } catch {
    throw new ToolError(`invalid URL: ${JSON.stringify(raw)}`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new ToolError(`refused: only http and https URLs are opened, not ${url.protocol}`);
  }
  return url.href;
}

export function sliceText(text, offset = 0, max = MAX_TEXT) {
  const clean = String(text ?? '').replace(/\n{3,}/g, '\n\n').trim();
  const start = Math.max(0, Number(offset) || 0);
  const part = clean.slice(start, start + max);
  const rest = clean.length - start - part.length;
  return rest > 0 ? `${part}\n\n[${rest} more characters: read_tab with offset ${start + part.length}]` : part;
}

/** Next reconnect wait: doubles up to five minutes, with ±25 % jitter. */
export function nextBackoff(previousMs) {
  const base = Math.min(5 * 60000, previousMs ? previousMs * 2 : 1000);
  return Math.round(base * (0.75 + Math.random() * 0.5));
}

// --- chrome.* below -------------------------------------------------------------------------

async function targetTab(id) {
  if (id !== undefined && id !== null) {
    try {
      return await chrome.tabs.get(Number(id));
    } catch {
      throw new ToolError(`no tab ${id}`);
    }
  }
  const [focused] = await chrome.tabs.query({ active: true, lastFocusedWindow: true });
  if (focused) return focused;
  const [any] = await chrome.tabs.query({ active: true });
  if (!any) throw new ToolError('no tab is open');
  return any;
}

async function inTab(tab, func, args = []) {
  try {
    const [frame] = await chrome.scripting.executeScript({ target: { tabId: tab.id }, func, args });
    return frame?.result;
  } catch (err) {
    throw new ToolError(`cannot reach ${tab.url || 'this tab'}: ${err?.message ?? err}`);
  }
}

function waitForLoad(tabIdValue) {
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      chrome.tabs.onUpdated.removeListener(listener);
      resolve();
    };
    const listener = (id, change) => {
      if (id === tabIdValue && change.status === 'complete') done();
    };
    const timer = setTimeout(done, LOAD_TIMEOUT_MS);
    chrome.tabs.onUpdated.addListener(listener);
  });
}

// Run inside the page (serialized by chrome.scripting: no closures).
function pageText() {
  return document.body ? document.body.innerText : '';
}

function pageClick(selector, text) {
  let el = null;
  if (selector) el = document.querySelector(selector);
  else if (text) {
    const wanted = text.trim().toLowerCase();
    const candidates = [...document.querySelectorAll('button, a, [role="button"], input[type="submit"], input[type="button"], label, summary')];
    el = candidates.find((c) => (c.innerText || c.value || '').trim().toLowerCase() === wanted) ||
      candidates.find((c) => (c.innerText || c.value || '').toLowerCase().includes(wanted));
  }
  if (!el) return { ok: false };
  el.scrollIntoView({ block: 'center' });
  el.click();
  return { ok: true, what: (el.innerText || el.value || el.tagName).trim().slice(0, 80) };
}

function pageType(selector, value, submit) {
  const el = document.querySelector(selector);
  if (!el) return { ok: false };
  el.focus();
  el.value = value;
  el.dispatchEvent(new Event('input', { bubbles: true }));
  el.dispatchEvent(new Event('change', { bubbles: true }));
  if (submit) {
    if (el.form) el.form.requestSubmit();
    else el.dispatchEvent(new KeyboardEvent('keydown', { key: 'Enter', bubbles: true }));
  }
  return { ok: true };
}

async function describe(tab) {
  const fresh = await chrome.tabs.get(tab.id);
  const text = await inTab(fresh, pageText);
  return `Tab ${fresh.id}: ${fresh.title}\nURL: ${fresh.url}\n\n${sliceText(text, 0, 2000)}`;
}

/** Runs one tool call; returns the text the model reads or throws ToolError. */
export async function runTool(name, args = {}) {
  switch (name) {
    case 'list_tabs': {
      const tabs = await chrome.tabs.query({});
      return tabs.map((t) => `${t.id}${t.active ? ' (active)' : ''}: ${t.title} — ${t.url}`).join('\n') || 'no tabs';
    }
    case 'read_tab': {
      const tab = await targetTab(args.tab_id);
      return sliceText(await inTab(tab, pageText), args.offset);
    }
    case 'navigate': {
      const url = webUrl(args.url);
      const tab = await targetTab(args.tab_id);
      const loaded = waitForLoad(tab.id);
      await chrome.tabs.update(tab.id, { url });
      await loaded;
      return describe(tab);
    }
    case 'click': {
      if (!args.selector && !args.text) throw new ToolError('give a selector or a text');
      const tab = await targetTab(args.tab_id);
      const clicked = await inTab(tab, pageClick, [args.selector ?? null, args.text ?? null]);
      if (!clicked?.ok) throw new ToolError(`nothing to click matches ${JSON.stringify(args.selector ?? args.text)}`);
      await new Promise((r) => setTimeout(r, 300));
      return `Clicked ${JSON.stringify(clicked.what)}.\n${await describe(tab)}`;
    }
    case 'type_text': {
      const tab = await targetTab(args.tab_id);
      const typed = await inTab(tab, pageType, [String(args.selector), String(args.text ?? ''), Boolean(args.submit)]);
      if (!typed?.ok) throw new ToolError(`no field matches ${JSON.stringify(args.selector)}`);
      return `Typed.\n${await describe(tab)}`;
    }
    case 'screenshot': {
      const tab = await targetTab();
      const image = await chrome.tabs.captureVisibleTab(tab.windowId, { format: 'jpeg', quality: 50 });
      if (image.length > MAX_SCREENSHOT_CHARS) throw new ToolError('the screenshot is too large');
      return image;
    }
    default:
      throw new ToolError(`unknown tool ${JSON.stringify(name)}`);
  }
}
