// The maintenance schedules of the admin page: list them, run one now, and say "every 1 h".

import { api } from '@/api/http';

export interface Schedule {
  id: string;
  task: string;
  every_secs: number;
  last_run_at: string | null;
  next_run_at: string | null;
  paused: boolean;
  runs: number;
}

export async function listSchedules(): Promise<Schedule[]> {
  return (await api<{ items: Schedule[] }>('/v1/admin/schedules')).items;
}

/** Starts the schedule's task now (the gateway answers 202; the task runs in svc-worker). */
export async function triggerSchedule(id: string): Promise<void> {
  await api<unknown>(`/v1/admin/schedules/${encodeURIComponent(id)}/trigger`, { method: 'POST' });
}

/** "every 15 min", "every 1 h 30 min", "every 1 d": the largest units, zero parts left out. */
export function formatEvery(secs: number): string {
  if (!Number.isFinite(secs) || secs <= 0) return '—';
  const units: [number, string][] = [[86400, 'd'], [3600, 'h'], [60, 'min'], [1, 's']];
  const parts: string[] = [];
  let rest = Math.floor(secs);
  for (const [size, name] of units) {
    const n = Math.floor(rest / size);
    if (n > 0) parts.push(`${n} ${name}`);
    rest -= n * size;
  }
  return `every ${parts.join(' ')}`;
}
