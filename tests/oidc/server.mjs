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
//                                      whole grant is revoked, as oidc-provider does)
//
// Test controls (loopback only, outside the provider's routes):
//   GET  /__test/stats    {"grants": {"<grant_type>": {"success": n, "error": n}}, "revocations": n}
//   POST /__test/stats/reset
//   POST /__test/quirks   {"omit_refresh_token": bool, "omit_expires_in": bool,
//                          "token_delay_ms": int, "code_expires_in": int}: rewrite token
//                          responses (code_expires_in: the expires_in of code exchanges) / delay token
//                          requests before the provider sees them (a client that hangs up
//                          during the delay never reaches the provider)
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

const server = http.createServer();
await new Promise((resolve, reject) => {
  server.once('error', reject);
  server.listen(port, '127.0.0.1', resolve);
});
const actualPort = server.address().port;
const issuer = `http://127.0.0.1:${actualPort}`;

const configuration = {
  clients: [
    {
      client_id: clientId,
      client_secret: clientSecret,
      redirect_uris: redirectUris,
      grant_types: ['authorization_code', 'refresh_token', 'client_credentials'],
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_basic',
      id_token_signed_response_alg: idTokenAlg,
      scope: 'openid email profile offline_access api:read api:write',
    },
  ],
  jwks,
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['name'],
  },
  scopes: ['openid', 'offline_access', 'email', 'profile', 'api:read', 'api:write'],
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
  issueRefreshToken: async (_ctx, client) => client.grantTypeAllowed('refresh_token'),
  ...(rotateRefreshTokens ? { rotateRefreshToken: true } : {}),
  findAccount,
  ttl: {
    AccessToken: accessTokenTtl,
    ClientCredentials: accessTokenTtl,
    IdToken: idTokenTtl,
  },
};

const provider = new Provider(issuer, configuration);
provider.on('server_error', (_ctx, err) => console.error('oidc-provider server_error:', err));

// ---- test controls: counters and token-endpoint quirks
const stats = { grants: {}, revocations: 0 };
const quirks = { omit_refresh_token: false, omit_expires_in: false, token_delay_ms: 0, code_expires_in: 0 };
const count = (ctx, outcome) => {
  const type = String(ctx.oidc?.params?.grant_type ?? 'unknown');
  stats.grants[type] ??= { success: 0, error: 0 };
  stats.grants[type][outcome] += 1;
};
provider.on('grant.success', (ctx) => count(ctx, 'success'));
provider.on('grant.error', (ctx) => count(ctx, 'error'));
provider.use(async (ctx, next) => {
  const isToken = ctx.method === 'POST' && ctx.path === '/token';
  if (isToken && quirks.token_delay_ms > 0) {
    await new Promise((resolve) => setTimeout(resolve, quirks.token_delay_ms));
    if (ctx.req.socket.destroyed) return; // the client hung up: never reaches the provider
  }
  await next();
  if (ctx.method === 'POST' && ctx.path === '/token/revocation' && ctx.status === 200) {
    stats.revocations += 1;
  }
  if (isToken && ctx.status === 200 && ctx.body && typeof ctx.body === 'object') {
    if (quirks.omit_refresh_token && ctx.oidc?.params?.grant_type === 'refresh_token') {
      delete ctx.body.refresh_token;
    }
    if (quirks.omit_expires_in) delete ctx.body.expires_in;
    // Tell the client the first token is already (nearly) expired, so its next read refreshes.
    if (quirks.code_expires_in > 0 && ctx.oidc?.params?.grant_type === 'authorization_code') {
      ctx.body.expires_in = quirks.code_expires_in;
    }
  }
});

const callback = provider.callback();
function readJson(req) {
  return new Promise((resolve, reject) => {
    let data = '';
    req.on('data', (c) => { data += c; });
    req.on('end', () => { try { resolve(data ? JSON.parse(data) : {}); } catch (e) { reject(e); } });
  });
}
server.on('request', async (req, res) => {
  if (!req.url.startsWith('/__test/')) return callback(req, res);
  const reply = (obj) => { res.setHeader('content-type', 'application/json'); res.end(JSON.stringify(obj)); };
  try {
    if (req.method === 'GET' && req.url === '/__test/stats') return reply(stats);
    if (req.method === 'POST' && req.url === '/__test/stats/reset') {
      stats.grants = {};
      stats.revocations = 0;
      return reply(stats);
    }
    if (req.method === 'POST' && req.url === '/__test/quirks') {
      Object.assign(quirks, await readJson(req));
      return reply(quirks);
    }
  } catch (e) {
    res.statusCode = 400;
    return reply({ error: String(e) });
  }
  res.statusCode = 404;
  return reply({ error: 'unknown test control' });
});

process.stdout.write(`${JSON.stringify({ issuer, port: actualPort })}\n`);

function shutdown() {
  server.close(() => process.exit(0));
  setTimeout(() => process.exit(0), 1000).unref();
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
