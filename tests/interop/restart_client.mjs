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
// The SDK is loaded as tests/interop/sdk.mjs says.
import { createInterface } from 'node:readline';
import { connect as connectTo, describe, emit, fail, parseOptions } from './sdk.mjs';

const USAGE = 'restart_client.mjs URL [--token TOKEN] [--timeout-ms MS]';

function parseArgs(argv) {
  const { options, positional } = parseOptions(argv, USAGE);
  if (positional.length !== 1) throw new Error(`usage: ${USAGE}`);
  return { ...options, url: positional[0] };
}

const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();

async function main() {
  const opts = parseArgs(process.argv.slice(2));

  async function connect(label) {
    const { client, transport } = await connectTo(opts.url, { token: opts.token, label, name: 'asgi-mcp-restart-client' });
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
    emit({ type: 'after_error', class: err?.constructor?.name ?? null, ...describe(err), sessionId: first.transport.sessionId ?? null });
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
  fail(err);
  process.stdin.destroy();
});
