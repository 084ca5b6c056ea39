// The control socket (/v1/control): presence of the user's clients, cancel and approve/deny.
// Authenticates with the subprotocols ["pa.control.v1", "bearer.<access token>"] (a browser
// cannot set headers on a WebSocket); reconnects with exponential backoff and jitter.

export interface PresenceClient {
  client_id: string;
  kind: string;
  label: string;
  since_ms: number;
  seen_at_ms: number;
}

type Pending = { resolve: (v: Record<string, unknown>) => void; reject: (e: Error) => void; timer: ReturnType<typeof setTimeout> };

export interface ControlSocketOptions {
  url: string;
  token: () => Promise<string | null>;
  clientId: string;
  kind: string;
  label: string;
  onPresence: (clients: PresenceClient[]) => void;
  onState: (state: 'connecting' | 'open' | 'closed', retryInMs?: number) => void;
  WebSocketImpl?: typeof WebSocket;
  backoffBaseMs?: number;
  backoffMaxMs?: number;
}

export function backoffDelay(attempt: number, base: number, max: number, random = Math.random): number {
  const exp = Math.min(max, base * 2 ** Math.max(0, attempt - 1));
  return Math.round(exp / 2 + (random() * exp) / 2);
}

export class ControlSocket {
  private ws: WebSocket | null = null;
  private attempt = 0;
  private stopped = false;
  private retryTimer: ReturnType<typeof setTimeout> | null = null;
  private pending = new Map<string, Pending>();
  private seq = 0;

  constructor(private readonly opts: ControlSocketOptions) {}

  start(): void {
    this.stopped = false;
    void this.connect();
  }

  stop(): void {
    this.stopped = true;
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.ws?.close(1000, 'bye');
    this.ws = null;
  }

  get open(): boolean {
    return this.ws?.readyState === 1;
  }

  private async connect(): Promise<void> {
    if (this.stopped) return;
    this.opts.onState('connecting');
    const token = await this.opts.token().catch(() => null);
    const protocols = ['pa.control.v1', ...(token ? [`bearer.${token}`] : [])];
    const WS = this.opts.WebSocketImpl ?? WebSocket;
    let ws: WebSocket;
    try {
      ws = new WS(this.opts.url, protocols);
    } catch {
      this.scheduleReconnect();
      return;
    }
    this.ws = ws;
    ws.onopen = () => {
      this.attempt = 0;
      this.opts.onState('open');
      ws.send(JSON.stringify({ type: 'hello', client_id: this.opts.clientId, kind: this.opts.kind, label: this.opts.label }));
    };
    ws.onmessage = (ev) => {
      let msg: Record<string, unknown>;
      try {
        msg = JSON.parse(String(ev.data)) as Record<string, unknown>;
      } catch {
        return;
      }
      if (msg.type === 'presence') this.opts.onPresence((msg.clients as PresenceClient[]) ?? []);
      const id = typeof msg.id === 'string' ? msg.id : null;
      const p = id ? this.pending.get(id) : undefined;
      if (p && id) {
        this.pending.delete(id);
        clearTimeout(p.timer);
        if (msg.type === 'error') p.reject(new Error(String(msg.message ?? 'refused')));
        else p.resolve(msg);
      }
    };
    ws.onclose = () => {
      if (this.ws === ws) this.ws = null;
      for (const [, p] of this.pending) {
        clearTimeout(p.timer);
        p.reject(new Error('the control socket closed'));
      }
      this.pending.clear();
      this.scheduleReconnect();
    };
  }

  private scheduleReconnect(): void {
    if (this.stopped) {
      this.opts.onState('closed');
      return;
    }
    this.attempt += 1;
    const delay = backoffDelay(this.attempt, this.opts.backoffBaseMs ?? 500, this.opts.backoffMaxMs ?? 30_000);
    this.opts.onState('closed', delay);
    this.retryTimer = setTimeout(() => void this.connect(), delay);
  }

  /** Sends a command and waits for its ack (rejects on an error answer or after 10 s). */
  request(body: Record<string, unknown>): Promise<Record<string, unknown>> {
    const ws = this.ws;
    if (!ws || ws.readyState !== 1) return Promise.reject(new Error('the control socket is not connected'));
    const id = `r${++this.seq}`;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new Error('no answer from the control socket'));
      }, 10_000);
      this.pending.set(id, { resolve, reject, timer });
      ws.send(JSON.stringify({ ...body, id }));
    });
  }
}
