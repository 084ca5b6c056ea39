// The admin schedules client against a local HTTP server answering like the gateway.
import { createPinia, setActivePinia } from 'pinia';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';

import { ApiError, setApiBase } from '@/api/http';
import { formatEvery, listSchedules, triggerSchedule, type Schedule } from '@/lib/schedules';
import { useAuth } from '@/stores/auth';

import { startJsonServer, type JsonServer } from './server';

const rollup: Schedule = {
  id: 'pa-rollup_usage', task: 'rollup_usage', every_secs: 3600,
  last_run_at: null, next_run_at: '2026-12-01T23:00:00+00:00', paused: false, runs: 0,
};
let server: JsonServer;

beforeEach(async () => {
  setActivePinia(createPinia());
  useAuth().config = { mode: 'dev' };
  server = await startJsonServer((method, path) => {
    if (method === 'GET' && path === '/v1/admin/schedules') return { status: 200, body: { items: [rollup] } };
    if (method === 'POST' && path === '/v1/admin/schedules/pa-rollup_usage/trigger') return { status: 202 };
    return { status: 404, body: { code: 'not_found', detail: `no schedule at ${path}` } };
  });
  setApiBase(server.url);
});
afterEach(() => server.close());

describe('schedules', () => {
  it('lists the schedules and triggers one with a POST', async () => {
    expect(await listSchedules()).toEqual([rollup]);
    await triggerSchedule('pa-rollup_usage');
    expect(server.requests.map((r) => `${r.method} ${r.path}`)).toEqual([
      'GET /v1/admin/schedules',
      'POST /v1/admin/schedules/pa-rollup_usage/trigger',
    ]);
  });

  it('reports an unknown schedule as an ApiError', async () => {
    const err = await triggerSchedule('nope').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ApiError);
    expect((err as ApiError).status).toBe(404);
  });

  it('says how often a schedule runs', () => {
    expect(formatEvery(900)).toBe('every 15 min');
    expect(formatEvery(5400)).toBe('every 1 h 30 min');
    expect(formatEvery(86400)).toBe('every 1 d');
    expect(formatEvery(0)).toBe('—');
  });
});
