// Drives the real web app in Debian's chromium (playwright-core, nothing downloaded) against a
// running mesh whose gateway serves the built app and trusts the dev IdP. Started by
// tests-e2e/tests/web_app.rs, which passes:
//   PA_WEB_URL       the gateway serving the app (replica 1)
//   PA_WEB_URL_2     a second gateway replica on the same Redis (presence across replicas)
//   PA_WEB_OUTPUT    where the screenshots go (git-ignored)
//   PA_TOKEN_DELAY_MS the offline model's pause between tokens
//   PA_FAKE_MODEL_URL a scripted OpenAI-compatible model: it reads a page with web_fetch, then
//                    asks to `remember` something (a write after untrusted content: approval)
// Each step saves a screenshot; what this mesh cannot do yet logs "skip:".

import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, test } from 'node:test';

import { chromium, selectors } from 'playwright-core';

selectors.setTestIdAttribute('data-test');

const BASE = process.env.PA_WEB_URL ?? 'http://127.0.0.1:8080';
const BASE2 = process.env.PA_WEB_URL_2;
const FAKE_MODEL_URL = process.env.PA_FAKE_MODEL_URL;
const OUT = process.env.PA_WEB_OUTPUT ?? path.resolve('test-output');
const PREFIX = '(offline echo model: no real model is configured) You said: ';
fs.mkdirSync(OUT, { recursive: true });

let context;
let page;
let step = 0;
let userDataDir;

async function shot(p, name) {
  step += 1;
  const file = path.join(OUT, `${String(step).padStart(2, '0')}-${name}.png`);
  await p.screenshot({ path: file, fullPage: true });
  console.log(`screenshot ${file}`);
}

/** A long message so the slow offline model streams for several seconds. */
function longMessage(tag, words = 40) {
  return `${tag} ${Array.from({ length: words }, (_, i) => `word${i}`).join(' ')}`;
}

async function login(p, base, user) {
  await p.goto(`${base}/`);
  await p.waitForURL(/\/login/);
  await p.getByTestId('sign-in').click();
  await p.waitForSelector('#login-form', { timeout: 15_000 });
  await shot(p, `idp-login-${user}`);
  await p.fill('#username', user);
  await p.fill('#password', `${user}-password`);
  await Promise.all([p.waitForURL((u) => u.toString().startsWith(base) && !u.pathname.startsWith('/auth/')), p.click('#login-submit')]);
  await p.getByTestId('new-chat').waitFor();
}

async function liveReply(p) {
  return (await p.getByTestId('live-reply').textContent()) ?? '';
}

before(async () => {
  userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'pa-web-chromium-'));
  // A fresh profile (--user-data-dir) per run: Playwright passes it for a persistent context.
  context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: process.env.PA_CHROMIUM ?? '/usr/bin/chromium',
    headless: true,
    args: [
      '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-quic', '--no-first-run',
      '--disable-component-update', '--disable-sync',
    ],
    viewport: { width: 1280, height: 860 },
    colorScheme: 'light',
  });
  page = context.pages()[0] ?? (await context.newPage());
  page.on('pageerror', (err) => console.log(`page error: ${err.message}`));
});

after(async () => {
  await context?.close();
  if (userDataDir) fs.rmSync(userDataDir, { recursive: true, force: true });
});

test('the gateway serves the app shell with the right cache headers', async () => {
  const index = await fetch(`${BASE}/chat/some-client-route`);
  assert.equal(index.status, 200);
  assert.match(index.headers.get('content-type') ?? '', /text\/html/);
  assert.equal(index.headers.get('cache-control'), 'no-cache');
  const html = await index.text();
  const asset = /src="(\/assets\/[^"]+\.js)"/.exec(html)?.[1];
  assert.ok(asset, html);
  const js = await fetch(`${BASE}${asset}`);
  assert.equal(js.status, 200);
  assert.match(js.headers.get('cache-control') ?? '', /immutable/);
  const api404 = await fetch(`${BASE}/v1/no-such-endpoint`);
  assert.equal(api404.status, 404);
  assert.match(api404.headers.get('content-type') ?? '', /problem\+json/);
});

