// Server-sent events over fetch (EventSource cannot send an Authorization header), with resume:
// after a drop the stream is re-requested with Last-Event-ID, and an event whose id is not after
// the last one seen is dropped, so no token is lost or repeated.

export interface SseMessage {
  id: string | null;
  data: string;
}

/** Incremental parser of the text/event-stream format (comments, CRLF, multi-line data). */
export class SseParser {
  private buffer = '';
  private data: string[] = [];
  private id: string | null = null;

  feed(text: string): SseMessage[] {
    this.buffer += text;
    const out: SseMessage[] = [];
    for (;;) {
      const nl = this.buffer.search(/\r\n|\r|\n/);
      if (nl < 0) break;
      const sep = this.buffer.startsWith('\r\n', nl) ? 2 : 1;
      const line = this.buffer.slice(0, nl);
      this.buffer = this.buffer.slice(nl + sep);
      if (line === '') {
        if (this.data.length > 0) out.push({ id: this.id, data: this.data.join('\n') });
        this.data = [];
        this.id = null;
        continue;
      }
      if (line.startsWith(':')) continue;
      const colon = line.indexOf(':');
      const field = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? '' : line.slice(colon + 1);
      if (value.startsWith(' ')) value = value.slice(1);
      if (field === 'data') this.data.push(value);
      else if (field === 'id' && !value.includes('\0')) this.id = value;
    }
    return out;
  }
}

/** Orders Redis stream ids ("<ms>-<seq>"); falls back to string order for other ids. */
export function compareEventIds(a: string, b: string): number {
  const pa = /^(\d+)-(\d+)$/.exec(a);
  const pb = /^(\d+)-(\d+)$/.exec(b);
  if (pa && pb) {
    const ms = BigInt(pa[1]!) - BigInt(pb[1]!);
    if (ms !== 0n) return ms < 0n ? -1 : 1;
    const seq = BigInt(pa[2]!) - BigInt(pb[2]!);
    return seq === 0n ? 0 : seq < 0n ? -1 : 1;
  }
  return a < b ? -1 : a > b ? 1 : 0;
}

export interface AgUiEvent {
  type: string;
  [key: string]: unknown;
}

export interface StreamOptions {
  url: string;
  /** Resume after this id (sent as Last-Event-ID). */
  lastEventId?: string | null;
  /** Headers for every (re)connect, e.g. a fresh bearer token. */
  headers?: () => Promise<Record<string, string>>;
  onEvent: (event: AgUiEvent, id: string | null) => void;
  /** Called before each reconnect with the attempt number and the delay. */
  onReconnect?: (attempt: number, delayMs: number) => void;
  signal?: AbortSignal;
  fetchImpl?: typeof fetch;
  /** Backoff: base * 2^attempt, capped; reset after an event arrives. */
  backoffBaseMs?: number;
  backoffMaxMs?: number;
  /** Give up after this many consecutive failed connects. */
  maxAttempts?: number;
}

export class StreamHttpError extends Error {
  constructor(
    readonly status: number,
    readonly body: string,
  ) {
    super(`event stream answered ${status}`);
  }
}

const TERMINAL = new Set(['RUN_FINISHED', 'RUN_ERROR']);

const sleep = (ms: number, signal?: AbortSignal) =>
  new Promise<void>((resolve) => {
    const t = setTimeout(resolve, ms);
    signal?.addEventListener('abort', () => { clearTimeout(t); resolve(); }, { once: true });
  });

/**
 * Follows a run's event stream until RUN_FINISHED / RUN_ERROR (resolves with the last id),
 * reconnecting with Last-Event-ID after drops. Rejects on 4xx answers (other than 408/429)
 * and when aborted.
 */
export async function followRunEvents(opts: StreamOptions): Promise<string | null> {
  const doFetch = opts.fetchImpl ?? fetch.bind(globalThis);
  const base = opts.backoffBaseMs ?? 250;
  const max = opts.backoffMaxMs ?? 5000;
  const maxAttempts = opts.maxAttempts ?? 50;
  let lastId = opts.lastEventId ?? null;
  let attempt = 0;
  for (;;) {
    if (opts.signal?.aborted) throw new DOMException('aborted', 'AbortError');
    let finished = false;
    try {
      const headers: Record<string, string> = { accept: 'text/event-stream', ...(await opts.headers?.()) };
      if (lastId) headers['last-event-id'] = lastId;
      const res = await doFetch(opts.url, { headers, signal: opts.signal, cache: 'no-store' });
      if (!res.ok) {
        const body = await res.text().catch(() => '');
        const retryable = res.status >= 500 || res.status === 408 || res.status === 429;
        if (!retryable) throw new StreamHttpError(res.status, body);
        throw new Error(`retryable ${res.status}`);
      }
      if (!res.body) throw new Error('no response body');
      const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
      const parser = new SseParser();
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        for (const msg of parser.feed(value)) {
          if (msg.id && lastId && compareEventIds(msg.id, lastId) <= 0) continue; // already seen
          let event: AgUiEvent;
          try {
            event = JSON.parse(msg.data) as AgUiEvent;
          } catch {
            continue;
          }
          if (msg.id) lastId = msg.id;
          attempt = 0;
          opts.onEvent(event, msg.id);
          if (TERMINAL.has(event.type)) finished = true;
        }
        if (finished) {
          await reader.cancel().catch(() => undefined);
          return lastId;
        }
      }
    } catch (err) {
      if (err instanceof StreamHttpError) throw err;
      if (opts.signal?.aborted) throw err;
    }
    attempt += 1;
    if (attempt > maxAttempts) throw new Error(`event stream: gave up after ${maxAttempts} attempts`);
    const delay = Math.min(max, base * 2 ** (attempt - 1));
    opts.onReconnect?.(attempt, delay);
    await sleep(delay, opts.signal);
  }
}
