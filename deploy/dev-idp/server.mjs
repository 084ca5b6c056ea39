// Personal Agent dev/test OpenID Provider, built on the certified `oidc-provider` library.
//
// The realm (tenants, users, clients, the pa-api resource server) lives in realm.json. Access
// tokens for the gateway are RS256 JWTs with aud "pa-api" and the custom claims tenant/roles.
// Dev/test only: in-memory storage, well-known passwords, plain HTTP on 127.0.0.1.
//
// Environment:
//   PA_IDP_REALM      realm file (default ./realm.json next to this file)
//   PA_IDP_PORT       port (default: the issuer's port, 8090); 0 picks a free port
//   PA_IDP_HOST       bind address (default 127.0.0.1)
//   PA_IDP_ISSUER     issuer override (default: realm issuer, with the port actually bound)
//   PA_IDP_WEB_ORIGINS comma-separated extra origins of the web app (e.g. a test gateway on
//                     a random port): each adds <origin>/auth/callback as a redirect URI and
//                     <origin>/ as a post-logout URI of the public browser clients (and so CORS)
//   PA_IDP_JWKS_FILE  signing-key file (default ./.jwks.json, gitignored, created on first start);
//                     "memory" = a fresh key every start

import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

import Provider, { errors } from 'oidc-provider';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const PASSWORD_GRANT = 'password';
const DEVICE_CODE_GRANT = 'urn:ietf:params:oauth:grant-type:device_code';

// ---------------------------------------------------------------------------------------------
// logging: one line per event on stdout

function log(level, msg, fields = {}) {
  const extra = Object.entries(fields)
    .filter(([, v]) => v !== undefined)
    .map(([k, v]) => `${k}=${typeof v === 'string' && !/\s/.test(v) ? v : JSON.stringify(v)}`)
    .join(' ');
  process.stdout.write(`${new Date().toISOString()} ${level.padEnd(5)} ${msg}${extra ? ` ${extra}` : ''}\n`);
}

// ---------------------------------------------------------------------------------------------
// realm

export function loadRealm(file) {
  const realm = JSON.parse(fs.readFileSync(file, 'utf8'));
  const fail = (why) => { throw new Error(`${file}: ${why}`); };

  if (typeof realm.issuer !== 'string' || !URL.canParse(realm.issuer)) fail('issuer must be a URL');
  const tenants = new Map((realm.tenants ?? []).map((t) => [t.id, t]));
  const users = new Map();
  for (const u of realm.users ?? []) {
    if (!u.username || !u.password) fail('every user needs a username and a password');
    if (!tenants.has(u.tenant)) fail(`user ${u.username}: unknown tenant ${u.tenant}`);
    if (!Array.isArray(u.roles)) fail(`user ${u.username}: roles must be an array`);
    if (users.has(u.username)) fail(`duplicate user ${u.username}`);
    users.set(u.username, u);
  }
  const resourceServers = new Map();
  for (const rs of realm.resourceServers ?? []) {
    if (!URL.canParse(rs.resource)) fail(`resource ${rs.resource} must be an absolute URI (RFC 8707)`);
    resourceServers.set(rs.resource, rs);
  }
  const defaultResource = [...resourceServers.values()].find((rs) => rs.default)?.resource;
  if (!defaultResource) fail('one resource server must be marked "default": true');
  const clients = new Map();
  for (const c of realm.clients ?? []) {
    if (!c.clientId) fail('every client needs a clientId');
    if (!c.public && !c.secret) fail(`client ${c.clientId}: confidential clients need a secret`);
    if (c.serviceAccount && !tenants.has(c.serviceAccount.tenant)) fail(`client ${c.clientId}: unknown service account tenant`);
    clients.set(c.clientId, c);
  }
  return { ...realm, tenants, users, resourceServers, defaultResource, clients };
}

/** A resource indicator, or an audience name (e.g. "pa-api") accepted as an alias for it. */
function resolveResourceName(realm, value) {
  if (realm.resourceServers.has(value)) return value;
  for (const rs of realm.resourceServers.values()) {
    if (rs.audience === value) return rs.resource;
  }
  return undefined;
}

function clientMetadata(c) {
  const grantTypes = c.grantTypes ?? ['authorization_code'];
  return {
    client_id: c.clientId,
    client_name: c.name,
    ...(c.public
      ? { token_endpoint_auth_method: 'none' }
      : { client_secret: c.secret, token_endpoint_auth_method: 'client_secret_basic' }),
    grant_types: grantTypes,
    response_types: grantTypes.includes('authorization_code') ? ['code'] : [],
    redirect_uris: c.redirectUris ?? [],
    post_logout_redirect_uris: c.postLogoutRedirectUris ?? [],
    ...(c.scope ? { scope: c.scope } : {}),
  };
}

