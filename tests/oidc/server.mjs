// A real OpenID Provider (panva's `oidc-provider`) on loopback, for Latchkey's tests.
//
// Configuration (argv `--name value` wins over the environment):
//   --port / OIDC_PORT                 port on 127.0.0.1; 0 (default) picks a free one
//   --jwks / OIDC_JWKS_FILE            JSON file with a private JWK Set ({"keys": [...]}).
//                                      Restart with another file to rotate keys.
//   --generate-jwks / OIDC_GENERATE_JWKS=1
//                                      write a fresh RSA (RS256) + EC (ES256) set to the
//                                      --jwks file first (overwriting it)
//   --redirect-uris / OIDC_REDIRECT_URIS
//                                      comma-separated redirect URIs of the test client
//                                      (default http://127.0.0.1/callback)
//   --client-id / OIDC_CLIENT_ID       default latchkey-test
//   --client-secret / OIDC_CLIENT_SECRET
//                                      default latchkey-test-secret
//   --id-token-alg / OIDC_ID_TOKEN_ALG default RS256
//   --access-token-ttl / OIDC_ACCESS_TOKEN_TTL   seconds, default 3600
//   --id-token-ttl / OIDC_ID_TOKEN_TTL           seconds, default 3600
//   --rotate-refresh-tokens / OIDC_ROTATE_REFRESH_TOKENS=1
//                                      every refresh returns a new refresh token and
//                                      consumes the old one (reuse → invalid_grant and the
//                                      whole grant is revoked, as oidc-provider does).
//                                      Off (default): never rotates; every refresh answers
//                                      the same refresh token again.
//
// Test controls (loopback only, outside the provider's routes; JSON in and out):
//   POST /__test/clients  {"client_id", "client_secret", "redirect_uris": [...],
//                          "token_endpoint_auth_method"?, "grant_types"?, "scope"?, ...}
//                          adds or replaces a client at runtime (any other client metadata
//                          oidc-provider knows may be given too). Stored through the
//                          provider's adapter like a dynamically registered client, so
//                          oidc-provider validates every request as usual (exact redirect_uri,
//                          secret, PKCE). Answers the stored metadata without the secret.
//                          The --client-id client is registered the same way at startup (and
//                          so can be replaced too). Clients live in memory: a restart forgets
//                          them (tests/python/oidc.py registers them again).
//   GET  /__test/stats    {"grants": {"<grant_type>": {"success": n, "error": n}},
//                          "revocations": n (successful), "revocation": {"success": n, "error": n},
//                          "dropped": {"<grant_type>": n}}
//                          counted per request at the token / revocation endpoint, by the
//                          HTTP status of the answer (success = 200); "dropped" counts token
//                          requests whose client hung up during a delay (never forwarded,
//                          not counted in "grants")
//   POST /__test/stats/reset
//   POST /__test/quirks   {"omit_refresh_token_on_refresh": bool (alias "omit_refresh_token"),
//                          "omit_expires_in": bool, "token_delay_ms": int,
//                          "refresh_delay_ms": int, "code_expires_in": int,
//                          "lenient_client_auth": bool}
//                          any subset; answers the whole current set. Unknown keys → 400.
//                          omit_*: delete the member from the JSON of successful token
//                          responses (the provider's state is unchanged: with rotation on, the
//                          stripped new refresh token is lost and the old one is consumed).
//                          code_expires_in: the expires_in sent back for code exchanges.
//                          token_delay_ms (every token request) + refresh_delay_ms
//                          (refresh_token grants): wait before oidc-provider sees the request;
//                          if the client hangs up meanwhile the request is never forwarded.
//                          lenient_client_auth: see "Client authentication" below.
//   GET  /__test/quirks   the current set
//   POST /__test/quirks/reset
//
// Client authentication at the token, revocation and introspection endpoints is strict: a
// client must use the token_endpoint_auth_method it is registered with (oidc-provider alone
// takes client_secret_basic and client_secret_post interchangeably); a mismatch → 401
// invalid_client. The quirk lenient_client_auth=true restores oidc-provider's behaviour.
//
// The first line on stdout is JSON: {"issuer": "http://127.0.0.1:PORT", "port": PORT}.
// Everything else the provider says goes to stderr.

