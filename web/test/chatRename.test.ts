// The chats store's rename against a local HTTP server answering like the gateway.
import { createPinia, setActivePinia } from 'pinia';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';

import { ApiError, setApiBase, type Chat } from '@/api/http';
import { useAuth } from '@/stores/auth';
import { useChats } from '@/stores/chats';

import { startJsonServer, type JsonServer } from './server';

const chat = (id: string, title: string, updated_at = '2026-01-01T00:00:00.000Z'): Chat => ({
  id, title, classification: 'internal', created_at: '2026-01-01T00:00:00.000Z', updated_at,
});

let server: JsonServer;

beforeEach(async () => {
  setActivePinia(createPinia());
  useAuth().config = { mode: 'dev' };
  // Chat c1 exists; anything else is someone else's or gone. Titles are trimmed and checked.
  server = await startJsonServer((method, path, body) => {
    if (method !== 'PATCH') return { status: 405, body: { code: 'method_not_allowed', detail: 'no' } };
    const title = String((body as { title?: unknown })?.title ?? '').trim();
    if (path !== '/v1/chats/c1') return { status: 404, body: { code: 'not_found', detail: 'chat not found' } };
    if (!title) return { status: 400, body: { code: 'bad_request', detail: 'title must not be empty' } };
    return { status: 200, body: chat('c1', title, '2026-02-02T00:00:00.000Z') };
  });
  setApiBase(server.url);
});
afterEach(() => server.close());

describe('chats store rename', () => {
  it('PATCHes the trimmed title and puts the server answer in the list', async () => {
    const chats = useChats();
    chats.items = [chat('c2', 'other'), chat('c1', 'old')];
    const renamed = await chats.rename('c1', '  New name ');
    expect(server.requests).toEqual([{ method: 'PATCH', path: '/v1/chats/c1', body: { title: 'New name' } }]);
    expect(renamed.title).toBe('New name');
    expect(chats.items.map((c) => [c.id, c.title, c.updated_at])).toEqual([
      ['c2', 'other', '2026-01-01T00:00:00.000Z'],
      ['c1', 'New name', '2026-02-02T00:00:00.000Z'],
    ]);
  });

  it('surfaces 400 and 404 problems as ApiError and leaves the list as it was', async () => {
    const chats = useChats();
    chats.items = [chat('c1', 'old'), chat('gone', 'deleted elsewhere')];
    const empty = await chats.rename('c1', '   ').catch((e: unknown) => e);
    expect(empty).toBeInstanceOf(ApiError);
    expect((empty as ApiError).status).toBe(400);
    expect((empty as ApiError).code).toBe('bad_request');
    const missing = await chats.rename('gone', 'x').catch((e: unknown) => e);
    expect((missing as ApiError).status).toBe(404);
    expect((missing as ApiError).message).toBe('chat not found');
    expect(chats.items.map((c) => c.title)).toEqual(['old', 'deleted elsewhere']);
  });
});
