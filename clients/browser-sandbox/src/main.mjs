#!/usr/bin/env node
// pa-browser-sandbox: a cloud browser as a device of one user.
//
//   pa-browser-sandbox enroll CODE --gateway URL [--name NAME] [--config PATH]
//   pa-browser-sandbox run [--config PATH]
//
// `run` also works without a config file from PA_GATEWAY_URL + PA_DEVICE_TOKEN (containers).
// PA_BROWSER_NET_ALLOW: CIDRs and host names the browser may reach although private.
// PA_CHROMIUM: the browser (default /usr/bin/chromium); nothing is ever downloaded.

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';

import { BrowserPool, TOOLS, ToolError } from './browser.mjs';
import { AllowList, startEgressProxy } from './egress.mjs';
import { TokenRefused, enroll, serve } from './device.mjs';

const USAGE = `usage:
  pa-browser-sandbox enroll CODE --gateway URL [--name NAME] [--config PATH]
  pa-browser-sandbox run [--config PATH]`;

export function defaultConfigPath(env = process.env) {
  if (env.PA_BROWSER_SANDBOX_CONFIG) return env.PA_BROWSER_SANDBOX_CONFIG;
  const base = env.XDG_CONFIG_HOME || path.join(os.homedir(), '.config');
  return path.join(base, 'personal-agent', 'browser-sandbox.json');
}

/** Writes the credential readable by its owner only (0600), atomically. */
export function saveConfig(file, config) {
  fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
  const tmp = `${file}.tmp-${process.pid}`;
  fs.writeFileSync(tmp, `${JSON.stringify(config, null, 2)}\n`, { mode: 0o600 });
  fs.renameSync(tmp, file);
}

export function loadConfig(file, env = process.env) {
  if (env.PA_GATEWAY_URL && env.PA_DEVICE_TOKEN) {
    return { gateway: env.PA_GATEWAY_URL, device_token: env.PA_DEVICE_TOKEN, name: env.PA_DEVICE_NAME ?? '' };
  }
  let text;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch {
    throw new Error(`no device config at ${file}: run \`pa-browser-sandbox enroll CODE --gateway URL\` first`);
  }
  const config = JSON.parse(text);
  if (!config.gateway || !config.device_token) throw new Error(`${file} has no gateway or device_token`);
  return config;
}

async function main(argv) {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      gateway: { type: 'string' },
      name: { type: 'string', default: 'cloud-browser' },
      config: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  const [command, code] = positionals;
  const configPath = values.config ?? defaultConfigPath();
  if (values.help || !command) {
    console.log(USAGE);
    return values.help ? 0 : 2;
  }
  if (command === 'enroll') {
    if (!code || !values.gateway) {
      console.error(USAGE);
      return 2;
    }
    const enrolled = await enroll({
      gateway: values.gateway,
      code,
      name: values.name,
      kind: 'browser_sandbox',
      platform: `browser-sandbox/${process.platform}-${process.arch}`,
    });
    saveConfig(configPath, {
      gateway: values.gateway,
      device_id: enrolled.device_id,
      device_token: enrolled.device_token,
      name: enrolled.name,
    });
    console.log(`enrolled as ${enrolled.name} (${enrolled.device_id}); config in ${configPath}`);
    return 0;
  }
  if (command === 'run') {
    const config = loadConfig(configPath);
    const allow = new AllowList(process.env.PA_BROWSER_NET_ALLOW ?? '');
    const refusals = new Map();
    const proxy = await startEgressProxy({ allow, onRefused: (host, reason) => refusals.set(host, reason) });
    const pool = new BrowserPool({
      executablePath: process.env.PA_CHROMIUM || '/usr/bin/chromium',
      proxyUrl: proxy.url,
      refusals,
    });
    const version = await pool.start();
    console.error(`chromium ${version}, egress through ${proxy.url}`);
    const controller = new AbortController();
    for (const sig of ['SIGINT', 'SIGTERM']) process.once(sig, () => controller.abort());
    const handle = async (tool, args, runId) => {
      try {
        return await pool.call(tool, args, runId);
      } catch (err) {
        if (err instanceof ToolError) throw err;
        throw new Error(`the browser failed: ${String(err?.message ?? err).split('\n')[0]}`);
      }
    };
    try {
      await serve({
        gateway: config.gateway,
        token: config.device_token,
        hello: { agent_version: '0.1.0', platform: `chromium-${version}`, read_only: false, tools: TOOLS },
        handle,
        signal: controller.signal,
      });
    } finally {
      await pool.close();
      await proxy.close();
    }
    return 0;
  }
  console.error(USAGE);
  return 2;
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err) => {
    console.error(`pa-browser-sandbox: ${err instanceof TokenRefused ? err.message : err?.message ?? err}`);
    process.exit(1);
  },
);
