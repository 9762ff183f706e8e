#!/usr/bin/env node
// Drives AGP's console in a real browser (Debian's Chromium through playwright-core) the way an
// admin would, against the real peers, and prints one JSON line of what it saw. The Rust test
// (tests/api/console_e2e.rs) starts AGP and the peers, prepares a profile and an agent through
// the API, runs this, and checks both this report and the server's state.
//
//   node tools/test-peers/console-flow.mjs --link URL --mcp-url URL --bad-url URL \
//        --profile NAME --agent-key KEY --shots DIR [--login alice]
//
// Steps: sign in with a one-time link; add a DCR connector and complete the real provider's
// consent in the new tab; see the card turn active; details and "Copy as JSON"; discover,
// register with create_page changed to read, grant; an add error shown on the form; approve a
// held call from the inbox while an official-SDK agent waits; disconnect, reconnect (consent
// again), remove with the typed name. A screenshot of each page goes to DIR.

import { spawn } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';

import { chromium } from 'playwright-core';

import { parseArgs } from './lib/args.mjs';

const SPEC = {
  link: { arg: 'URL', help: 'one-time console sign-in link' },
  'mcp-url': { arg: 'URL', help: 'the MCP server to connect' },
  'bad-url': { arg: 'URL', help: 'an MCP URL whose discovery fails' },
  profile: { arg: 'NAME', help: 'profile to grant the registered tools to' },
  'agent-key': { arg: 'KEY', help: 'an agent of that profile (its calls of read tools hold)' },
  shots: { arg: 'DIR', help: 'where screenshots go' },
  login: { default: 'alice', arg: 'NAME', help: 'login at the provider' },
  'client-id': { arg: 'ID', help: 'a client registered at the provider (client_secret_post)' },
  'client-secret': { arg: 'SECRET', help: 'its secret' },
};
const opts = parseArgs(process.argv.slice(2), SPEC);
const here = path.dirname(fileURLToPath(import.meta.url));
mkdirSync(opts.shots, { recursive: true });
const report = { steps: [] };
const step = (name, data = {}) => report.steps.push({ name, ...data });

const browser = await chromium.launch({
  executablePath: process.env.AGP_CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
const origin = new URL(opts.link).origin;
const context = await browser.newContext({ viewport: { width: 1366, height: 900 } });
await context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin });
const page = await context.newPage();
const cspErrors = [];
page.on('console', (m) => { if (/Content Security Policy/i.test(m.text())) cspErrors.push(m.text()); });
const shot = (name, p = page) => p.screenshot({ path: path.join(opts.shots, `${name}.png`), fullPage: true });

/// Walks the provider's login and consent pages in `popup` until AGP's result page.
async function consent(popup) {
  for (let i = 0; i < 12; i += 1) {
    await popup.waitForLoadState('load');
    if (popup.url().includes('/connect/result/')) return (await popup.textContent('body')).trim();
    if (await popup.locator('input[name=login]').count()) {
      await popup.fill('input[name=login]', opts.login);
      await popup.fill('input[name=password]', 'x');
      await Promise.all([popup.waitForNavigation(), popup.locator('button[type=submit], input[type=submit]').first().click()]);
    } else if (await popup.locator('input[name=prompt][value=consent]').count()) {
      await Promise.all([popup.waitForNavigation(), popup.locator('button[type=submit], input[type=submit]').first().click()]);
    } else {
      await popup.waitForTimeout(200);
    }
  }
  await shot('99-consent-stuck', popup).catch(() => {});
  const text = (await popup.textContent('body').catch(() => '')).trim().slice(0, 300);
  throw new Error(`consent did not finish at ${popup.url()}: ${text}`);
}

async function cardStatus(name) {
  return page.locator(`article[data-connector="${name}"] [data-status]`).getAttribute('data-status');
}

