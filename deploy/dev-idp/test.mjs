// End-to-end tests of the dev IdP: spawns server.mjs on a free port and talks HTTP to it.
// Run: node --test deploy/dev-idp/

import { spawn } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as net from 'node:net';
import * as path from 'node:path';
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const CLI_AUTH = `Basic ${Buffer.from('pa-cli:pa-cli-secret').toString('base64')}`;
const DEVICE_GRANT = 'urn:ietf:params:oauth:grant-type:device_code';

let child;
let issuer;
let output = '';
let discovery;
let jwks;

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

function waitForExit(proc, ms) {
  if (proc.exitCode !== null || proc.signalCode !== null) {
    return Promise.resolve({ code: proc.exitCode, signal: proc.signalCode });
  }
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('child did not exit in time')), ms);
    proc.once('exit', (code, signal) => { clearTimeout(timer); resolve({ code, signal }); });
  });
}

// never leave the IdP behind, even if the test process dies early
process.on('exit', () => { if (child && child.exitCode === null) child.kill('SIGKILL'); });

async function startServer() {
  const port = await freePort();
  issuer = `http://127.0.0.1:${port}`;
  child = spawn(process.execPath, [path.join(HERE, 'server.mjs')], {
    env: { ...process.env, PA_IDP_PORT: String(port), PA_IDP_JWKS_FILE: 'memory', PA_IDP_ISSUER: '', PA_IDP_REALM: '' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`IdP did not start:\n${output}`)), 15000);
    const onData = (chunk) => {
      output += chunk;
      if (output.includes('dev IdP listening')) { clearTimeout(timer); resolve(); }
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', (chunk) => { output += chunk; });
    child.once('exit', (code) => { clearTimeout(timer); reject(new Error(`IdP exited (${code}):\n${output}`)); });
  });
}

// ---------------------------------------------------------------------------------------------
// helpers

function decodeJwt(jwt) {
  const [h, p] = jwt.split('.');
  return {
    header: JSON.parse(Buffer.from(h, 'base64url')),
    payload: JSON.parse(Buffer.from(p, 'base64url')),
  };
}

/** Verifies an RS256 JWT against the IdP's JWKS and returns its decoded parts. */
function verifyJwt(jwt) {
  const [h, p, s] = jwt.split('.');
  const { header, payload } = decodeJwt(jwt);
  assert.equal(header.alg, 'RS256');
  const jwk = jwks.keys.find((k) => k.kid === header.kid);
  assert.ok(jwk, `kid ${header.kid} is in the JWKS`);
  const key = crypto.createPublicKey({ key: jwk, format: 'jwk' });
  const ok = crypto.verify('sha256', Buffer.from(`${h}.${p}`), key, Buffer.from(s, 'base64url'));
  assert.ok(ok, 'signature verifies with the JWKS key');
  return { header, payload };
}

async function tokenRequest(params, { auth = CLI_AUTH } = {}) {
  const headers = { 'content-type': 'application/x-www-form-urlencoded' };
  if (auth) headers.authorization = auth;
  const res = await fetch(`${issuer}/token`, { method: 'POST', headers, body: new URLSearchParams(params) });
  return { status: res.status, body: await res.json() };
}

function passwordGrant(username, password, extra = {}) {
  return tokenRequest({ grant_type: 'password', username, password, scope: 'openid', ...extra });
}

function assertAccessToken(accessToken, { sub, tenant, roles, clientId }) {
  const { header, payload } = verifyJwt(accessToken);
  assert.equal(header.typ, 'at+jwt');
  assert.equal(payload.iss, issuer);
  assert.equal(payload.aud, 'pa-api');
  assert.equal(payload.sub, sub);
  assert.equal(payload.tenant, tenant);
  assert.deepEqual(payload.roles, roles);
  assert.equal(payload.client_id, clientId);
  assert.equal(payload.exp - payload.iat, 600, 'access tokens live 10 minutes');
  assert.ok(payload.exp > Date.now() / 1000);
  return payload;
}

/** A tiny browser: a cookie jar (path-aware) and manual redirects. */
class Browser {
  cookies = new Map(); // `${name} ${path}` -> { name, value, path }