function safeEqual(a, b) {
  const ha = crypto.createHash('sha256').update(String(a)).digest();
  const hb = crypto.createHash('sha256').update(String(b)).digest();
  return crypto.timingSafeEqual(ha, hb);
}

// ---------------------------------------------------------------------------------------------
// signing key

function generateSigningJwk() {
  const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  const jwk = privateKey.export({ format: 'jwk' });
  return { ...jwk, kid: `dev-idp-${crypto.randomBytes(6).toString('hex')}`, alg: 'RS256', use: 'sig' };
}

function loadOrCreateJwks(file) {
  if (file === 'memory') {
    log('info', 'using an ephemeral signing key (PA_IDP_JWKS_FILE=memory)');
    return { keys: [generateSigningJwk()] };
  }
  if (fs.existsSync(file)) {
    const jwks = JSON.parse(fs.readFileSync(file, 'utf8'));
    log('info', 'loaded signing key', { file, kid: jwks.keys?.[0]?.kid });
    return jwks;
  }
  const jwks = { keys: [generateSigningJwk()] };
  const tmp = `${file}.${process.pid}.tmp`;
  fs.writeFileSync(tmp, `${JSON.stringify(jwks, null, 2)}\n`, { mode: 0o600 });
  fs.renameSync(tmp, file);
  log('info', 'generated signing key', { file, kid: jwks.keys[0].kid });
  return jwks;
}

// ---------------------------------------------------------------------------------------------
// HTML (self-contained: no external assets)

const esc = (s) => String(s ?? '').replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

function page(title, body) {
  return `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${esc(title)}</title>
<style>
body{font-family:system-ui,sans-serif;background:#f4f4f5;margin:0;padding:40px 10px}
main{max-width:340px;margin:0 auto;background:#fff;padding:24px 28px;border-radius:6px;box-shadow:0 1px 3px rgba(0,0,0,.2)}
h1{font-size:1.4em;font-weight:500;margin:0 0 12px}
label{display:block;margin:10px 0 4px;font-size:.9em}
input[type=text],input[type=password]{width:100%;box-sizing:border-box;padding:8px;font-size:1em;border:1px solid #ccc;border-radius:4px}
button{margin-top:16px;width:100%;padding:9px;font-size:1em;border:0;border-radius:4px;background:#2563eb;color:#fff;cursor:pointer}
button.link{background:none;color:#555;width:auto;padding:0;margin-top:10px}
.error{color:#b91c1c}.muted{color:#666;font-size:.85em}
code{font-size:1.4em}
</style>
</head>
<body><main>
${body}
</main></body>
</html>`;
}

function loginPage({ uid, clientName, realmName, username = '', error }) {
  return page('Sign in', `<h1>Sign in</h1>
<p class="muted">to <strong>${esc(clientName)}</strong> (realm ${esc(realmName)})</p>
${error ? `<p class="error" role="alert" id="login-error">${esc(error)}</p>` : ''}
<form method="post" action="/interaction/${esc(uid)}/login" autocomplete="off" id="login-form">
<label for="username">Username</label>
<input id="username" name="username" type="text" value="${esc(username)}" required autofocus>
<label for="password">Password</label>
<input id="password" name="password" type="password" required>
<button type="submit" id="login-submit">Sign in</button>
</form>
<form method="post" action="/interaction/${esc(uid)}/abort"><button class="link" type="submit">Cancel</button></form>`);
}

// ---------------------------------------------------------------------------------------------
// the provider