test('alice logs in at the dev IdP (Authorization Code + PKCE)', async () => {
  await login(page, BASE, 'alice');
  await shot(page, 'home-alice');
  const tokens = await page.evaluate(() => JSON.parse(localStorage.getItem('pa.auth.tokens') ?? 'null'));
  assert.ok(tokens?.access_token, 'an access token is stored');
  assert.ok(tokens?.refresh_token, 'a refresh token is stored (offline_access)');
  await assert.doesNotReject(page.getByTestId('nav-admin').waitFor({ timeout: 5000 }), 'alice is an admin');
});

test('a new chat streams its reply', async () => {
  const message = longMessage('first', 12);
  await page.getByTestId('composer').fill(message);
  await page.getByTestId('send').click();
  await page.waitForURL(/\/chat\//);
  await page.waitForFunction(() => (document.querySelector('[data-test=live-reply]')?.textContent ?? '').length > 10);
  await shot(page, 'streaming');
  await page.waitForSelector('[data-test=live-run][data-status=finished]', { timeout: 30_000 });
  assert.equal(await liveReply(page), PREFIX + message);
  await shot(page, 'streamed-reply');
  await page.getByTestId('chat-item').first().waitFor();
});

test('a reload mid-stream resumes from Last-Event-ID without losing or repeating a token', async () => {
  // Long enough (~15 s of tokens) that a loaded machine still reloads mid-stream.
  const message = longMessage('resume', 250);
  const expected = PREFIX + message;
  await page.getByTestId('composer').fill(message);
  await page.getByTestId('send').click();
  await page.waitForFunction((n) => (document.querySelector('[data-test=live-reply]')?.textContent ?? '').length > n, PREFIX.length + 40);
  const resumed = [];
  page.on('request', (r) => {
    if (/\/v1\/runs\/[^/]+\/events/.test(r.url())) resumed.push(r.headers()['last-event-id'] ?? null);
  });
  await page.reload();
  // The restored text is exactly what was seen before the reload: a prefix of the reply.
  await page.getByTestId('live-run').waitFor();
  const restored = await liveReply(page);
  assert.ok(restored.length > PREFIX.length, `restored: ${restored}`);
  assert.ok(expected.startsWith(restored), `restored text is a prefix of the reply:\n${restored}`);
  await shot(page, 'after-reload-mid-stream');
  const status = await page.getByTestId('live-run').getAttribute('data-status');
  assert.equal(status, 'running', 'the run was still streaming at the reload');
  await page.waitForSelector('[data-test=live-run][data-status=finished]', { timeout: 60_000 });
  assert.equal(await liveReply(page), expected, 'no token lost or repeated');
  assert.ok(resumed.length >= 1, 'the stream was requested again');
  assert.match(resumed[0] ?? '', /^\d+-\d+$/, 'the resumed request carried Last-Event-ID');
  await shot(page, 'resumed-reply');
});

test('the stop button cancels a running reply', async () => {
  // Long enough (~30 s of tokens) that the stop always lands mid-reply, even under load.
  await page.getByTestId('composer').fill(longMessage('stop', 500));
  await page.getByTestId('send').click();
  await page.waitForFunction((n) => (document.querySelector('[data-test=live-reply]')?.textContent ?? '').length > n, PREFIX.length + 10);
  await page.getByTestId('stop').click();
  await page.waitForSelector('[data-test=live-run]:not([data-status=running])', { timeout: 20_000 });
  const status = await page.getByTestId('live-run').getAttribute('data-status');
  assert.equal(status, 'cancelled');
  await shot(page, 'stopped');
});

test('approve/deny go over the control socket and get a clear answer', async () => {
  // No tool needs approval in this mesh yet (the gates come with svc-tools): check the socket
  // path end to end with a decision for a tool call that is not waiting.
  const runHref = await page.evaluate(() => Object.keys(sessionStorage).find((k) => k.startsWith('pa.run.')));
  assert.ok(runHref, 'a run is known in this tab');
  const answer = await page.evaluate(async (key) => {
    const run = JSON.parse(sessionStorage.getItem(key));
    const token = JSON.parse(localStorage.getItem('pa.auth.tokens')).access_token;
    const ws = new WebSocket(`${location.origin.replace('http', 'ws')}/v1/control`, ['pa.control.v1', `bearer.${token}`]);
    return new Promise((resolve, reject) => {
      ws.onerror = () => reject(new Error('socket error'));
      ws.onopen = () => ws.send(JSON.stringify({ type: 'approve', id: 'a1', run_id: run.view.runId, tool_call_id: 'call-x' }));
      ws.onmessage = (ev) => {
        const msg = JSON.parse(ev.data);
        if (msg.id === 'a1') { ws.close(); resolve({ ...msg, protocol: ws.protocol }); }
      };
      setTimeout(() => reject(new Error('no answer')), 10_000);
    });
  }, runHref);
  assert.equal(answer.protocol, 'pa.control.v1');
  assert.equal(answer.type, 'error');
  assert.equal(answer.code, 'not_found');
  assert.match(answer.message, /waiting for approval/);
});

test('presence: the user\'s tabs are listed, across gateway replicas', async () => {
  await page.waitForFunction(() => document.querySelector('[data-test=presence-count]')?.textContent === '1');
  const second = await context.newPage();
  await second.goto(`${BASE}/`);
  await second.getByTestId('new-chat').waitFor();
  await page.waitForFunction(() => document.querySelector('[data-test=presence-count]')?.textContent === '2');
  let third = null;
  if (BASE2) {
    // Another replica: another origin, so the tab logs in there too (the IdP session is reused).
    third = await context.newPage();
    await third.goto(`${BASE2}/`);
    await third.waitForURL(/\/login/);
    await third.getByTestId('sign-in').click();
    await third.waitForURL((u) => u.toString().startsWith(BASE2) && !u.pathname.startsWith('/auth/') && !u.pathname.startsWith('/login'));
    await third.getByTestId('new-chat').waitFor();
    await page.waitForFunction(() => document.querySelector('[data-test=presence-count]')?.textContent === '3');
    await third.waitForFunction(() => document.querySelector('[data-test=presence-count]')?.textContent === '3');
  } else {
    console.log('skip: no second gateway replica given (PA_WEB_URL_2)');
  }
  await page.getByTestId('presence').click();
  await page.getByTestId('presence-list').waitFor();
  await shot(page, 'presence');
  await page.keyboard.press('Escape');
  await second.close();
  if (third) await third.close();
  await page.waitForFunction(() => document.querySelector('[data-test=presence-count]')?.textContent === '1');
});

test('settings: memories can be added, found, pinned, edited and deleted', async () => {
  await page.goto(`${BASE}/settings/memories`);
  await page.getByTestId('memory-list').waitFor();
  const stamp = Date.now();
  const fact = `My cat is called Tiberius (note ${stamp})`;
  await page.getByTestId('memory-new').fill(fact);
  await page.getByTestId('memory-add').click();
  const item = page.getByTestId('memory-item').filter({ hasText: fact });
  await item.waitFor();
  // Found by a search for a word of it.
  await page.getByTestId('memory-search').fill('Tiberius');
  await page.waitForFunction((f) => [...document.querySelectorAll('[data-test=memory-item]')].some((e) => e.textContent.includes(f)), fact);
  await shot(page, 'memory-found');
  // Pin it: the server answers with pinned = true and the button says so.
  await item.getByTestId('memory-pin').click();
  await page.waitForFunction((f) => [...document.querySelectorAll('[data-test=memory-item]')].some((e) => e.textContent.includes(f) && e.getAttribute('data-pinned') === 'true'), fact);
  assert.equal(await item.getByTestId('memory-pin').getAttribute('aria-pressed'), 'true');
  // Correct it.
  const corrected = `My cat is called Caligula (note ${stamp})`;
  await item.getByTestId('memory-edit').click();
  await page.getByTestId('memory-edit-text').fill(corrected);
  await page.getByTestId('memory-save').click();
  await page.getByTestId('memory-search').fill('Caligula');
  const edited = page.getByTestId('memory-item').filter({ hasText: corrected });
  await edited.waitFor();
  await shot(page, 'memory-edited');
  // The API agrees: the memory is stored with the corrected text, pinned.
  const stored = await page.evaluate(async (text) => {
    const token = JSON.parse(localStorage.getItem('pa.auth.tokens')).access_token;
    const res = await fetch('/v1/me/memories?pinned=true', { headers: { authorization: `Bearer ${token}` } });
    return (await res.json()).items.filter((m) => m.text === text);
  }, corrected);
  assert.equal(stored.length, 1);
  assert.equal(stored[0].pinned, true);
  // Forget it.
  await edited.getByTestId('memory-delete').click();
  await page.getByTestId('memory-search').fill('');
  await page.waitForFunction((s) => ![...document.querySelectorAll('[data-test=memory-item]')].some((e) => e.textContent.includes(s)), `(note ${stamp})`);
  await shot(page, 'memory-deleted');
});

test('settings: an integration can be added, listed and disabled', async () => {
  await page.goto(`${BASE}/settings/integrations`);
  await page.getByTestId('integration-list').waitFor();
  // The default kind is SearXNG, which needs a base URL.
  await page.getByTestId('integration-name').fill('My SearXNG');
  await page.getByTestId('integration-base-url').fill('https://searx.example.org');
  await page.getByTestId('integration-add').click();
  const item = page.getByTestId('integration-item').filter({ hasText: 'My SearXNG' });
  await item.waitFor();
  assert.match((await item.textContent()) ?? '', /https:\/\/searx\.example\.org/);
  assert.equal(await item.getAttribute('data-enabled'), 'true');
  await shot(page, 'integration-added');
  await item.getByTestId('integration-enabled').click();
  await page.waitForFunction(() => [...document.querySelectorAll('[data-test=integration-item]')].some((e) => e.textContent.includes('My SearXNG') && e.getAttribute('data-enabled') === 'false'));
  const listed = await page.evaluate(async () => {
    const token = JSON.parse(localStorage.getItem('pa.auth.tokens')).access_token;
    const res = await fetch('/v1/me/integrations', { headers: { authorization: `Bearer ${token}` } });
    return (await res.json()).items.filter((i) => i.name === 'My SearXNG');
  });
  assert.equal(listed.length, 1);
  assert.equal(listed[0].kind, 'searxng');
  assert.equal(listed[0].enabled, false);
  assert.equal(listed[0].config.base_url, 'https://searx.example.org');
  // A bad one is refused with the server's reason, shown to the user.
  await page.getByTestId('integration-name').fill('Broken');
  await page.getByTestId('integration-base-url').fill('not a url');
  await page.getByTestId('integration-add').click();
  await page.getByTestId('integration-error').waitFor();
  assert.match((await page.getByTestId('integration-error').textContent()) ?? '', /base_url/);
  await shot(page, 'integration-disabled');
});

test('settings: a device can be added with a one-time code', async () => {
  await page.goto(`${BASE}/settings/devices`);
  await page.getByTestId('device-list').waitFor();
  assert.match((await page.getByTestId('device-list').textContent()) ?? '', /No devices yet/);
  // The code fixes the device's kind (picked here; a device agent unless the user picks another).
  await page.getByTestId('device-kind').waitFor();
  await page.getByTestId('device-add').click();
  await page.getByTestId('device-code').waitFor();
  const text = (await page.getByTestId('device-code').textContent()) ?? '';
  const code = text.match(/[A-Z2-9]{4}-[A-Z2-9]{4}-[A-Z2-9]{4}/)?.[0];
  assert.ok(code, text);
  assert.ok(text.includes(`pa-device enroll ${code} --gateway ${BASE}`), text);
  // The code is real: it enrolls a device, which the page then lists.
  const enrolled = await page.evaluate(async (c) => {
    const res = await fetch('/v1/devices/enroll', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ code: c, name: 'web-test-laptop' }) });
    return res.status;
  }, code);
  assert.equal(enrolled, 200);
  await page.getByRole('button', { name: 'Refresh' }).click();
  await page.waitForFunction(() => document.querySelector('[data-test=device-list]')?.textContent?.includes('web-test-laptop'));
  assert.match((await page.getByTestId('device-list').textContent()) ?? '', /offline/);
  assert.match((await page.getByTestId('device-list').textContent()) ?? '', /Device agent/);
  await shot(page, 'device-added');
  page.once('dialog', (d) => d.accept());
  await page.getByRole('button', { name: 'Remove web-test-laptop' }).click();
  await page.waitForFunction(() => document.querySelector('[data-test=device-list]')?.textContent?.includes('No devices yet'));
});

