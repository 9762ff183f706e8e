#!/usr/bin/env node
// A real OAuth 2.1 / OpenID Connect authorization server for AGP's tests, built on
// oidc-provider (panva). Loopback only, in-memory state, one process per test.
//
//   node tools/test-peers/as.mjs --port 0 [--issuer-path /tenant] [--access-ttl 5] \
//        [--no-dcr] [--no-rotate] [--static-client id:secret:client_secret_basic] \
//        [--cimd [--cimd-ca CERT.pem]] ...
//
// Prints exactly one JSON line on stdout once listening:
//   {"ready":true,"issuer":"http://127.0.0.1:PORT[/tenant]", ...}
// Everything else (request log, oidc-provider warnings) goes to stderr. See README.md.

import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import process from 'node:process';

import express from 'express';
import Provider, { errors } from 'oidc-provider';

import { isLoopbackHost, logger, parseArgs, usage } from './lib/args.mjs';

const SPEC = {
  port: { type: 'number', default: 0, arg: 'PORT', help: 'listen port on 127.0.0.1 (0 = any free port)' },
  'issuer-path': { default: '', arg: '/PATH', help: 'issuer path, e.g. /tenant (default: none)' },
  'access-ttl': { type: 'number', default: 3600, arg: 'SECONDS', help: 'access token lifetime (default 3600)' },
  'refresh-ttl': { type: 'number', default: 14 * 24 * 3600, arg: 'SECONDS', help: 'refresh token lifetime (default 14 days)' },
  'no-dcr': { type: 'boolean', help: 'disable dynamic client registration (RFC 7591)' },
  'no-rotate': { type: 'boolean', help: 'do not rotate refresh tokens (refresh response has no refresh_token)' },
  'echo-refresh-token': { type: 'boolean', help: 'with --no-rotate: refresh responses repeat the unchanged refresh_token' },
  'no-rfc8414': { type: 'boolean', help: 'do not serve /.well-known/oauth-authorization-server[/path] (OIDC discovery only)' },
  'static-client': { repeat: true, arg: 'ID:SECRET:METHOD', help: 'pre-registered client; METHOD client_secret_basic|client_secret_post|none (repeatable)' },
  'redirect-uri': { repeat: true, arg: 'URI', help: 'redirect URI for the static clients (repeatable; default: any-port loopback, see README)' },
  'rs-client': { default: 'mcp-resource-server:secret', arg: 'ID:SECRET', help: 'the resource server\'s introspection client' },
  resource: { repeat: true, arg: 'URL', help: 'accepted resource indicator (repeatable; default: any http(s) loopback URL)' },
  'default-resource': { default: '', arg: 'URL', help: 'resource used when an authorization request names none' },
  cimd: { type: 'boolean', help: 'accept OAuth Client ID Metadata Documents (oidc-provider\'s clientIdMetadataDocument feature): https client ids are fetched and validated' },
  'cimd-ca': { default: '', arg: 'CERT.pem', help: 'with --cimd: fetch metadata documents from loopback https servers whose certificate is this PEM (tests; see README)' },
  scopes: { default: 'mcp:read mcp:write', arg: '"S1 S2"', help: 'scopes of the resource server (default "mcp:read mcp:write")' },
};

let opts;
try {
  opts = parseArgs(process.argv.slice(2), SPEC);
} catch (err) {
  process.stderr.write(`${err.message}\n\n${usage('as.mjs — test authorization server', SPEC)}\n`);
  process.exit(2);
}
if (opts.help) {
  process.stdout.write(`${usage('as.mjs — test authorization server', SPEC)}\n`);
  process.exit(0);
}

const log = logger('as');

let issuerPath = opts['issuer-path'] || '';
if (issuerPath && !issuerPath.startsWith('/')) issuerPath = `/${issuerPath}`;
issuerPath = issuerPath.replace(/\/+$/, '');

const resourceScopes = opts.scopes.split(/\s+/).filter(Boolean);
const allowedResources = new Set(opts.resource);

function splitTriple(value, what) {
  const parts = value.split(':');
  if (parts.length < 2 || parts.length > 3 || !parts[0]) {
    throw new Error(`${what} must look like id:secret[:method], got ${JSON.stringify(value)}`);
  }
  return parts;
}