function buildConfiguration(realm, jwks) {
  const ttl = realm.ttl ?? {};
  const accessTtl = ttl.accessTokenSeconds ?? 600;

  const userClaims = (user) => ({
    sub: user.username,
    preferred_username: user.username,
    name: user.name,
    email: user.email,
    email_verified: Boolean(user.email),
    tenant: user.tenant,
    roles: [...user.roles],
  });

  return {
    clients: [...realm.clients.values()].map(clientMetadata),
    responseTypes: ['code'],
    jwks,
    cookies: { keys: [crypto.randomBytes(32).toString('base64url')] },
    scopes: realm.scopes ?? ['openid', 'profile', 'email', 'offline_access'],
    claims: {
      openid: ['sub', 'tenant', 'roles'],
      profile: ['name', 'preferred_username'],
      email: ['email', 'email_verified'],
    },
    conformIdTokenClaims: false,

    async findAccount(_ctx, sub) {
      const user = realm.users.get(sub);
      if (!user) return undefined;
      return {
        accountId: user.username,
        async claims() { return userClaims(user); },
      };
    },

    // tenant/roles (and the display claims) in every JWT access token
    async extraTokenClaims(_ctx, token) {
      if (token.kind === 'AccessToken' && token.accountId) {
        const user = realm.users.get(token.accountId);
        if (!user) return undefined;
        const { sub, ...claims } = userClaims(user);
        return claims;
      }
      if (token.kind === 'ClientCredentials') {
        const sa = realm.clients.get(token.clientId)?.serviceAccount;
        if (sa) return { tenant: sa.tenant, roles: [...(sa.roles ?? [])], name: token.clientId };
      }
      return undefined;
    },

    features: {
      devInteractions: { enabled: false },
      // access tokens are issued for a resource server, not for the userinfo endpoint
      userinfo: { enabled: false },
      clientCredentials: { enabled: true },
      revocation: { enabled: true },
      introspection: { enabled: true },
      resourceIndicators: {
        enabled: true,
        async defaultResource(_ctx, _client, oneOf) {
          return oneOf ?? realm.defaultResource;
        },
        // always mint the JWT for the granted resource (even when "openid" is in the scope)
        async useGrantedResource() { return true; },
        async getResourceServerInfo(_ctx, resourceIndicator) {
          const rs = realm.resourceServers.get(resourceIndicator);
          if (!rs) throw new errors.InvalidTarget();
          return {
            scope: rs.scope ?? '',
            audience: rs.audience ?? rs.resource,
            accessTokenTTL: accessTtl,
            accessTokenFormat: 'jwt',
            jwt: { sign: { alg: 'RS256' } },
          };
        },
      },
      deviceFlow: {
        enabled: true,
        charset: 'base-20',
        mask: '****-****',
        async userCodeInputSource(ctx, form, _out, err) {
          const msg = err ? `<p class="error">${err.userCode || err.name === 'NoCodeError' ? 'The code you entered is incorrect. Try again.' : 'There was an error processing your request.'}</p>` : '<p>Enter the code displayed on your device.</p>';
          ctx.body = page('Device sign-in', `<h1>Device sign-in</h1>${msg}${form}<button type="submit" form="op.deviceInputForm">Continue</button>`);
        },
        async userCodeConfirmSource(ctx, form, client, _deviceInfo, userCode) {
          ctx.body = page('Confirm device', `<h1>Confirm device</h1>
<p><strong>${esc(client.clientName || client.clientId)}</strong> shows the code</p><p><code>${esc(userCode)}</code></p>
${form}<button type="submit" form="op.deviceConfirmForm">Continue</button>
<button class="link" type="submit" form="op.deviceConfirmForm" value="yes" name="abort">Abort</button>`);
        },
        async successSource(ctx) {
          ctx.body = page('Signed in', '<h1>Signed in</h1><p>Your device is signed in. You can close this page.</p>');
        },
      },
      rpInitiatedLogout: {
        enabled: true,
        async logoutSource(ctx, form) {
          ctx.body = page('Sign out', `<h1>Sign out?</h1>${form}
<button type="submit" form="op.logoutForm" value="yes" name="logout" id="logout-yes">Yes, sign me out</button>
<button class="link" type="submit" form="op.logoutForm">No, stay signed in</button>`);
        },
        async postLogoutSuccessSource(ctx) {
          ctx.body = page('Signed out', '<h1>Signed out</h1><p>You are signed out.</p>');
        },
      },
    },

    pkce: {
      required(_ctx, client) {
        return client.clientAuthMethod === 'none' || Boolean(realm.clients.get(client.clientId)?.pkceRequired);
      },
    },

    // Keycloak-like: a client allowed to refresh gets a refresh token
    async issueRefreshToken(_ctx, client) {
      return client.grantTypeAllowed('refresh_token');
    },

    clientBasedCORS(_ctx, origin, client) {
      if (origin === 'null') return false;
      return client.redirectUris.some((uri) => URL.parse(uri)?.origin === origin);
    },

    interactions: {
      url: (_ctx, interaction) => `/interaction/${interaction.uid}`,
    },

    async renderError(ctx, out) {
      ctx.type = 'html';
      ctx.body = page('Error', `<h1>Something went wrong</h1>${Object.entries(out)
        .map(([k, v]) => `<p><strong>${esc(k)}</strong>: ${esc(v)}</p>`).join('')}`);
    },

    ttl: {
      AccessToken: accessTtl,
      ClientCredentials: accessTtl,
      IdToken: ttl.idTokenSeconds ?? 600,
      AuthorizationCode: 60,
      DeviceCode: ttl.deviceCodeSeconds ?? 600,
      RefreshToken: ttl.refreshTokenSeconds ?? 86400,
      Session: ttl.sessionSeconds ?? 86400,
      Grant: ttl.sessionSeconds ?? 86400,
      Interaction: 3600,
    },
  };
}