test('a chat offers the MCP servers picked for it', async () => {
  const created = await page.evaluate(async () => {
    const token = JSON.parse(localStorage.getItem('pa.auth.tokens')).access_token;
    const res = await fetch('/v1/me/integrations', {
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ kind: 'mcp_http', name: 'Docs MCP', config: { url: 'http://127.0.0.1:9/mcp' }, secrets: {} }),
    });
    return { status: res.status, body: await res.json() };
  });
  assert.ok(created.status < 300, JSON.stringify(created));
  await page.goto(`${BASE}/`);
  await page.getByTestId('new-title').fill('Tools chat');
  await page.getByTestId('composer').first().fill('hello tools');
  await page.getByTestId('send').first().click();
  await page.waitForURL(/\/chat\//);
  const chatId = new URL(page.url()).pathname.split('/').pop();
  await page.getByTestId('chat-tools').click();
  await page.getByTestId('chat-tools-dialog').waitFor();
  await page.getByTestId(`chat-tool-${created.body.id}`).click();
  await shot(page, 'chat-tools');
  await page.getByTestId('chat-tools-save').click();
  await page.getByTestId('chat-tools-dialog').waitFor({ state: 'detached' });
  assert.match((await page.getByTestId('chat-tools').textContent()) ?? '', /Tools \(1\)/);
  const selection = await page.evaluate(async (id) => {
    const token = JSON.parse(localStorage.getItem('pa.auth.tokens')).access_token;
    const res = await fetch(`/v1/chats/${id}/tools`, { headers: { authorization: `Bearer ${token}` } });
    return res.json();
  }, chatId);
  assert.deepEqual(selection.integration_ids, [created.body.id]);
});

