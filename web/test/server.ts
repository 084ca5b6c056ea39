// A local HTTP server speaking the gateway's run-events SSE (ids, Last-Event-ID resume), which
// can drop the connection after N events: the real network behaviour the client must survive.
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';

export interface TestServer {
  url: string;
  requests: { path: string; lastEventId: string | null }[];
  close: () => Promise<void>;
}

/** `refuse`: statuses answered, in order, to the first requests for the stream (e.g. 403). */
export async function startSseServer(opts: { tokens: string[]; dropAfter?: number[]; refuse?: number[] }): Promise<TestServer> {
  const events = [
    { type: 'RUN_STARTED', runId: 'r1', threadId: 'c1' },
    { type: 'TEXT_MESSAGE_START', messageId: 'm1', role: 'assistant' },
    ...opts.tokens.map((delta) => ({ type: 'TEXT_MESSAGE_CONTENT', messageId: 'm1', delta })),
    { type: 'TEXT_MESSAGE_END', messageId: 'm1' },
    { type: 'RUN_FINISHED', runId: 'r1', threadId: 'c1' },
  ].map((e, i) => ({ id: `1700000000000-${i}`, e }));
  const drops = [...(opts.dropAfter ?? [])];
  const refusals = [...(opts.refuse ?? [])];
  const requests: TestServer['requests'] = [];
  const server = http.createServer((req, res) => {
    const last = (req.headers['last-event-id'] as string | undefined) ?? null;
    requests.push({ path: req.url ?? '', lastEventId: last });
    if (!req.url?.includes('/events')) {
      res.writeHead(404).end();
      return;
    }
    const refusal = refusals.shift();
    if (refusal !== undefined) {
      res.writeHead(refusal, { 'content-type': 'application/problem+json' }).end('{"title":"refused"}');
      return;
    }
    res.writeHead(200, { 'content-type': 'text/event-stream' });
    res.write(': keep-alive\n\n');
    let i = last ? events.findIndex((x) => x.id === last) + 1 : 0;
    const dropAt = drops.shift();
    let sent = 0;
    const tick = () => {
      if (i >= events.length) return res.end();
      if (dropAt !== undefined && sent >= dropAt) return res.destroy();
      const { id, e } = events[i]!;
      // Split a frame across writes now and then, as TCP may.
      const frame = `id: ${id}\r\ndata: ${JSON.stringify(e)}\n\n`;
      res.write(frame.slice(0, 7));
      res.write(frame.slice(7));
      i += 1;
      sent += 1;
      setTimeout(tick, 2);
    };
    tick();
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    close: () => new Promise((r) => { server.closeAllConnections(); server.close(() => r()); }),
  };
}

/** A local JSON API: `handle` answers each request (status + body); every request is recorded. */
export interface JsonServer {
  url: string;
  requests: { method: string; path: string; body: unknown }[];
  close: () => Promise<void>;
}

export async function startJsonServer(
  handle: (method: string, path: string, body: unknown) => { status: number; body?: unknown },
): Promise<JsonServer> {
  const requests: JsonServer['requests'] = [];
  const server = http.createServer((req, res) => {
    let raw = '';
    req.on('data', (chunk: Buffer) => { raw += chunk.toString(); });
    req.on('end', () => {
      const body: unknown = raw ? JSON.parse(raw) : null;
      const method = req.method ?? 'GET';
      const path = req.url ?? '';
      requests.push({ method, path, body });
      const answer = handle(method, path, body);
      const type = answer.status >= 400 ? 'application/problem+json' : 'application/json';
      if (answer.body === undefined) res.writeHead(answer.status).end();
      else res.writeHead(answer.status, { 'content-type': type }).end(JSON.stringify(answer.body));
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    close: () => new Promise((r) => { server.closeAllConnections(); server.close(() => r()); }),
  };
}