/**
 * Resource Owner Password Credentials (RFC 6749 §4.3). oidc-provider deliberately does not ship
 * it, so this is a custom grant type: check the realm user, record a Grant, and mint the tokens
 * with the provider's own AccessToken / RefreshToken / IdToken models (same keys, TTLs, formats
 * and extraTokenClaims as every other grant).
 */
function passwordGrantHandler(provider, realm, configuration) {
  const { findAccount, features: { resourceIndicators: { getResourceServerInfo } } } = configuration;
  const supportedScopes = new Set(realm.scopes ?? ['openid']);

  return async function passwordGrant(ctx) {
    const { client, params } = ctx.oidc;

    if (!params.username || !params.password) {
      throw new errors.InvalidRequest('missing required parameter(s) (username, password)');
    }
    const user = realm.users.get(params.username);
    // compare even for unknown users so the timing does not tell which usernames exist
    const passwordOk = safeEqual(user?.password ?? crypto.randomUUID(), params.password);
    if (!user || !passwordOk) {
      throw new errors.InvalidGrant('invalid resource owner credentials');
    }

    const requested = new Set((params.scope || 'openid').split(' ').filter(Boolean));
    const allowed = new Set((client.scope || [...supportedScopes].join(' ')).split(' '));
    for (const scope of requested) {
      if (!supportedScopes.has(scope) || !allowed.has(scope)) {
        throw new errors.InvalidScope('requested scope is not allowed', scope);
      }
    }

    let resource = realm.defaultResource;
    if (params.resource !== undefined) {
      if (Array.isArray(params.resource)) {
        throw new errors.InvalidTarget('only a single resource indicator value is supported for this grant type');
      }
      resource = resolveResourceName(realm, params.resource);
      if (!resource) throw new errors.InvalidTarget();
    }

    const resourceServer = new provider.ResourceServer(resource, await getResourceServerInfo(ctx, resource, client));
    const oidcScope = [...requested].join(' ');
    const resourceScope = [...requested].filter((s) => resourceServer.scopes.has(s)).join(' ');

    const account = await findAccount(ctx, user.username);
    ctx.oidc.entity('Account', account);

    const grant = new provider.Grant({ accountId: account.accountId, clientId: client.clientId });
    grant.addOIDCScope(oidcScope);
    if (resourceScope) grant.addResourceScope(resource, resourceScope);
    const grantId = await grant.save();
    ctx.oidc.entity('Grant', grant);

    const at = new provider.AccessToken({
      accountId: account.accountId,
      client,
      expiresWithSession: false,
      grantId,
      gty: PASSWORD_GRANT,
      scope: resourceScope || undefined,
    });
    at.resourceServer = resourceServer;
    ctx.oidc.entity('AccessToken', at);
    const accessToken = await at.save();

    let refreshToken;
    if (client.grantTypeAllowed('refresh_token')) {
      const rt = new provider.RefreshToken({
        accountId: account.accountId,
        client,
        expiresWithSession: false,
        grantId,
        gty: PASSWORD_GRANT,
        resource,
        rotations: 0,
        scope: oidcScope,
      });
      ctx.oidc.entity('RefreshToken', rt);
      refreshToken = await rt.save();
    }

    let idToken;
    if (requested.has('openid')) {
      const claims = await account.claims('id_token', oidcScope, {}, []);
      const token = new provider.IdToken({ ...claims, sub: account.accountId }, { ctx });
      token.scope = oidcScope;
      token.mask = {};
      token.rejected = [];
      token.set('at_hash', accessToken);
      idToken = await token.issue({ use: 'idtoken' });
    }

    ctx.body = Object.fromEntries(Object.entries({
      access_token: accessToken,
      token_type: at.tokenType,
      expires_in: at.expiration,
      refresh_token: refreshToken,
      id_token: idToken,
      scope: resourceScope || undefined,
    }).filter(([, v]) => v !== undefined));
  };
}