import http from 'node:http';
import fs from 'node:fs';
import crypto from 'node:crypto';

// oidc-provider prints notices with console.info (stdout); keep stdout for our one line.
console.info = (...args) => console.error(...args);
console.log = (...args) => console.error(...args);

function parseArgs(argv) {
  const out = {};
  for (let i = 0; i < argv.length; i += 1) {
    const a = argv[i];
    if (!a.startsWith('--')) throw new Error(`unexpected argument ${a}`);
    const eq = a.indexOf('=');
    if (eq !== -1) {
      out[a.slice(2, eq)] = a.slice(eq + 1);
    } else if (a === '--generate-jwks') {
      out['generate-jwks'] = '1';
    } else if (a === '--rotate-refresh-tokens') {
      out['rotate-refresh-tokens'] = '1';
    } else {
      if (i + 1 >= argv.length) throw new Error(`missing value for ${a}`);
      out[a.slice(2)] = argv[i + 1];
      i += 1;
    }
  }
  return out;
}

const args = parseArgs(process.argv.slice(2));
const opt = (name, envName, dflt) => args[name] ?? process.env[envName] ?? dflt;

const port = Number.parseInt(opt('port', 'OIDC_PORT', '0'), 10);
const jwksFile = opt('jwks', 'OIDC_JWKS_FILE', '');
const generate = ['1', 'true', 'yes'].includes(String(opt('generate-jwks', 'OIDC_GENERATE_JWKS', '')).toLowerCase());
const redirectUris = opt('redirect-uris', 'OIDC_REDIRECT_URIS', 'http://127.0.0.1/callback')
  .split(',').map((s) => s.trim()).filter(Boolean);
const clientId = opt('client-id', 'OIDC_CLIENT_ID', 'latchkey-test');
const clientSecret = opt('client-secret', 'OIDC_CLIENT_SECRET', 'latchkey-test-secret');
const idTokenAlg = opt('id-token-alg', 'OIDC_ID_TOKEN_ALG', 'RS256');
const accessTokenTtl = Number.parseInt(opt('access-token-ttl', 'OIDC_ACCESS_TOKEN_TTL', '3600'), 10);
const idTokenTtl = Number.parseInt(opt('id-token-ttl', 'OIDC_ID_TOKEN_TTL', '3600'), 10);
const rotateRefreshTokens = ['1', 'true', 'yes'].includes(
  String(opt('rotate-refresh-tokens', 'OIDC_ROTATE_REFRESH_TOKENS', '')).toLowerCase(),
);

function freshJwks() {
  const stamp = `${Date.now().toString(36)}-${crypto.randomBytes(4).toString('hex')}`;
  const rsa = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ format: 'jwk' });
  const ec = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ format: 'jwk' });
  return {
    keys: [
      { ...rsa, kid: `rsa-${stamp}`, alg: 'RS256', use: 'sig' },
      { ...ec, kid: `ec-${stamp}`, alg: 'ES256', use: 'sig' },
    ],
  };
}

let jwks;
if (generate || !jwksFile) {
  jwks = freshJwks();
  if (jwksFile) fs.writeFileSync(jwksFile, JSON.stringify(jwks), { mode: 0o600 });
} else {
  jwks = JSON.parse(fs.readFileSync(jwksFile, 'utf8'));
}

const ACCOUNTS = {
  alice: { email: 'alice@example.test', name: 'Alice Example' },
  bob: { email: 'bob@example.test', name: 'Bob Example' },
};

async function findAccount(_ctx, id) {
  const known = ACCOUNTS[id] ?? { email: `${id}@example.test`, name: id };
  return {
    accountId: id,
    async claims(_use, _scope) {
      return { sub: id, email: known.email, email_verified: true, name: known.name };
    },
  };
}

const { default: Provider } = await import('oidc-provider');
// oidc-provider's own development adapter, on a store of ours: its default store is an LRU
// of 1000 entries, which would silently forget clients and refresh tokens in a long test
// run. This one only drops entries when they expire.
const { default: MemoryAdapter } = await import('oidc-provider/lib/adapters/memory_adapter.js');

