// sessionStorage when there is one (a reload keeps it, a new tab does not), else memory (tests).

const memory = new Map<string, string>();

export const sessionStore = {
  get(key: string): string | null {
    try {
      if (typeof sessionStorage !== 'undefined') return sessionStorage.getItem(key);
    } catch {
      // storage disabled: fall through
    }
    return memory.get(key) ?? null;
  },
  set(key: string, value: string): void {
    try {
      if (typeof sessionStorage !== 'undefined') return sessionStorage.setItem(key, value);
    } catch {
      // quota or disabled
    }
    memory.set(key, value);
  },
  remove(key: string): void {
    try {
      if (typeof sessionStorage !== 'undefined') sessionStorage.removeItem(key);
    } catch {
      // ignore
    }
    memory.delete(key);
  },
};