// ---------------------------------------------------------------------------------------------
// interactions (login form + auto-approved consent)

async function readForm(req, limit = 16 * 1024) {
  let body = '';
  for await (const chunk of req) {
    body += chunk;
    if (body.length > limit) throw new Error('request body too large');
  }
  return new URLSearchParams(body);
}

function sendHtml(res, status, html) {
  res.writeHead(status, {
    'content-type': 'text/html; charset=utf-8',
    'cache-control': 'no-store',
    'content-length': Buffer.byteLength(html),
  });
  res.end(html);
}

async function autoConsent(provider, details) {
  const { prompt: { details: missing }, params, session: { accountId }, grantId } = details;
  const grant = grantId
    ? await provider.Grant.find(grantId)
    : new provider.Grant({ accountId, clientId: params.client_id });
  if (missing.missingOIDCScope) grant.addOIDCScope(missing.missingOIDCScope.join(' '));
  if (missing.missingOIDCClaims) grant.addOIDCClaims(missing.missingOIDCClaims);
  if (missing.missingResourceScopes) {
    for (const [indicator, scopes] of Object.entries(missing.missingResourceScopes)) {
      grant.addResourceScope(indicator, scopes.join(' '));
    }
  }
  return grant.save();
}

function interactionHandler(provider, realm) {
  return async function handleInteraction(req, res, url) {
    const m = url.pathname.match(/^\/interaction\/([\w-]+)(?:\/(login|abort))?$/);
    if (!m) return sendHtml(res, 404, page('Not found', '<h1>Not found</h1>'));
    const [, uid, action] = m;

    const details = await provider.interactionDetails(req, res);
    if (details.uid !== uid) throw new errors.SessionNotFound('interaction mismatch');
    const client = await provider.Client.find(details.params.client_id);
    const clientName = client?.clientName || details.params.client_id;

    if (req.method === 'GET' && !action) {
      if (details.prompt.name === 'login') {
        return sendHtml(res, 200, loginPage({ uid, clientName, realmName: realm.realm }));
      }
      if (details.prompt.name === 'consent') {
        const grantId = await autoConsent(provider, details);
        log('info', 'consent auto-approved', { client: details.params.client_id, account: details.session?.accountId });
        return provider.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
      }
      return sendHtml(res, 400, page('Error', `<h1>Unsupported prompt ${esc(details.prompt.name)}</h1>`));
    }

    if (req.method === 'POST' && action === 'login') {
      const form = await readForm(req);
      const username = form.get('username') ?? '';
      const user = realm.users.get(username);
      const passwordOk = safeEqual(user?.password ?? crypto.randomUUID(), form.get('password') ?? '');
      if (!user || !passwordOk) {
        log('warn', 'login failed', { username, client: details.params.client_id });
        return sendHtml(res, 200, loginPage({
          uid, clientName, realmName: realm.realm, username, error: 'Invalid username or password.',
        }));
      }
      log('info', 'login', { username, client: details.params.client_id });
      return provider.interactionFinished(req, res, {
        login: { accountId: user.username, amr: ['pwd'] },
      }, { mergeWithLastSubmission: false });
    }

    if (req.method === 'POST' && action === 'abort') {
      return provider.interactionFinished(req, res, {
        error: 'access_denied', error_description: 'End-User aborted interaction',
      }, { mergeWithLastSubmission: false });
    }

    res.writeHead(405, { allow: 'GET, POST' });
    return res.end();
  };
}

/** Adds exact redirect URIs for extra web-app origins (no wildcards: each origin is listed). */
export function addWebOrigins(realm, list) {
  const origins = String(list).split(',').map((s) => s.trim()).filter(Boolean);
  for (const o of origins) {
    const u = URL.parse(o);
    if (!u || !['http:', 'https:'].includes(u.protocol) || u.origin !== o.replace(/\/$/, '')) {
      throw new Error(`PA_IDP_WEB_ORIGINS: ${o} is not an origin (scheme://host[:port])`);
    }
    for (const c of realm.clients.values()) {
      if (!c.public || !(c.grantTypes ?? ['authorization_code']).includes('authorization_code')) continue;
      c.redirectUris = [...new Set([...(c.redirectUris ?? []), `${u.origin}/auth/callback`])];
      c.postLogoutRedirectUris = [...new Set([...(c.postLogoutRedirectUris ?? []), `${u.origin}/`])];
    }
  }
}