class ExpiringStore {
  #map = new Map();

  constructor() {
    setInterval(() => this.sweep(), 30_000).unref();
  }

  get(key) {
    const entry = this.#map.get(key);
    if (!entry) return undefined;
    if (entry.expiry !== undefined && entry.expiry <= Date.now()) {
      this.#map.delete(key);
      return undefined;
    }
    return entry.value;
  }

  set(key, value, { maxAge } = {}) {
    this.#map.set(key, { value, expiry: typeof maxAge === 'number' ? Date.now() + maxAge : undefined });
  }

  delete(key) {
    this.#map.delete(key);
  }

  sweep() {
    const now = Date.now();
    for (const [key, entry] of this.#map) {
      if (entry.expiry !== undefined && entry.expiry <= now) this.#map.delete(key);
    }
  }
}
const store = new ExpiringStore();

const server = http.createServer();
await new Promise((resolve, reject) => {
  server.once('error', reject);
  server.listen(port, '127.0.0.1', resolve);
});
const actualPort = server.address().port;
const issuer = `http://127.0.0.1:${actualPort}`;

const ALL_SCOPES = 'openid email profile offline_access api:read api:write read:user repo';
const clientDefaults = {
  grant_types: ['authorization_code', 'refresh_token', 'client_credentials'],
  token_endpoint_auth_method: 'client_secret_basic',
  id_token_signed_response_alg: idTokenAlg,
  scope: ALL_SCOPES,
};

const configuration = {
  // Every client (the --client-id one too) lives in the adapter: see upsertClient().
  clients: [],
  adapter: (model) => new MemoryAdapter(model, store),
  jwks,
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['name'],
  },
  scopes: ['openid', 'offline_access', 'email', 'profile', 'api:read', 'api:write', 'read:user', 'repo'],
  // Put the scope-derived claims into the ID token too, so tests see email/name there.
  conformIdTokenClaims: false,
  cookies: { keys: [crypto.randomBytes(32).toString('hex')] },
  features: {
    devInteractions: { enabled: true },
    clientCredentials: { enabled: true },
    introspection: { enabled: true },
    revocation: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: async () => undefined,
      useGrantedResource: async () => true,
      getResourceServerInfo: async (_ctx, resourceIndicator) => ({
        scope: 'api:read api:write',
        audience: resourceIndicator,
        accessTokenTTL: accessTokenTtl,
        accessTokenFormat: 'jwt',
        jwt: { sign: { alg: 'RS256' } },
      }),
    },
  },
  pkce: { required: () => true },
  // A refresh token for every code exchange of a client allowed the refresh_token grant,
  // whether or not offline_access was asked for.
  issueRefreshToken: async (_ctx, client) => client.grantTypeAllowed('refresh_token'),
  rotateRefreshToken: rotateRefreshTokens,
  findAccount,
  ttl: {
    AccessToken: accessTokenTtl,
    ClientCredentials: accessTokenTtl,
    IdToken: idTokenTtl,
  },
};

const provider = new Provider(issuer, configuration);
provider.on('server_error', (_ctx, err) => console.error('oidc-provider server_error:', err));

// Add or replace a client: validated by oidc-provider (as client registration would) and
// stored through its adapter, where Client.find() looks for clients that are not static.
async function upsertClient(body) {
  if (!body || typeof body !== 'object' || Array.isArray(body)) throw new Error('expected a JSON object');
  const metadata = { ...clientDefaults, ...body };
  if (typeof metadata.client_id !== 'string' || !metadata.client_id) throw new Error('client_id is required');
  metadata.redirect_uris ??= [];
  // response_types follow grant_types unless given: ["code"] for authorization_code, else none.
  metadata.response_types ??= metadata.grant_types.includes('authorization_code') ? ['code'] : [];
  const client = new provider.Client(metadata);
  await provider.Client.adapter.upsert(client.clientId, client.metadata());
  const { client_secret: _secret, ...shown } = client.metadata();
  return shown;
}
await upsertClient({ client_id: clientId, client_secret: clientSecret, redirect_uris: redirectUris });

