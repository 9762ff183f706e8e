#!/usr/bin/env node
// Loads AGP's API explorer (Swagger UI at /api/v1/docs) in a real browser (Debian's Chromium
// through playwright-core), waits for the operations to render, opens one, authorizes with the
// admin token and runs "Try it out" on it, takes a screenshot, and prints one JSON line of what it
// saw. The Rust test (tests/api/api_explorer.rs) starts AGP, runs this and checks the report.
//
//   node tools/test-peers/api-explorer.mjs --url http://127.0.0.1:PORT --token TOKEN --shots DIR

import { mkdirSync } from 'node:fs';
import path from 'node:path';

import { chromium } from 'playwright-core';

import { parseArgs } from './lib/args.mjs';

const SPEC = {
  url: { arg: 'URL', help: "AGP's base URL" },
  token: { arg: 'TOKEN', help: 'the admin token, for "Try it out"' },
  shots: { arg: 'DIR', help: 'where the screenshots go' },
};
const opts = parseArgs(process.argv.slice(2), SPEC);
mkdirSync(opts.shots, { recursive: true });
const report = { ok: false };

const browser = await chromium.launch({
  executablePath: process.env.AGP_CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
const context = await browser.newContext({ viewport: { width: 1366, height: 900 } });
const page = await context.newPage();
// Everything the page asks for, so the test can tell that nothing left this origin.
const origin = new URL(opts.url).origin;
const requests = [];
page.on('request', (r) => requests.push(r.url()));
const cspErrors = [];
const pageErrors = [];
page.on('console', (m) => {
  if (/Content Security Policy|Refused to/i.test(m.text())) cspErrors.push(m.text());
});
page.on('pageerror', (e) => pageErrors.push(String(e)));
const shot = (name) => page.screenshot({ path: path.join(opts.shots, `${name}.png`), fullPage: false });

try {
  const response = await page.goto(`${opts.url}/api/v1/docs`, { waitUntil: 'load' });
  report.status = response.status();
  report.csp = response.headers()['content-security-policy'] || null;
  await page.waitForSelector('.opblock', { timeout: 30000 });
  report.title = (await page.locator('.information-container .title').first().textContent()).trim();
  report.operations = await page.locator('.opblock').count();
  report.paths = await page.locator('.opblock-summary-path').evaluateAll(
    (els) => els.map((e) => e.getAttribute('data-path') || e.textContent.trim()),
  );
  report.tags = await page.locator('.opblock-tag').evaluateAll((els) => els.map((e) => e.getAttribute('data-tag')));
  await shot('api-explorer');

  // Authorize with the admin token, then try GET /api/v1/audit/verify from the page.
  await page.click('button.authorize');
  const dialog = page.locator('.dialog-ux');
  await dialog.locator('input[type=text], input[type=password]').first().fill(opts.token);
  await dialog.locator('button.authorize').first().click();
  await dialog.locator('button.close-modal').click();
  const verify = page.locator('.opblock-get', { has: page.locator('[data-path="/api/v1/audit/verify"]') }).first();
  await verify.locator('.opblock-summary').click();
  await verify.locator('button.try-out__btn').click();
  await verify.locator('button.execute').click();
  const body = verify.locator('.responses-wrapper .live-responses-table .response-col_description pre').first();
  await body.waitFor({ timeout: 30000 });
  report.tried = JSON.parse(await body.textContent());
  report.tried_status = (await verify.locator('.live-responses-table .response .response-col_status').first().textContent()).trim();
  await verify.scrollIntoViewIfNeeded();
  await shot('api-explorer-try-it-out');
  report.ok = true;
} catch (e) {
  report.error = String(e && e.stack ? e.stack : e);
  await shot('api-explorer-failed').catch(() => {});
} finally {
  report.csp_errors = cspErrors;
  report.page_errors = pageErrors;
  report.foreign_requests = requests.filter((u) => !u.startsWith(origin) && !u.startsWith('data:'));
  await browser.close();
  console.log(JSON.stringify(report));
}