  cookieHeader(url) {
    const p = new URL(url).pathname;
    return [...this.cookies.values()]
      .filter((c) => p === c.path || p.startsWith(c.path.endsWith('/') ? c.path : `${c.path}/`))
      .map((c) => `${c.name}=${c.value}`)
      .join('; ');
  }

  store(res) {
    for (const line of res.headers.getSetCookie()) {
      const [pair, ...attrs] = line.split(';').map((s) => s.trim());
      const eq = pair.indexOf('=');
      const name = pair.slice(0, eq);
      const value = pair.slice(eq + 1);
      let cookiePath = '/';
      let expired = false;
      for (const attr of attrs) {
        const [k, v = ''] = attr.split('=');
        if (k.toLowerCase() === 'path') cookiePath = v;
        if (k.toLowerCase() === 'expires' && Date.parse(v) <= Date.now()) expired = true;
        if (k.toLowerCase() === 'max-age' && Number(v) <= 0) expired = true;
      }
      const key = `${name} ${cookiePath}`;
      if (expired || value === '') this.cookies.delete(key);
      else this.cookies.set(key, { name, value, path: cookiePath });
    }
  }

  async request(url, { method = 'GET', form } = {}) {
    const headers = {};
    const cookie = this.cookieHeader(url);
    if (cookie) headers.cookie = cookie;
    let body;
    if (form) {
      headers['content-type'] = 'application/x-www-form-urlencoded';
      body = new URLSearchParams(form);
    }
    const res = await fetch(url, { method, headers, body, redirect: 'manual' });
    this.store(res);
    return { status: res.status, location: res.headers.get('location'), html: await res.text(), url };
  }

  /** Follows redirects (303 → GET) until a non-redirect, or a Location that `stop` accepts. */
  async follow(first, stop = () => false) {
    let res = first;
    for (let hops = 0; hops < 15; hops += 1) {
      if (![301, 302, 303, 307, 308].includes(res.status)) return res;
      const next = new URL(res.location, res.url).href;
      if (stop(next)) return { ...res, location: next };
      res = await this.request(next);
    }
    throw new Error('too many redirects');
  }
}

function hiddenInputs(html) {
  const out = {};
  for (const [, name, value] of html.matchAll(/<input type="hidden" name="([^"]+)" value="([^"]*)"\s*\/?>/g)) {
    out[name] = value.replace(/&#(\d+);/g, (_, n) => String.fromCharCode(Number(n)));
  }
  return out;
}

function formAction(html, id) {
  const re = id ? new RegExp(`<form[^>]*id="${id}"[^>]*action="([^"]+)"|<form[^>]*action="([^"]+)"[^>]*id="${id}"`) : /<form[^>]*action="([^"]+)"/;
  const m = html.match(re);
  assert.ok(m, `form ${id ?? ''} found`);
  return m[1] ?? m[2];
}

// ---------------------------------------------------------------------------------------------

before(async () => {
  await startServer();
  discovery = await (await fetch(`${issuer}/.well-known/openid-configuration`)).json();
  jwks = await (await fetch(discovery.jwks_uri)).json();
});

after(async () => {
  if (!child) return;
  child.kill('SIGTERM');
  const { code, signal } = await waitForExit(child, 5000).catch((err) => {
    child.kill('SIGKILL');
    throw err;
  });
  assert.equal(signal, null, 'IdP exits by itself on SIGTERM');
  assert.equal(code, 0, `IdP exits cleanly on SIGTERM:\n${output}`);
  assert.match(output, /shutting down signal=SIGTERM/);
});