// The resource server (the MCP server) authenticates to the introspection endpoint with this
// confidential client. It can neither authorize nor obtain tokens.
const [rsClientId, rsClientSecret] = splitTriple(opts['rs-client'], '--rs-client');
const clients = [
  {
    client_id: rsClientId,
    client_secret: rsClientSecret,
    client_name: 'MCP resource server (introspection only)',
    grant_types: [],
    response_types: [],
    redirect_uris: [],
    token_endpoint_auth_method: 'client_secret_basic',
  },
];

// Static ("registered") clients for the DCR-off path. application_type native makes
// oidc-provider accept the registered loopback redirect URIs on any port (RFC 8252 §7.3),
// so a test can register http://127.0.0.1/connect/callback before it knows AGP's port.
const staticRedirects = opts['redirect-uri'].length
  ? opts['redirect-uri']
  : ['http://127.0.0.1/connect/callback', 'http://127.0.0.1/cb'];
for (const value of opts['static-client']) {
  const [clientId, secret, method = 'client_secret_basic'] = splitTriple(value, '--static-client');
  const allowed = ['client_secret_basic', 'client_secret_post', 'none'];
  if (!allowed.includes(method)) throw new Error(`--static-client method must be one of ${allowed.join(', ')}`);
  if (clientId === rsClientId) throw new Error(`--static-client ${clientId} clashes with the resource server client`);
  const client = {
    client_id: clientId,
    client_name: `static client ${clientId}`,
    application_type: 'native',
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
    redirect_uris: staticRedirects,
    token_endpoint_auth_method: method,
  };
  if (method !== 'none') {
    if (!secret) throw new Error(`--static-client ${clientId}: a secret is required for ${method}`);
    client.client_secret = secret;
  }
  clients.push(client);
}

function resourceAllowed(indicator) {
  if (allowedResources.size) return allowedResources.has(indicator);
  const url = URL.parse(indicator);
  return !!url && (url.protocol === 'http:' || url.protocol === 'https:') && isLoopbackHost(url.hostname) && !url.hash;
}

// A fresh signing key per process: nothing here is meant to outlive the test.
const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const signingJwk = { ...privateKey.export({ format: 'jwk' }), kid: 'test-peer-rs256', alg: 'RS256', use: 'sig' };

// Every Client ID Metadata Document fetch, for tests: the URL and the status it answered.
const cimdFetches = [];

// oidc-provider fetches metadata documents only from https URLs that resolve to public
// addresses. A test's AGP is on loopback behind a TLS front with a throwaway certificate, so
// --cimd-ca swaps in a fetch that reaches loopback https servers (and nothing else) trusting
// that certificate; the draft allows loopback for authorization servers under test
// (draft-ietf-oauth-client-id-metadata-document, "SSRF Attacks"). Without it the provider's
// own SSRF-guarded fetch is used.
function loopbackFetch(ca) {
  return (url, options = {}) => new Promise((resolve, reject) => {
    const target = new URL(url);
    if (target.protocol !== 'https:' || !isLoopbackHost(target.hostname)) {
      reject(new Error(`test peer: only loopback https is fetched, not ${target.origin}`));
      return;
    }
    const headers = Object.fromEntries(new Headers(options.headers));
    const req = https.request(target, {
      method: options.method || 'GET', headers, ca, signal: options.signal,
    }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('error', reject);
      res.on('end', () => {
        cimdFetches.push({ url: String(url), status: res.statusCode });
        const pairs = [];
        for (const [k, v] of Object.entries(res.headers)) {
          for (const one of Array.isArray(v) ? v : [v]) pairs.push([k, String(one)]);
        }
        const body = [204, 304].includes(res.statusCode) ? null : Buffer.concat(chunks);
        resolve(new Response(body, { status: res.statusCode, headers: pairs }));
      });
    });
    req.on('error', reject);
    req.end();
  });
}

const accessTtl = opts['access-ttl'];
const refreshTtl = opts['refresh-ttl'];

