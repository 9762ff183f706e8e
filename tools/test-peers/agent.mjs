#!/usr/bin/env node
// An MCP client on the official TypeScript SDK (@modelcontextprotocol/sdk), playing the agent
// in AGP's tests: it connects to AGP's `/mcp` with an agent key over streamable HTTP and is
// driven by JSON lines on stdin, answering with JSON lines on stdout.
//
//   node tools/test-peers/agent.mjs --url http://127.0.0.1:PORT/mcp --key agp_… [--header 'Name: value' …]
//
// stdout, first line: {"ready":true,"session":"<Mcp-Session-Id>","server":{…}}
//                 or: {"ready":false,"error":{"message":…,"code":…}}  (then exits 1)
// stdin commands, one JSON object per line, each answered by one line with the same "id"
// (commands run concurrently; answers come in the order they finish):
//   {"id":1,"op":"list"}                                  -> {"id":1,"tools":[…]}
//   {"id":2,"op":"call","name":"x","arguments":{…}}       -> {"id":2,"result":{…}}
//                                                         or {"id":2,"error":{"code","message","data"}}
//   {"id":3,"op":"close"}                                 -> {"id":3,"closed":true}, then exit 0
// Unprompted lines: {"event":"tools_list_changed"} when the server sends
// notifications/tools/list_changed.

import process from 'node:process';
import readline from 'node:readline';

import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { ToolListChangedNotificationSchema } from '@modelcontextprotocol/sdk/types.js';

import { parseArgs, usage } from './lib/args.mjs';

const SPEC = {
  url: { arg: 'URL', help: "AGP's MCP endpoint (required)" },
  key: { arg: 'KEY', help: 'agent key, sent as Authorization: Bearer KEY (omit to send none)' },
  header: { arg: "'NAME: VALUE'", repeat: true, help: 'extra request header (repeatable)' },
};

let opts;
try {
  opts = parseArgs(process.argv.slice(2), SPEC);
  if (!opts.help && !opts.url) throw new Error('--url is required');
} catch (err) {
  process.stderr.write(`${err.message}\n\n${usage('agent.mjs — MCP client for tests', SPEC)}\n`);
  process.exit(2);
}

const out = (obj) => process.stdout.write(`${JSON.stringify(obj)}\n`);

const headers = {};
if (opts.key) headers.authorization = `Bearer ${opts.key}`;
for (const h of opts.header) {
  const i = h.indexOf(':');
  if (i < 1) {
    process.stderr.write(`bad --header ${h}\n`);
    process.exit(2);
  }
  headers[h.slice(0, i).trim().toLowerCase()] = h.slice(i + 1).trim();
}

const transport = new StreamableHTTPClientTransport(new URL(opts.url), { requestInit: { headers } });
const client = new Client({ name: 'agp-test-agent', version: '0.0.0' }, { capabilities: {} });
client.setNotificationHandler(ToolListChangedNotificationSchema, () => out({ event: 'tools_list_changed' }));

const errorOf = (err) => ({
  code: err?.code ?? null,
  message: String(err?.message ?? err),
  data: err?.data ?? null,
});

try {
  await client.connect(transport);
} catch (err) {
  out({ ready: false, error: errorOf(err) });
  process.exit(1);
}
out({ ready: true, session: transport.sessionId ?? null, server: client.getServerVersion() ?? null });

// Commands run concurrently, so several calls can be in flight at once (tests race kill
// switches against them); each answer carries its command's id, in the order they finish.
const handle = async (cmd) => {
  const { id } = cmd;
  try {
    if (cmd.op === 'list') {
      const r = await client.listTools();
      out({ id, tools: r.tools });
    } else if (cmd.op === 'call') {
      // `progress: true` sends a progressToken and counts the server's progress notifications
      // (a call held for approval reports while it waits).
      const progress = [];
      const options = cmd.progress ? { onprogress: (p) => progress.push(p), resetTimeoutOnProgress: true } : {};
      try {
        const r = await client.callTool({ name: cmd.name, arguments: cmd.arguments ?? {} }, undefined, options);
        out({ id, result: r, progress: progress.length });
      } catch (err) {
        out({ id, error: errorOf(err), progress: progress.length });
      }
    } else if (cmd.op === 'close') {
      await transport.terminateSession().catch(() => {});
      await client.close();
      out({ id, closed: true });
      process.exit(0);
    } else {
      out({ id, error: { message: `unknown op ${cmd.op}` } });
    }
  } catch (err) {
    out({ id, error: errorOf(err) });
  }
};

const rl = readline.createInterface({ input: process.stdin });
for await (const line of rl) {
  if (!line.trim()) continue;
  let cmd;
  try {
    cmd = JSON.parse(line);
  } catch (err) {
    out({ error: { message: `bad command: ${err.message}` } });
    continue;
  }
  handle(cmd);
}
await client.close().catch(() => {});