describe('discovery and keys', () => {
  test('discovery document', () => {
    assert.equal(discovery.issuer, issuer);
    assert.equal(discovery.jwks_uri, `${issuer}/jwks`);
    assert.equal(discovery.token_endpoint, `${issuer}/token`);
    assert.equal(discovery.authorization_endpoint, `${issuer}/auth`);
    assert.equal(discovery.device_authorization_endpoint, `${issuer}/device/auth`);
    for (const gt of ['authorization_code', 'refresh_token', 'password', DEVICE_GRANT, 'client_credentials']) {
      assert.ok(discovery.grant_types_supported.includes(gt), `grant type ${gt} is advertised`);
    }
    assert.deepEqual(discovery.code_challenge_methods_supported, ['S256']);
    assert.deepEqual(discovery.response_types_supported, ['code']);
    assert.ok(discovery.id_token_signing_alg_values_supported.includes('RS256'));
  });

  test('JWKS holds a public RS256 signing key only', () => {
    assert.ok(jwks.keys.length >= 1);
    for (const key of jwks.keys) {
      assert.equal(key.kty, 'RSA');
      assert.equal(key.alg, 'RS256');
      assert.equal(key.use, 'sig');
      assert.ok(key.kid);
      for (const priv of ['d', 'p', 'q', 'dp', 'dq', 'qi']) assert.equal(key[priv], undefined, `no private member ${priv}`);
    }
  });

  test('health endpoint', async () => {
    const res = await fetch(`${issuer}/healthz`);
    assert.equal(res.status, 200);
  });
});

describe('password grant (pa-cli)', () => {
  test('alice gets a JWT access token for pa-api with tenant and roles', async () => {
    const { status, body } = await passwordGrant('alice', 'alice-password');
    assert.equal(status, 200, JSON.stringify(body));
    assert.equal(body.token_type, 'Bearer');
    assert.equal(body.expires_in, 600);
    const at = assertAccessToken(body.access_token, {
      sub: 'alice', tenant: 'acme', roles: ['user', 'admin'], clientId: 'pa-cli',
    });
    assert.equal(at.email, 'alice@acme.example');
    assert.equal(at.name, 'Alice Anderson');
    assert.equal(at.scope, 'openid');

    const { payload: id } = verifyJwt(body.id_token);
    assert.equal(id.iss, issuer);
    assert.equal(id.aud, 'pa-cli');
    assert.equal(id.sub, 'alice');
    assert.equal(id.tenant, 'acme');
    assert.ok(id.at_hash);
    assert.ok(body.refresh_token, 'a refresh token is issued to clients allowed to refresh');
  });

  test('bob and carol carry their own tenant and roles', async () => {
    const bob = await passwordGrant('bob', 'bob-password');
    assertAccessToken(bob.body.access_token, { sub: 'bob', tenant: 'acme', roles: ['user'], clientId: 'pa-cli' });
    const carol = await passwordGrant('carol', 'carol-password', { scope: 'openid profile email' });
    const at = assertAccessToken(carol.body.access_token, {
      sub: 'carol', tenant: 'globex', roles: ['user', 'admin'], clientId: 'pa-cli',
    });
    assert.equal(at.scope, 'openid profile email');
    const { payload: id } = decodeJwt(carol.body.id_token);
    assert.equal(id.email, 'carol@globex.example');
    assert.equal(id.name, 'Carol Clark');
  });

  test('resource may be given as "pa-api" or as the indicator "urn:pa-api"', async () => {
    for (const resource of ['pa-api', 'urn:pa-api']) {
      const { status, body } = await passwordGrant('alice', 'alice-password', { resource });
      assert.equal(status, 200, JSON.stringify(body));
      assert.equal(decodeJwt(body.access_token).payload.aud, 'pa-api');
    }
    const { status, body } = await passwordGrant('alice', 'alice-password', { resource: 'urn:other-api' });
    assert.equal(status, 400);
    assert.equal(body.error, 'invalid_target');
  });

  test('wrong or unknown credentials are invalid_grant', async () => {
    for (const [user, password] of [['alice', 'wrong'], ['alice', 'bob-password'], ['mallory', 'x']]) {
      const { status, body } = await passwordGrant(user, password);
      assert.equal(status, 400);
      assert.equal(body.error, 'invalid_grant');
    }
  });

  test('missing password is invalid_request; unknown scope is invalid_scope', async () => {
    const missing = await tokenRequest({ grant_type: 'password', username: 'alice' });
    assert.equal(missing.body.error, 'invalid_request');
    const scope = await passwordGrant('alice', 'alice-password', { scope: 'openid admin:everything' });
    assert.equal(scope.body.error, 'invalid_scope');
  });

  test('a wrong client secret is invalid_client', async () => {
    const auth = `Basic ${Buffer.from('pa-cli:nope').toString('base64')}`;
    const { status, body } = await tokenRequest(
      { grant_type: 'password', username: 'alice', password: 'alice-password' },
      { auth },
    );
    assert.equal(status, 401);
    assert.equal(body.error, 'invalid_client');
  });

  test('pa-web (public) may not use the password grant', async () => {
    const { status, body } = await tokenRequest(
      { grant_type: 'password', username: 'alice', password: 'alice-password', client_id: 'pa-web' },
      { auth: null },
    );
    assert.equal(status, 400);
    assert.match(body.error, /invalid_request|unauthorized_client/);
  });

  test('its refresh token yields a fresh access token with the same claims', async () => {
    const first = await passwordGrant('carol', 'carol-password');
    const { status, body } = await tokenRequest({ grant_type: 'refresh_token', refresh_token: first.body.refresh_token });
    assert.equal(status, 200, JSON.stringify(body));
    assertAccessToken(body.access_token, { sub: 'carol', tenant: 'globex', roles: ['user', 'admin'], clientId: 'pa-cli' });
    assert.notEqual(body.access_token, first.body.access_token);
  });
});

