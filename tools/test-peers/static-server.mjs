#!/usr/bin/env node
// An MCP server protected by a static credential (an API key header, a bearer token, or
// none), built with the official TypeScript SDK (@modelcontextprotocol/sdk) over streamable
// HTTP: what `agp servers add` governs. The accepted credentials can be changed at run time
// through the test admin API, so tests can rotate a key at the "provider".
//
//   node tools/test-peers/static-server.mjs --port 0 [--header X-Api-Key] [--key K]...
//        [--bearer T]... [--open]
//
// A request is accepted when it carries one of the keys in `--header` (default X-Api-Key), or
// `Authorization: Bearer` with one of the bearer tokens; with --open, every request is. Other
// requests get HTTP 401 (no WWW-Authenticate resource metadata: this is not an OAuth server).
//
// Prints exactly one JSON line on stdout once listening:
//   {"ready":true,"url":"http://127.0.0.1:PORT/mcp","admin":"http://127.0.0.1:PORT/__test"}
// Admin API (test only):
//   PUT  /__test/credentials  {"keys":[…],"bearers":[…]}   replaces the accepted credentials
//   GET  /__test/requests     [{auth, key_index, status, extra_headers}]: which credential each
//                             MCP request carried (an index, never the value)
// Request log on stderr (method, path, outcome; never a credential).

import { randomUUID } from 'node:crypto';
import http from 'node:http';
import process from 'node:process';

import express from 'express';
import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js';
import { isInitializeRequest } from '@modelcontextprotocol/sdk/types.js';
import { z } from 'zod';

import { logger, parseArgs, usage } from './lib/args.mjs';

const SPEC = {
  port: { type: 'number', default: 0, arg: 'PORT', help: 'listen port on 127.0.0.1 (0 = any free port)' },
  header: { default: 'X-Api-Key', arg: 'NAME', help: 'the API key header (default X-Api-Key)' },
  key: { repeat: true, arg: 'KEY', help: 'an accepted API key (repeatable)' },
  bearer: { repeat: true, arg: 'TOKEN', help: 'an accepted bearer token (repeatable)' },
  open: { type: 'boolean', help: 'accept every request (a server with no credential)' },
};

let opts;
try {
  opts = parseArgs(process.argv.slice(2), SPEC);
} catch (err) {
  process.stderr.write(`${err.message}\n\n${usage('static-server.mjs — static-credential MCP server', SPEC)}\n`);
  process.exit(2);
}
if (opts.help) {
  process.stdout.write(`${usage('static-server.mjs — static-credential MCP server', SPEC)}\n`);
  process.exit(0);
}

const log = logger('static');
const keyHeader = opts.header.toLowerCase();
let keys = [...opts.key];
let bearers = [...opts.bearer];
const requests = [];

/** Which credential `req` carries: {auth, index}, or null. */
function credentialOf(req) {
  if (opts.open) return { auth: 'open', index: null };
  const key = req.headers[keyHeader];
  if (typeof key === 'string' && keys.includes(key)) return { auth: 'key', index: keys.indexOf(key) };
  const m = /^Bearer (.+)$/i.exec(req.headers.authorization || '');
  if (m && bearers.includes(m[1])) return { auth: 'bearer', index: bearers.indexOf(m[1]) };
  return null;
}

const app = express();
app.disable('x-powered-by');

app.put('/__test/credentials', express.json(), (req, res) => {
  keys = Array.isArray(req.body?.keys) ? req.body.keys : [];
  bearers = Array.isArray(req.body?.bearers) ? req.body.bearers : [];
  res.json({ keys: keys.length, bearers: bearers.length });
});
app.get('/__test/requests', (_req, res) => res.json(requests));

const sessions = new Map();
app.all('/mcp', express.json(), async (req, res) => {
  const cred = credentialOf(req);
  // Headers other than the protocol's and the credential's: AGP must send nothing of the agent's.
  const extra = Object.keys(req.headers).filter((h) => ![
    'host', 'content-type', 'content-length', 'accept', 'accept-encoding', 'connection',
    'mcp-session-id', 'mcp-protocol-version', 'user-agent', 'authorization', keyHeader,
  ].includes(h));
  const entry = { method: req.method, auth: cred?.auth ?? 'refused', key_index: cred?.index ?? null, extra_headers: extra };
  res.on('finish', () => {
    requests.push({ ...entry, status: res.statusCode });
    log(`${req.method} /mcp -> ${res.statusCode} (${entry.auth})`);
  });
  if (!cred) {
    res.status(401).json({ error: 'unauthorized', error_description: 'a valid API key is required' });
    return;
  }
  try {
    const sid = req.headers['mcp-session-id'];
    if (sid) {
      const session = sessions.get(sid);
      if (!session) {
        res.status(404).json({ jsonrpc: '2.0', error: { code: -32001, message: 'Session not found' }, id: null });
        return;
      }
      session.cred = cred;
      await session.transport.handleRequest(req, res, req.body);
      return;
    }
    if (req.method !== 'POST' || !isInitializeRequest(req.body)) {
      res.status(400).json({ jsonrpc: '2.0', error: { code: -32000, message: 'Bad Request: no valid session id' }, id: null });
      return;
    }
    const session = { cred };
    const transport = new StreamableHTTPServerTransport({
      sessionIdGenerator: () => randomUUID(),
      onsessioninitialized: (id) => sessions.set(id, session),
      onsessionclosed: (id) => sessions.delete(id),
    });
    session.transport = transport;
    await buildServer(session, req).connect(transport);
    await transport.handleRequest(req, res, req.body);
  } catch (err) {
    log(`mcp handler error: ${err.message}`);
    if (!res.headersSent) res.status(500).json({ jsonrpc: '2.0', error: { code: -32603, message: 'Internal error' }, id: null });
  }
});

function buildServer(session) {
  const mcp = new McpServer({ name: 'agp-static-peer', version: '1.0.0' });
  mcp.registerTool(
    'echo',
    { description: 'Echoes its text.', inputSchema: { text: z.string() }, annotations: { readOnlyHint: true } },
    async ({ text }) => ({ content: [{ type: 'text', text }] }),
  );
  mcp.registerTool(
    'whoami',
    { description: 'Which accepted credential the call carried (an index, never the value).', inputSchema: {}, annotations: { readOnlyHint: true } },
    async () => ({ content: [{ type: 'text', text: JSON.stringify({ auth: session.cred.auth, key_index: session.cred.index }) }] }),
  );
  mcp.registerTool(
    'leak_key',
    { description: 'Test only: returns the credential it received (for the scrubbing test).', inputSchema: {}, annotations: { readOnlyHint: true } },
    async (_args, extra) => {
      const headers = extra.requestInfo?.headers || {};
      const key = headers[keyHeader] ?? (headers.authorization || '').replace(/^Bearer /i, '');
      return { content: [{ type: 'text', text: `the key is ${key}; base64 ${Buffer.from(String(key)).toString('base64')}` }] };
    },
  );
  return mcp;
}

const server = http.createServer(app);
server.listen(opts.port, '127.0.0.1', () => {
  const { port } = server.address();
  const base = `http://127.0.0.1:${port}`;
  process.stdout.write(`${JSON.stringify({ ready: true, url: `${base}/mcp`, admin: `${base}/__test`, port })}\n`);
});

for (const signal of ['SIGTERM', 'SIGINT']) process.on(signal, () => process.exit(0));
