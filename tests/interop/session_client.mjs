// TypeScript SDK 1.32.2 client driven line by line from stdin (legacy 2025-11-25 session wire), so a
// test can act between its steps (kill a server, say) and wait for what the client receives.
//
//   node tests/interop/session_client.mjs URL [--token TOKEN] [--timeout-ms MS]
//
// Connects, declaring the elicitation capability (every elicitation/create is accepted with
// {"answer": "42"}), prints {"type":"connected",...}, then runs one JSON command a line from stdin,
// in order, each ending with {"type":"done","seq":N} or {"type":"failed","seq":N,...} (the client
// carries on after a failed command):
//   {"seq":N,"op":"call","tool":T,"args":{...}}
//       -> {"type":"progress","tool":T,...}* {"type":"result","tool":T,"result":...,"eventIds":[...]}
//          (eventIds: the SSE event ids of the call's stream, from the SDK's `onresumptiontoken`)
//   {"seq":N,"op":"resume","tool":T,"args":{...},"after":ID}
//       the call sent again with the SDK's `resumptionToken` ID: a GET with Last-Event-ID ID whose
//       replayed answer settles the new request -> {"type":"resumed","tool":T,"result":...,"messages":[...]}
//       (messages: the JSON-RPC messages the replay delivered; the replayed progress notifications
//       carry the first call's token, which the SDK reports through onerror as unknown)
//   {"seq":N,"op":"close"}  DELETE (terminateSession), close -> {"type":"terminated"}, then exit
// (at the end of stdin it closes without a DELETE and exits).
// And whenever they happen: {"type":"log","params":...} (logging notifications),
// {"type":"elicited","message":...} (an elicitation answered), {"type":"http","method":M,
// "lastEventId":ID|null,"status":S|null} (every HTTP exchange, seen through the transport's `fetch`),
// {"type":"transport_error",...} (client.onerror); {"type":"error",...} then exit 1 on a failure.
// The SDK is loaded as tests/interop/sdk.mjs says.
import { createInterface } from 'node:readline';
import { connect, describe, emit, fail, load, parseOptions } from './sdk.mjs';

const USAGE = 'session_client.mjs URL [--token TOKEN] [--timeout-ms MS]';
const ANSWER = '42';

async function observedFetch(url, init) {
  const method = init?.method ?? 'GET';
  const lastEventId = new Headers(init?.headers).get('last-event-id');
  try {
    const response = await fetch(url, init);
    emit({ type: 'http', method, lastEventId, status: response.status });
    return response;
  } catch (err) {
    emit({ type: 'http', method, lastEventId, status: null, ...describe(err) });
    throw err;
  }
}

async function main() {
  const { options, positional } = parseOptions(process.argv.slice(2), USAGE);
  if (positional.length !== 1) throw new Error(`usage: ${USAGE}`);
  const { CallToolResultSchema, ElicitRequestSchema, LoggingMessageNotificationSchema } = await load('types.js');
  const { client, transport } = await connect(positional[0], {
    token: options.token,
    name: 'asgi-mcp-session-client',
    capabilities: { elicitation: {} },
    fetch: observedFetch,
    setup: (c) => {
      c.setNotificationHandler(LoggingMessageNotificationSchema, (n) => emit({ type: 'log', params: n.params }));
      c.setRequestHandler(ElicitRequestSchema, (request) => {
        emit({ type: 'elicited', message: request.params.message });
        return { action: 'accept', content: { answer: ANSWER } };
      });
    },
  });
  emit({ type: 'connected', protocolVersion: transport.protocolVersion ?? null, sessionId: transport.sessionId ?? null });

  const call = async ({ tool, args }) => {
    const eventIds = [];
    const result = await client.callTool({ name: tool, arguments: args }, undefined, {
      timeout: options.timeoutMs,
      onprogress: (progress) => emit({ type: 'progress', tool, progress }),
      onresumptiontoken: (id) => eventIds.push(id),
    });
    emit({ type: 'result', tool, result, eventIds });
  };
  const resume = async ({ tool, args, after }) => {
    // SDK 1.32.2 gives no resumption tokens for a request sent with `resumptionToken`: what the
    // replay brought is recorded from the transport's messages instead.
    const messages = [];
    const deliver = transport.onmessage;
    transport.onmessage = (message, extra) => {
      messages.push(message);
      deliver?.(message, extra);
    };
    try {
      const request = { method: 'tools/call', params: { name: tool, arguments: args } };
      const result = await client.request(request, CallToolResultSchema, { timeout: options.timeoutMs, resumptionToken: after });
      emit({ type: 'resumed', tool, result, messages });
    } finally {
      transport.onmessage = deliver;
    }
  };
  const ops = { call, resume };
  let closed = false;

  for await (const line of createInterface({ input: process.stdin })) {
    if (!line.trim()) continue;
    const command = JSON.parse(line);
    if (command.op === 'close') {
      await transport.terminateSession(); // HTTP DELETE with Mcp-Session-Id
      emit({ type: 'terminated', sessionId: transport.sessionId ?? null });
      await client.close();
      closed = true;
      emit({ type: 'done', seq: command.seq });
      break;
    }
    const run = ops[command.op];
    if (!run) throw new Error(`unknown op ${command.op}`);
    try {
      await run(command);
      emit({ type: 'done', seq: command.seq });
    } catch (err) {
      emit({ type: 'failed', seq: command.seq, ...describe(err) });
    }
  }
  if (!closed) await client.close(); // stdin ended first: the open GET stream would keep node running
  process.stdin.destroy();
}

main().catch((err) => {
  fail(err);
  process.stdin.destroy();
});
