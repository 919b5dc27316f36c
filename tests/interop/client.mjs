// TypeScript SDK 1.32.2 interop client for asgi_mcp (legacy 2025-11-25 session wire).
//
//   node tests/interop/client.mjs URL [TOOL JSON_ARGS]... [--token TOKEN] [--timeout-ms MS]
//
// Connects with StreamableHTTPClientTransport (Authorization: Bearer TOKEN when given), lists the
// tools, calls each TOOL with its JSON_ARGS object in order (with a progress callback), then sends
// the session DELETE (terminateSession) and closes. Prints one JSON object per line on stdout:
//   {"type":"connected","serverVersion":{...},"protocolVersion":"...","sessionId":"..."}
//   {"type":"tools","names":[...]}
//   {"type":"progress","tool":T,"progress":{"progress":1,"total":3,...}}   (0..n per call)
//   {"type":"log","params":{...}}                                          (logging notifications)
//   {"type":"result","tool":T,"result":{"content":[...],...}}
//   {"type":"terminated"}   {"type":"closed"}
//   {"type":"transport_error","message":...}   (client.onerror, e.g. a failed GET stream)
//   {"type":"error","name":...,"message":...,"code":...}   then exit 1
//
// The SDK is loaded from $ASGI_MCP_NODE_MODULES (set by tests/interop/node_env.py), else from
// ${ASGI_MCP_NODE_CACHE:-~/.cache/asgi-mcp-node}/interop/node_modules, else by bare specifier.
import { existsSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

const emit = (obj) => process.stdout.write(JSON.stringify(obj) + '\n');

function sdkRoot() {
  const candidates = [];
  if (process.env.ASGI_MCP_NODE_MODULES) candidates.push(process.env.ASGI_MCP_NODE_MODULES);
  const cache = process.env.ASGI_MCP_NODE_CACHE || join(homedir(), '.cache', 'asgi-mcp-node');
  candidates.push(join(cache.replace(/^~(?=$|\/)/, homedir()), 'interop', 'node_modules'));
  for (const nm of candidates) {
    const root = join(nm, '@modelcontextprotocol', 'sdk');
    if (existsSync(join(root, 'package.json'))) return root;
  }
  return null;
}

const root = sdkRoot();
const load = (sub) =>
  import(root ? pathToFileURL(join(root, 'dist', 'esm', sub)).href : `@modelcontextprotocol/sdk/${sub}`);

function parseArgs(argv) {
  const out = { url: null, token: null, timeoutMs: 30000, calls: [] };
  const rest = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--token') out.token = argv[++i];
    else if (a === '--timeout-ms') out.timeoutMs = Number(argv[++i]);
    else if (a.startsWith('--')) throw new Error(`unknown option ${a}`);
    else rest.push(a);
  }
  if (rest.length === 0 || rest.length % 2 === 0) {
    throw new Error('usage: client.mjs URL [TOOL JSON_ARGS]... [--token TOKEN] [--timeout-ms MS]');
  }
  out.url = rest[0];
  for (let i = 1; i < rest.length; i += 2) {
    const args = JSON.parse(rest[i + 1]);
    if (args === null || typeof args !== 'object' || Array.isArray(args)) throw new Error(`arguments for ${rest[i]} must be a JSON object`);
    out.calls.push({ name: rest[i], args });
  }
  return out;
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  const { Client } = await load('client/index.js');
  const { StreamableHTTPClientTransport } = await load('client/streamableHttp.js');
  const { LoggingMessageNotificationSchema } = await load('types.js');

  const headers = opts.token ? { Authorization: `Bearer ${opts.token}` } : {};
  const transport = new StreamableHTTPClientTransport(new URL(opts.url), { requestInit: { headers } });
  const client = new Client({ name: 'asgi-mcp-interop-client', version: '1.0.0' }, { capabilities: {} });
  client.onerror = (err) => emit({ type: 'transport_error', name: err?.name, message: String(err?.message ?? err), code: err?.code });
  client.setNotificationHandler(LoggingMessageNotificationSchema, (n) => emit({ type: 'log', params: n.params }));

  await client.connect(transport);
  emit({
    type: 'connected',
    serverVersion: client.getServerVersion(),
    protocolVersion: transport.protocolVersion ?? null,
    sessionId: transport.sessionId ?? null,
  });

  const { tools } = await client.listTools(undefined, { timeout: opts.timeoutMs });
  emit({ type: 'tools', names: tools.map((t) => t.name) });

  for (const { name, args } of opts.calls) {
    const result = await client.callTool({ name, arguments: args }, undefined, {
      timeout: opts.timeoutMs,
      onprogress: (progress) => emit({ type: 'progress', tool: name, progress }),
    });
    emit({ type: 'result', tool: name, result });
  }

  await transport.terminateSession(); // HTTP DELETE with Mcp-Session-Id
  emit({ type: 'terminated', sessionId: transport.sessionId ?? null });
  await client.close();
  emit({ type: 'closed' });
}

main().catch((err) => {
  emit({ type: 'error', name: err?.name ?? null, message: String(err?.message ?? err), code: err?.code ?? null });
  process.exitCode = 1;
});
