import { createPinia, setActivePinia } from 'pinia';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';

import { setApiBase } from '@/api/http';
import { replyText } from '@/lib/runView';
import { sessionStore } from '@/lib/storage';
import { useAuth } from '@/stores/auth';
import { useChats } from '@/stores/chats';
import { useRuns } from '@/stores/runs';

import { startSseServer, type TestServer } from './server';

let server: TestServer;
const tokens = Array.from({ length: 20 }, (_, i) => `w${i} `);

beforeEach(async () => {
  setActivePinia(createPinia());
  useAuth().config = { mode: 'dev' };
  server = await startSseServer({ tokens, dropAfter: [8] });
  setApiBase(server.url);
});
afterEach(() => server.close());

async function until(cond: () => boolean, ms = 5000) {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 5));
  }
}

describe('runs store', () => {
  it('persists every event and resumes a restored run in a fresh store (a reload)', async () => {
    const runs = useRuns();
    runs.byChat.c1 = {
      chatId: 'c1', userMessage: 'hi', streaming: false, reconnects: 0, events: 0,
      view: { runId: 'r1', status: 'running', parts: [], error: null, lastEventId: null },
    };
    void runs.follow('c1');
    await until(() => (runs.byChat.c1?.events ?? 0) >= 5);
    runs.detach('c1'); // the page goes away mid-stream
    const saved = JSON.parse(sessionStore.get('pa.run.c1')!);
    expect(saved.events).toBeGreaterThanOrEqual(5);

    setActivePinia(createPinia()); // the reloaded page
    useAuth().config = { mode: 'dev' };
    const again = useRuns();
    const restored = again.restore('c1')!;
    expect(restored.view.lastEventId).toBe(saved.view.lastEventId);
    await again.follow('c1');
    expect(again.byChat.c1!.view.status).toBe('finished');
    expect(replyText(again.byChat.c1!.view)).toBe(tokens.join(''));
    expect(server.requests.some((r) => r.lastEventId === saved.view.lastEventId)).toBe(true);
    again.forget('c1');
    expect(sessionStore.get('pa.run.c1')).toBeNull();
  });
});

describe('a run whose stream is lost', () => {
  it('is lost, not ended, and reconnecting picks it up where it was', async () => {
    await server.close();
    server = await startSseServer({ tokens, refuse: [403] });
    setApiBase(server.url);
    const runs = useRuns();
    runs.byChat.c1 = {
      chatId: 'c1', userMessage: 'hi', streaming: false, reconnects: 0, events: 0,
      view: { runId: 'r1', status: 'running', parts: [], error: null, lastEventId: null },
    };
    await runs.follow('c1');
    expect(runs.byChat.c1!.view.status).toBe('lost');
    expect(runs.byChat.c1!.view.error).toContain('403');
    expect(JSON.parse(sessionStore.get('pa.run.c1')!).view.status).toBe('lost');
    // Following again is the reconnect's job: a lost run is not followed by accident.
    await runs.follow('c1');
    expect(server.requests.length).toBe(1);
    await runs.reconnect('c1');
    expect(runs.byChat.c1!.view.status).toBe('finished');
    expect(runs.byChat.c1!.view.error).toBeNull();
    expect(replyText(runs.byChat.c1!.view)).toBe(tokens.join(''));
    runs.forget('c1');
  });
});

describe('chats store', () => {
  it('filters by title, case-insensitively', () => {
    const chats = useChats();
    const chat = (id: string, title: string) => ({ id, title, classification: 'internal', created_at: '', updated_at: '' });
    chats.items = [chat('1', 'Holiday plans'), chat('2', 'Tax return'), chat('3', '')];
    chats.query = 'HOLI';
    expect(chats.filtered.map((c) => c.id)).toEqual(['1']);
    chats.query = 'untitled';
    expect(chats.filtered.map((c) => c.id)).toEqual(['3']);
    chats.touch('2');
    expect(chats.items[0]!.id).toBe('2');
  });
});
