// A stdio MCP server on the npm TypeScript SDK that records every tool call it runs (the proxy smuggling tests).
//
//   node ts_recording_server.mjs SDK_DIR
//
// SDK_DIR is the @modelcontextprotocol/sdk package directory (the one npm installed into .mcp-servers as a
// dependency of server-filesystem); it is imported by path, so this file needs no package.json of its own.
// The SDK's own StdioServerTransport and ReadBuffer read stdin: that reader is what the tests are about.
// Each call appends one JSON line {"tool": ..., "args": {...}} to RECORD_FILE, before anything else, with
// the arguments exactly as the SDK parsed them (the low-level Server validates nothing about them).
// Server name "exchange", like the Python recording server, so one policy fits both.
import { appendFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const sdk = process.argv[2];
const load = (path) => import(pathToFileURL(join(sdk, "dist", "esm", path)).href);
const { Server } = await load("server/index.js");
const { StdioServerTransport } = await load("server/stdio.js");
const { CallToolRequestSchema, ListToolsRequestSchema } = await load("types.js");

const object = (properties, required = []) => ({ type: "object", properties, required });
const TOOLS = [
  {
    name: "transfer",
    description: "Move money: amount units.",
    inputSchema: object({ amount: { type: "integer" }, memo: { type: "string" } }, ["amount"]),
    annotations: { readOnlyHint: false, destructiveHint: false, idempotentHint: false },
  },
  {
    name: "get_balance",
    description: "Return the free balance of one asset.",
    inputSchema: object({ asset: { type: "string" } }, ["asset"]),
    annotations: { readOnlyHint: true },
  },
  {
    name: "admin_reset",
    description: "Reset the account (hidden by the tests' policy).",
    inputSchema: object({}),
    annotations: { readOnlyHint: false, destructiveHint: true },
  },
];

if (process.env.PID_FILE) writeFileSync(process.env.PID_FILE, String(process.pid));
const server = new Server({ name: "exchange", version: "1.0.0" }, { capabilities: { tools: {} } });
server.setRequestHandler(ListToolsRequestSchema, async () => ({ tools: TOOLS }));
server.setRequestHandler(CallToolRequestSchema, async (request) => {
  const { name, arguments: args = {} } = request.params;
  if (process.env.RECORD_FILE) {
    appendFileSync(process.env.RECORD_FILE, JSON.stringify({ tool: name, args }) + "\n");
  }
  if (!TOOLS.some((tool) => tool.name === name)) {
    return { isError: true, content: [{ type: "text", text: `unknown tool ${name}` }] };
  }
  return { content: [{ type: "text", text: `${name} ran with ${JSON.stringify(args)}` }] };
});
await server.connect(new StdioServerTransport());