describe('client credentials (pa-cli service account)', () => {
  test('a JWT for pa-api with the service account tenant', async () => {
    const { status, body } = await tokenRequest({ grant_type: 'client_credentials' });
    assert.equal(status, 200, JSON.stringify(body));
    assertAccessToken(body.access_token, { sub: 'pa-cli', tenant: 'acme', roles: ['user'], clientId: 'pa-cli' });
  });
});

describe('device authorization grant (pa-cli)', () => {
  test('device code → user signs in in a browser → token', async () => {
    const res = await fetch(discovery.device_authorization_endpoint, {
      method: 'POST',
      headers: { authorization: CLI_AUTH, 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ scope: 'openid profile' }),
    });
    assert.equal(res.status, 200);
    const dev = await res.json();
    assert.ok(dev.device_code);
    assert.match(dev.user_code, /^[A-Z]{4}-[A-Z]{4}$/);
    assert.equal(dev.verification_uri, `${issuer}/device`);
    assert.equal(dev.verification_uri_complete, `${issuer}/device?user_code=${dev.user_code}`);
    assert.equal(dev.expires_in, 600);

    const pending = await tokenRequest({ grant_type: DEVICE_GRANT, device_code: dev.device_code });
    assert.equal(pending.status, 400);
    assert.equal(pending.body.error, 'authorization_pending');

    // the user opens verification_uri_complete, confirms, signs in as bob
    const browser = new Browser();
    const autoPost = await browser.request(dev.verification_uri_complete);
    assert.equal(autoPost.status, 200);
    const confirmPage = await browser.request(`${issuer}/device`, { method: 'POST', form: hiddenInputs(autoPost.html) });
    assert.equal(confirmPage.status, 200);
    assert.ok(confirmPage.html.includes(dev.user_code), 'the confirm page shows the user code');
    const confirmed = await browser.request(`${issuer}/device`, { method: 'POST', form: hiddenInputs(confirmPage.html) });
    const login = await browser.follow(confirmed);
    assert.equal(login.status, 200);
    assert.match(login.html, /id="login-form"/);
    const loggedIn = await browser.request(new URL(formAction(login.html, 'login-form'), issuer).href, {
      method: 'POST', form: { username: 'bob', password: 'bob-password' },
    });
    const done = await browser.follow(loggedIn);
    assert.equal(done.status, 200);
    assert.match(done.html, /signed in/i);

    const { status, body } = await tokenRequest({ grant_type: DEVICE_GRANT, device_code: dev.device_code });
    assert.equal(status, 200, JSON.stringify(body));
    assertAccessToken(body.access_token, { sub: 'bob', tenant: 'acme', roles: ['user'], clientId: 'pa-cli' });
    assert.equal(decodeJwt(body.id_token).payload.aud, 'pa-cli');

    const again = await tokenRequest({ grant_type: DEVICE_GRANT, device_code: dev.device_code });
    assert.equal(again.body.error, 'invalid_grant', 'a device code is single-use');
  });
});

