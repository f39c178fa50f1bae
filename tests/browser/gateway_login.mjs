// Log in through `latchkey serve gateway` in real headless Chromium (Debian's
// /usr/bin/chromium driven by playwright-core): open a gateway URL, get sent to the
// identity provider (oidc-provider's devInteractions login and consent forms), fill them
// in, land back on the upstream page through the gateway, and take a screenshot.
//
// Usage: node gateway_login.mjs --url URL --user NAME --screenshot FILE
//                               [--expect-text TEXT] [--chromium PATH] [--timeout-ms N]
// The one line on stdout is JSON: {"finalUrl", "title", "text", "hops": [urls...],
// "offOriginRequests": [urls blocked because they left 127.0.0.1]}. Exit 1 with a JSON
// {"error"} line on failure (a screenshot of where it stopped is still written).

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';

function parseArgs(argv) {
  const out = {};
  for (let i = 0; i < argv.length; i += 2) {
    if (!argv[i].startsWith('--') || i + 1 >= argv.length) throw new Error(`bad argument ${argv[i]}`);
    out[argv[i].slice(2)] = argv[i + 1];
  }
  return out;
}

const args = parseArgs(process.argv.slice(2));
const url = args.url;
const user = args.user ?? 'alice';
const screenshot = args.screenshot;
const expectText = args['expect-text'];
const timeout = Number.parseInt(args['timeout-ms'] ?? '30000', 10);
const executablePath = args.chromium ?? process.env.LATCHKEY_TEST_CHROMIUM ?? '/usr/bin/chromium';
if (!url || !screenshot) {
  console.error('usage: node gateway_login.mjs --url URL --user NAME --screenshot FILE');
  process.exit(2);
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
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
    ],
  });
  // Offline machine: anything not on loopback (the IdP page's web font) is answered at once
  // instead of waiting on DNS.
  await context.route('**/*', (route) => {
    const host = new URL(route.request().url()).hostname;
    if (host === '127.0.0.1' || host === 'localhost') return route.continue();
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
  console.log(JSON.stringify({ finalUrl: page.url(), title, text, hops, offOriginRequests: offOrigin }));
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