test('settings: API keys, provider keys and the usage chart', async () => {
  await page.goto(`${BASE}/settings/api-keys`);
  await page.getByTestId('apikey-list').waitFor().catch(async (err) => {
    await shot(page, 'failure-api-keys');
    throw err;
  });
  await page.getByTestId('apikey-name').fill('my script');
  await page.getByTestId('apikey-create').click();
  await page.getByTestId('apikey-created').waitFor();
  assert.match((await page.getByTestId('apikey-created').textContent()) ?? '', /pa_/);
  await shot(page, 'api-key-created');
  // A provider to hold the key (alice is an admin).
  const created = await page.evaluate(async () => {
    const token = JSON.parse(localStorage.getItem('pa.auth.tokens')).access_token;
    const res = await fetch('/v1/admin/providers', {
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ id: 'openai', kind: 'openai_compatible', base_url: 'http://127.0.0.1:9/v1', tags: ['us-hosted'] }),
    });
    return `${res.status} ${await res.text()}`;
  });
  assert.match(created, /^20/, created);
  await page.goto(`${BASE}/settings/keys`);
  await page.getByTestId('byok-provider').fill('openai');
  await page.getByTestId('byok-key').fill('sk-test-1234567890abcd');
  await page.getByTestId('byok-save').click();
  await page.waitForFunction(() => document.querySelector('[data-test=byok-list]')?.textContent?.includes('abcd') || document.querySelector('[role=alert]'));
  assert.equal(await page.locator('[role=alert]').count(), 0, await page.locator('[role=alert]').first().textContent().catch(() => ''));
  await page.goto(`${BASE}/settings/usage`);
  await page.getByTestId('usage-chart').waitFor();
  await shot(page, 'usage');
});