try {
  // Sign in with the one-time link.
  await page.goto(opts.link);
  step('signed-in', { url: page.url() });
  await shot('01-connectors-empty');

  // Add connector → consent in a new tab → the card turns active.
  await page.getByRole('link', { name: 'Add connector' }).first().click();
  await page.getByLabel('Name', { exact: true }).fill('notion');
  await page.getByLabel('MCP server URL').fill(opts['mcp-url']);
  // `openid email profile` beside the server's scopes: the card then names the account.
  await page.getByLabel('Scopes').fill('openid email profile mcp:read mcp:write');
  await shot('02-add-connector');
  const [popup] = await Promise.all([
    context.waitForEvent('page'),
    page.getByRole('button', { name: 'Add & authorize' }).click(),
  ]);
  const result = await consent(popup);
  await shot('03-consent-result', popup);
  await popup.close();
  await page.waitForURL(/\/console\/connectors\?added=notion/);
  await page.bringToFront();
  await page.evaluate(() => window.dispatchEvent(new Event('focus')));
  await page.waitForFunction(() => document.querySelector('article[data-connector="notion"] [data-status]')?.dataset.status === 'active', null, { timeout: 15000 });
  const card = page.locator('article[data-connector="notion"]');
  step('connector-active', {
    consent: result,
    status: await cardStatus('notion'),
    account: (await card.locator('[data-field=account]').textContent()).trim(),
    scopes: (await card.locator('[data-field=granted_scopes]').textContent()).trim(),
  });
  await shot('04-connector-active');

  // Details and "Copy as JSON".
  await card.getByRole('link', { name: 'Details' }).click();
  await page.getByRole('button', { name: 'Copy as JSON' }).click();
  const copied = JSON.parse(await page.evaluate(() => navigator.clipboard.readText()));
  step('details', { copied_name: copied.name, copied_status: copied.status, redirect_uri: copied.redirect_uri });
  await shot('05-details');

  // Discover → register (create_page changed to read) → grant.
  await page.getByRole('link', { name: 'Discover tools' }).click();
  for (const box of await page.locator('input[name=tool]').all()) {
    const value = await box.getAttribute('value');
    if (value === 'echo' || value === 'create_page') await box.check();
    else await box.uncheck();
  }
  await page.getByLabel('Operation of create_page').selectOption('read');
  await page.getByLabel('Server alias').fill('notion');
  await shot('06-discover-tools');
  await page.getByRole('button', { name: 'Register' }).click();
  const registered = await page.locator('table.grid td.mono').allTextContents();
  await page.getByLabel('Profile').selectOption(opts.profile);
  await page.getByLabel('Reason').fill('support needs these');
  await shot('07-registered');
  await page.getByRole('button', { name: 'Grant' }).click();
  step('registered', { tools: registered, after: page.url() });

  // Errors appear on the form.
  await page.goto(`${origin}/console/connectors/new`);
  await page.getByLabel('Name', { exact: true }).fill('broken');
  await page.getByLabel('MCP server URL').fill(opts['bad-url']);
  await page.getByRole('button', { name: 'Add & authorize' }).click();
  const alert = page.locator('[data-form-error]');
  await alert.waitFor({ state: 'visible' });
  step('form-error', { text: (await alert.textContent()).trim(), url: page.url() });
  await shot('08-form-error');

  // A held call approved from the inbox while the official SDK's client waits.
  const agent = spawn('node', [path.join(here, 'agent.mjs'), '--url', `${origin}/mcp`, '--key', opts['agent-key']], { stdio: ['pipe', 'pipe', 'ignore'] });
  // Every answer line is queued as it arrives: the held call's answer can come back while the
  // Approve click is still being acknowledged, before anyone waits for it, and a line emitted
  // with no listener would be lost (the flow would then wait forever). Unprompted events
  // (tools_list_changed) are not answers.
  const queued = [];
  const waiting = [];
  readline.createInterface({ input: agent.stdout }).on('line', (l) => {
    const msg = JSON.parse(l);
    if (msg.event) return;
    const w = waiting.shift();
    if (w) w(msg); else queued.push(msg);
  });
  const next = (what) => {
    if (queued.length) return Promise.resolve(queued.shift());
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`agent: no ${what} within 30 s`)), 30000);
      waiting.push((msg) => { clearTimeout(timer); resolve(msg); });
    });
  };
  const ready = await next('ready line');
  if (!ready.ready) throw new Error(`agent: ${JSON.stringify(ready)}`);
  agent.stdin.write(`${JSON.stringify({ id: 1, op: 'call', name: 'notion__echo', arguments: { text: 'from the inbox' } })}\n`);
  await page.goto(`${origin}/console/approvals`);
  const held = page.locator('article[data-approval]').first();
  await held.waitFor({ state: 'visible', timeout: 15000 });
  const shownArguments = (await held.getByLabel('Arguments').textContent()).trim();
  await shot('09-approvals-inbox');
  await held.getByLabel('Reason').fill('looks right');
  await held.getByRole('button', { name: 'Approve' }).click();
  const answer = await next('answer to the held call');
  agent.stdin.write(`${JSON.stringify({ id: 2, op: 'close' })}\n`);
  step('approved-from-inbox', { arguments: shownArguments, answer });
  await shot('10-approvals-decided');

  // The rest of governance: unregister a tool, a profile's policy and suspension, agents, audit.
  await page.goto(`${origin}/console/tools`);
  await shot('11a-tools');
  // The filter narrows the catalog to matching names (case-insensitive).
  await page.getByLabel('Filter tools').fill('CREATE');
  await page.getByRole('button', { name: 'Filter', exact: true }).click();
  await page.waitForLoadState('load');
  const toolsFiltered = await page.locator('tr[data-tool]').evaluateAll((rows) => rows.map((r) => r.dataset.tool));
  const row = page.locator('tr[data-tool="notion__create_page"]');
  await row.getByLabel('Unregister reason').fill('not needed');
  await row.getByRole('button', { name: 'Unregister' }).click();
  await page.waitForLoadState('load');
  const toolsLeft = await page.locator('tr[data-tool]').evaluateAll((rows) => rows.map((r) => r.dataset.tool));
  await page.goto(`${origin}/console/profiles`);
  const profileCard = page.locator(`article[data-profile="${opts.profile}"]`);
  await profileCard.locator('select[name=write]').selectOption('deny');
  await profileCard.getByLabel('Tool rule').fill('notion__echo=allow');
  await profileCard.getByLabel('Policy reason').fill('lock writes');
  await profileCard.getByRole('button', { name: 'Save policy' }).click();
  await page.waitForLoadState('load');
  await profileCard.getByLabel('Suspend reason').fill('incident');
  await profileCard.getByRole('button', { name: 'Suspend' }).click();
  await page.waitForLoadState('load');
  const suspended = await profileCard.locator('.chip').first().textContent();
  await shot('11b-profiles');
  await profileCard.getByLabel('Resume reason').fill('all clear');
  await profileCard.getByRole('button', { name: 'Resume' }).click();
  await page.waitForLoadState('load');
  await page.goto(`${origin}/console/agents`);
  await page.getByLabel('Agent name').fill('bot2');
  await page.getByLabel('Agent profile').selectOption(opts.profile);
  await page.getByRole('button', { name: 'Create agent' }).click();
  const firstKey = (await page.locator('[data-key]').textContent()).trim();
  await shot('11c-agents');
  const agentRow = page.locator('tr[data-agent="bot2"]');
  await agentRow.getByRole('button', { name: 'Rotate key' }).click();
  const rotatedKey = (await page.locator('[data-key]').textContent()).trim();
  await page.locator('tr[data-agent="bot2"]').getByLabel('Revoke reason').fill('done');
  await page.locator('tr[data-agent="bot2"]').getByRole('button', { name: 'Revoke' }).click();
  await page.waitForLoadState('load');
  const bot2Status = await page.locator('tr[data-agent="bot2"] .chip').textContent();
  await page.goto(`${origin}/console/audit?connector=notion`);
  const auditRows = await page.locator('table.grid tr').count();
  await page.getByRole('button', { name: 'Verify chain' }).click();
  const verified = await page.getByRole('status', { name: 'Chain verification result' }).textContent();
  await shot('11d-audit');
  await page.getByRole('button', { name: 'Replay projections' }).click();
  const replayed = await page.getByRole('status', { name: 'Replay result' }).textContent();
  step('governance', {
    tools_left: toolsLeft,
    tools_filtered: toolsFiltered,
    suspended: suspended.trim(),
    first_key_prefix: firstKey.slice(0, 4),
    rotated_differs: rotatedKey !== firstKey && rotatedKey.startsWith('agp_'),
    bot2_status: bot2Status.trim(),
    audit_rows: auditRows,
    verified_valid: /"valid": true/.test(verified),
    replay_consistent: /"consistent": true/.test(replayed),
  });

  // Lifecycle: disconnect, reconnect (consent again), remove with the typed name.
  await page.goto(`${origin}/console/connectors/notion`);
  await page.getByLabel('Reason').fill('offboarding test');
  await page.getByRole('button', { name: 'Disconnect' }).click();
  await page.waitForLoadState('load');
  const afterDisconnect = await page.locator('.chip').first().textContent();
  await shot('11-disconnected');
  const [again] = await Promise.all([
    context.waitForEvent('page'),
    page.getByRole('button', { name: 'Reconnect' }).click(),
  ]);
  const reconsent = await consent(again);
  await again.close();
  await page.goto(`${origin}/console/connectors?filter=active`);
  const reconnected = await cardStatus('notion');
  await page.goto(`${origin}/console/connectors/notion`);
  const remove = page.getByRole('button', { name: 'Remove' });
  const disabledBefore = await remove.isDisabled();
  await page.getByLabel("Type the connector's name to confirm").fill('notion');
  await shot('12-remove');
  await remove.click();
  await page.waitForURL(/\/console\/connectors$/);
  step('lifecycle', {
    after_disconnect: afterDisconnect.trim(),
    reconsent,
    reconnected,
    remove_disabled_until_typed: disabledBefore,
    cards_left: await page.locator('article[data-connector]').count(),
  });
  await shot('13-removed');

  // A registered client instead of DCR (the form's other registration).
  await page.goto(`${origin}/console/connectors/new`);
  await page.getByLabel('Name', { exact: true }).fill('internal');
  await page.getByLabel('MCP server URL').fill(opts['mcp-url']);
  await page.getByLabel('Registered client').check();
  await page.getByLabel('Client ID').fill(opts['client-id']);
  await page.getByLabel('Client secret').fill(opts['client-secret']);
  await page.getByLabel('Token auth method').selectOption('client_secret_post');
  await shot('14-registered-client');
  const [regPopup] = await Promise.all([
    context.waitForEvent('page'),
    page.getByRole('button', { name: 'Add & authorize' }).click(),
  ]);
  const regConsent = await consent(regPopup);
  await regPopup.close();
  await page.waitForURL(/\/console\/connectors\?added=internal/);
  await page.evaluate(() => window.dispatchEvent(new Event('focus')));
  await page.waitForFunction(() => document.querySelector('article[data-connector="internal"] [data-status]')?.dataset.status === 'active', null, { timeout: 15000 });
  step('registered-client', { consent: regConsent, status: await cardStatus('internal') });
  await shot('15-registered-client-active');
  report.csp_errors = cspErrors;
  report.ok = true;
} catch (err) {
  report.ok = false;
  report.error = String(err?.stack || err);
  await shot('99-failure').catch(() => {});
} finally {
  await browser.close();
  process.stdout.write(`${JSON.stringify(report)}\n`);
  // A child left running after a failure (the agent) must not keep this process alive; stdout
  // is a pipe, written synchronously on Linux, so the report is out.
  process.exit(0);
}
