// The seed's flow through `latchkey dev` in real headless Chromium (Debian's
// /usr/bin/chromium driven by playwright-core), as a person does it: open the gateway,
// sign in as USER at the development identity provider, ask the agent "Who am I on
// GitHub?" on the chat page, press Authorize (a new tab), approve at the sandbox's consent
// page, see "Authorization complete" from the session binding service, and watch the chat
// continue with the user's sandbox login. A screenshot of each page a person sees goes to
// DIR (login, chat-authorize, consent, binding-complete, chat-answer). Then the connections
// page: the grant is listed (connections), Revoke removes it (connections-revoked), and the
// next question asks for consent again and is answered after it.
//
// Usage: node dev_chat.mjs --url GATEWAY_URL --user NAME --dir DIR [--chromium PATH]
// The one line on stdout is JSON: {"answer", "consentText", "bindingText", "connectionsText",
// "revokedText", "reconsented", "hops"}; exit 1
// with a JSON {"error"} line on failure (a screenshot of where it stopped is still written).

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';

import { chromiumArgs, chromiumPath, parseArgs } from './common.mjs';

const args = parseArgs(process.argv.slice(2));
const { url, dir } = args;
const user = args.user ?? 'alice';
const executablePath = chromiumPath(args);
const timeout = 30000;
if (!url || !dir) {
  console.error('usage: node dev_chat.mjs --url GATEWAY_URL --user NAME --dir DIR');
  process.exit(2);
}
fs.mkdirSync(dir, { recursive: true });

const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'lk-dev-chromium-'));
const hops = [];
let context;
let page;
let current;
let exitCode = 0;
const shot = async (p, name) => p.screenshot({ path: path.join(dir, `${name}.png`), fullPage: true });
try {
  context = await chromium.launchPersistentContext(userDataDir, {
    executablePath,
    headless: true,
    timeout,
    viewport: { width: 900, height: 700 },
    args: chromiumArgs(),
  });
  // Loopback only: anything else would be a page reaching off the machine.
  await context.route('**/*', (route) => {
    const host = new URL(route.request().url()).hostname;
    return host === '127.0.0.1' ? route.continue() : route.abort();
  });
  page = await context.newPage();
  current = page;
  page.setDefaultTimeout(timeout);
  page.on('framenavigated', (frame) => {
    if (frame === page.mainFrame()) hops.push(frame.url());
  });

  // Sign in at the development identity provider.
  await page.goto(`${url}/`, { waitUntil: 'domcontentloaded' });
  await page.waitForSelector(`button[value="${user}"]`);
  await shot(page, 'login');
  await page.click(`button[value="${user}"]`);

  // The chat: ask, and wait for the Authorize button.
  await page.waitForSelector('#message');
  await page.fill('#message', 'Who am I on GitHub?');
  await page.keyboard.press('Enter');
  const authorize = await page.waitForSelector('a.authorize');
  await shot(page, 'chat-authorize');

  // Authorize opens a new tab: the sandbox's consent page.
  const [tab] = await Promise.all([context.waitForEvent('page'), authorize.click()]);
  current = tab;
  tab.setDefaultTimeout(timeout);
  await tab.waitForSelector(`button[value="${user}"]`);
  const consentText = await tab.evaluate(() => document.body.innerText);
  await shot(tab, 'consent');
  await tab.click(`button[value="${user}"]`);
  await tab.waitForSelector('text=Authorization complete');
  const bindingText = await tab.evaluate(() => document.body.innerText);
  await shot(tab, 'binding-complete');

  // Back in the chat, the same answer continues.
  current = page;
  await page.bringToFront();
  await page.waitForSelector('li.assistant >> text=on GitHub');
  const answer = await page.evaluate(() => [...document.querySelectorAll('li.assistant')].map((li) => li.textContent).join('\n'));
  await shot(page, 'chat-answer');

  // The connections page lists the grant; Revoke takes it back, and the next question
  // asks for consent again.
  await page.goto(`${url}/connections`, { waitUntil: 'domcontentloaded' });
  await page.waitForSelector('text=Your connections');
  const connectionsText = await page.evaluate(() => document.body.innerText);
  await shot(page, 'connections');
  await page.click('button:has-text("Revoke")');
  await page.waitForSelector('text=The provider confirmed it');
  const revokedText = await page.evaluate(() => document.body.innerText);
  await shot(page, 'connections-revoked');
  await page.goto(`${url}/`, { waitUntil: 'domcontentloaded' });
  await page.waitForSelector('#message');
  await page.fill('#message', 'Who am I on GitHub?');
  await page.keyboard.press('Enter');
  const again = await page.waitForSelector('a.authorize');
  const [tab2] = await Promise.all([context.waitForEvent('page'), again.click()]);
  current = tab2;
  tab2.setDefaultTimeout(timeout);
  await tab2.waitForSelector(`button[value="${user}"]`);
  await tab2.click(`button[value="${user}"]`);
  await tab2.waitForSelector('text=Authorization complete');
  current = page;
  await page.bringToFront();
  await page.waitForSelector('li.assistant >> text=on GitHub');
  const reconsented = await page.evaluate(() => [...document.querySelectorAll('li.assistant')].map((li) => li.textContent).join('\n'));
  console.log(JSON.stringify({ answer, consentText, bindingText, connectionsText, revokedText, reconsented, hops }));
} catch (err) {
  exitCode = 1;
  console.log(JSON.stringify({ error: String(err && err.stack ? err.stack : err), url: current ? current.url() : null, hops }));
  try {
    if (current) await shot(current, 'failure');
  } catch {}
} finally {
  if (context) await context.close();
  fs.rmSync(userDataDir, { recursive: true, force: true });
}
process.exit(exitCode);