// ---- test controls: counters and token-endpoint quirks
const newStats = () => ({ grants: {}, revocations: 0, revocation: { success: 0, error: 0 }, dropped: {} });
let stats = newStats();
const QUIRK_DEFAULTS = {
  omit_refresh_token_on_refresh: false,
  omit_expires_in: false,
  token_delay_ms: 0,
  refresh_delay_ms: 0,
  code_expires_in: 0,
  lenient_client_auth: false,
};
const QUIRK_ALIASES = { omit_refresh_token: 'omit_refresh_token_on_refresh' };
const quirks = { ...QUIRK_DEFAULTS };
const showQuirks = () => ({ ...quirks, omit_refresh_token: quirks.omit_refresh_token_on_refresh });

function setQuirks(body) {
  if (!body || typeof body !== 'object' || Array.isArray(body)) throw new Error('expected a JSON object');
  const next = {};
  for (const [key, value] of Object.entries(body)) {
    const name = QUIRK_ALIASES[key] ?? key;
    if (!(name in QUIRK_DEFAULTS)) throw new Error(`unknown quirk ${key}`);
    const want = typeof QUIRK_DEFAULTS[name];
    if (want === 'boolean' ? typeof value !== 'boolean' : !(Number.isInteger(value) && value >= 0)) {
      throw new Error(`quirk ${key} must be a ${want === 'boolean' ? 'boolean' : 'non-negative integer'}`);
    }
    next[name] = value;
  }
  Object.assign(quirks, next);
}

// Rewrite successful token responses (the provider has done its work already).
provider.use(async (ctx, next) => {
  await next();
  if (ctx.method !== 'POST' || ctx.path !== '/token' || ctx.status !== 200) return;
  if (!ctx.body || typeof ctx.body !== 'object') return;
  const grantType = ctx.req.latchkeyGrantType ?? ctx.oidc?.params?.grant_type;
  if (quirks.omit_refresh_token_on_refresh && grantType === 'refresh_token') delete ctx.body.refresh_token;
  if (quirks.omit_expires_in) delete ctx.body.expires_in;
  // Tell the client the first token is already (nearly) expired, so its next read refreshes.
  if (quirks.code_expires_in > 0 && grantType === 'authorization_code') ctx.body.expires_in = quirks.code_expires_in;
});

const callback = provider.callback();
const BODY_LIMIT = 64 * 1024;

function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    let size = 0;
    req.on('data', (c) => {
      size += c.length;
      if (size > BODY_LIMIT) {
        reject(new Error('request body too large'));
        req.destroy();
        return;
      }
      chunks.push(c);
    });
    req.on('end', () => resolve(Buffer.concat(chunks)));
    req.on('error', reject);
  });
}

async function readJson(req) {
  const raw = (await readBody(req)).toString('utf8');
  return raw ? JSON.parse(raw) : {};
}

// Token and revocation requests: read the body here (so the grant type is known before
// oidc-provider runs), count the outcome, and apply the delays. oidc-provider then takes the
// already-read body from req.body (its documented fallback for pre-parsed bodies).
async function tokenEndpoint(req, res, route) {
  let body;
  try {
    body = await readBody(req);
  } catch {
    if (!res.headersSent && !res.destroyed) {
      res.statusCode = 413;
      res.end();
    }
    return;
  }
  let grantType = 'unknown';
  if (route === 'token') {
    const parsed = new URLSearchParams(body.toString('utf8'));
    grantType = parsed.get('grant_type') || 'unknown';
    req.latchkeyGrantType = grantType;
    const delay = quirks.token_delay_ms + (grantType === 'refresh_token' ? quirks.refresh_delay_ms : 0);
    if (delay > 0) {
      let gone = res.destroyed || req.socket.destroyed;
      if (!gone) {
        await new Promise((resolve) => {
          const onClose = () => { gone = true; clearTimeout(timer); resolve(); };
          const timer = setTimeout(() => { res.off('close', onClose); resolve(); }, delay);
          res.once('close', onClose);
        });
      }
      if (gone || res.destroyed || req.socket.destroyed) {
        stats.dropped[grantType] = (stats.dropped[grantType] ?? 0) + 1;
        return; // the client hung up: the provider never sees this request
      }
    }
  }
  const mismatch = quirks.lenient_client_auth ? null : await clientAuthMismatch(req, body);
  if (mismatch) {
    res.once('finish', () => count(route, grantType, 'error'));
    res.statusCode = 401;
    res.setHeader('content-type', 'application/json; charset=utf-8');
    res.setHeader('cache-control', 'no-store');
    res.setHeader('www-authenticate', `Basic realm="${issuer}"`);
    res.end(JSON.stringify({ error: 'invalid_client', error_description: mismatch }));
    return;
  }
  res.once('finish', () => count(route, grantType, res.statusCode === 200 ? 'success' : 'error'));
  req.body = body;
  return callback(req, res);
}

