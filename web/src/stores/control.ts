// Presence and run control over the control socket.

import { defineStore } from 'pinia';

import { ControlSocket, type PresenceClient } from '@/lib/controlSocket';
import { useAuth } from '@/stores/auth';

let socket: ControlSocket | null = null;

function clientId(): string {
  // One id per tab: sessionStorage survives a reload of the tab, not a new tab.
  let id = sessionStorage.getItem('pa.client_id');
  if (!id) {
    id = crypto.randomUUID();
    sessionStorage.setItem('pa.client_id', id);
  }
  return id;
}

function label(): string {
  const ua = navigator.userAgent;
  const browser = /Edg\//.test(ua) ? 'Edge' : /Chrom/.test(ua) ? 'Chrome' : /Firefox/.test(ua) ? 'Firefox' : /Safari/.test(ua) ? 'Safari' : 'Browser';
  const os = /Android/.test(ua) ? 'Android' : /iPhone|iPad/.test(ua) ? 'iOS' : /Mac/.test(ua) ? 'macOS' : /Win/.test(ua) ? 'Windows' : /Linux/.test(ua) ? 'Linux' : '';
  return `${browser}${os ? ` on ${os}` : ''} (web)`;
}

export const useControl = defineStore('control', {
  state: () => ({
    state: 'closed' as 'connecting' | 'open' | 'closed',
    retryInMs: null as number | null,
    clients: [] as PresenceClient[],
    myId: '',
  }),
  actions: {
    connect(): void {
      if (socket) return;
      this.myId = clientId();
      const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
      socket = new ControlSocket({
        url: `${proto}//${location.host}/v1/control`,
        token: () => useAuth().accessToken(),
        clientId: this.myId,
        kind: 'web',
        label: label(),
        onPresence: (clients) => {
          this.clients = clients;
        },
        onState: (state, retry) => {
          this.state = state;
          this.retryInMs = retry ?? null;
        },
      });
      socket.start();
    },
    disconnect(): void {
      socket?.stop();
      socket = null;
      this.clients = [];
    },
    /** Cancels over the socket; false when the socket is not connected. */
    async cancel(runId: string): Promise<boolean> {
      if (!socket?.open) return false;
      await socket.request({ type: 'cancel', run_id: runId });
      return true;
    },
    async decide(runId: string, toolCallId: string, approved: boolean, reason = ''): Promise<void> {
      if (!socket?.open) throw new Error('the control socket is not connected');
      await socket.request({ type: approved ? 'approve' : 'deny', run_id: runId, tool_call_id: toolCallId, reason });
    },
  },
});
