// The browser and its tools. One Chromium process; one isolated context (its own cookies,
// storage and cache) per run, so nothing one run saw or set reaches another. A context idle for
// `idleMs` is closed, and at most `maxContexts` live at once (the least recently used goes).

import { chromium } from 'playwright-core';

/** What the model gets back from a page read, at most (it pages on with `offset`). */
export const MAX_TEXT = 12_000;
const ACTION_TIMEOUT_MS = 15_000;
const MAX_SCREENSHOT_BYTES = 512 * 1024;

const str = (description) => ({ type: 'string', description });
const int = (description) => ({ type: 'integer', minimum: 0, description });

/** The tools this device announces (names and schemas; svc-tools decides their privilege). */
export const TOOLS = [
  {
    name: 'navigate',
    description:
      'Open an http(s) URL in this run\'s private browser tab and return its title and the start of its text. ' +
      'Private and local addresses are refused.',
    parameters: { type: 'object', properties: { url: str('The http:// or https:// URL to open') }, required: ['url'], additionalProperties: false },
  },
  {
    name: 'read_page',
    description: 'The visible text of the current page (or of the element matching a CSS selector), from an offset.',
    parameters: {
      type: 'object',
      properties: { selector: str('Optional CSS selector to read only that element'), offset: int('Character offset to continue from') },
      additionalProperties: false,
    },
  },
  {
    name: 'click',
    description: 'Click an element of the current page, found by CSS selector or by its visible text; returns what the page says afterwards.',
    parameters: {
      type: 'object',
      properties: { selector: str('CSS selector of the element'), text: str('Visible text of the element (a button or link label)') },
      additionalProperties: false,
    },
  },
  {
    name: 'type_text',
    description: 'Type into a field of the current page (found by CSS selector), optionally pressing Enter afterwards.',
    parameters: {
      type: 'object',
      properties: { selector: str('CSS selector of the input'), text: str('What to type'), submit: { type: 'boolean', description: 'Press Enter afterwards' } },
      required: ['selector', 'text'],
      additionalProperties: false,
    },
  },
  {
    name: 'screenshot',
    description: 'A JPEG screenshot of the visible part of the current page, as a data: URL.',
    parameters: { type: 'object', properties: {}, additionalProperties: false },
  },
];

/** A failure the model should read (not a crash of the device). */
export class ToolError extends Error {}

/** The Chromium flags of a sandbox browser: all traffic through the egress proxy. */
export function chromiumArgs(proxyUrl) {
  return [
    `--proxy-server=${proxyUrl}`,
    // Chromium sends localhost directly unless told otherwise: the proxy decides for loopback too.
    '--proxy-bypass-list=<-loopback>',
    '--disable-quic',
    '--force-webrtc-ip-handling-policy=disable_non_proxied_udp',
    '--disable-background-networking',
    '--disable-gpu',
    '--no-sandbox',
    '--disable-dev-shm-usage',
  ];
}

export class BrowserPool {
  constructor({ executablePath = '/usr/bin/chromium', proxyUrl, idleMs = 10 * 60_000, maxContexts = 8, refusals } = {}) {
    this.executablePath = executablePath;
    this.proxyUrl = proxyUrl;
    this.idleMs = idleMs;
    this.maxContexts = maxContexts;
    /** host → reason, filled by the egress proxy: why a navigation failed. */
    this.refusals = refusals ?? new Map();
    /** runId → {context, page, lastUsed} */
    this.runs = new Map();
    this.browser = null;
    this.sweeper = setInterval(() => this.sweep().catch(() => {}), Math.min(this.idleMs, 60_000));
    this.sweeper.unref();
  }

  async start() {
    this.browser = await chromium.launch({
      executablePath: this.executablePath,
      headless: true,
      args: chromiumArgs(this.proxyUrl),
    });
    return this.browser.version();
  }

  async close() {
    clearInterval(this.sweeper);
    await this.browser?.close().catch(() => {});
  }

  /** The run's page, created with a fresh context on first use. */
  async pageFor(runId) {
    const key = runId || 'no-run';
    let entry = this.runs.get(key);
    if (entry && entry.page.isClosed()) {
      await entry.context.close().catch(() => {});
      this.runs.delete(key);
      entry = undefined;
    }
    if (!entry) {
      while (this.runs.size >= this.maxContexts) await this.closeRun(this.leastRecentlyUsed());
      const context = await this.browser.newContext({
        acceptDownloads: false,
        serviceWorkers: 'block',
        viewport: { width: 1280, height: 800 },
      });
      context.setDefaultTimeout(ACTION_TIMEOUT_MS);
      context.setDefaultNavigationTimeout(ACTION_TIMEOUT_MS);
      const page = await context.newPage();
      entry = { context, page, lastUsed: Date.now() };
      this.runs.set(key, entry);
    }
    entry.lastUsed = Date.now();
    return entry.page;
  }

  leastRecentlyUsed() {
    let oldest = null;
    for (const [key, entry] of this.runs) if (!oldest || entry.lastUsed < this.runs.get(oldest).lastUsed) oldest = key;
    return oldest;
  }

