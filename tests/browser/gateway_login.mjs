// Log in through `latchkey serve gateway` in real headless Chromium (Debian's
// /usr/bin/chromium driven by playwright-core): open a gateway URL, get sent to the
// identity provider (oidc-provider's devInteractions login and consent forms), fill them
// in, land back on the upstream page through the gateway, and take a screenshot.
//
// With `--logout-check API_URL` it then tries to sign the user out the ways another site
// could, and finally with the gateway's own sign-out page (issue 12, item 11), checking
// after each whether the session still opens API_URL (a gateway `api` route: 200 signed
// in, 401 not):
// - a link on a cross-site page (http://attacker.test:PORT, mapped to 127.0.0.1) to
//   /oauth2/logout, clicked: a top-level cross-site GET;
// - a form on a same-site page of another origin (http://127.0.0.1:PORT) that POSTs to
//   /oauth2/logout by itself (the SameSite=Lax session cookie goes along);
// - the gateway's /oauth2/logout page and its "Sign out" button.
//
// Usage: node gateway_login.mjs --url URL --user NAME --screenshot FILE
//                               [--expect-text TEXT] [--chromium PATH] [--timeout-ms N]
//                               [--logout-check API_URL]
// The one line on stdout is JSON: {"finalUrl", "title", "text", "hops": [urls...],
// "offOriginRequests": [urls blocked because they left 127.0.0.1], "logout": {...} with
// --logout-check}. Exit 1 with a JSON {"error"} line on failure (a screenshot of where it
// stopped is still written).

import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';

import { chromiumArgs, chromiumPath, parseArgs } from './common.mjs';

const args = parseArgs(process.argv.slice(2));
const url = args.url;
const user = args.user ?? 'alice';
const screenshot = args.screenshot;
const expectText = args['expect-text'];
const timeout = Number.parseInt(args['timeout-ms'] ?? '30000', 10);
const executablePath = chromiumPath(args);
const logoutCheck = args['logout-check'];
if (!url || !screenshot) {
  console.error('usage: node gateway_login.mjs --url URL --user NAME --screenshot FILE');
  process.exit(2);
}

/** Whether the browser's session still opens `apiUrl` (200), or not (401). */
async function signedIn(apiUrl) {
  const r = await context.request.get(apiUrl, { maxRedirects: 0, headers: { accept: 'application/json' } });
  if (r.status() !== 200 && r.status() !== 401) throw new Error(`${apiUrl} answered ${r.status()}`);
  return r.status() === 200;
}

/** The other-site pages: /link (a link to the gateway's logout) and /post (a form that
 * POSTs there as soon as it loads). */
