// The runs the user is watching, one per chat. Every applied event is written to sessionStorage
// together with its stream id, so after a reload the view is restored exactly as it was and the
// stream resumes from that id (Last-Event-ID): no token lost, none repeated.

import { defineStore } from 'pinia';

import { api, apiUrl, authHeaders, type RunStarted } from '@/api/http';
import { applyEvent, newRunView, type RunView } from '@/lib/runView';
import { followRunEvents, StreamHttpError } from '@/lib/sse';
import { sessionStore } from '@/lib/storage';

export interface ActiveRun {
  chatId: string;
  userMessage: string;
  view: RunView;
  /** A stream is being followed right now. */
  streaming: boolean;
  reconnects: number;
  /** How many events were applied (shown to tests as data-events). */
  events: number;
}

const key = (chatId: string) => `pa.run.${chatId}`;

/** Aborts of the followers, by chat (kept out of the reactive state). */
const followers = new Map<string, AbortController>();

export const useRuns = defineStore('runs', {
  state: () => ({ byChat: {} as Record<string, ActiveRun> }),
  actions: {
    persist(chatId: string): void {
      const run = this.byChat[chatId];
      if (run) sessionStore.set(key(chatId), JSON.stringify({ ...run, streaming: false }));
    },
    /** The run shown for a chat: in memory, else restored from this tab's storage. */
    restore(chatId: string): ActiveRun | null {
      if (this.byChat[chatId]) return this.byChat[chatId]!;
      const raw = sessionStore.get(key(chatId));
      if (!raw) return null;
      try {
        const run = JSON.parse(raw) as ActiveRun;
        run.streaming = false;
        this.byChat[chatId] = run;
        return this.byChat[chatId]!;
      } catch {
        sessionStore.remove(key(chatId));
        return null;
      }
    },
    /** Forgets a finished run (its messages are on the server now). */
    forget(chatId: string): void {
      followers.get(chatId)?.abort();
      followers.delete(chatId);
      delete this.byChat[chatId];
      sessionStore.remove(key(chatId));
    },
    async start(chatId: string, message: string, model = 'auto'): Promise<ActiveRun> {
      const runId = crypto.randomUUID();
      const started = await api<RunStarted>(`/v1/chats/${chatId}/runs`, {
        method: 'POST',
        // A client-chosen run_id makes a retried POST return the same run.
        body: { message, model, run_id: runId },
      });
      this.forget(chatId);
      this.byChat[chatId] = {
        chatId, userMessage: message, view: newRunView(started.run_id), streaming: false, reconnects: 0, events: 0,
      };
      this.persist(chatId);
      void this.follow(chatId);
      return this.byChat[chatId]!;
    },
    /** Follows (or resumes) the chat's run until it ends. */
    async follow(chatId: string): Promise<void> {
      const run = this.byChat[chatId];
      if (!run || run.streaming || run.view.status !== 'running') return;
      const abort = new AbortController();
      followers.set(chatId, abort);
      run.streaming = true;
      try {
        await followRunEvents({
          url: apiUrl(`/v1/runs/${run.view.runId}/events`),
          lastEventId: run.view.lastEventId,
          headers: () => authHeaders(),
          signal: abort.signal,
          onEvent: (event, id) => {
            applyEvent(run.view, event, id);
            run.events += 1;
            this.persist(chatId);
          },
          onReconnect: () => {
            run.reconnects += 1;
          },
        });
      } catch (err) {
        // This client lost the stream; the run may go on (it ends only with its own events).
        if (!abort.signal.aborted && run.view.status === 'running') {
          run.view.status = 'lost';
          const why = err instanceof StreamHttpError ? `the event stream answered ${err.status}` : (err as Error).message;
          run.view.error = `Lost contact with the run: ${why}`;
          this.persist(chatId);
        }
      } finally {
        run.streaming = false;
        if (followers.get(chatId) === abort) followers.delete(chatId);
      }
    },
    /** Follows again a run whose stream was lost, from the last event it showed. */
    async reconnect(chatId: string): Promise<void> {
      const run = this.byChat[chatId];
      if (!run || run.view.status !== 'lost') return;
      run.view.status = 'running';
      run.view.error = null;
      this.persist(chatId);
      await this.follow(chatId);
    },
    /** Stops the run (cancel); the stream then ends with the run's last events. */
    async stop(chatId: string, cancel?: (runId: string) => Promise<boolean>): Promise<void> {
      const run = this.byChat[chatId];
      if (!run) return;
      // Prefer the control socket when connected; else REST.
      if (cancel && (await cancel(run.view.runId).catch(() => false))) return;
      await api(`/v1/runs/${run.view.runId}/cancel`, { method: 'POST' });
    },
    /** Stops following without cancelling (leaving the page). */
    detach(chatId: string): void {
      followers.get(chatId)?.abort();
      followers.delete(chatId);
      const run = this.byChat[chatId];
      if (run) run.streaming = false;
    },
  },
});
