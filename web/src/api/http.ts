// The gateway's REST API: JSON in and out, the bearer token on every call (refreshed once on a
// 401), problem+json errors as ApiError.

import { useAuth } from '@/stores/auth';

let apiBase = '';
/** Where the gateway is ('' = this origin); tests point it at a local server. */
export function setApiBase(base: string): void {
  apiBase = base.replace(/\/$/, '');
}
export function apiUrl(path: string): string {
  return `${apiBase}${path}`;
}

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

export async function authHeaders(force = false): Promise<Record<string, string>> {
  const token = await useAuth().accessToken(force);
  return token ? { authorization: `Bearer ${token}` } : {};
}

export async function api<T>(path: string, init: { method?: string; body?: unknown; signal?: AbortSignal } = {}): Promise<T> {
  const send = async (force: boolean) => {
    const headers: Record<string, string> = { accept: 'application/json', ...(await authHeaders(force)) };
    if (init.body !== undefined) headers['content-type'] = 'application/json';
    return fetch(apiUrl(path), {
      method: init.method ?? 'GET',
      headers,
      body: init.body === undefined ? undefined : JSON.stringify(init.body),
      signal: init.signal,
    });
  };
  let res = await send(false);
  if (res.status === 401 && useAuth().mode === 'oidc') res = await send(true);
  if (res.status === 204) return undefined as T;
  const text = await res.text();
  let body: unknown = null;
  try {
    body = text ? JSON.parse(text) : null;
  } catch {
    body = text;
  }
  if (!res.ok) {
    const p = (body ?? {}) as Record<string, unknown>;
    throw new ApiError(res.status, String(p.code ?? res.status), String(p.detail ?? p.title ?? `HTTP ${res.status}`));
  }
  return body as T;
}

export interface Page<T> {
  items: T[];
  next_cursor?: string | null;
}

export interface Chat {
  id: string;
  title: string;
  classification: string;
  created_at: string;
  updated_at: string;
}

export interface Message {
  id: string;
  chat_id: string;
  role: string;
  content: string;
  run_id?: string | null;
  created_at: string;
}

export interface ModelInfo {
  label: string;
  display_name?: string;
  context_window?: number;
  provider_tags: string[];
  capabilities?: string[];
}

export interface RunStarted {
  run_id: string;
  events_url: string;
  status: string;
}