  async closeRun(key) {
    const entry = this.runs.get(key);
    this.runs.delete(key);
    await entry?.context.close().catch(() => {});
  }

  async sweep() {
    const now = Date.now();
    for (const [key, entry] of [...this.runs]) if (now - entry.lastUsed > this.idleMs) await this.closeRun(key);
  }

  /** Runs one tool call; returns the text the model reads or throws ToolError. */
  async call(tool, args = {}, runId = '') {
    switch (tool) {
      case 'navigate':
        return this.navigate(await this.pageFor(runId), args);
      case 'read_page':
        return this.readPage(await this.pageFor(runId), args);
      case 'click':
        return this.click(await this.pageFor(runId), args);
      case 'type_text':
        return this.typeText(await this.pageFor(runId), args);
      case 'screenshot':
        return this.screenshot(await this.pageFor(runId));
      default:
        throw new ToolError(`unknown tool ${JSON.stringify(tool)}`);
    }
  }

  async navigate(page, { url } = {}) {
    let target;
    try {
      target = new URL(String(url ?? ''));
    } catch {
      throw new ToolError(`invalid URL: ${JSON.stringify(url)}`);
    }
    if (target.protocol !== 'http:' && target.protocol !== 'https:') {
      throw new ToolError(`refused: only http and https URLs are opened, not ${target.protocol}`);
    }
    const host = target.hostname.replace(/^\[|\]$/g, '');
    this.refusals.delete(host);
    let response;
    try {
      response = await page.goto(target.href, { waitUntil: 'domcontentloaded' });
    } catch (err) {
      throw new ToolError(this.refusalOf(host) ?? `the page did not load: ${firstLine(err.message)}`);
    }
    if (response?.headers()['x-pa-egress'] === 'refused') {
      throw new ToolError(this.refusalOf(host) ?? `refused: ${(await response.text()).trim()}`);
    }
    return this.summary(page, response?.status());
  }

  refusalOf(host) {
    const reason = this.refusals.get(host);
    return reason ? `refused: ${reason}` : null;
  }

  async summary(page, status) {
    const text = await visibleText(page, 'body');
    const head = [`URL: ${page.url()}`, `Title: ${await page.title()}`];
    if (status) head.push(`Status: ${status}`);
    return `${head.join('\n')}\n\n${slice(text, 0, 2000)}`;
  }

  async readPage(page, { selector, offset = 0 } = {}) {
    if (page.url() === 'about:blank') throw new ToolError('no page is open: navigate first');
    const text = await visibleText(page, selector || 'body');
    return slice(text, Number(offset) || 0, MAX_TEXT);
  }

  locate(page, { selector, text }) {
    if (selector) return page.locator(String(selector)).first();
    if (text) return page.getByText(String(text), { exact: false }).first();
    throw new ToolError('give a selector or a text');
  }

  async click(page, args = {}) {
    if (page.url() === 'about:blank') throw new ToolError('no page is open: navigate first');
    const target = this.locate(page, args);
    try {
      await target.click({ timeout: ACTION_TIMEOUT_MS });
      await page.waitForLoadState('domcontentloaded', { timeout: 5_000 }).catch(() => {});
    } catch (err) {
      throw new ToolError(`cannot click: ${firstLine(err.message)}`);
    }
    return `Clicked.\n${await this.summary(page)}`;
  }

  async typeText(page, { selector, text, submit = false } = {}) {
    if (page.url() === 'about:blank') throw new ToolError('no page is open: navigate first');
    const field = this.locate(page, { selector });
    try {
      await field.fill(String(text ?? ''));
      if (submit) {
        await field.press('Enter');
        await page.waitForLoadState('domcontentloaded', { timeout: 5_000 }).catch(() => {});
      }
    } catch (err) {
      throw new ToolError(`cannot type: ${firstLine(err.message)}`);
    }
    return `Typed${submit ? ' and submitted' : ''}.\n${await this.summary(page)}`;
  }

  async screenshot(page) {
    if (page.url() === 'about:blank') throw new ToolError('no page is open: navigate first');
    for (const quality of [60, 35, 15]) {
      const image = await page.screenshot({ type: 'jpeg', quality });
      if (image.length <= MAX_SCREENSHOT_BYTES) return `data:image/jpeg;base64,${image.toString('base64')}`;
    }
    throw new ToolError('the screenshot is too large');
  }
}

async function visibleText(page, selector) {
  try {
    const text = await page.locator(selector).first().innerText({ timeout: 5_000 });
    return text.replace(/\n{3,}/g, '\n\n').trim();
  } catch (err) {
    throw new ToolError(`cannot read ${selector}: ${firstLine(err.message)}`);
  }
}

function slice(text, offset, max) {
  const part = text.slice(offset, offset + max);
  const rest = text.length - offset - part.length;
  return rest > 0 ? `${part}\n\n[${rest} more characters: read_page with offset ${offset + part.length}]` : part;
}

function firstLine(message) {
  return String(message).split('\n')[0].slice(0, 300);
}