describe('authorization code + PKCE (pa-web)', () => {
  const redirectUri = 'http://127.0.0.1:8080/auth/callback';

  function authorizeUrl(extra = {}) {
    const url = new URL(discovery.authorization_endpoint);
    url.search = new URLSearchParams({
      client_id: 'pa-web',
      response_type: 'code',
      redirect_uri: redirectUri,
      scope: 'openid profile email',
      state: 'st4te',
      nonce: 'n0nce',
      ...extra,
    }).toString();
    return url.href;
  }

  test('login form → code → JWT access token', async () => {
    const verifier = crypto.randomBytes(32).toString('base64url');
    const challenge = crypto.createHash('sha256').update(verifier).digest('base64url');
    const browser = new Browser();

    const login = await browser.follow(await browser.request(authorizeUrl({ code_challenge: challenge, code_challenge_method: 'S256' })));
    assert.equal(login.status, 200);
    assert.match(login.url, /\/interaction\//);
    assert.match(login.html, /id="login-form"/);
    assert.doesNotMatch(login.html, /https?:\/\//, 'the login page loads no external assets');
    const action = new URL(formAction(login.html, 'login-form'), issuer).href;

    const wrong = await browser.request(action, { method: 'POST', form: { username: 'alice', password: 'nope' } });
    assert.equal(wrong.status, 200);
    assert.match(wrong.html, /Invalid username or password/);

    const ok = await browser.request(action, { method: 'POST', form: { username: 'alice', password: 'alice-password' } });
    const callback = await browser.follow(ok, (next) => next.startsWith(redirectUri));
    assert.ok(callback.location?.startsWith(redirectUri), `redirected to the app: ${callback.location}`);
    const params = new URL(callback.location).searchParams;
    assert.equal(params.get('state'), 'st4te');
    assert.equal(params.get('iss'), issuer);
    const code = params.get('code');
    assert.ok(code, `a code: ${callback.location}`);

    const { status, body } = await tokenRequest({
      grant_type: 'authorization_code', client_id: 'pa-web', code, redirect_uri: redirectUri, code_verifier: verifier,
    }, { auth: null });
    assert.equal(status, 200, JSON.stringify(body));
    const at = assertAccessToken(body.access_token, { sub: 'alice', tenant: 'acme', roles: ['user', 'admin'], clientId: 'pa-web' });
    assert.equal(at.name, 'Alice Anderson');
    const { payload: id } = verifyJwt(body.id_token);
    assert.equal(id.aud, 'pa-web');
    assert.equal(id.nonce, 'n0nce');
    assert.equal(id.email, 'alice@acme.example');
    assert.ok(body.refresh_token);

    const refreshed = await tokenRequest({ grant_type: 'refresh_token', client_id: 'pa-web', refresh_token: body.refresh_token }, { auth: null });
    assert.equal(refreshed.status, 200, JSON.stringify(refreshed.body));
    assertAccessToken(refreshed.body.access_token, { sub: 'alice', tenant: 'acme', roles: ['user', 'admin'], clientId: 'pa-web' });
  });

  test('PKCE is required for pa-web', async () => {
    const browser = new Browser();
    const res = await browser.request(authorizeUrl());
    assert.equal(res.status, 303);
    const params = new URL(res.location).searchParams;
    assert.equal(params.get('error'), 'invalid_request');
    assert.match(params.get('error_description'), /PKCE/);
  });

  test('unregistered redirect URIs are refused', async () => {
    const browser = new Browser();
    const res = await browser.request(authorizeUrl({ redirect_uri: 'http://evil.example/cb', code_challenge: 'x'.repeat(43), code_challenge_method: 'S256' }));
    assert.equal(res.status, 400);
    assert.match(res.html, /redirect_uri/);
  });
});