function count(route, grantType, outcome) {
  if (route === 'token') {
    stats.grants[grantType] ??= { success: 0, error: 0 };
    stats.grants[grantType][outcome] += 1;
  } else if (route === 'revocation') {
    stats.revocation[outcome] += 1;
    if (outcome === 'success') stats.revocations += 1;
  }
}

// oidc-provider accepts client_secret_basic and client_secret_post interchangeably; a
// client must use the method it was registered with here (as many real servers insist),
// so tests see which one Latchkey sends. Anything else is left to oidc-provider.
async function clientAuthMismatch(req, body) {
  const params = new URLSearchParams(body.toString('utf8'));
  const header = req.headers.authorization ?? '';
  const basic = /^basic /i.test(header);
  const post = params.has('client_secret');
  if (basic === post) return null;
  let id = params.get('client_id');
  if (basic) {
    const decoded = Buffer.from(header.slice(6).trim(), 'base64').toString('utf8');
    try {
      id = decodeURIComponent(decoded.slice(0, Math.max(decoded.indexOf(':'), 0)).replace(/\+/g, ' '));
    } catch {
      return null;
    }
  }
  let client;
  try {
    client = id ? await provider.Client.find(id) : undefined;
  } catch {
    return null;
  }
  const registered = client?.tokenEndpointAuthMethod;
  const used = basic ? 'client_secret_basic' : 'client_secret_post';
  if (!['client_secret_basic', 'client_secret_post'].includes(registered) || registered === used) return null;
  return `the client authenticated with ${used}; it is registered for ${registered}`;
}

server.on('request', async (req, res) => {
  const path = req.url.split('?', 1)[0];
  if (req.method === 'POST' && path === '/token') return tokenEndpoint(req, res, 'token');
  if (req.method === 'POST' && path === '/token/revocation') return tokenEndpoint(req, res, 'revocation');
  if (req.method === 'POST' && path === '/token/introspection') return tokenEndpoint(req, res, 'introspection');
  if (!path.startsWith('/__test/')) return callback(req, res);
  const reply = (obj, status = 200) => {
    res.statusCode = status;
    res.setHeader('content-type', 'application/json');
    res.setHeader('cache-control', 'no-store');
    res.end(JSON.stringify(obj));
  };
  try {
    if (req.method === 'GET' && path === '/__test/stats') return reply(stats);
    if (req.method === 'POST' && path === '/__test/stats/reset') {
      stats = newStats();
      return reply(stats);
    }
    if (req.method === 'POST' && path === '/__test/quirks') {
      setQuirks(await readJson(req));
      return reply(showQuirks());
    }
    if (req.method === 'GET' && path === '/__test/quirks') return reply(showQuirks());
    if (req.method === 'POST' && path === '/__test/quirks/reset') {
      Object.assign(quirks, QUIRK_DEFAULTS);
      return reply(showQuirks());
    }
    if (req.method === 'POST' && path === '/__test/clients') {
      return reply(await upsertClient(await readJson(req)));
    }
  } catch (e) {
    const message = e?.error_description ? `${e.message}: ${e.error_description}` : String(e?.message ?? e);
    return reply({ error: message }, 400);
  }
  return reply({ error: 'unknown test control' }, 404);
});

process.stdout.write(`${JSON.stringify({ issuer, port: actualPort })}\n`);

function shutdown() {
  server.close(() => process.exit(0));
  server.closeAllConnections?.();
  setTimeout(() => process.exit(0), 1000).unref();
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