async function attackerSite(gatewayOrigin) {
  const logoutUrl = `${gatewayOrigin}/oauth2/logout`;
  const server = http.createServer((req, res) => {
    const body = req.url === '/post'
      ? `<!doctype html><title>other</title><form id=f method=post action="${logoutUrl}"><input name=x value=1></form><script>document.getElementById('f').submit()</script>`
      : `<!doctype html><title>other</title><a id=go href="${logoutUrl}">win a prize</a>`;
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
    res.end(body);
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { server, port: server.address().port };
}

/** The three sign-out attempts of --logout-check, each with its outcome. */
async function checkLogout(gatewayOrigin, apiUrl) {
  const out = { before: await signedIn(apiUrl) };
  const { server, port } = await attackerSite(gatewayOrigin);
  try {
    // 1. A cross-site link, clicked: the gateway's confirmation page, nothing more.
    await page.goto(`http://attacker.test:${port}/link`, { waitUntil: 'domcontentloaded' });
    const [crossGet] = await Promise.all([
      page.waitForNavigation({ waitUntil: 'domcontentloaded' }),
      page.click('#go'),
    ]);
    out.crossSiteGet = {
      status: crossGet ? crossGet.status() : null,
      url: page.url(),
      hasSignOutButton: (await page.$('form[method="post"][action="/oauth2/logout"] button')) !== null,
      stillSignedIn: await signedIn(apiUrl),
    };
    // 2. A same-site page of another origin POSTs the logout by itself.
    const isLogoutPost = (r) => r.url() === `${gatewayOrigin}/oauth2/logout` && r.request().method() === 'POST';
    const [crossPost] = await Promise.all([
      page.waitForResponse(isLogoutPost),
      page.goto(`http://127.0.0.1:${port}/post`, { waitUntil: 'domcontentloaded' }),
    ]);
    await page.waitForLoadState('domcontentloaded');
    out.sameSitePost = {
      status: crossPost.status(),
      origin: (await crossPost.request().allHeaders()).origin ?? null,
      text: await page.evaluate(() => document.body.innerText),
      stillSignedIn: await signedIn(apiUrl),
    };
    // 3. The gateway's own page and button: signed out, on to the provider.
    await page.goto(`${gatewayOrigin}/oauth2/logout`, { waitUntil: 'domcontentloaded' });
    const [ownPost] = await Promise.all([
      page.waitForResponse(isLogoutPost),
      page.waitForNavigation({ waitUntil: 'domcontentloaded' }),
      page.click('button[type="submit"]'),
    ]);
    out.ownPost = {
      status: ownPost.status(),
      origin: (await ownPost.request().allHeaders()).origin ?? null,
      location: ownPost.headers().location ?? null,
      url: page.url(),
      stillSignedIn: await signedIn(apiUrl),
    };
  } finally {
    server.close();
  }
  return out;
}

const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'lk-chromium-'));
const hops = [];
const offOrigin = [];
let context;
let page;
let exitCode = 0;
try {
  // A fresh profile each run (playwright passes it as --user-data-dir).
  context = await chromium.launchPersistentContext(userDataDir, {
    executablePath,
    headless: true,
    timeout,
    viewport: { width: 1000, height: 700 },
    // A second site on loopback for the cross-site checks.
    args: chromiumArgs('--host-resolver-rules=MAP attacker.test 127.0.0.1'),
  });
  // Offline machine: anything not on loopback (the IdP page's web font) is answered at once
  // instead of waiting on DNS.
  await context.route('**/*', (route) => {
    const host = new URL(route.request().url()).hostname;
    if (host === '127.0.0.1' || host === 'localhost' || host === 'attacker.test') return route.continue();
    offOrigin.push(route.request().url());
    return route.abort();
  });
  page = await context.newPage();
  page.setDefaultTimeout(timeout);
  page.on('framenavigated', (frame) => {
    if (frame === page.mainFrame()) hops.push(frame.url());
  });

  await page.goto(url, { waitUntil: 'domcontentloaded' });
  // The IdP's login form.
  await page.waitForSelector('input[name="login"]');
  await page.fill('input[name="login"]', user);
  await page.fill('input[name="password"]', 'any-password');
  await Promise.all([
    page.waitForNavigation({ waitUntil: 'domcontentloaded' }),
    page.click('button[type="submit"]'),
  ]);
  // The consent form (skipped by the IdP when consent was given before).
  const target = new URL(url);
  if (new URL(page.url()).origin !== target.origin) {
    const consent = await page.$('input[name="prompt"][value="consent"]');
    if (consent) {
      await Promise.all([
        page.waitForNavigation({ waitUntil: 'domcontentloaded' }),
        page.click('button[type="submit"]'),
      ]);
    }
  }
  await page.waitForURL((u) => u.origin === target.origin && !u.pathname.startsWith('/oauth2/'), {
    waitUntil: 'domcontentloaded',
  });
  if (expectText) await page.waitForSelector(`text=${expectText}`);
  const text = await page.evaluate(() => document.body.innerText);
  const title = await page.title();
  const finalUrl = page.url();
  const logout = logoutCheck ? await checkLogout(target.origin, logoutCheck) : undefined;
  console.log(JSON.stringify({ finalUrl, title, text, hops, offOriginRequests: offOrigin, logout }));
} catch (err) {
  exitCode = 1;
  console.log(JSON.stringify({ error: String(err && err.stack ? err.stack : err), finalUrl: page ? page.url() : null, hops }));
} finally {
  try {
    if (page) {
      fs.mkdirSync(path.dirname(screenshot), { recursive: true });
      await page.screenshot({ path: screenshot, fullPage: true });
    }
  } catch (err) {
    console.error(`screenshot failed: ${err}`);
    exitCode = 1;
  }
  if (context) await context.close();
  fs.rmSync(userDataDir, { recursive: true, force: true });
}
process.exit(exitCode);
