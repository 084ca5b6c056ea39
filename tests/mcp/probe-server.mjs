// A hostile stdio MCP server for tests-e2e/tests/mcp_sandbox.rs, without dependencies: its one
// tool `probe` reports what the process can see — its environment, its uid, another process's
// /proc/<pid>/environ, every /proc/*/environ it can read, a file, and whether a TCP port on
// 127.0.0.1 answers. Newline-delimited JSON-RPC 2.0 on stdin/stdout (MCP stdio transport).
import { readFileSync, readdirSync } from 'node:fs';
import { connect } from 'node:net';
import { createInterface } from 'node:readline';

function read(path) {
  try {
    return { ok: true, text: readFileSync(path, 'latin1').replaceAll('\0', '\n') };
  } catch (e) {
    return { ok: false, error: String(e.code ?? e) };
  }
}

function scanProc() {
  const found = [];
  let pids = [];
  try {
    pids = readdirSync('/proc').filter((p) => /^\d+$/.test(p));
  } catch (e) {
    return { pids: [], environ: '' };
  }
  for (const pid of pids) {
    const r = read(`/proc/${pid}/environ`);
    if (r.ok) found.push(r.text);
  }
  return { pids, environ: found.join('\n') };
}

function tryConnect(port) {
  return new Promise((resolve) => {
    if (!port) return resolve('not tried');
    const socket = connect({ host: '127.0.0.1', port });
    const done = (what) => {
      socket.destroy();
      resolve(what);
    };
    socket.setTimeout(3000, () => done('timeout'));
    socket.on('connect', () => done('connected'));
    socket.on('error', (e) => done(`error ${e.code ?? e}`));
  });
}

async function probe(args) {
  return {
    env: process.env,
    uid: process.getuid(),
    pid: process.pid,
    target_environ: args.pid ? read(`/proc/${args.pid}/environ`) : null,
    // Whatever started this process and is visible as pid 1 (the sandbox's own init).
    init_cmdline: read('/proc/1/cmdline'),
    scan: args.scan === false ? null : scanProc(),
    file: args.path ? read(args.path) : null,
    net: await tryConnect(args.port),
  };
}

const send = (message) => process.stdout.write(JSON.stringify(message) + '\n');

createInterface({ input: process.stdin }).on('line', async (line) => {
  let msg;
  try {
    msg = JSON.parse(line);
  } catch {
    return;
  }
  if (msg.id === undefined) return; // notifications
  switch (msg.method) {
    case 'initialize':
      return send({
        jsonrpc: '2.0',
        id: msg.id,
        result: {
          protocolVersion: msg.params?.protocolVersion ?? '2025-06-18',
          capabilities: { tools: {} },
          serverInfo: { name: 'probe', version: '1.0.0' },
        },
      });
    case 'ping':
      return send({ jsonrpc: '2.0', id: msg.id, result: {} });
    case 'tools/list':
      return send({
        jsonrpc: '2.0',
        id: msg.id,
        result: {
          tools: [
            {
              name: 'probe',
              description: 'Reports what this process can see.',
              inputSchema: {
                type: 'object',
                properties: {
                  pid: { type: 'integer' },
                  port: { type: 'integer' },
                  path: { type: 'string' },
                  scan: { type: 'boolean' },
                },
              },
            },
          ],
        },
      });
    case 'tools/call': {
      const report = await probe(msg.params?.arguments ?? {});
      return send({
        jsonrpc: '2.0',
        id: msg.id,
        result: { content: [{ type: 'text', text: JSON.stringify(report) }] },
      });
    }
    default:
      return send({ jsonrpc: '2.0', id: msg.id, error: { code: -32601, message: 'no such method' } });
  }
});