test('alice sees the admin pages', async () => {
  await page.goto(`${BASE}/admin/models`);
  await page.waitForFunction(() => document.querySelector('[data-test=admin-models]')?.textContent?.includes('offline'));
  await shot(page, 'admin-models');
  // Users and roles: alice is listed as herself, an admin, and cannot disable herself.
  await page.goto(`${BASE}/admin/users`);
  await page.getByTestId('user-row').first().waitFor();
  const me = page.getByTestId('user-row').filter({ hasText: '(you)' });
  await me.waitFor();
  assert.match((await me.textContent()) ?? '', /admin/);
  assert.equal(await me.getByTestId('user-toggle').count(), 0, 'no button to disable yourself');
  await page.getByTestId('users-search').fill('no-such-user-xyz');
  await page.waitForFunction(() => document.querySelector('[data-test=users]')?.textContent?.includes('No users match'));
  await shot(page, 'admin-users');
});

test('dark mode, keyboard and a phone-sized screen', async () => {
  await page.goto(`${BASE}/`);
  await page.getByTestId('dark-toggle').click();
  assert.ok(await page.evaluate(() => document.body.classList.contains('body--dark')));
  await shot(page, 'dark-mode');
  // On a freshly loaded page (no autofocus), the first Tab reaches the skip link.
  await page.goto(`${BASE}/settings/keys`);
  await page.getByTestId('byok-list').waitFor();
  await page.keyboard.press('Tab');
  assert.equal(await page.evaluate(() => document.activeElement?.textContent?.trim()), 'Skip to content');
  await page.setViewportSize({ width: 390, height: 844 });
  await page.goto(`${BASE}/`);
  await page.getByRole('button', { name: 'Toggle the chat list' }).waitFor();
  await shot(page, 'phone');
  await page.setViewportSize({ width: 1280, height: 860 });
  await page.getByTestId('dark-toggle').click();
});

