// Who is signed in: the gateway's auth mode, OIDC Authorization Code + PKCE login, token
// refresh and logout. Tokens live in localStorage so every tab of the app shares the session.

import { defineStore } from 'pinia';

import { apiUrl } from '@/api/http';
import { jwtClaims, randomString, s256 } from '@/auth/pkce';

export type AuthMode = 'oidc' | 'dev' | 'disabled';

interface AuthConfig {
  mode: AuthMode;
  issuer?: string;
  client_id?: string;
  scopes?: string[];
  /** The IdP role of platform administrators (PA_PLATFORM_ADMIN_ROLE). */
  platform_admin_role?: string;
}

interface Discovery {
  authorization_endpoint: string;
  token_endpoint: string;
  end_session_endpoint?: string;
}

interface Tokens {
  access_token: string;
  refresh_token?: string;
  id_token?: string;
  /** ms since epoch */
  expires_at: number;
}

const TOKENS_KEY = 'pa.auth.tokens';
const PENDING_KEY = 'pa.auth.pending';
const REFRESH_MARGIN_MS = 30_000;

export class IdpUnreachable extends Error {}

function loadTokens(): Tokens | null {
  try {
    const raw = localStorage.getItem(TOKENS_KEY);
    return raw ? (JSON.parse(raw) as Tokens) : null;
  } catch {
    return null;
  }
}

