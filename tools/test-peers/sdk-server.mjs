#!/usr/bin/env node
// An MCP server with the authorization server built into the official TypeScript SDK
// (@modelcontextprotocol/sdk): `mcpAuthRouter` (RFC 8414 metadata, DCR, authorize, token,
// revocation) and `requireBearerAuth` in front of a streamable-HTTP MCP endpoint, all in one
// express app, as MCP servers with built-in auth ship it. The SDK supplies every OAuth endpoint
// and its client authentication; this file supplies only the in-memory `OAuthServerProvider`
// (codes, access and refresh tokens with rotation, revocation) that the SDK asks for.
//
//   node tools/test-peers/sdk-server.mjs --port 0 [--access-ttl S] \
//        [--static-client ID:SECRET:METHOD]... [--redirect-uri URI]...
//
// Prints one JSON line on stdout once listening:
//   {"ready":true,"issuer":"http://127.0.0.1:P/","url":"http://127.0.0.1:P/mcp",
//    "admin":"http://127.0.0.1:P","metadata":{…the SDK's RFC 8414 document…}}
// The issuer keeps the SDK's trailing slash. Consent is automatic (as in the SDK's demo
// provider): the authorize endpoint redirects back with a code for the user `sdk-user`.
//
// Test admin API (loopback, same port, no auth):
//   POST /__test/introspect {"token"}  -> {"active": bool, "kind": "access"|"refresh"|null}
//   GET  /__test/requests              -> [{"endpoint","grant_type","basic","client_id_in_body",
//                                           "client_secret_in_body","status"}] (no token, no secret)
// Log on stderr: method, path, status; never a token, a code or a query string.

import { randomUUID } from 'node:crypto';
import http from 'node:http';
import process from 'node:process';

import express from 'express';
import { mcpAuthRouter, getOAuthProtectedResourceMetadataUrl } from '@modelcontextprotocol/sdk/server/auth/router.js';
import { requireBearerAuth } from '@modelcontextprotocol/sdk/server/auth/middleware/bearerAuth.js';
import { InvalidGrantError, InvalidTokenError } from '@modelcontextprotocol/sdk/server/auth/errors.js';
import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js';
import { isInitializeRequest } from '@modelcontextprotocol/sdk/types.js';
import { z } from 'zod';

import { logger, parseArgs, usage } from './lib/args.mjs';

const SPEC = {
  port: { type: 'number', default: 0, arg: 'PORT', help: 'listen port on 127.0.0.1 (0 = any free port)' },
  'access-ttl': { type: 'number', default: 3600, arg: 'S', help: 'access-token lifetime in seconds' },
  'static-client': { repeat: true, arg: 'ID:SECRET:METHOD', help: 'a pre-registered client (client_secret_post, client_secret_basic or none)' },
  'redirect-uri': { repeat: true, arg: 'URI', help: 'redirect URIs of the static clients' },
};

let opts;
try {
  opts = parseArgs(process.argv.slice(2), SPEC);
} catch (err) {
  process.stderr.write(`${err.message}\n\n${usage('sdk-server.mjs — MCP server with the TypeScript SDK authorization server', SPEC)}\n`);
  process.exit(2);
}
if (opts.help) {
  process.stdout.write(`${usage('sdk-server.mjs', SPEC)}\n`);
  process.exit(0);
}

const log = logger('sdk-ts');
const SCOPES = ['mcp:read', 'mcp:write'];
const USER = 'sdk-user';

// --- the provider the SDK's handlers call ------------------------------------------------------
const clients = new Map();
const clientsStore = {
  async getClient(id) {
    return clients.get(id);
  },
  async registerClient(client) {
    clients.set(client.client_id, client);
    return client;
  },
};

const codes = new Map(); // code -> { clientId, params }
const tokens = new Map(); // token -> { kind, clientId, scopes, resource, expiresAt, grant }
const grants = new Map(); // grant id -> Set(token)

