// TypeScript SDK 1.32.2 client across a server restart (legacy 2025-11-25 session wire).
//
//   node tests/interop/restart_client.mjs URL [--token TOKEN] [--timeout-ms MS]
//
// Connects, calls `echo` ("before"), prints {"type":"ready"} and waits for a line on stdin (the
// test restarts the server meanwhile). Then calls `echo` ("after") on the same session: the SDK
// either answers or rejects, printed as {"type":"after","result":...} or
// {"type":"after_error","class":...,"name":...,"code":...,"message":...}. After an error it re-initializes as
// the SDK requires, with a new transport and client (a transport that still holds a session id
// skips initialize), calls `echo` ("renewed"), DELETEs that session and closes. One JSON object a
// line on stdout, as tests/interop/client.mjs; {"type":"error",...} then exit 1 on a failure.
import { createInterface } from 'node:readline';
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
  const out = { url: null, token: null, timeoutMs: 30000 };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--token') out.token = argv[++i];
    else if (a === '--timeout-ms') out.timeoutMs = Number(argv[++i]);
    else if (a.startsWith('--')) throw new Error(`unknown option ${a}`);
    else if (out.url === null) out.url = a;
    else throw new Error('usage: restart_client.mjs URL [--token TOKEN] [--timeout-ms MS]');
  }
  if (out.url === null) throw new Error('usage: restart_client.mjs URL [--token TOKEN] [--timeout-ms MS]');
  return out;
}

const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  const { Client } = await load('client/index.js');
  const { StreamableHTTPClientTransport } = await load('client/streamableHttp.js');
  const headers = opts.token ? { Authorization: `Bearer ${opts.token}` } : {};

  async function connect(label) {
    const transport = new StreamableHTTPClientTransport(new URL(opts.url), { requestInit: { headers } });
    const client = new Client({ name: 'asgi-mcp-restart-client', version: '1.0.0' }, { capabilities: {} });
    client.onerror = (err) =>
      emit({ type: 'transport_error', connection: label, name: err?.name, message: String(err?.message ?? err), code: err?.code });
    await client.connect(transport);
    emit({ type: 'connected', connection: label, sessionId: transport.sessionId ?? null });
    return { client, transport };
  }
  const echo = (client, text) => client.callTool({ name: 'echo', arguments: { text } }, undefined, { timeout: opts.timeoutMs });

  const first = await connect('first');
  emit({ type: 'before', result: await echo(first.client, 'before') });
  emit({ type: 'ready' });
  await lines.next(); // the server restarts meanwhile

  let renew = false;
  try {
    emit({ type: 'after', result: await echo(first.client, 'after') });
  } catch (err) {
    emit({ type: 'after_error', class: err?.constructor?.name ?? null, name: err?.name ?? null, code: err?.code ?? null, message: String(err?.message ?? err), sessionId: first.transport.sessionId ?? null });
    renew = true;
  }
  await first.client.close();
  if (renew) {
    const second = await connect('second');
    emit({ type: 'renewed', result: await echo(second.client, 'renewed') });
    await second.transport.terminateSession();
    emit({ type: 'terminated' });
    await second.client.close();
  }
  emit({ type: 'closed' });
  process.stdin.destroy();
}

main().catch((err) => {
  emit({ type: 'error', name: err?.name ?? null, message: String(err?.message ?? err), code: err?.code ?? null });
  process.exitCode = 1;
  process.stdin.destroy();
});
