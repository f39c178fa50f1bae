// A small protected resource API on loopback, for Latchkey's OAuth tests (node, no deps).
//
//   GET /api/read   needs scope api:read
//   GET /api/write  needs scope api:write
//   GET /user        needs scope read:user  (GitHub-shaped: the signed-in user's profile)
//   GET /user/repos  needs scope repo       (GitHub-shaped: their repositories)
// The GitHub-shaped routes also demand GitHub's REST headers (Accept:
// application/vnd.github+json, X-GitHub-Api-Version: 2022-11-28, a User-Agent) and answer
// 400 without them, as api.github.com does for a missing User-Agent.
//   GET /echo/<anything> needs scope read:user; reflects the request's credential back,
//                    as a misbehaving API might: the Authorization header as is, base64 of
//                    it, base64 of "user:<token>", the token percent-encoded in a URL.
// GET /__test/calls lists the calls answered 200 (path and sub only, never tokens).
// GET /__test/requests lists every request received, answered or not, as
// {"method", "target"} (the request target exactly as sent; never a header).
//
// Bearer tokens are checked against the authorization server (tests/oidc/server.mjs):
//   * opaque tokens by RFC 7662 introspection at its introspection_endpoint, authenticated
//     with client_secret_basic as the resource server's own client (register it first,
//     e.g. POST /__test/clients {"client_id", "client_secret", "grant_types": []});
//     only active access tokens count (a refresh token is rejected: no token_type Bearer);
//   * JWT access tokens (typ at+jwt: what the provider issues for an RFC 8707 `resource`)
//     locally, against the provider's JWKS (signature, iss, exp, and aud when --audience is
//     given). oidc-provider cannot introspect (nor revoke) JWT access tokens: it answers
//     unsupported_token_type, so revoking one has no effect here until it expires.
//
// Answers: no/unknown/inactive token → 401 with WWW-Authenticate: Bearer error="invalid_token"
// (no error code when there is no token at all); valid but without the scope → 403
// error="insufficient_scope"; else 200 {"sub", "scope", "client_id", "aud", "format"}.
//
// Configuration (argv `--name value` wins over the environment):
//   --issuer / RESOURCE_API_ISSUER                 the authorization server (discovery)
//   --client-id / RESOURCE_API_CLIENT_ID           the resource server's client
//   RESOURCE_API_CLIENT_SECRET (environment only, so it never shows in `ps`)
//   --audience / RESOURCE_API_AUDIENCE             comma-separated audiences accepted in JWT
//                                                  access tokens (default: any)
//   --port / RESOURCE_API_PORT                     port on 127.0.0.1, 0 (default) = free
//
// The first line on stdout is JSON: {"url": "http://127.0.0.1:PORT"}. Logs go to stderr
// and never contain tokens.

import http from 'node:http';
import crypto from 'node:crypto';