function issue(clientId, scopes, resource, grant) {
  const access = `ts-at-${randomUUID()}`;
  const refresh = `ts-rt-${randomUUID()}`;
  const expiresAt = Date.now() + opts['access-ttl'] * 1000;
  tokens.set(access, { kind: 'access', clientId, scopes, resource, expiresAt, grant });
  tokens.set(refresh, { kind: 'refresh', clientId, scopes, resource, expiresAt: Infinity, grant });
  grants.get(grant).add(access).add(refresh);
  return {
    access_token: access,
    token_type: 'bearer',
    expires_in: opts['access-ttl'],
    refresh_token: refresh,
    scope: scopes.join(' '),
  };
}

const provider = {
  clientsStore,
  async authorize(client, params, res) {
    if (!client.redirect_uris.includes(params.redirectUri)) throw new Error('unregistered redirect_uri');
    const code = randomUUID();
    codes.set(code, { clientId: client.client_id, params });
    const target = new URL(params.redirectUri);
    target.searchParams.set('code', code);
    if (params.state !== undefined) target.searchParams.set('state', params.state);
    res.redirect(target.toString());
  },
  async challengeForAuthorizationCode(_client, code) {
    const data = codes.get(code);
    if (!data) throw new InvalidGrantError('unknown authorization code');
    return data.params.codeChallenge;
  },
  async exchangeAuthorizationCode(client, code, _verifier, redirectUri, resource) {
    const data = codes.get(code);
    if (!data || data.clientId !== client.client_id) throw new InvalidGrantError('unknown authorization code');
    codes.delete(code);
    if (redirectUri !== undefined && redirectUri !== data.params.redirectUri) throw new InvalidGrantError('redirect_uri mismatch');
    const granted = data.params.resource?.href;
    if (resource && resource.href !== granted) throw new InvalidGrantError('resource mismatch');
    const scopes = (data.params.scopes || []).filter((s) => SCOPES.includes(s));
    const grant = randomUUID();
    grants.set(grant, new Set());
    return issue(client.client_id, scopes, granted, grant);
  },
  async exchangeRefreshToken(client, refreshToken, _scopes, resource) {
    const t = tokens.get(refreshToken);
    if (!t || t.kind !== 'refresh' || t.clientId !== client.client_id) throw new InvalidGrantError('refresh token is not active');
    if (resource && resource.href !== t.resource) throw new InvalidGrantError('resource mismatch');
    tokens.delete(refreshToken); // rotation
    return issue(client.client_id, t.scopes, t.resource, t.grant);
  },
  async verifyAccessToken(token) {
    const t = tokens.get(token);
    if (!t || t.kind !== 'access' || t.expiresAt < Date.now()) throw new InvalidTokenError('token is not active');
    return {
      token,
      clientId: t.clientId,
      scopes: t.scopes,
      expiresAt: Math.floor(t.expiresAt / 1000),
      resource: t.resource ? new URL(t.resource) : undefined,
    };
  },
  async revokeToken(client, request) {
    const t = tokens.get(request.token);
    if (!t || t.clientId !== client.client_id) return; // RFC 7009 §2.2: unknown tokens are fine
    // Revoking either token ends the whole grant, as oidc-provider does.
    for (const other of grants.get(t.grant) || []) tokens.delete(other);
    grants.delete(t.grant);
  },
};

// --- HTTP ----------------------------------------------------------------------------------------
const app = express();
app.disable('x-powered-by');
const requests = [];

app.use((req, res, next) => {
  res.on('finish', () => log(`${req.method} ${req.originalUrl.split('?')[0]} -> ${res.statusCode}`));
  next();
});
// How clients authenticate at the token and revocation endpoints: what the tests assert.
app.use(['/token', '/revoke'], express.urlencoded({ extended: false }), (req, res, next) => {
  const body = req.body || {};
  const entry = {
    endpoint: req.path === '/' ? req.baseUrl.slice(1) : req.baseUrl.slice(1) + req.path,
    grant_type: body.grant_type ?? null,
    basic: /^basic /i.test(req.headers.authorization || ''),
    client_id_in_body: typeof body.client_id === 'string',
    client_secret_in_body: typeof body.client_secret === 'string',
  };
  res.on('finish', () => requests.push({ ...entry, status: res.statusCode }));
  next();
});

