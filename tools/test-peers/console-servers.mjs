#!/usr/bin/env node
// Looks at static-credential servers in AGP's console in a real browser (Debian's Chromium
// through playwright-core) and prints one JSON line of what it saw: the cards' kind and
// credential fields, and the details page's lifecycle buttons. Screenshots go to DIR.
//
//   node tools/test-peers/console-servers.mjs --link URL --server NAME --connector NAME --shots DIR

import { mkdirSync } from 'node:fs';
import path from 'node:path';

import { chromium } from 'playwright-core';

import { parseArgs } from './lib/args.mjs';

const SPEC = {
  link: { arg: 'URL', help: 'one-time console sign-in link' },
  server: { arg: 'NAME', help: 'a static-credential server to look at' },
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
} catch (err) {
  report.error = err.message;
} finally {
  await browser.close();
}
process.stdout.write(`${JSON.stringify(report)}\n`);
process.exit(0);