const configuration = {
  clients,
  jwks: { keys: [signingJwk] },
  cookies: { keys: [randomBytes(32).toString('base64url')] },
  // Any login is accepted by the devInteractions login form; it becomes the subject, and the
  // account's profile derives from it (login "alice": email alice@example.com, name
  // "Test User alice"), so tests can predict what an ID token or userinfo says.
  async findAccount(_ctx, sub) {
    return {
      accountId: sub,
      async claims() {
        return {
          sub,
          email: `${sub}@example.com`,
          email_verified: true,
          name: `Test User ${sub}`,
          preferred_username: sub,
        };
      },
    };
  },
  // The standard OIDC scopes with their claims: `openid email profile` in an authorization
  // request yields an ID token carrying them. (With a resource indicator the access token has
  // an audience, which oidc-provider refuses at userinfo, so it puts the scope claims in the
  // ID token itself.)
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['name', 'preferred_username'],
  },
  // Authorization code flow only (no implicit / hybrid).
  responseTypes: ['code'],
  clientDefaults: {
    grant_types: ['authorization_code'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic',
    id_token_signed_response_alg: 'RS256',
  },
  // No browser-based clients in these tests.
  clientBasedCORS: () => false,
  // PKCE on every authorization request, public or confidential. oidc-provider v9 only
  // implements S256 (discovery: code_challenge_methods_supported ["S256"]).
  pkce: { required: () => true },
  // Tokens live on their own, independent of the browser session at the provider.
  expiresWithSession: () => false,
  // A client allowed the refresh_token grant gets a refresh token from the authorization
  // code grant, whether or not it asked for offline_access.
  issueRefreshToken: (_ctx, client) => client.grantTypeAllowed('refresh_token'),
  // Every refresh returns a new refresh token and consumes the old one (reuse of a consumed
  // one revokes the whole grant: RFC 9700 §4.14.2). --no-rotate: the refresh token is reused
  // and refresh responses carry no refresh_token.
  rotateRefreshToken: !opts['no-rotate'],
  ttl: {
    AccessToken: (_ctx, token) => token.resourceServer?.accessTokenTTL || accessTtl,
    AuthorizationCode: 60,
    ClientCredentials: accessTtl,
    IdToken: 3600,
    RefreshToken: refreshTtl,
    Grant: Math.max(refreshTtl, 3600),
    Interaction: 3600,
    Session: 24 * 3600,
  },
  features: {
    devInteractions: { enabled: true },
    dPoP: { enabled: false },
    // Open registration (no initial access token). Client ids look like dcr-<hex>.
    registration: {
      enabled: !opts['no-dcr'],
      initialAccessToken: false,
      idFactory: () => `dcr-${randomBytes(12).toString('hex')}`,
    },
    revocation: {
      enabled: true,
      // RFC 7009: a client may revoke its own tokens only.
      async allowedPolicy(_ctx, client, token) {
        if (token.clientId !== client.clientId) {
          if (client.clientAuthMethod === 'none') return false;
          throw new errors.InvalidRequest('client is not authorized to revoke the presented token');
        }
        return true;
      },
    },
    introspection: {
      enabled: true,
      // The resource server may introspect any token; any other client only its own.
      // Otherwise the answer is {"active":false}.
      async allowedPolicy(_ctx, client, token) {
        return client.clientId === rsClientId || token.clientId === client.clientId;
      },
    },
    resourceIndicators: {
      enabled: true,
      async defaultResource(_ctx, _client, oneOf) {
        if (oneOf) return oneOf;
        return opts['default-resource'] || undefined;
      },
      // A refresh without `resource` keeps the audience the grant was given.
      useGrantedResource: () => true,
      async getResourceServerInfo(_ctx, resourceIndicator) {
        if (!resourceAllowed(resourceIndicator)) {
          throw new errors.InvalidTarget(`resource ${resourceIndicator} is not served by this authorization server`);
        }
        return {
          audience: resourceIndicator,
          scope: resourceScopes.join(' '),
          accessTokenTTL: accessTtl,
          // Opaque: the MCP server validates by introspection (JWTs cannot be introspected here).
          accessTokenFormat: 'opaque',
        };
      },
    },
    rpInitiatedLogout: { enabled: false },
    // --cimd: an https client_id is a Client ID Metadata Document URL, fetched and validated
    // (client_id equal to the URL, no shared-secret method, redirect URIs) before the
    // authorization request goes on; advertised as client_id_metadata_document_supported.
    clientIdMetadataDocument: { enabled: !!opts.cimd, ack: 'draft-02' },
  },
};
if (opts['cimd-ca']) {
  configuration.fetch = loopbackFetch(readFileSync(opts['cimd-ca']));
}