export const useAuth = defineStore('auth', {
  state: () => ({
    config: null as AuthConfig | null,
    discovery: null as Discovery | null,
    tokens: loadTokens(),
    /** Set when the IdP could not be reached (the app shows a page saying so). */
    idpError: null as string | null,
  }),
  getters: {
    mode: (s): AuthMode => s.config?.mode ?? 'disabled',
    claims: (s): Record<string, unknown> => (s.tokens ? jwtClaims(s.tokens.access_token) : {}),
    signedIn(): boolean {
      return this.mode === 'dev' || Boolean(this.tokens);
    },
    userName(): string {
      if (this.mode === 'dev') return 'dev-user';
      const c = this.claims;
      return String(c.name ?? c.preferred_username ?? c.sub ?? '');
    },
    /** The id the gateway knows this user by (the token's subject). */
    userId(): string {
      if (this.mode === 'dev') return 'dev-user';
      return String(this.claims.sub ?? '');
    },
    roles(): string[] {
      if (this.mode === 'dev') return ['user', 'admin', 'platform-admin'];
      const r = this.claims.roles;
      return Array.isArray(r) ? r.map(String) : [];
    },
    /** A platform administrator: the shared model catalog, platform keys, default policies. */
    isPlatformAdmin(): boolean {
      if (this.mode === 'dev') return true;
      return this.roles.includes(this.config?.platform_admin_role || 'platform-admin');
    },
    /** Any administrator: a tenant's (`admin`) or the platform's. */
    isAdmin(): boolean {
      return this.roles.includes('admin') || this.isPlatformAdmin;
    },
  },
  actions: {
    async loadConfig(): Promise<void> {
      if (this.config) return;
      const res = await fetch(apiUrl('/v1/auth/config'));
      this.config = (await res.json()) as AuthConfig;
    },
    async loadDiscovery(): Promise<Discovery> {
      if (this.discovery) return this.discovery;
      const issuer = this.config?.issuer;
      if (!issuer) throw new IdpUnreachable('no issuer configured');
      try {
        const res = await fetch(`${issuer.replace(/\/$/, '')}/.well-known/openid-configuration`);
        if (!res.ok) throw new Error(`discovery answered ${res.status}`);
        this.discovery = (await res.json()) as Discovery;
        this.idpError = null;
        return this.discovery;
      } catch (err) {
        this.idpError = `The sign-in service at ${issuer} cannot be reached (${(err as Error).message}).`;
        throw new IdpUnreachable(this.idpError);
      }
    },
    redirectUri(): string {
      return `${location.origin}/auth/callback`;
    },
    /** Sends the browser to the IdP (Authorization Code + PKCE). */
    async login(returnTo = '/'): Promise<void> {
      const d = await this.loadDiscovery();
      const verifier = randomString(48);
      const state = randomString(16);
      sessionStorage.setItem(PENDING_KEY, JSON.stringify({ verifier, state, returnTo }));
      const scopes = this.config?.scopes ?? ['openid', 'profile', 'email'];
      const url = new URL(d.authorization_endpoint);
      url.search = new URLSearchParams({
        client_id: this.config?.client_id ?? 'pa-web',
        response_type: 'code',
        redirect_uri: this.redirectUri(),
        scope: [...new Set([...scopes, 'offline_access'])].join(' '),
        // offline_access (a refresh token) needs consent; the IdP grants it for first-party apps.
        prompt: 'consent',
        state,
        code_challenge: await s256(verifier),
        code_challenge_method: 'S256',
      }).toString();
      location.assign(url.toString());
    },
    /** Finishes the login on /auth/callback; returns where to go next. */
    async handleCallback(params: URLSearchParams): Promise<string> {
      const raw = sessionStorage.getItem(PENDING_KEY);
      sessionStorage.removeItem(PENDING_KEY);
      if (params.get('error')) throw new Error(params.get('error_description') ?? params.get('error') ?? 'login failed');
      if (!raw) throw new Error('no login in progress in this tab');
      const pending = JSON.parse(raw) as { verifier: string; state: string; returnTo: string };
      if (params.get('state') !== pending.state) throw new Error('the login answer does not match (state)');
      const code = params.get('code');
      if (!code) throw new Error('the IdP sent no code');
      await this.tokenRequest({
        grant_type: 'authorization_code',
        code,
        redirect_uri: this.redirectUri(),
        code_verifier: pending.verifier,
      });
      return pending.returnTo || '/';
    },
    async tokenRequest(form: Record<string, string>): Promise<void> {
      const d = await this.loadDiscovery();
      const res = await fetch(d.token_endpoint, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams({ client_id: this.config?.client_id ?? 'pa-web', ...form }).toString(),
      });
      const body = (await res.json().catch(() => ({}))) as Record<string, unknown>;
      if (!res.ok) throw new Error(String(body.error_description ?? body.error ?? `token endpoint ${res.status}`));
      const tokens: Tokens = {
        access_token: String(body.access_token),
        refresh_token: (body.refresh_token as string | undefined) ?? this.tokens?.refresh_token,
        id_token: (body.id_token as string | undefined) ?? this.tokens?.id_token,
        expires_at: Date.now() + Number(body.expires_in ?? 300) * 1000,
      };
      this.tokens = tokens;
      localStorage.setItem(TOKENS_KEY, JSON.stringify(tokens));
    },
    /** A valid access token (refreshed when about to expire), or null in dev mode. */
    async accessToken(forceRefresh = false): Promise<string | null> {
      if (this.mode !== 'oidc') return null;
      // Another tab may have refreshed: read the shared copy first.
      const stored = loadTokens();
      if (stored && (!this.tokens || stored.expires_at > this.tokens.expires_at)) this.tokens = stored;
      if (!this.tokens) return null;
      if (forceRefresh || this.tokens.expires_at - Date.now() < REFRESH_MARGIN_MS) {
        if (!this.tokens.refresh_token) return forceRefresh ? null : this.tokens.access_token;
        try {
          await this.tokenRequest({ grant_type: 'refresh_token', refresh_token: this.tokens.refresh_token });
        } catch (err) {
          if (err instanceof IdpUnreachable) throw err;
          this.clear();
          return null;
        }
      }
      return this.tokens.access_token;
    },
    clear(): void {
      this.tokens = null;
      localStorage.removeItem(TOKENS_KEY);
    },
    async logout(): Promise<void> {
      const idToken = this.tokens?.id_token;
      this.clear();
      if (this.mode !== 'oidc') return;
      try {
        const d = await this.loadDiscovery();
        if (d.end_session_endpoint) {
          const url = new URL(d.end_session_endpoint);
          url.search = new URLSearchParams({
            client_id: this.config?.client_id ?? 'pa-web',
            post_logout_redirect_uri: `${location.origin}/`,
            ...(idToken ? { id_token_hint: idToken } : {}),
          }).toString();
          location.assign(url.toString());
          return;
        }
      } catch {
        // The IdP is down: the local session is gone anyway.
      }
      location.assign('/');
    },
  },
});
