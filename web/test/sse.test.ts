import { afterEach, describe, expect, it } from 'vitest';

import { applyEvent, newRunView, replyText } from '@/lib/runView';
import { compareEventIds, followRunEvents, SseParser, StreamHttpError } from '@/lib/sse';

import { startSseServer, type TestServer } from './server';

let server: TestServer | null = null;
afterEach(async () => {
  await server?.close();
  server = null;
});

describe('SseParser', () => {
  it('parses ids, multi-line data, comments and CRLF across chunk boundaries', () => {
    const p = new SseParser();
    const out = [...p.feed(': hi\r\nid: 1-0\r\ndata: {"a"'), ...p.feed(':1}\r\n\r\ndata: x\ndata: y\n\n')];
    expect(out).toEqual([{ id: '1-0', data: '{"a":1}' }, { id: null, data: 'x\ny' }]);
  });
});

describe('compareEventIds', () => {
  it('orders Redis stream ids numerically', () => {
    expect(compareEventIds('1700000000000-10', '1700000000000-9')).toBe(1);
    expect(compareEventIds('999-0', '1000-0')).toBe(-1);
    expect(compareEventIds('5-5', '5-5')).toBe(0);
  });
});

describe('followRunEvents', () => {
  const tokens = Array.from({ length: 30 }, (_, i) => `t${i} `);

  it('resumes with Last-Event-ID after drops, losing and repeating nothing', async () => {
    server = await startSseServer({ tokens, dropAfter: [5, 7, 11] });
    const view = newRunView('r1');
    const reconnects: number[] = [];
    const last = await followRunEvents({
      url: `${server.url}/v1/runs/r1/events`,
      onEvent: (e, id) => applyEvent(view, e, id),
      onReconnect: (n) => reconnects.push(n),
      backoffBaseMs: 5,
    });
    expect(replyText(view)).toBe(tokens.join(''));
    expect(view.status).toBe('finished');
    expect(last).toBe(`1700000000000-${tokens.length + 3}`);
    expect(server.requests.map((r) => r.lastEventId)).toEqual([null, '1700000000000-4', '1700000000000-11', '1700000000000-22']);
    expect(reconnects.length).toBe(3);
  });

  it('starts after a given id (a reload restored the view up to it)', async () => {
    server = await startSseServer({ tokens });
    const view = newRunView('r1');
    // What a reload restored: events up to id 6 (RUN_STARTED, START, t0..t4).
    for (let i = 0; i <= 6; i++) {
      const e = i === 0 ? { type: 'RUN_STARTED' } : i === 1 ? { type: 'TEXT_MESSAGE_START', messageId: 'm1' } : { type: 'TEXT_MESSAGE_CONTENT', messageId: 'm1', delta: tokens[i - 2] };
      applyEvent(view, e, `1700000000000-${i}`);
    }
    await followRunEvents({ url: `${server.url}/v1/runs/r1/events`, lastEventId: view.lastEventId, onEvent: (e, id) => applyEvent(view, e, id) });
    expect(server.requests[0]!.lastEventId).toBe('1700000000000-6');
    expect(replyText(view)).toBe(tokens.join(''));
  });

  it('gives up on a 4xx answer with its status', async () => {
    server = await startSseServer({ tokens });
    await expect(followRunEvents({ url: `${server.url}/nope`, onEvent: () => undefined })).rejects.toBeInstanceOf(StreamHttpError);
  });
});