function parseArgs(argv) {
  const out = {};
  for (let i = 0; i < argv.length; i += 1) {
    const a = argv[i];
    if (!a.startsWith('--')) throw new Error(`unexpected argument ${a}`);
    const eq = a.indexOf('=');
    if (eq !== -1) {
      out[a.slice(2, eq)] = a.slice(eq + 1);
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

const issuer = String(opt('issuer', 'RESOURCE_API_ISSUER', '')).replace(/\/+$/, '');
const clientId = opt('client-id', 'RESOURCE_API_CLIENT_ID', '');
const clientSecret = process.env.RESOURCE_API_CLIENT_SECRET ?? '';
const audiences = String(opt('audience', 'RESOURCE_API_AUDIENCE', ''))
  .split(',').map((s) => s.trim()).filter(Boolean);
const port = Number.parseInt(opt('port', 'RESOURCE_API_PORT', '0'), 10);
if (!issuer || !clientId || !clientSecret) {
  console.error('resource_api: --issuer, --client-id and RESOURCE_API_CLIENT_SECRET are required');
  process.exit(2);
}

const ROUTES = {
  '/api/read': 'api:read',
  '/api/write': 'api:write',
  '/user': 'read:user',
  '/user/repos': 'repo',
};
const GITHUB_ROUTES = new Set(['/user', '/user/repos']);
const calls = [];
const received = [];

// ---- the authorization server
let metadata;
async function discovery() {
  if (!metadata) {
    const r = await fetch(`${issuer}/.well-known/openid-configuration`);
    if (!r.ok) throw new Error(`discovery answered ${r.status}`);
    metadata = await r.json();
  }
  return metadata;
}

// RFC 6749 §2.3.1: id and secret are form-encoded before they go into the Basic header.
const formEncode = (s) => encodeURIComponent(s).replace(/%20/g, '+');
const basic = `Basic ${Buffer.from(`${formEncode(clientId)}:${formEncode(clientSecret)}`).toString('base64')}`;

async function introspect(token) {
  const { introspection_endpoint: endpoint } = await discovery();
  const r = await fetch(endpoint, {
    method: 'POST',
    headers: { authorization: basic, 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json' },
    body: new URLSearchParams({ token, token_type_hint: 'access_token' }).toString(),
  });
  if (r.status !== 200) {
    console.error(`resource_api: introspection answered ${r.status}`);
    return { active: false };
  }
  return r.json();
}

let jwks = { keys: [] };
let jwksFetchedAt = 0;
async function keyFor(kid) {
  const find = () => jwks.keys.find((k) => k.kid === kid);
  // Unknown kid: fetch the key set again (the provider may have restarted with new keys),
  // at most once a second.
  if (!find() && Date.now() - jwksFetchedAt > 1000) {
    const r = await fetch((await discovery()).jwks_uri);
    if (r.ok) {
      jwks = await r.json();
      jwksFetchedAt = Date.now();
    }
  }
  return find();
}

const b64json = (part) => JSON.parse(Buffer.from(part, 'base64url').toString('utf8'));

function looksLikeJwt(token) {
  const parts = token.split('.');
  if (parts.length !== 3) return false;
  try {
    return typeof b64json(parts[0]).alg === 'string';
  } catch {
    return false;
  }
}

const VERIFY = {
  RS256: { hash: 'sha256' },
  RS384: { hash: 'sha384' },
  RS512: { hash: 'sha512' },
  PS256: { hash: 'sha256', padding: crypto.constants.RSA_PKCS1_PSS_PADDING, saltLength: 32 },
  ES256: { hash: 'sha256', dsaEncoding: 'ieee-p1363' },
  ES384: { hash: 'sha384', dsaEncoding: 'ieee-p1363' },
  EdDSA: { hash: null },
};

// A JWT access token (RFC 9068) → introspection-like claims, or { active: false }.
async function verifyJwt(token) {
  const [h, p, s] = token.split('.');
  let header;
  let claims;
  try {
    header = b64json(h);
    claims = b64json(p);
  } catch {
    return { active: false };
  }
  const how = VERIFY[header.alg];
  if (!how || !['at+jwt', 'application/at+jwt'].includes(String(header.typ).toLowerCase())) return { active: false };
  const jwk = await keyFor(header.kid);
  if (!jwk) return { active: false };
  let ok = false;
  try {
    const key = crypto.createPublicKey({ key: jwk, format: 'jwk' });
    const { hash, ...opts } = how;
    ok = crypto.verify(hash, Buffer.from(`${h}.${p}`), { key, ...opts }, Buffer.from(s, 'base64url'));
  } catch {
    ok = false;
  }
  if (!ok) return { active: false };
  const now = Math.floor(Date.now() / 1000);
  if (claims.iss !== issuer) return { active: false };
  if (typeof claims.exp !== 'number' || claims.exp <= now) return { active: false };
  if (typeof claims.nbf === 'number' && claims.nbf > now + 5) return { active: false };
  const aud = Array.isArray(claims.aud) ? claims.aud : [claims.aud];
  if (audiences.length && !aud.some((a) => audiences.includes(a))) return { active: false, wrongAudience: true };
  return { ...claims, active: true, token_type: 'Bearer' };
}

// ---- the API
function send(res, status, body, challenge) {
  const raw = JSON.stringify(body);
  res.statusCode = status;
  res.setHeader('content-type', 'application/json');
  res.setHeader('cache-control', 'no-store');
  if (challenge) res.setHeader('www-authenticate', challenge);
  res.end(raw);
}

const server = http.createServer(async (req, res) => {
  const path = req.url.split('?', 1)[0];
  if (path === '/__test/calls') return send(res, 200, calls);
  if (path === '/__test/requests') return send(res, 200, received);
  received.push({ method: req.method, target: req.url });
  const echo = path.startsWith('/echo/');
  const need = echo ? 'read:user' : ROUTES[path];
  if (!need) return send(res, 404, { error: 'not_found' });
  if (req.method !== 'GET') return send(res, 405, { error: 'method_not_allowed' });
  if (GITHUB_ROUTES.has(path)) {
    const h = req.headers;
    if (h.accept !== 'application/vnd.github+json' || h['x-github-api-version'] !== '2022-11-28' || !h['user-agent']) {
      return send(res, 400, { message: 'GitHub REST headers missing (Accept, X-GitHub-Api-Version, User-Agent)' });
    }
  }
  const m = /^Bearer[ ]+([A-Za-z0-9\-._~+/]+=*)\s*$/i.exec(req.headers.authorization ?? '');
  if (!m) {
    if (req.headers.authorization) {
      return send(res, 401, { error: 'invalid_request' }, 'Bearer realm="resource-api", error="invalid_request"');
    }
    return send(res, 401, { error: 'unauthorized' }, 'Bearer realm="resource-api"');
  }
  const token = m[1];
  let info;
  let format;
  try {
    format = looksLikeJwt(token) ? 'jwt' : 'opaque';
    info = format === 'jwt' ? await verifyJwt(token) : await introspect(token);
  } catch (e) {
    console.error(`resource_api: cannot check the token: ${e?.message ?? e}`);
    return send(res, 502, { error: 'authorization_server_unavailable' });
  }
  // Only access tokens: an (active) refresh token introspects without token_type.
  if (!info?.active || String(info.token_type ?? '').toLowerCase() !== 'bearer') {
    const description = info?.wrongAudience ? 'the token is for another audience' : 'the token is not an active access token';
    return send(res, 401, { error: 'invalid_token', error_description: description },
      `Bearer realm="resource-api", error="invalid_token", error_description="${description}"`);
  }
  const scopes = String(info.scope ?? '').split(' ').filter(Boolean);
  if (!scopes.includes(need)) {
    return send(res, 403, { error: 'insufficient_scope', scope: need },
      `Bearer realm="resource-api", error="insufficient_scope", scope="${need}"`);
  }
  calls.push({ path, sub: info.sub ?? null });
  if (echo) {
    const header = req.headers.authorization;
    return send(res, 200, {
      path,
      headers: { authorization: header },
      basic: Buffer.from(`user:${token}`).toString('base64'),
      encoded: Buffer.from(header).toString('base64'),
      callback: `https://x.test/cb?access_token=${encodeURIComponent(token)}`,
    });
  }
  if (path === '/user') {
    return send(res, 200, { login: info.sub ?? null, id: 1, type: 'User', scope: info.scope ?? '' });
  }
  if (path === '/user/repos') {
    const owner = info.sub ?? 'nobody';
    return send(res, 200, [
      { name: 'latchkey-demo', full_name: `${owner}/latchkey-demo`, private: false },
      { name: 'secret-plans', full_name: `${owner}/secret-plans`, private: true },
    ]);
  }
  return send(res, 200, {
    sub: info.sub ?? null,
    scope: info.scope ?? '',
    client_id: info.client_id ?? null,
    aud: info.aud ?? null,
    format,
  });
});

await new Promise((resolve, reject) => {
  server.once('error', reject);
  server.listen(port, '127.0.0.1', resolve);
});
process.stdout.write(`${JSON.stringify({ url: `http://127.0.0.1:${server.address().port}` })}\n`);

function shutdown() {
  server.close(() => process.exit(0));
  server.closeAllConnections?.();
  setTimeout(() => process.exit(0), 1000).unref();
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
