#!/usr/bin/env node
// Drives static-credential servers in AGP's console in a real browser (Debian's Chromium
// through playwright-core) and prints one JSON line of what it saw: "Add server" refused with a
// key the server does not take (the form keeps the header name, never the value), then added;
// the cards' kind and credential fields; the details page's buttons; a credential rotation.
// Screenshots go to DIR.
//
//   node tools/test-peers/console-servers.mjs --link URL --mcp-url URL --bad-key K --key K \
//        --new-key K --server NAME --connector NAME --shots DIR

import { mkdirSync } from 'node:fs';
import path from 'node:path';

import { chromium } from 'playwright-core';

import { parseArgs } from './lib/args.mjs';

const SPEC = {
  link: { arg: 'URL', help: 'one-time console sign-in link' },
  server: { arg: 'NAME', help: 'the static-credential server to add' },
  'mcp-url': { arg: 'URL', help: 'its MCP endpoint (takes X-Api-Key)' },
  'bad-key': { arg: 'KEY', help: 'a key the server refuses' },
  key: { arg: 'KEY', help: 'a key it takes' },
  'new-key': { arg: 'KEY', help: 'the key to rotate to' },
  connector: { arg: 'NAME', help: 'an OAuth connector beside it' },
  shots: { arg: 'DIR', help: 'where screenshots go' },
};
const opts = parseArgs(process.argv.slice(2), SPEC);
mkdirSync(opts.shots, { recursive: true });

const browser = await chromium.launch({
  executablePath: process.env.AGP_CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync'],
});
const report = {};
try {
  const page = await (await browser.newContext({ viewport: { width: 1366, height: 900 } })).newPage();
  page.setDefaultTimeout(30000);
  await page.goto(opts.link);
  await page.goto(new URL('/console/connectors', opts.link).href);
  // Add server: first with a key the server refuses, then with the right one.
  await page.getByRole('link', { name: 'Add server' }).click();
  await page.getByLabel('Name', { exact: true }).fill(opts.server);
  await page.getByLabel('MCP server URL').fill(opts['mcp-url']);
  await page.getByLabel('Header 1 name').fill('X-Api-Key');
  await page.getByLabel('Header 1 value').fill(opts['bad-key']);
  await page.getByRole('button', { name: 'Add server' }).click();
  await page.waitForLoadState('load');
  report.refused = {
    error: (await page.locator('.form-error').textContent()).trim(),
    header_name: await page.getByLabel('Header 1 name').inputValue(),
    header_value: await page.getByLabel('Header 1 value').inputValue(),
    page: (await page.content()).includes(opts['bad-key']),
  };
  await page.screenshot({ path: path.join(opts.shots, 'servers-00-refused.png'), fullPage: true });
  await page.getByLabel('Header 1 value').fill(opts.key);
  await page.getByRole('button', { name: 'Add server' }).click();
  await page.waitForURL(new RegExp(`/console/connectors/${opts.server}$`));
  report.added_at = new URL(page.url()).pathname;
  await page.goto(new URL('/console/connectors', opts.link).href);
  const field = async (name, f) => {
    const el = page.locator(`article[data-connector="${name}"] [data-field=${f}]`);
    return (await el.count()) ? (await el.textContent()).trim() : null;
  };
  report.cards = {};
  for (const name of [opts.server, opts.connector]) {
    report.cards[name] = {
      kind: await field(name, 'kind'),
      credential: await field(name, 'credential'),
      account: await field(name, 'account'),
    };
  }
  await page.screenshot({ path: path.join(opts.shots, 'servers-01-cards.png'), fullPage: true });
  await page.locator(`article[data-connector="${opts.server}"]`).getByRole('link', { name: 'Details' }).click();
  await page.waitForLoadState('load');
  report.details = {
    text: (await page.locator('main').textContent()).replace(/\s+/g, ' ').trim(),
    reconnect: await page.getByRole('button', { name: 'Reconnect' }).count(),
    disconnect: await page.getByRole('button', { name: 'Disconnect' }).count(),
    remove: await page.getByRole('button', { name: 'Remove' }).count(),
  };
  await page.screenshot({ path: path.join(opts.shots, 'servers-02-details.png'), fullPage: true });
  // Rotate to the new key from the details page.
  await page.getByLabel('Header 1 name').fill('X-Api-Key');
  await page.getByLabel('Header 1 value').fill(opts['new-key']);
  await page.getByRole('button', { name: 'Rotate credential' }).click();
  await page.waitForLoadState('load');
  report.rotated = (await page.locator('main').textContent()).replace(/\s+/g, ' ').trim();
  await page.screenshot({ path: path.join(opts.shots, 'servers-03-rotated.png'), fullPage: true });
} catch (err) {
  report.error = err.message;
} finally {
  await browser.close();
}
process.stdout.write(`${JSON.stringify(report)}\n`);
process.exit(0);