test('the service worker caches the shell, never the API', async () => {
  await page.goto(`${BASE}/`);
  await page.evaluate(() => navigator.serviceWorker.ready);
  await page.reload();
  await page.getByTestId('new-chat').waitFor();
  const cached = await page.evaluate(async () => {
    const urls = [];
    for (const name of await caches.keys()) {
      const c = await caches.open(name);
      for (const req of await c.keys()) urls.push(new URL(req.url).pathname);
    }
    return urls;
  });
  assert.ok(cached.includes('/'), `the shell is cached: ${cached}`);
  assert.ok(!cached.some((u) => u.startsWith('/v1')), `no API data is cached: ${cached}`);
});

test('a tool call that needs approval waits for the user and runs once approved', async () => {
  assert.ok(FAKE_MODEL_URL, 'PA_FAKE_MODEL_URL is not set');
  // The scripted model as an admin-registered model, and web_fetch for alice.
  const setup = await page.evaluate(async (base) => {
    const token = JSON.parse(localStorage.getItem('pa.auth.tokens')).access_token;
    const headers = { authorization: `Bearer ${token}`, 'content-type': 'application/json' };
    const post = async (p, body) => {
      const res = await fetch(p, { method: 'POST', headers, body: JSON.stringify(body) });
      return `${res.status} ${await res.text()}`;
    };
    return [
      await post('/v1/admin/providers', { id: 'fp', kind: 'openai_compatible', base_url: base, tags: [], platform_api_key: 'sk-test' }),
      await post('/v1/admin/models', { label: 'fp:m', display_name: 'Scripted test model', context_window: 32000, input_price_micros: 1, output_price_micros: 1, capabilities: ['tools'] }),
      await post('/v1/me/integrations', { kind: 'web_fetch', name: 'Web' }),
    ];
  }, FAKE_MODEL_URL);
  for (const r of setup) assert.match(r, /^20/, r);
  await page.goto(`${BASE}/`);
  await page.getByTestId('new-title').fill('Approval chat');
  await page.getByTestId('model-picker').click();
  await page.getByRole('option', { name: /Scripted test model/ }).click();
  await page.getByTestId('composer').first().fill('Read the page and keep what matters');
  await page.getByTestId('send').first().click();
  await page.waitForURL(/\/chat\//);
  const approval = page.getByTestId('approval');
  await approval.waitFor({ timeout: 30_000 });
  assert.match((await page.getByTestId('live-run').textContent()) ?? '', /remember/);
  await shot(page, 'approval-requested');
  await page.getByTestId('approve').click();
  await page.waitForSelector('[data-test=live-run][data-status=finished]', { timeout: 30_000 });
  assert.match(await liveReply(page), /Noted: you like pelicans/);
  assert.match((await page.getByTestId('live-run').textContent()) ?? '', /Approved/);
  await shot(page, 'approval-approved');
  // The approved call ran: the memory is there.
  const found = await page.evaluate(async () => {
    const token = JSON.parse(localStorage.getItem('pa.auth.tokens')).access_token;
    const res = await fetch('/v1/me/memories?q=pelican', { headers: { authorization: `Bearer ${token}` } });
    return (await res.json()).items.map((m) => m.text);
  });
  assert.ok(found.includes("The user's favourite bird is the pelican"), JSON.stringify(found));

  // Stopped while a call waits for approval: the card says the call was not run and was not
  // decided, and offers no buttons that could only fail.
  await page.getByTestId('composer').first().fill('Remember it once more');
  await page.getByTestId('send').first().click();
  await page.waitForSelector('[data-test=live-run][data-status=running] [data-test=approval]', { timeout: 30_000 });
  assert.equal(await page.getByTestId('tool-progress').last().textContent(), 'running…');
  await page.getByTestId('stop').click();
  await page.waitForSelector('[data-test=live-run][data-status=cancelled]', { timeout: 20_000 });
  assert.equal(await page.getByTestId('approval').count(), 0, 'no approve/deny on an ended run');
  const card = (await page.getByTestId('tool-card').last().textContent()) ?? '';
  assert.match(card, /not run/);
  assert.match(card, /Not decided: the run ended/);
  await shot(page, 'approval-stopped');
});

test('logout, then bob (not an admin) is refused the admin pages', async () => {
  await page.getByTestId('logout').click();
  // oidc-provider asks to confirm the sign-out.
  await page.waitForURL((u) => !u.toString().startsWith(BASE) || u.pathname === '/login', { timeout: 15_000, waitUntil: 'commit' });
  await page.waitForLoadState('domcontentloaded');
  if (!page.url().startsWith(BASE)) {
    const confirm = page.locator('form button, button[type=submit], input[type=submit]').first();
    await confirm.click();
    await page.waitForURL((u) => u.toString().startsWith(BASE), { timeout: 15_000, waitUntil: 'commit' });
  }
  await page.waitForURL(/\/login/);
  assert.equal(await page.evaluate(() => localStorage.getItem('pa.auth.tokens')), null);
  await login(page, BASE, 'bob');
  assert.equal(await page.getByTestId('nav-admin').count(), 0, 'no admin link for bob');
  await page.goto(`${BASE}/admin`);
  await page.getByTestId('refused').waitFor();
  await shot(page, 'bob-refused-admin');
  // The server agrees.
  const status = await page.evaluate(async () => {
    const token = JSON.parse(localStorage.getItem('pa.auth.tokens')).access_token;
    return Promise.all(['/v1/admin/models', '/v1/admin/users'].map(async (p) => (await fetch(p, { headers: { authorization: `Bearer ${token}` } })).status));
  });
  assert.deepEqual(status, [403, 403]);
});
