import { ref, type Ref } from 'vue';

import { api, ApiError } from '@/api/http';

/** Loads an admin list; a 403 is reported through `refused` (the page then shows the refusal). */
export function useAdminList<T>(path: string, refused: (detail: string) => void) {
  const items = ref([]) as Ref<T[]>;
  const error = ref<string | null>(null);
  async function load(): Promise<void> {
    try {
      items.value = (await api<{ items: T[] }>(path)).items;
      error.value = null;
    } catch (err) {
      if (err instanceof ApiError && err.status === 403) refused(err.message);
      else error.value = (err as Error).message;
    }
  }
  async function run(fn: () => Promise<unknown>): Promise<void> {
    try {
      await fn();
      await load();
    } catch (err) {
      if (err instanceof ApiError && err.status === 403) refused(err.message);
      else error.value = (err as Error).message;
    }
  }
  return { items, error, load, run };
}