const server = http.createServer(app);
server.listen(opts.port, '127.0.0.1', () => {
  const port = server.address().port;
  const base = `http://127.0.0.1:${port}`;
  const issuerUrl = new URL(base); // href carries the trailing slash, as every SDK server's does
  const mcpUrl = new URL(`${base}/mcp`);

  for (const spec of opts['static-client']) {
    const [id, secret, method = 'client_secret_post'] = spec.split(':');
    clients.set(id, {
      client_id: id,
      client_secret: method === 'none' ? undefined : secret,
      token_endpoint_auth_method: method,
      redirect_uris: opts['redirect-uri'],
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
    });
  }

  const off = { rateLimit: false };
  app.use(mcpAuthRouter({
    provider,
    issuerUrl,
    resourceServerUrl: mcpUrl,
    scopesSupported: SCOPES,
    resourceName: 'AGP test MCP server (TypeScript SDK auth)',
    authorizationOptions: off,
    tokenOptions: off,
    clientRegistrationOptions: off,
    revocationOptions: off,
  }));

  app.post('/__test/introspect', express.json(), (req, res) => {
    const t = tokens.get(req.body?.token);
    const active = !!t && t.expiresAt > Date.now();
    res.json({ active, kind: active ? t.kind : null });
  });
  app.get('/__test/requests', (_req, res) => res.json(requests));

  const bearer = requireBearerAuth({
    verifier: provider,
    expectedResource: mcpUrl,
    resourceMetadataUrl: getOAuthProtectedResourceMetadataUrl(mcpUrl),
  });
  const sessions = new Map();
  app.all('/mcp', bearer, express.json(), async (req, res) => {
    try {
      const sid = req.headers['mcp-session-id'];
      if (sid) {
        const session = sessions.get(sid);
        if (!session || session.clientId !== req.auth.clientId) {
          res.status(404).json({ jsonrpc: '2.0', error: { code: -32001, message: 'Session not found' }, id: null });
          return;
        }
        await session.transport.handleRequest(req, res, req.body);
        return;
      }
      if (req.method !== 'POST' || !isInitializeRequest(req.body)) {
        res.status(400).json({ jsonrpc: '2.0', error: { code: -32000, message: 'Bad Request: no valid session id' }, id: null });
        return;
      }
      const mcp = buildServer();
      const clientId = req.auth.clientId;
      const transport = new StreamableHTTPServerTransport({
        sessionIdGenerator: () => randomUUID(),
        onsessioninitialized: (id) => sessions.set(id, { transport, clientId }),
        onsessionclosed: (id) => sessions.delete(id),
      });
      await mcp.connect(transport);
      await transport.handleRequest(req, res, req.body);
    } catch (err) {
      log(`mcp handler error: ${err.message}`);
      if (!res.headersSent) res.status(500).json({ jsonrpc: '2.0', error: { code: -32603, message: 'Internal error' }, id: null });
    }
  });

  fetch(`${base}/.well-known/oauth-authorization-server`)
    .then((r) => r.json())
    .then((metadata) => {
      process.stdout.write(`${JSON.stringify({ ready: true, issuer: issuerUrl.href, url: mcpUrl.href, admin: base, port, metadata })}\n`);
    })
    .catch((err) => {
      log(`could not read my own metadata: ${err.message}`);
      process.exit(1);
    });
});

function buildServer() {
  const mcp = new McpServer({ name: 'agp-sdk-ts-peer', version: '1.0.0' });
  mcp.registerTool(
    'echo',
    { description: 'Echoes its text.', inputSchema: { text: z.string() }, annotations: { readOnlyHint: true } },
    async ({ text }) => ({ content: [{ type: 'text', text }] }),
  );
  mcp.registerTool(
    'whoami',
    { description: 'The client and scopes of the calling token (never the token).', inputSchema: {}, annotations: { readOnlyHint: true } },
    async (_args, extra) => ({
      content: [{ type: 'text', text: JSON.stringify({ client_id: extra.authInfo?.clientId, scopes: extra.authInfo?.scopes, user: USER }) }],
    }),
  );
  return mcp;
}

for (const signal of ['SIGTERM', 'SIGINT']) process.on(signal, () => process.exit(0));