const port = opts.port;
const app = express();
app.disable('x-powered-by');

// Request log: method, path (never the query: it may hold codes), status.
app.use((req, res, next) => {
  const started = Date.now();
  const path = req.originalUrl.split('?')[0];
  res.on('finish', () => {
    log(`${req.method} ${path} -> ${res.statusCode} ${Date.now() - started}ms`);
  });
  next();
});

let provider;
let issuer;

// What the tests read back: every metadata document fetch (--cimd).
app.get('/__test/cimd-fetches', (_req, res) => res.json(cimdFetches));

// RFC 8414 metadata with path insertion (/.well-known/oauth-authorization-server/tenant),
// next to oidc-provider's own OIDC discovery document at <issuer>/.well-known/openid-configuration.
if (!opts['no-rfc8414']) {
  app.get(`/.well-known/oauth-authorization-server${issuerPath}`, async (_req, res) => {
    try {
      const upstream = await fetch(`${issuer}/.well-known/openid-configuration`);
      res.status(upstream.status).type('application/json').send(await upstream.text());
    } catch (err) {
      res.status(500).json({ error: 'server_error', error_description: String(err.message) });
    }
  });
}

const server = http.createServer(app);
server.listen(port, '127.0.0.1', () => {
  const actual = server.address().port;
  issuer = `http://127.0.0.1:${actual}${issuerPath}`;
  provider = new Provider(issuer, configuration);
  provider.on('server_error', (_ctx, err) => log(`server_error: ${err.message}`));
  provider.on('grant.error', (_ctx, err) => log(`grant.error: ${err.name} ${err.error_description || err.message}`));
  provider.on('authorization.error', (_ctx, err) => log(`authorization.error: ${err.name} ${err.error_description || err.message}`));
  provider.on('registration_create.success', (_ctx, client) => log(`registered client ${client.clientId}`));
  provider.on('grant.success', (ctx) => log(`token issued to ${ctx.oidc.client?.clientId}`));
  provider.on('revocation.error', (_ctx, err) => log(`revocation.error: ${err.name} ${err.error_description || err.message}`));
  provider.on('introspection.error', (_ctx, err) => log(`introspection.error: ${err.name} ${err.error_description || err.message}`));
  // --no-rotate: oidc-provider repeats the unchanged refresh token in the refresh response;
  // omit it (unless --echo-refresh-token) so clients see "no new refresh token".
  if (opts['no-rotate'] && !opts['echo-refresh-token']) {
    provider.use(async (ctx, next) => {
      await next();
      if (
        ctx.oidc?.route === 'token'
        && ctx.oidc.params?.grant_type === 'refresh_token'
        && ctx.body && typeof ctx.body === 'object'
        && ctx.body.refresh_token === ctx.oidc.params.refresh_token
      ) {
        const { refresh_token: _omitted, ...rest } = ctx.body;
        ctx.body = rest;
      }
    });
  }
  app.use(issuerPath || '/', provider.callback());

  const line = {
    ready: true,
    issuer,
    port: actual,
    discovery: `${issuer}/.well-known/openid-configuration`,
    rfc8414: opts['no-rfc8414'] ? null : `http://127.0.0.1:${actual}/.well-known/oauth-authorization-server${issuerPath}`,
    dcr: !opts['no-dcr'],
    rotate: !opts['no-rotate'],
    access_ttl: accessTtl,
    rs_client: rsClientId,
    static_clients: clients.slice(1).map((c) => c.client_id),
    cimd: !!opts.cimd,
  };
  process.stdout.write(`${JSON.stringify(line)}\n`);
});

server.on('error', (err) => {
  log(`listen failed: ${err.message}`);
  process.exit(1);
});

for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => {
    server.close();
    process.exit(0);
  });
}
