// What the interop clients (client.mjs, restart_client.mjs, session_client.mjs) share: where the
// TypeScript SDK is loaded from, the JSON-line output, the command-line options and the connection.
//
// The SDK is loaded from $ASGI_MCP_NODE_MODULES (set by tests/interop/node_env.py), else from
// ${ASGI_MCP_NODE_CACHE:-~/.cache/asgi-mcp-node}/interop/node_modules, else by bare specifier.
import { existsSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

/** One JSON object a line on stdout: what the Python side of a test reads. */
export const emit = (obj) => process.stdout.write(JSON.stringify(obj) + '\n');

/** An error as a JSON line's fields (StreamableHTTPError carries the HTTP status as `code`). */
export const describe = (err) => ({ name: err?.name ?? null, message: String(err?.message ?? err), code: err?.code ?? null });

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
/** A module of the SDK, e.g. `load('client/index.js')`. */
export const load = (sub) =>
  import(root ? pathToFileURL(join(root, 'dist', 'esm', sub)).href : `@modelcontextprotocol/sdk/${sub}`);

/** `--token TOKEN` and `--timeout-ms MS` (the options every client takes) and the other arguments, in order. */
export function parseOptions(argv, usage) {
  const options = { token: null, timeoutMs: 30000 };
  const positional = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--token') options.token = argv[++i];
    else if (a === '--timeout-ms') options.timeoutMs = Number(argv[++i]);
    else if (a.startsWith('--')) throw new Error(`unknown option ${a}; usage: ${usage}`);
    else positional.push(a);
  }
  return { options, positional };
}

/**
 * A Client on a StreamableHTTPClientTransport to `url` (Authorization: Bearer TOKEN when given),
 * connected (initialize, then the GET stream). `onerror` failures are printed as
 * {"type":"transport_error",...} lines, with `label` as their `connection` when given.
 * `setup(client)` runs before connecting: notification and request handlers go there.
 */
export async function connect(url, { token = null, label, capabilities = {}, fetch, name = 'asgi-mcp-interop-client', setup } = {}) {
  const { Client } = await load('client/index.js');
  const { StreamableHTTPClientTransport } = await load('client/streamableHttp.js');
  const headers = token ? { Authorization: `Bearer ${token}` } : {};
  const transport = new StreamableHTTPClientTransport(new URL(url), { requestInit: { headers }, fetch });
  const client = new Client({ name, version: '1.0.0' }, { capabilities });
  client.onerror = (err) => emit({ type: 'transport_error', ...(label ? { connection: label } : {}), ...describe(err) });
  setup?.(client);
  await client.connect(transport);
  return { client, transport };
}

/** Print {"type":"error",...} and exit 1: what every client does with a failure it did not expect. */
export function fail(err) {
  emit({ type: 'error', ...describe(err) });
  process.exitCode = 1;
}
