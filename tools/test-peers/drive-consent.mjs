#!/usr/bin/env node
// Drives oidc-provider's devInteractions login and consent pages with plain HTTP, the way a
// browser would: cookie jar, manual redirects, submitting the forms the pages contain.
//
//   node tools/test-peers/drive-consent.mjs 'http://127.0.0.1:P/auth?client_id=…' [--login alice] [--password pw]
//
// Prints one JSON line: {"ok":true,"callback":"<redirect_uri>?code=…&state=…&iss=…","steps":[…]}
// (or {"ok":false,"error":…}) and exits non-zero on failure. The final redirect (to the
// client's redirect_uri) is never followed. Also importable: `driveConsent(url, options)`.

import process from 'node:process';
import { fileURLToPath } from 'node:url';

// --- a small RFC 6265 cookie jar: host-only, path-matched, honours Max-Age/Expires ------------
export class CookieJar {
  constructor() {
    this.cookies = new Map(); // key `${host}|${path}|${name}` -> { name, value, host, path, expires }
  }

  store(url, setCookieHeaders) {
    const u = new URL(url);
    for (const header of setCookieHeaders) {
      const [pair, ...attrs] = header.split(';');
      const eq = pair.indexOf('=');
      if (eq < 1) continue;
      const name = pair.slice(0, eq).trim();
      const value = pair.slice(eq + 1).trim();
      let path = u.pathname.replace(/\/[^/]*$/, '') || '/';
      let expires = Infinity;
      for (const attr of attrs) {
        const [k, ...rest] = attr.split('=');
        const key = k.trim().toLowerCase();
        const v = rest.join('=').trim();
        if (key === 'path' && v.startsWith('/')) path = v;
        else if (key === 'max-age') expires = Date.now() + Number(v) * 1000;
        else if (key === 'expires' && expires === Infinity) expires = Date.parse(v);
      }
      const key = `${u.host}|${path}|${name}`;
      if (expires <= Date.now()) this.cookies.delete(key);
      else this.cookies.set(key, { name, value, host: u.host, path, expires });
    }
  }

  header(url) {
    const u = new URL(url);
    const now = Date.now();
    const matches = [];
    for (const [key, c] of this.cookies) {
      if (c.expires <= now) {
        this.cookies.delete(key);
        continue;
      }
      if (c.host !== u.host) continue;
      const p = u.pathname;
      const pathOk = p === c.path || (p.startsWith(c.path) && (c.path.endsWith('/') || p[c.path.length] === '/'));
      if (pathOk) matches.push(c);
    }
    matches.sort((a, b) => b.path.length - a.path.length);
    return matches.map((c) => `${c.name}=${c.value}`).join('; ');
  }
}

