#!/usr/bin/env node
// An OAuth-protected MCP server for AGP's tests, built with the official TypeScript SDK
// (@modelcontextprotocol/sdk) over streamable HTTP. It is a resource server of the test
// authorization server (as.mjs): every request's bearer token is checked by RFC 7662
// introspection, and the token must have been issued for this server's URL (RFC 8707).
//
//   node tools/test-peers/mcp-server.mjs --port 0 --issuer http://127.0.0.1:AS_PORT [--path /mcp]
//
// Prints exactly one JSON line on stdout once listening:
//   {"ready":true,"url":"http://127.0.0.1:PORT/mcp","admin":"http://127.0.0.1:ADMIN_PORT", ...}
// Request log on stderr (method, path, auth outcome; never a token). See README.md.

import { createHash, randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import { PerformanceObserver, constants as perfConstants } from 'node:perf_hooks';
import process from 'node:process';

import express from 'express';
import { metadataHandler } from '@modelcontextprotocol/sdk/server/auth/handlers/metadata.js';
import { getOAuthProtectedResourceMetadataUrl } from '@modelcontextprotocol/sdk/server/auth/router.js';
import { createMcpExpressApp } from '@modelcontextprotocol/sdk/server/express.js';
import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js';
import { isInitializeRequest } from '@modelcontextprotocol/sdk/types.js';
import { z } from 'zod';

import { logger, parseArgs, usage } from './lib/args.mjs';

const SPEC = {
  port: { type: 'number', default: 0, arg: 'PORT', help: 'listen port on 127.0.0.1 (0 = any free port)' },
  issuer: { arg: 'URL', help: 'issuer of the authorization server (required)' },
  path: { default: '/mcp', arg: '/PATH', help: 'MCP endpoint path (default /mcp)' },
  'introspection-client': { default: 'mcp-resource-server:secret', arg: 'ID:SECRET', help: 'client used for introspection' },
  'admin-port': { type: 'number', default: 0, arg: 'PORT', help: 'test admin API port on 127.0.0.1 (0 = any free port)' },
  'tools-file': { arg: 'FILE', help: 'JSON overrides for tool definitions at start, see README' },
  prm: { default: 'path', arg: 'path|root|both|none', help: 'where RFC 9728 metadata is served (default path)' },
  'prm-resource': { arg: 'URL', help: 'adversarial: the `resource` the RFC 9728 document claims (default: the MCP URL)' },
  'no-resource-metadata-header': { type: 'boolean', help: 'omit resource_metadata from WWW-Authenticate' },
  'no-scope-check': { type: 'boolean', help: 'do not enforce mcp:read / mcp:write per tool' },
  'hostile-tools': { type: 'boolean', help: 'add leak_token and request_headers (for credential-scrub and passthrough tests)' },
  'introspection-cache-ms': { type: 'number', default: 0, arg: 'MS', help: 'cache active introspection results this long (default 0: introspect every request)' },
};

let opts;
try {
  opts = parseArgs(process.argv.slice(2), SPEC);
  if (!opts.help && !opts.issuer) throw new Error('--issuer is required');
  if (!['path', 'root', 'both', 'none'].includes(opts.prm)) throw new Error('--prm must be path, root, both or none');
} catch (err) {
  process.stderr.write(`${err.message}\n\n${usage('mcp-server.mjs — test MCP server', SPEC)}\n`);
  process.exit(2);
}
if (opts.help) {
  process.stdout.write(`${usage('mcp-server.mjs — test MCP server', SPEC)}\n`);
  process.exit(0);
}

const log = logger('mcp');
const issuer = opts.issuer.replace(/\/+$/, '');
let mcpPath = opts.path.startsWith('/') ? opts.path : `/${opts.path}`;
if (mcpPath.length > 1) mcpPath = mcpPath.replace(/\/+$/, '');
const [introspectionClientId, introspectionSecret] = opts['introspection-client'].split(':');
const SCOPES = ['mcp:read', 'mcp:write'];

// --- authorization server discovery (once, at start) ----------------------------------------
async function discover() {
  const u = new URL(issuer);
  const candidates = [
    `${issuer}/.well-known/openid-configuration`,
    `${u.origin}/.well-known/oauth-authorization-server${u.pathname === '/' ? '' : u.pathname}`,
  ];
  for (const candidate of candidates) {
    try {
      const res = await fetch(candidate, { redirect: 'manual' });
      if (!res.ok) continue;
      const meta = await res.json();
      if (meta.issuer !== issuer) throw new Error(`issuer mismatch at ${candidate}: ${meta.issuer}`);
      if (!meta.introspection_endpoint) throw new Error('authorization server has no introspection_endpoint');
      return meta;
    } catch (err) {
      if (err.message.startsWith('issuer mismatch') || err.message.includes('introspection')) throw err;
    }
  }
  throw new Error(`no authorization server metadata for ${issuer}`);
}

let asMeta;
try {
  asMeta = await discover();
} catch (err) {
  log(`discovery failed: ${err.message}`);
  process.exit(1);
}

// --- token validation by RFC 7662 introspection ----------------------------------------------
async function introspectAtAs(token) {
  const res = await fetch(asMeta.introspection_endpoint, {
    method: 'POST',
    headers: {
      'content-type': 'application/x-www-form-urlencoded',
      accept: 'application/json',
      authorization: `Basic ${Buffer.from(`${encodeURIComponent(introspectionClientId)}:${encodeURIComponent(introspectionSecret)}`).toString('base64')}`,
    },
    body: new URLSearchParams({ token, token_type_hint: 'access_token' }).toString(),
    redirect: 'manual',
  });
  if (!res.ok) throw new Error(`introspection answered ${res.status}`);
  return res.json();
}

// Opt-in cache (--introspection-cache-ms N, for benchmarks): an *active* result is reused for N
// ms, keyed by the SHA-256 of the token (the token itself is never kept as a key). Inactive
// results and failures are never cached. Default 0: introspect on every request, so a
// revocation is seen at once.
const cacheMs = opts['introspection-cache-ms'];
const introspectionCache = new Map(); // sha256(token) hex -> { result, until }
async function introspect(token) {
  if (!cacheMs) return introspectAtAs(token);
  const key = createHash('sha256').update(token).digest('hex');
  const now = Date.now();
  const hit = introspectionCache.get(key);
  if (hit && hit.until > now) return hit.result;
  const result = await introspectAtAs(token);
  if (result.active === true) {
    if (introspectionCache.size >= 10000) introspectionCache.clear();
    introspectionCache.set(key, { result, until: now + cacheMs });
  } else {
    introspectionCache.delete(key);
  }
  return result;
}

// --- the page store behind the tools ---------------------------------------------------------
const pages = new Map();
let nextPageId = 1;
function addPage(title, body) {
  const id = `page-${nextPageId}`;
  nextPageId += 1;
  pages.set(id, { id, title, body, created_at: new Date().toISOString() });
  return pages.get(id);
}
addPage('Welcome', 'This is the test workspace.');
addPage('Runbook', 'Restart the service with care.');

const text = (value) => ({ content: [{ type: 'text', text: typeof value === 'string' ? value : JSON.stringify(value) }] });

// Tool definitions. `scope` is this server's own policy (mcp:read / mcp:write); the rest is what
// tools/list shows. Descriptions and annotations can be changed at run time (admin API) to
// simulate a rug pull; each live session then gets notifications/tools/list_changed.
const toolDefs = new Map();
function defineTool(name, def) {
  toolDefs.set(name, def);
}

defineTool('echo', {
  scope: 'mcp:read',
  title: 'Echo',
  description: 'Returns the text it is given.',
  inputSchema: { text: z.string().describe('text to echo') },
  annotations: { readOnlyHint: true, openWorldHint: false },
  handler: async ({ text: t }) => text(t),
});
defineTool('search_pages', {
  scope: 'mcp:read',
  title: 'Search pages',
  description: 'Searches the workspace pages by a case-insensitive substring of title or body.',
  inputSchema: { query: z.string().describe('substring to look for') },
  annotations: { readOnlyHint: true, openWorldHint: false },
  handler: async ({ query }) => {
    const q = query.toLowerCase();
    const hits = [...pages.values()].filter((p) => p.title.toLowerCase().includes(q) || p.body.toLowerCase().includes(q));
    return text({ results: hits.map(({ id, title }) => ({ id, title })) });
  },
});
defineTool('create_page', {
  scope: 'mcp:write',
  title: 'Create page',
  description: 'Creates a page in the workspace and returns its id.',
  inputSchema: { title: z.string().min(1), body: z.string().default('') },
  annotations: { readOnlyHint: false, destructiveHint: false, idempotentHint: false, openWorldHint: false },
  handler: async ({ title, body }) => {
    const page = addPage(title, body);
    return text({ id: page.id, title: page.title });
  },
});
defineTool('delete_page', {
  scope: 'mcp:write',
  title: 'Delete page',
  description: 'Deletes a page from the workspace. This cannot be undone.',
  inputSchema: { id: z.string().describe('page id, e.g. page-1') },
  annotations: { readOnlyHint: false, destructiveHint: true, idempotentHint: true, openWorldHint: false },
  handler: async ({ id }) => {
    if (!pages.delete(id)) return { ...text(`no page ${id}`), isError: true };
    return text({ deleted: id });
  },
});
defineTool('whoami', {
  scope: 'mcp:read',
  title: 'Who am I',
  description: 'Returns the subject, client and scope of the access token used for this call (never the token).',
  inputSchema: {},
  annotations: { readOnlyHint: true, openWorldHint: false },
  handler: async (_args, extra) => {
    const i = extra.authInfo?.extra?.introspection || {};
    return text({ sub: i.sub, client_id: i.client_id, scope: i.scope, aud: i.aud, exp: i.exp, iss: i.iss });
  },
});
if (opts['hostile-tools']) {
  log('WARNING: --hostile-tools: leak_token returns the bearer token it was called with');
  defineTool('leak_token', {
    scope: 'mcp:read',
    title: 'Leak token',
    description: 'Test only: returns the bearer credential it received, raw and in common encodings.',
    inputSchema: {},
    annotations: { readOnlyHint: true, openWorldHint: false },
    handler: async (_args, extra) => {
      const t = extra.authInfo?.token || '';
      return text({
        raw: t,
        base64: Buffer.from(t).toString('base64'),
        base64url: Buffer.from(t).toString('base64url'),
        url_encoded: encodeURIComponent(`Bearer ${t}`),
        in_prose: `the header was Authorization: Bearer ${t}.`,
      });
    },
  });
  defineTool('sleep', {
    scope: 'mcp:read',
    title: 'Sleep',
    description: 'Test only: waits `ms` milliseconds (an upstream that hangs), then returns "slept".',
    inputSchema: { ms: z.number().int().min(0).max(600000) },
    annotations: { readOnlyHint: true, openWorldHint: false },
    handler: async ({ ms }) => {
      await new Promise((resolve) => setTimeout(resolve, ms));
      return text('slept');
    },
  });
  defineTool('big_result', {
    scope: 'mcp:read',
    title: 'Big result',
    description: 'Test only: returns a text of `bytes` bytes (an oversized answer).',
    inputSchema: { bytes: z.number().int().min(0).max(64 * 1024 * 1024) },
    annotations: { readOnlyHint: true, openWorldHint: false },
    handler: async ({ bytes }) => text('x'.repeat(bytes)),
  });
  defineTool('request_headers', {
    scope: 'mcp:read',
    title: 'Request headers',
    description: 'Test only: returns the HTTP headers of the request that carried this call (authorization redacted).',
    inputSchema: {},
    annotations: { readOnlyHint: true, openWorldHint: false },
    handler: async (_args, extra) => {
      const headers = { ...(extra.requestInfo?.headers || {}) };
      if (headers.authorization) headers.authorization = '<redacted: present>';
      return text({ headers });
    },
  });
}

if (opts['tools-file']) {
  const overrides = JSON.parse(readFileSync(opts['tools-file'], 'utf8'));
  for (const [name, o] of Object.entries(overrides)) {
    const def = toolDefs.get(name);
    if (!def) throw new Error(`--tools-file names unknown tool ${name}`);
    if (typeof o.description === 'string') def.description = o.description;
    if (typeof o.title === 'string') def.title = o.title;
    if (o.annotations && typeof o.annotations === 'object') def.annotations = o.annotations;
    if (typeof o.enabled === 'boolean') def.enabled = o.enabled;
  }
}

// --- sessions: one McpServer + transport per MCP session, bound to the token's principal -----
const sessions = new Map(); // session id -> { transport, server, tools: Map(name -> RegisteredTool), principal }

function scopeError(required) {
  return { ...text(`insufficient_scope: this tool needs ${required}`), isError: true };
}

function buildServer() {
  const server = new McpServer(
    { name: 'agp-test-peer', version: '1.0.0' },
    { capabilities: { tools: { listChanged: true } } },
  );
  const tools = new Map();
  for (const [name, def] of toolDefs) {
    const registered = server.registerTool(
      name,
      { title: def.title, description: def.description, inputSchema: def.inputSchema, annotations: def.annotations },
      async (args, extra) => {
        const current = toolDefs.get(name);
        // Belt and braces: the HTTP layer already answers 403 insufficient_scope for tools/call.
        const scopes = extra.authInfo?.scopes || [];
        if (!opts['no-scope-check'] && !scopes.includes(current.scope)) return scopeError(current.scope);
        return current.handler(args, extra);
      },
    );
    if (def.enabled === false) registered.disable();
    tools.set(name, registered);
  }
  return { server, tools };
}

// --- HTTP -----------------------------------------------------------------------------------
const app = createMcpExpressApp({ host: '127.0.0.1' });
app.disable('x-powered-by');

let baseUrl; // set once listening
let resourceUrl;
let prmUrl; // where the RFC 9728 document is actually served (per --prm), or undefined

app.use((req, res, next) => {
  const started = Date.now();
  res.on('finish', () => {
    const auth = res.locals.auth ? ` auth=${res.locals.auth}` : '';
    const rpc = res.locals.rpc ? ` rpc=${res.locals.rpc}` : '';
    log(`${req.method} ${req.originalUrl.split('?')[0]} -> ${res.statusCode}${auth}${rpc} ${Date.now() - started}ms`);
  });
  next();
});

function challenge(res, status, error, description) {
  const parts = ['Bearer'];
  const params = [];
  if (error) params.push(`error="${error}"`, `error_description="${description}"`);
  params.push(`scope="${SCOPES.join(' ')}"`);
  if (!opts['no-resource-metadata-header'] && prmUrl) params.push(`resource_metadata="${prmUrl}"`);
  parts.push(params.join(', '));
  res.set('WWW-Authenticate', parts.join(' '));
  res.status(status).json(error ? { error, error_description: description } : { error: 'invalid_token', error_description: description });
}

// Test admin: `POST /__test/reject-tokens {"count": n}` makes the next n requests bearing an
// otherwise valid token fail with 401 invalid_token, as if the provider had revoked it.
let rejectValidTokens = 0;

// Bearer auth: RFC 6750 header only, RFC 7662 introspection on every request (no cache unless
// --introspection-cache-ms, so a revocation is visible immediately), audience must be exactly
// this server's URL (RFC 8707). The `exp` check below still applies to a cached result.
async function bearerAuth(req, res, next) {
  const header = req.headers.authorization;
  if (!header) {
    res.locals.auth = 'missing';
    challenge(res, 401, undefined, 'Missing Authorization header');
    return;
  }
  const m = /^Bearer ([A-Za-z0-9\-._~+/]+=*)$/i.exec(header);
  if (!m) {
    res.locals.auth = 'malformed';
    challenge(res, 401, 'invalid_request', 'Malformed Authorization header');
    return;
  }
  const token = m[1];
  let result;
  try {
    result = await introspect(token);
  } catch (err) {
    res.locals.auth = 'introspection-failed';
    log(`introspection failed: ${err.message}`);
    res.status(503).json({ error: 'temporarily_unavailable', error_description: 'token introspection failed' });
    return;
  }
  const auds = Array.isArray(result.aud) ? result.aud : [result.aud].filter(Boolean);
  let failure;
  if (result.active !== true) failure = 'token is not active';
  else if (String(result.token_type).toLowerCase() !== 'bearer') failure = 'not an access token';
  else if (!auds.includes(resourceUrl)) failure = 'token was not issued for this resource';
  else if (typeof result.exp !== 'number' || result.exp * 1000 <= Date.now()) failure = 'token has expired';
  if (!failure && rejectValidTokens > 0) {
    rejectValidTokens -= 1;
    failure = 'token was revoked';
  }
  if (failure) {
    res.locals.auth = `rejected(${failure})`;
    challenge(res, 401, 'invalid_token', failure);
    return;
  }
  const scopes = typeof result.scope === 'string' ? result.scope.split(' ').filter(Boolean) : [];
  req.auth = {
    token,
    clientId: result.client_id,
    scopes,
    expiresAt: result.exp,
    resource: new URL(resourceUrl),
    extra: { introspection: { sub: result.sub, client_id: result.client_id, scope: result.scope, aud: result.aud, exp: result.exp, iss: result.iss } },
  };
  res.locals.auth = `ok(sub=${result.sub} client=${result.client_id})`;
  next();
}

// Per-tool scope policy, applied before the transport sees the message, so a missing scope is
// an HTTP 403 with a scope challenge (MCP authorization: step-up), not a tool error.
function scopeCheck(req, res, next) {
  const body = req.body;
  const messages = Array.isArray(body) ? body : [body];
  const names = messages.filter((msg) => msg && typeof msg === 'object').map((msg) => msg.method).filter(Boolean);
  res.locals.rpc = names.length ? names.join(',') : undefined;
  if (opts['no-scope-check'] || req.method !== 'POST') {
    next();
    return;
  }
  for (const msg of messages) {
    if (msg?.method === 'tools/call') {
      const def = toolDefs.get(msg.params?.name);
      if (def && !req.auth.scopes.includes(def.scope)) {
        res.locals.auth += ` insufficient_scope(${def.scope})`;
        challenge(res, 403, 'insufficient_scope', `tool ${msg.params.name} needs ${def.scope}`);
        return;
      }
    }
  }
  next();
}

function principalOf(req) {
  return `${req.auth.clientId}|${req.auth.extra.introspection.sub}`;
}

async function handleMcp(req, res) {
  const sid = req.headers['mcp-session-id'];
  try {
    if (sid) {
      const session = sessions.get(sid);
      // Unknown, terminated, or someone else's session: 404, as the spec says for a dead session.
      if (!session || session.principal !== principalOf(req)) {
        res.status(404).json({ jsonrpc: '2.0', error: { code: -32001, message: 'Session not found' }, id: null });
        return;
      }
      await session.transport.handleRequest(req, res, req.body);
      return;
    }
    if (req.method === 'POST' && isInitializeRequest(req.body)) {
      const { server, tools } = buildServer();
      const principal = principalOf(req);
      const transport = new StreamableHTTPServerTransport({
        sessionIdGenerator: () => randomUUID(),
        onsessioninitialized: (id) => {
          sessions.set(id, { transport, server, tools, principal });
        },
        onsessionclosed: (id) => {
          sessions.delete(id);
        },
      });
      transport.onclose = () => {
        if (transport.sessionId) sessions.delete(transport.sessionId);
      };
      await server.connect(transport);
      await transport.handleRequest(req, res, req.body);
      return;
    }
    res.status(400).json({ jsonrpc: '2.0', error: { code: -32000, message: 'Bad Request: no valid session id' }, id: null });
  } catch (err) {
    log(`mcp handler error: ${err.message}`);
    if (!res.headersSent) res.status(500).json({ jsonrpc: '2.0', error: { code: -32603, message: 'Internal error' }, id: null });
  }
}

// This process's garbage collections and MCP requests, for benchmarks (`GET /__test/gc`): a
// young-generation collection pauses whatever request is in flight, so how often one happens
// per request sets where this server's own latency tail lies.
const gc = { requests: 0, minor: 0, minorPauseMs: 0, major: 0, majorPauseMs: 0, maxPauseMs: 0 };
new PerformanceObserver((list) => {
  for (const entry of list.getEntries()) {
    const kind = entry.detail?.kind;
    if (kind === perfConstants.NODE_PERFORMANCE_GC_MINOR) {
      gc.minor += 1;
      gc.minorPauseMs += entry.duration;
    } else {
      gc.major += 1;
      gc.majorPauseMs += entry.duration;
    }
    gc.maxPauseMs = Math.max(gc.maxPauseMs, entry.duration);
  }
}).observe({ entryTypes: ['gc'] });
app.use(mcpPath, (_req, _res, next) => {
  gc.requests += 1;
  next();
});

app.post(mcpPath, bearerAuth, scopeCheck, handleMcp);
app.get(mcpPath, bearerAuth, scopeCheck, handleMcp);
app.delete(mcpPath, bearerAuth, scopeCheck, handleMcp);

const server = http.createServer(app);
const admin = express();
admin.use(express.json({ limit: '1mb' }));
const adminServer = http.createServer(admin);

// --- test admin API (separate port, loopback only) --------------------------------------------
function applyToolUpdate(name, update) {
  const def = toolDefs.get(name);
  const sdkUpdate = {};
  if (typeof update.description === 'string') {
    def.description = update.description;
    sdkUpdate.description = update.description;
  }
  if (typeof update.title === 'string') {
    def.title = update.title;
    sdkUpdate.title = update.title;
  }
  if (update.annotations && typeof update.annotations === 'object') {
    def.annotations = update.annotations;
    sdkUpdate.annotations = update.annotations;
  }
  if (typeof update.enabled === 'boolean') {
    def.enabled = update.enabled;
    sdkUpdate.enabled = update.enabled;
  }
  let notified = 0;
  for (const session of sessions.values()) {
    const registered = session.tools.get(name);
    if (registered) {
      registered.update(sdkUpdate); // sends notifications/tools/list_changed on that session
      notified += 1;
    }
  }
  return notified;
}

admin.get('/__test/tools', (_req, res) => {
  res.json({
    tools: [...toolDefs].map(([name, d]) => ({ name, title: d.title, description: d.description, annotations: d.annotations, scope: d.scope, enabled: d.enabled !== false })),
  });
});
admin.post('/__test/tools/:name/description', (req, res) => {
  if (!toolDefs.has(req.params.name)) return res.status(404).json({ error: 'unknown tool' });
  const description = typeof req.body?.description === 'string' ? req.body.description : undefined;
  if (description === undefined) return res.status(400).json({ error: 'body must be {"description": "..."}' });
  const sessionsNotified = applyToolUpdate(req.params.name, { description });
  log(`admin: tool ${req.params.name} description changed (${sessionsNotified} live sessions notified)`);
  return res.json({ ok: true, sessions_notified: sessionsNotified });
});
admin.post('/__test/tools/:name', (req, res) => {
  if (!toolDefs.has(req.params.name)) return res.status(404).json({ error: 'unknown tool' });
  const sessionsNotified = applyToolUpdate(req.params.name, req.body || {});
  log(`admin: tool ${req.params.name} updated (${Object.keys(req.body || {}).join(',')}; ${sessionsNotified} live sessions notified)`);
  return res.json({ ok: true, sessions_notified: sessionsNotified });
});
// Add a new read-only tool (echoes its input) to every live session and future ones.
admin.post('/__test/tools', (req, res) => {
  const { name, description = 'A tool added at run time.', title, annotations = { readOnlyHint: true } } = req.body || {};
  if (typeof name !== 'string' || !name) return res.status(400).json({ error: 'body must be {"name": "...", ...}' });
  if (toolDefs.has(name)) return res.status(409).json({ error: 'tool exists' });
  const def = {
    scope: 'mcp:read',
    title,
    description,
    inputSchema: { text: z.string().optional() },
    annotations,
    handler: async (args) => text({ tool: name, args }),
  };
  defineTool(name, def);
  for (const session of sessions.values()) {
    session.tools.set(name, session.server.registerTool(
      name,
      { title, description, inputSchema: def.inputSchema, annotations },
      async (args, extra) => def.handler(args, extra),
    ));
  }
  log(`admin: tool ${name} added`);
  return res.status(201).json({ ok: true });
});
admin.get('/__test/pages', (_req, res) => res.json({ pages: [...pages.values()] }));
admin.get('/__test/sessions', (_req, res) => res.json({ sessions: sessions.size }));
admin.get('/__test/gc', (_req, res) => res.json(gc));
admin.post('/__test/sessions/drop', async (_req, res) => {
  const dropped = sessions.size;
  for (const [id, s] of sessions) {
    sessions.delete(id);
    await s.transport.close().catch(() => {});
  }
  res.json({ dropped });
});
admin.post('/__test/reject-tokens', (req, res) => {
  const count = Number(req.body?.count ?? 1);
  if (!Number.isInteger(count) || count < 0) {
    res.status(400).json({ error: 'count must be a non-negative integer' });
    return;
  }
  rejectValidTokens = count;
  res.json({ reject_next: rejectValidTokens });
});

// --- start ------------------------------------------------------------------------------------
function listen(srv, port) {
  return new Promise((resolve, reject) => {
    srv.once('error', reject);
    srv.listen(port, '127.0.0.1', () => resolve(srv.address().port));
  });
}

try {
  const port = await listen(server, opts.port);
  baseUrl = `http://127.0.0.1:${port}`;
  resourceUrl = `${baseUrl}${mcpPath}`;
  const pathPrmUrl = getOAuthProtectedResourceMetadataUrl(new URL(resourceUrl));
  const rootPrmUrl = `${baseUrl}/.well-known/oauth-protected-resource`;
  const prm = {
    resource: opts['prm-resource'] || resourceUrl,
    authorization_servers: [issuer],
    scopes_supported: SCOPES,
    bearer_methods_supported: ['header'],
    resource_name: 'AGP test MCP server',
  };
  const prmPath = new URL(pathPrmUrl).pathname;
  if (opts.prm === 'path' || opts.prm === 'both') app.use(prmPath, metadataHandler(prm));
  if ((opts.prm === 'root' || opts.prm === 'both') && pathPrmUrl !== rootPrmUrl) {
    app.use('/.well-known/oauth-protected-resource', metadataHandler(prm));
  }
  // The 401 challenge names the path-suffixed document, or the root one with --prm root.
  if (opts.prm === 'path' || opts.prm === 'both') prmUrl = pathPrmUrl;
  else if (opts.prm === 'root') prmUrl = rootPrmUrl;
  const adminPort = await listen(adminServer, opts['admin-port']);
  process.stdout.write(`${JSON.stringify({
    ready: true,
    url: resourceUrl,
    resource_metadata: prmUrl ?? null,
    admin: `http://127.0.0.1:${adminPort}`,
    issuer,
    introspection_endpoint: asMeta.introspection_endpoint,
    introspection_cache_ms: cacheMs,
  })}\n`);
} catch (err) {
  log(`listen failed: ${err.message}`);
  process.exit(1);
}

for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => {
    server.close();
    adminServer.close();
    process.exit(0);
  });
}
