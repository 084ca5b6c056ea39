// The extension's helpers that need no browser, and its build (the manifest checks).

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

import { checkManifest } from '../manifest-check.mjs';
import { TOOLS, connectUrl, nextBackoff, sliceText, webUrl } from '../src/tools.js';

const root = path.join(path.dirname(fileURLToPath(import.meta.url)), '..');

test('the socket URL follows the gateway scheme', () => {
  assert.equal(connectUrl('https://pa.example.com'), 'wss://pa.example.com/v1/devices/connect');
  assert.equal(connectUrl('http://127.0.0.1:8080/'), 'ws://127.0.0.1:8080/v1/devices/connect');
});

test('only web pages are opened', () => {
  assert.equal(webUrl('https://example.com/a?b=1'), 'https://example.com/a?b=1');
  for (const bad of ['file:///etc/passwd', 'javascript:alert(1)', 'chrome://settings', 'data:text/html,hi']) {
    assert.throws(() => webUrl(bad), /refused/, bad);
  }
  assert.throws(() => webUrl('not a url'), /invalid URL/);
});

test('long text is paged with an offset', () => {
  const text = 'a'.repeat(25);
  assert.equal(sliceText(text, 0, 100), text);
  assert.match(sliceText(text, 0, 10), /^a{10}\n\n\[15 more characters: read_tab with offset 10\]$/);
  assert.equal(sliceText(text, 20, 10), 'aaaaa');
});

test('reconnects back off up to five minutes', () => {
  let wait = 0;
  for (let i = 0; i < 20; i++) wait = nextBackoff(wait);
  assert.ok(wait <= 5 * 60000 * 1.25 && wait >= 5 * 60000 * 0.75, String(wait));
  assert.ok(nextBackoff(0) <= 1250);
});

test('tool names and schemas are what svc-tools accepts', () => {
  for (const t of TOOLS) {
    assert.match(t.name, /^[A-Za-z0-9_]{1,32}$/);
    assert.equal(t.parameters.type, 'object');
  }
  assert.deepEqual(TOOLS.map((t) => t.name).sort(), ['click', 'list_tabs', 'navigate', 'read_tab', 'screenshot', 'type_text']);
});

test('the build copies a checked manifest and refuses a widened one', () => {
  const out = fs.mkdtempSync(path.join(os.tmpdir(), 'pa-ext-'));
  execFileSync('node', ['build.mjs'], { cwd: root, env: { ...process.env, PA_EXTENSION_OUT: out } });
  const manifest = JSON.parse(fs.readFileSync(path.join(out, 'manifest.json'), 'utf8'));
  assert.equal(manifest.manifest_version, 3);
  for (const f of ['background.js', 'tools.js', 'options.html', 'options.js']) assert.ok(fs.existsSync(path.join(out, f)), f);
  assert.deepEqual(checkManifest(manifest, () => true), []);
  const widened = { ...manifest, permissions: [...manifest.permissions, 'cookies', 'debugger'] };
  const problems = checkManifest(widened, () => true);
  assert.ok(problems.some((p) => p.includes('cookies')) && problems.some((p) => p.includes('debugger')), String(problems));
  assert.ok(checkManifest({ ...manifest, manifest_version: 2 }, () => true).some((p) => p.includes('manifest_version')));
  assert.ok(checkManifest(manifest, (f) => f !== 'background.js').some((p) => p.includes('background.js')));
  fs.rmSync(out, { recursive: true, force: true });
});