// --- minimal HTML form extraction (the devInteractions markup is small and regular) -----------
function unescapeHtml(s) {
  return s
    .replace(/&#x([0-9a-f]+);/gi, (_, h) => String.fromCodePoint(parseInt(h, 16)))
    .replace(/&#([0-9]+);/g, (_, d) => String.fromCodePoint(Number(d)))
    .replace(/&quot;/g, '"')
    .replace(/&#39;|&apos;/g, "'")
    .replace(/&lt;/g, '<')
    .replace(/&gt;/g, '>')
    .replace(/&amp;/g, '&');
}

function attrs(tag) {
  const out = {};
  const re = /([a-zA-Z_:][-a-zA-Z0-9_:.]*)(?:\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s"'=<>`]+)))?/g;
  const inner = tag.replace(/^<\s*[a-zA-Z]+/, '').replace(/\/?>$/, '');
  let m;
  while ((m = re.exec(inner))) {
    out[m[1].toLowerCase()] = unescapeHtml(m[2] ?? m[3] ?? m[4] ?? '');
  }
  return out;
}

export function extractForms(html, baseUrl) {
  const forms = [];
  const re = /<form\b[^>]*>([\s\S]*?)<\/form>/gi;
  let m;
  while ((m = re.exec(html))) {
    const formTag = m[0].match(/<form\b[^>]*>/i)[0];
    const a = attrs(formTag);
    const inputs = [];
    for (const input of m[1].match(/<input\b[^>]*>/gi) || []) {
      const ia = attrs(input);
      if (ia.name) inputs.push({ name: ia.name, type: (ia.type || 'text').toLowerCase(), value: ia.value ?? '' });
    }
    forms.push({
      action: new URL(a.action || baseUrl, baseUrl).href,
      method: (a.method || 'get').toLowerCase(),
      inputs,
    });
  }
  return forms;
}

// --- the driver -----------------------------------------------------------------------------
export async function driveConsent(authorizeUrl, options = {}) {
  const {
    login = 'alice',
    password = 'any-password',
    jar = new CookieJar(),
    maxSteps = 20,
    abort = false, // press "Cancel" (the abort link) instead of consenting: callback carries error=access_denied
  } = options;
  const asOrigin = new URL(authorizeUrl).origin;
  const steps = [];
  let url = authorizeUrl;
  let method = 'GET';
  let body;

  for (let i = 0; i < maxSteps; i += 1) {
    const headers = { accept: 'text/html' };
    const cookie = jar.header(url);
    if (cookie) headers.cookie = cookie;
    if (body) headers['content-type'] = 'application/x-www-form-urlencoded';
    const res = await fetch(url, { method, headers, body, redirect: 'manual' });
    jar.store(url, res.headers.getSetCookie());
    const u = new URL(url);
    steps.push(`${method} ${u.pathname} -> ${res.status}`);

    if (res.status >= 300 && res.status < 400) {
      const location = res.headers.get('location');
      if (!location) throw new Error(`redirect without Location from ${u.pathname}`);
      const next = new URL(location, url).href;
      await res.arrayBuffer();
      if (new URL(next).origin !== asOrigin) {
        // Left the authorization server: this is the client's redirect_uri. Do not follow.
        return { callback: next, steps };
      }
      url = next;
      method = 'GET';
      body = undefined;
      continue;
    }

    const text = await res.text();
    if (res.status !== 200) {
      throw new Error(`${method} ${u.pathname} answered ${res.status}: ${text.replace(/<[^>]+>/g, ' ').replace(/\s+/g, ' ').trim().slice(0, 300)}`);
    }
    const forms = extractForms(text, url).filter((f) => f.method === 'post');
    if (!forms.length) {
      throw new Error(`no form on ${u.pathname}: ${text.replace(/<[^>]+>/g, ' ').replace(/\s+/g, ' ').trim().slice(0, 300)}`);
    }
    if (abort) {
      const abortMatch = text.match(/href="([^"]*\/abort)"/);
      if (abortMatch) {
        url = new URL(unescapeHtml(abortMatch[1]), url).href;
        method = 'GET';
        body = undefined;
        continue;
      }
    }
    const form = forms[0];
    const params = new URLSearchParams();
    for (const input of form.inputs) {
      if (input.name === 'login') params.set('login', login);
      else if (input.type === 'password') params.set(input.name, password);
      else params.set(input.name, input.value);
    }
    steps[steps.length - 1] += ` (form prompt=${params.get('prompt') ?? '?'})`;
    url = form.action;
    method = 'POST';
    body = params.toString();
  }
  throw new Error(`gave up after ${maxSteps} steps: ${steps.join(', ')}`);
}

async function main() {
  const argv = process.argv.slice(2);
  let authorizeUrl;
  const options = {};
  for (let i = 0; i < argv.length; i += 1) {
    const a = argv[i];
    if (a === '--login') options.login = argv[++i];
    else if (a === '--password') options.password = argv[++i];
    else if (a === '--abort') options.abort = true;
    else if (a === '--help' || a === '-h') {
      process.stdout.write('usage: drive-consent.mjs AUTHORIZE_URL [--login NAME] [--password PW] [--abort]\n');
      return 0;
    } else if (!authorizeUrl) authorizeUrl = a;
    else throw new Error(`unexpected argument ${a}`);
  }
  if (!authorizeUrl) throw new Error('usage: drive-consent.mjs AUTHORIZE_URL [--login NAME] [--password PW] [--abort]');
  const { callback, steps } = await driveConsent(authorizeUrl, options);
  process.stdout.write(`${JSON.stringify({ ok: true, callback, steps })}\n`);
  return 0;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  main().then(
    (code) => process.exit(code),
    (err) => {
      process.stdout.write(`${JSON.stringify({ ok: false, error: err.message })}\n`);
      process.exit(1);
    },
  );
}
