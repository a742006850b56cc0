// SPDX-License-Identifier: MIT
// hdqtd and a JSON-RPC 2.0 client library this project did not write
// (json-rpc-2.0 from npm), over the Unix socket, plus raw edge cases.
// Starts its own hdqtd (HDQTD) on a temporary socket and database.
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync, existsSync } from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import assert from "node:assert/strict";

let rpc;
try {
  rpc = await import("json-rpc-2.0");
} catch (e) {
  console.error("json-rpc-2.0 is not installed: run scripts/test.sh (or npm ci in tests/node)");
  process.exit(1);
}
const { JSONRPCClient, JSONRPCErrorException } = rpc;

const HDQTD = process.env.HDQTD;
const dir = mkdtempSync(path.join(os.tmpdir(), "hdqtd-node-"));
const sock = path.join(dir, "hdqtd.sock");
const daemon = spawn(HDQTD, ["--socket", sock, "--db", path.join(dir, "hdqtd.db"),
  "--set", "training.auto=no", "--set", "training.epochs=20", "--set", "model.hidden=64"],
  { stdio: ["ignore", "inherit", "inherit"] });

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
for (let i = 0; i < 200 && !existsSync(sock); i++) await sleep(50);

// A line-oriented transport for the library: it sends with write() and is
// fed every response line through client.receive().
function connect() {
  return new Promise((resolve, reject) => {
    const s = net.createConnection(sock, () => resolve(s));
    s.on("error", reject);
  });
}
function lines(s, onLine) {
  let buf = "";
  s.setEncoding("utf8");
  s.on("data", (d) => {
    buf += d;
    let i;
    while ((i = buf.indexOf("\n")) >= 0) {
      const line = buf.slice(0, i);
      buf = buf.slice(i + 1);
      onLine(JSON.parse(line));
    }
  });
}

let failed = 0;
async function check(name, fn) {
  try {
    await fn();
    console.log("ok   " + name);
  } catch (e) {
    failed++;
    console.log("FAIL " + name + ": " + (e.stack || e));
  }
}

try {
  const s = await connect();
  const client = new JSONRPCClient((payload) => { s.write(JSON.stringify(payload) + "\n"); });
  lines(s, (msg) => { if (msg.method !== "event") client.receive(msg); });

  await check("status through the library", async () => {
    const st = await client.request("status", {});
    assert.equal(st.model_version, null);
    assert.equal(st.feature_dim, 166);
  });
  await check("class.add, duplicate is a JSON-RPC error with hdqtd's code", async () => {
    assert.equal((await client.request("class.add", { name: "up" })).label, 0);
    await client.request("class.add", { name: "down" });
    await assert.rejects(client.request("class.add", { name: "up" }), (e) => {
      assert.ok(e instanceof JSONRPCErrorException);
      assert.equal(e.code, -32002);
      return true;
    });
  });
  await check("unknown method", async () => {
    await assert.rejects(client.request("no.such", {}), (e) => e.code === -32601);
  });
  await check("sample.add, train, predict", async () => {
    const feat = (c, k) => Array.from({ length: 166 }, (_, i) => (c ? 1 : -1) * (1 + ((i * 7 + k) % 5) / 10));
    const samples = [];
    for (let k = 0; k < 60; k++) samples.push({ class: k % 2 ? "up" : "down", features: feat(k % 2, k) });
    assert.equal((await client.request("sample.add", { samples })).accepted, 60);
    assert.equal((await client.request("train", {})).started, true);
    let st;
    for (let i = 0; i < 600; i++) {
      st = await client.request("train.status", {});
      if (st.state === "idle" && st.rounds >= 1) break;
      await sleep(100);
    }
    assert.equal(st.rounds, 1);
    const p = await client.request("predict", { features: feat(1, 3) });
    assert.equal(p.class, "up");
    assert.ok(p.confidence > 0.5);
    // features_f32: Node's own float32 little-endian bytes and base64 encoder
    const f32 = (x) => {
      const b = Buffer.alloc(4 * x.length);
      x.forEach((v, i) => b.writeFloatLE(v, 4 * i));
      return b.toString("base64");
    };
    for (const c of [0, 1]) {
      const x = Array.from(new Float32Array(feat(c, 3)));
      assert.deepEqual(await client.request("predict", { features_f32: f32(x) }),
                       await client.request("predict", { features: x }));
    }
    await assert.rejects(client.request("predict", { features_f32: f32(feat(1, 3)).slice(4) }),
                         (e) => e.code === -32602 && /features_f32/.test(e.message));
  });
  await check("a batch through the library", async () => {
    const res = await client.requestAdvanced([
      { jsonrpc: "2.0", id: 1001, method: "class.list" },
      { jsonrpc: "2.0", id: 1002, method: "status" },
      { jsonrpc: "2.0", id: 1003, method: "class.add", params: { name: 5 } },
    ]);
    const byId = Object.fromEntries(res.map((r) => [r.id, r]));
    assert.deepEqual(byId[1001].result.classes.map((c) => c.name), ["up", "down"]);
    assert.equal(byId[1002].result.model_version, 1);
    assert.equal(byId[1003].error.code, -32602);
  });
  await check("a notification through the library gets no reply", async () => {
    client.notify("class.add", { name: "quiet" });
    const names = (await client.request("class.list", {})).classes.map((c) => c.name);
    assert.deepEqual(names, ["up", "down", "quiet"]);
  });
  s.end();

  // Raw edge cases on a plain socket.
  const raw = await connect();
  const got = [];
  lines(raw, (m) => got.push(m));
  const next = async (n = 1) => {
    for (let i = 0; i < 100 && got.length < n; i++) await sleep(20);
    return got.splice(0, n);
  };
  await check("empty batch -> one Invalid Request error", async () => {
    raw.write("[]\n");
    const [m] = await next();
    assert.equal(m.error.code, -32600);
    assert.equal(m.id, null);
  });
  await check("batch of notifications only -> nothing", async () => {
    raw.write('[{"jsonrpc":"2.0","method":"status"},{"jsonrpc":"2.0","method":"class.list"}]\n');
    raw.write('{"jsonrpc":"2.0","id":"after","method":"status"}\n');
    const [m] = await next();
    assert.equal(m.id, "after");
  });
  await check("one message split over many writes", async () => {
    const msg = '{"jsonrpc":"2.0","id":"split","method":"class.list"}\n';
    for (const ch of msg) { raw.write(ch); await sleep(1); }
    const [m] = await next();
    assert.equal(m.id, "split");
    assert.equal(m.result.classes.length, 3);
  });
  await check("several messages in one write", async () => {
    raw.write(['a', 'b', 'c'].map((id) => JSON.stringify({ jsonrpc: "2.0", id, method: "status" })).join("\n") + "\n");
    const ms = await next(3);
    assert.deepEqual(ms.map((m) => m.id), ["a", "b", "c"]);
  });
  raw.end();
} finally {
  daemon.kill("SIGTERM");
  const code = await new Promise((r) => daemon.on("exit", (c) => r(c)));
  if (code !== 0) { console.log("FAIL hdqtd exit status " + code); failed++; }
  rmSync(dir, { recursive: true, force: true });
}
console.log(failed ? failed + " failed" : "all passed");
process.exit(failed ? 1 : 0);
