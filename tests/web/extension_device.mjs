// Loads the built browser extension unpacked into Debian's chromium (headless, playwright-core:
// nothing is downloaded), gives consent and enrolls it on its options page with a one-time
// code, waits until it says it is connected, then opens a test page in the active tab and
// prints `READY <extension id>`. It keeps the browser open until its stdin closes, so the
// caller (tests-e2e/tests/browser_devices.rs) can run the agent against this browser.
//
// env: PA_EXTENSION_DIR (the built extension), PA_GATEWAY_URL, PA_ENROLL_CODE, PA_TEST_PAGE,
//      PA_TEST_OUTPUT (screenshots), PA_CHROMIUM (default /usr/bin/chromium).

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import { chromium } from 'playwright-core';

const need = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};
const extension = path.resolve(need('PA_EXTENSION_DIR'));
const gateway = need('PA_GATEWAY_URL');
const code = need('PA_ENROLL_CODE');
const testPage = need('PA_TEST_PAGE');
const output = process.env.PA_TEST_OUTPUT || fs.mkdtempSync(path.join(os.tmpdir(), 'pa-ext-shots-'));
fs.mkdirSync(output, { recursive: true });

const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'pa-ext-profile-'));
const context = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.PA_CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: [
    '--no-sandbox',
    '--disable-gpu',
    '--disable-background-networking',
    `--disable-extensions-except=${extension}`,
    `--load-extension=${extension}`,
  ],
  // Playwright disables extensions by default.
  ignoreDefaultArgs: ['--disable-extensions'],
});

async function shutdown(code) {
  await context.close().catch(() => {});
  fs.rmSync(profile, { recursive: true, force: true });
  process.exit(code);
}

try {
  let [worker] = context.serviceWorkers();
  worker ??= await context.waitForEvent('serviceworker', { timeout: 20000 });
  const id = new URL(worker.url()).host;

  const options = await context.newPage();
  await options.goto(`chrome-extension://${id}/options.html`);
  await options.locator('#status[data-status="not enrolled"]').waitFor({ timeout: 10000 });
  // Nothing connects without consent: the button stays disabled until the box is ticked.
  if (!(await options.locator('#submit').isDisabled())) throw new Error('connect is enabled before consent');
  await options.fill('#gateway', gateway);
  await options.fill('#code', code);
  await options.fill('#name', 'chrome');
  await options.screenshot({ path: path.join(output, 'extension-1-consent.png') });
  await options.check('#consent');
  await options.click('#submit');
  await options.locator('#status[data-status="connected"]').waitFor({ timeout: 20000 });
  await options.screenshot({ path: path.join(output, 'extension-2-connected.png') });

  const page = await context.newPage();
  await page.goto(testPage);
  await options.close();
  await page.bringToFront();
  await page.screenshot({ path: path.join(output, 'extension-3-test-page.png') });
  console.log(`READY ${id}`);
} catch (err) {
  console.error(`extension driver: ${err?.stack ?? err}`);
  await shutdown(1);
}

process.stdin.resume();
process.stdin.on('end', () => shutdown(0));
process.on('SIGTERM', () => shutdown(0));
