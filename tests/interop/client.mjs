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
// The SDK is loaded as tests/interop/sdk.mjs says.
import { connect, emit, fail, load, parseOptions } from './sdk.mjs';

const USAGE = 'client.mjs URL [TOOL JSON_ARGS]... [--token TOKEN] [--timeout-ms MS]';

function parseArgs(argv) {
  const { options, positional } = parseOptions(argv, USAGE);
  if (positional.length === 0 || positional.length % 2 === 0) throw new Error(`usage: ${USAGE}`);
  const calls = [];
  for (let i = 1; i < positional.length; i += 2) {
    const args = JSON.parse(positional[i + 1]);
    if (args === null || typeof args !== 'object' || Array.isArray(args)) throw new Error(`arguments for ${positional[i]} must be a JSON object`);
    calls.push({ name: positional[i], args });
  }
  return { ...options, url: positional[0], calls };
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  const { LoggingMessageNotificationSchema } = await load('types.js');
  const { client, transport } = await connect(opts.url, {
    token: opts.token,
    setup: (c) => c.setNotificationHandler(LoggingMessageNotificationSchema, (n) => emit({ type: 'log', params: n.params })),
  });
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

main().catch(fail);