// ---------------------------------------------------------------------------------------------
// server

export async function startIdp({
  realmPath = process.env.PA_IDP_REALM || path.join(HERE, 'realm.json'),
  host = process.env.PA_IDP_HOST || '127.0.0.1',
  port = process.env.PA_IDP_PORT,
  issuer = process.env.PA_IDP_ISSUER,
  jwksFile = process.env.PA_IDP_JWKS_FILE || path.join(HERE, '.jwks.json'),
  webOrigins = process.env.PA_IDP_WEB_ORIGINS || '',
} = {}) {
  const realm = loadRealm(realmPath);
  addWebOrigins(realm, webOrigins);
  const realmIssuer = new URL(realm.issuer);
  const listenPort = port !== undefined && port !== '' ? Number(port) : Number(realmIssuer.port || 80);

  let app = (_req, res) => { res.writeHead(503); res.end(); };
  const server = http.createServer((req, res) => app(req, res));
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(listenPort, host, () => { server.off('error', reject); resolve(); });
  });
  const boundPort = server.address().port;

  if (!issuer) {
    const u = new URL(realm.issuer);
    u.port = String(boundPort);
    issuer = u.href.replace(/\/$/, '');
  }

  const configuration = buildConfiguration(realm, loadOrCreateJwks(jwksFile));
  const provider = new Provider(issuer, configuration);
  provider.registerGrantType(
    PASSWORD_GRANT,
    passwordGrantHandler(provider, realm, configuration),
    ['username', 'password', 'scope', 'resource'],
  );

  provider.on('grant.success', (ctx) => {
    log('info', 'token issued', {
      grant_type: ctx.oidc.params?.grant_type, client: ctx.oidc.client?.clientId, account: ctx.oidc.account?.accountId,
    });
  });
  provider.on('grant.error', (ctx, err) => {
    log('warn', 'token request refused', {
      grant_type: ctx.oidc.params?.grant_type, client: ctx.oidc.client?.clientId, error: err.error, detail: err.error_detail,
    });
  });
  for (const event of ['authorization.error', 'device_authorization.error', 'end_session.error',
    'introspection.error', 'revocation.error', 'jwks.error', 'discovery.error', 'code_verification.error']) {
    provider.on(event, (_ctx, err) => log('warn', event, { error: err.error, detail: err.error_detail }));
  }
  provider.on('server_error', (_ctx, err) => log('error', 'server error', { error: err.stack || String(err) }));

  const oidc = provider.callback();
  const interaction = interactionHandler(provider, realm);

  app = (req, res) => {
    const started = process.hrtime.bigint();
    res.on('finish', () => {
      const ms = Number(process.hrtime.bigint() - started) / 1e6;
      log('info', 'http', { method: req.method, path: req.url.split('?')[0], status: res.statusCode, ms: ms.toFixed(1) });
    });
    const url = new URL(req.url, issuer);
    if (url.pathname === '/healthz') {
      res.writeHead(200, { 'content-type': 'text/plain' });
      return res.end('ok\n');
    }
    if (url.pathname.startsWith('/interaction/')) {
      return interaction(req, res, url).catch((err) => {
        log('warn', 'interaction failed', { error: err.message });
        if (!res.headersSent) {
          sendHtml(res, err.statusCode || 500, page('Error', `<h1>Sign-in failed</h1><p>${esc(err.error_description || err.message)}</p>`));
        }
      });
    }
    return oidc(req, res);
  };

  log('info', 'dev IdP listening', {
    issuer, address: `${host}:${boundPort}`, realm: realm.realm, realmFile: realmPath,
    users: [...realm.users.keys()].join(','), clients: [...realm.clients.keys()].join(','),
  });

  async function close() {
    await new Promise((resolve) => {
      server.close(() => resolve());
      server.closeAllConnections();
    });
  }

  return { server, provider, issuer, port: boundPort, close };
}

async function main() {
  let idp;
  try {
    idp = await startIdp();
  } catch (err) {
    log('error', 'failed to start', { error: err.message });
    process.exit(1);
  }
  let stopping = false;
  const stop = (signal) => {
    if (stopping) return;
    stopping = true;
    log('info', 'shutting down', { signal });
    idp.close().then(() => {
      log('info', 'stopped');
      process.exit(0);
    });
    setTimeout(() => process.exit(0), 3000).unref();
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
}

if (process.argv[1] && import.meta.url === pathToFileURL(path.resolve(process.argv[1])).href) {
  main();
}
