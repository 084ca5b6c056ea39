// The browser pool in Debian's chromium behind the egress proxy: a local page is opened,
// clicked and read; what the page tries to reach on a private address (a navigation, a link,
// a fetch) never arrives; two runs do not share storage.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import { after, before, test } from 'node:test';

import { BrowserPool, ToolError } from '../src/browser.mjs';
import { AllowList, startEgressProxy } from '../src/egress.mjs';

const CHROMIUM = process.env.PA_CHROMIUM || '/usr/bin/chromium';

export const PAGE = `<!doctype html><html><head><title>Sandbox test page</title></head><body>
<h1>Hello sandbox</h1>
<p id="seen"></p>
<button id="reveal" onclick="document.getElementById('result').textContent = 'the secret word is ' + 'pelican'">Reveal</button>
<p id="result">nothing yet</p>
<input id="q" /><button id="echo" onclick="document.getElementById('out').textContent = 'you typed ' + document.getElementById('q').value">Echo</button>
<p id="out"></p>
<a id="leak" href="http://127.0.0.2:PORT/private">private link</a>
<script>
  document.getElementById('seen').textContent = localStorage.getItem('seen') ? 'seen before: yes' : 'seen before: no';
  localStorage.setItem('seen', '1');
  async function probe() {
    try { await fetch('http://127.0.0.2:PORT/from-fetch'); document.title += ' (fetch went through)'; }
    catch { document.getElementById('out').textContent = 'fetch blocked'; }
  }
</script>
</body></html>`;

let server;
let hits = [];
let proxy;
let pool;
let port;

before(async () => {
  assert.ok(fs.existsSync(CHROMIUM), `no chromium at ${CHROMIUM} (apt install chromium; make bootstrap does)`);
  server = http.createServer((req, res) => {
    hits.push(`${req.socket.localAddress} ${req.url}`);
    res.setHeader('content-type', 'text/html; charset=utf-8');
    res.end(PAGE.replaceAll('PORT', String(port)));
  });
  await new Promise((resolve) => server.listen(0, '0.0.0.0', resolve));
  port = server.address().port;
  const refusals = new Map();
  proxy = await startEgressProxy({ allow: new AllowList('127.0.0.1'), onRefused: (h, why) => refusals.set(h, why) });
  pool = new BrowserPool({ executablePath: CHROMIUM, proxyUrl: proxy.url, refusals, maxContexts: 2 });
  await pool.start();
});

after(async () => {
  await pool?.close();
  await proxy?.close();
  await new Promise((resolve) => (server ? server.close(resolve) : resolve()));
});

test('a page is opened, clicked, typed into and read', async () => {
  const opened = await pool.call('navigate', { url: `http://127.0.0.1:${port}/` }, 'run-a');
  assert.match(opened, /Title: Sandbox test page/);
  assert.match(opened, /seen before: no/);
  const clicked = await pool.call('click', { text: 'Reveal' }, 'run-a');
  assert.match(clicked, /the secret word is pelican/);
  await pool.call('type_text', { selector: '#q', text: 'otter' }, 'run-a');
  await pool.call('click', { selector: '#echo' }, 'run-a');
  assert.equal(await pool.call('read_page', { selector: '#out' }, 'run-a'), 'you typed otter');
  const shot = await pool.call('screenshot', {}, 'run-a');
  assert.match(shot, /^data:image\/jpeg;base64,/);
});

test('private addresses are refused however the page tries to reach them', async () => {
  hits = [];
  await assert.rejects(pool.call('navigate', { url: `http://127.0.0.2:${port}/private` }, 'run-a'), (e) => e instanceof ToolError && /refused: .*loopback/.test(e.message));
  await assert.rejects(pool.call('navigate', { url: 'http://169.254.169.254/latest/meta-data/' }, 'run-a'), /metadata/);
  await assert.rejects(pool.call('navigate', { url: 'file:///etc/passwd' }, 'run-a'), /only http and https/);
  await pool.call('navigate', { url: `http://127.0.0.1:${port}/` }, 'run-a');
  const followed = await pool.call('click', { selector: '#leak' }, 'run-a');
  assert.match(followed, /refused/);
  await pool.call('navigate', { url: `http://127.0.0.1:${port}/` }, 'run-a');
  const page = await pool.pageFor('run-a');
  await page.evaluate('probe()');
  await page.waitForFunction(() => document.getElementById('out').textContent === 'fetch blocked');
  assert.deepEqual(hits.filter((h) => h.startsWith('127.0.0.2')), [], `reached: ${hits}`);
});

test('each run has its own browser context', async () => {
  assert.match(await pool.call('navigate', { url: `http://127.0.0.1:${port}/` }, 'run-a'), /seen before: yes/);
  assert.match(await pool.call('navigate', { url: `http://127.0.0.1:${port}/` }, 'run-b'), /seen before: no/);
  // maxContexts 2: a third run closes the least recently used (run-a).
  await pool.call('navigate', { url: `http://127.0.0.1:${port}/` }, 'run-c');
  assert.deepEqual([...pool.runs.keys()].sort(), ['run-b', 'run-c']);
  await assert.rejects(pool.call('read_page', {}, 'run-a'), /navigate first/);
  await assert.rejects(pool.call('teleport', {}, 'run-a'), /unknown tool/);
});
