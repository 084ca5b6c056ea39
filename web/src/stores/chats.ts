// The chat list: load, search (by title, client-side), create with a classification, rename,
// delete.

import { defineStore } from 'pinia';

import { api, type Chat, type Page } from '@/api/http';

export const CLASSIFICATIONS = ['public', 'internal', 'confidential', 'restricted'] as const;
export type Classification = (typeof CLASSIFICATIONS)[number];
/** The gateway's limit on a chat title (svc-runs MAX_TITLE_CHARS). */
export const MAX_TITLE_CHARS = 200;

export const useChats = defineStore('chats', {
  state: () => ({
    items: [] as Chat[],
    nextCursor: null as string | null,
    loading: false,
    error: null as string | null,
    query: '',
  }),
  getters: {
    filtered(s): Chat[] {
      const q = s.query.trim().toLowerCase();
      return q ? s.items.filter((c) => (c.title || 'Untitled').toLowerCase().includes(q)) : s.items;
    },
  },
  actions: {
    async load(): Promise<void> {
      this.loading = true;
      try {
        const page = await api<Page<Chat>>('/v1/chats?limit=100');
        this.items = page.items;
        this.nextCursor = page.next_cursor ?? null;
        this.error = null;
      } catch (err) {
        this.error = (err as Error).message;
      } finally {
        this.loading = false;
      }
    },
    async loadMore(): Promise<void> {
      if (!this.nextCursor) return;
      const page = await api<Page<Chat>>(`/v1/chats?limit=100&cursor=${encodeURIComponent(this.nextCursor)}`);
      const seen = new Set(this.items.map((c) => c.id));
      this.items.push(...page.items.filter((c) => !seen.has(c.id)));
      this.nextCursor = page.next_cursor ?? null;
    },
    async create(title: string, classification: Classification = 'internal'): Promise<Chat> {
      const chat = await api<Chat>('/v1/chats', { method: 'POST', body: { title: title || undefined, classification } });
      this.items.unshift(chat);
      return chat;
    },
    /** PATCH /v1/chats/{id}; the server trims and validates the title (ApiError 400/404). */
    async rename(id: string, title: string): Promise<Chat> {
      const chat = await api<Chat>(`/v1/chats/${encodeURIComponent(id)}`, { method: 'PATCH', body: { title: title.trim() } });
      const i = this.items.findIndex((c) => c.id === id);
      if (i >= 0) this.items[i] = chat;
      return chat;
    },
    async remove(id: string): Promise<void> {
      await api<void>(`/v1/chats/${id}`, { method: 'DELETE' });
      this.items = this.items.filter((c) => c.id !== id);
    },
    touch(id: string): void {
      const i = this.items.findIndex((c) => c.id === id);
      if (i > 0) this.items.unshift(...this.items.splice(i, 1));
    },
  },
});
