// ferry's sync and local-write workloads on automerge-repo (Node.js), for
// `make bench-compare`. Prints one JSON object on stdout (progress on
// stderr).
//
//   node benchmarks/js/bench.mjs [--n 10000] [--quiet-ms 500]
//
// Workloads (N small documents with the fields of the Go benchmarks'
// records, syncFields in benchmarks/bench_helpers_test.go):
//
//   local_writes  a fresh repo (NodeFS storage) creates the N documents;
//                 timed until repo.flush() has written them all.
//   initial       repo A (the documents on disk, nothing loaded: a fresh
//                 Repo over the same directory, like ferry's cold store)
//                 serves a WebSocket on 127.0.0.1; repo B (empty NodeFS
//                 directory) is connected and knows the N URLs, as an
//                 application would (from a root document, say). Timed from
//                 B's repo.find() of every URL until every document on B has
//                 A's heads, B has flushed them to disk, and the connection
//                 is quiet (below). Documents that find() reports
//                 unavailable (automerge-repo's 60 s request timeout) are
//                 waited for all the same; their number is reported as
//                 unavailable_at_find.
//   delta         B disconnects; A changes one field of 10 documents spread
//                 over the range (the Go benchmark's syncChanged) and
//                 flushes; timed from B's reconnection until B holds the 10
//                 documents at A's new heads, flushed, and the connection is
//                 quiet. Both repos keep their handles loaded, as ferry's
//                 replicas stay open between the Go benchmark's sessions;
//                 automerge-repo resumes each document's persisted sync
//                 state on reconnection.
//   idle          the same with nothing changed: timed from reconnection
//                 until the connection is quiet.
//
// "Synced" is detected on the receiving side by polling: every 20 ms the
// script compares the heads of each document not yet synced on B
// (getHeads(handle.doc())) with the heads A had after its writes. automerge-repo
// keeps exchanging messages after the heads match (acknowledgements, and on
// reconnection one round per loaded document), so the script also counts
// every WebSocket message in either direction (on A's server socket) and
// waits until none has passed for --quiet-ms (500 ms); the time reported for
// a workload is the later of "heads match and B flushed" and the last
// message (the quiet window itself is not counted). Bytes are the WebSocket
// message payloads both ways (automerge-repo's CBOR envelope included,
// WebSocket framing excluded), ferry's Go benchmarks count frame payloads
// the same way.
//
// Storage: NodeFSStorageAdapter writes with fs.promises.writeFile and never
// fsyncs (ferry fsyncs every batch by default), and keeps every chunk it
// wrote or read in an in-memory cache. Both repos run in this one process.

import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { createRequire } from "node:module";
import { getHeads } from "@automerge/automerge";
import { Repo } from "@automerge/automerge-repo";
import { NodeFSStorageAdapter } from "@automerge/automerge-repo-storage-nodefs";
import {
  WebSocketClientAdapter,
  WebSocketServerAdapter,
} from "@automerge/automerge-repo-network-websocket";
import { WebSocketServer } from "ws";

const args = process.argv.slice(2);
function arg(name, def) {
  const i = args.indexOf(name);
  return i >= 0 && i + 1 < args.length ? Number(args[i + 1]) : def;
}
const N = arg("--n", Number(process.env.FERRY_BENCH_N || 10000));
const QUIET_MS = arg("--quiet-ms", 500);
const TIMEOUT_S = arg("--timeout-s", 1800);
if (!Number.isInteger(N) || N < 10) {
  console.error("--n: want an integer >= 10");
  process.exit(2);
}
const log = (...a) => console.error("[bench.mjs]", ...a);
const now = () => performance.now();
const sleep = ms => new Promise(r => setTimeout(r, ms));

// Record i: the same fields and values as the Go benchmarks' syncFields.
function fields(i) {
  const p = String(i).padStart(6, "0");
  return {
    name: `Customer ${p}`,
    email: `customer${p}@example.com`,
    qty: i % 1000,
    price: (i % 10000) / 100,
    active: i % 3 !== 0,
    tags: ["retail", `region-${i % 7}`],
    note: `order ${p}: deliver before noon, ring twice, leave at side door`,
  };
}
// The 10 records the delta changes (syncChanged in the Go benchmarks).
function changed(n) {
  const out = [];
  for (let i = 0; i < 10; i++) out.push(i * Math.floor(n / 10) + (3 % Math.floor(n / 10)));
  return out;
}
// A document's heads (hex change hashes, sorted), read from the document
// itself (handle.heads() would bs58-encode them on every poll).
// A handle not ready yet (see "unavailable" below) has no heads.
const headsKey = h => (h.isReady() ? getHeads(h.doc()).slice().sort().join(",") : "");

// Wire counters, fed by A's server sockets.
const wire = { msgs: 0, bytes: 0, last: 0 };
function resetWire() {
  wire.msgs = 0;
  wire.bytes = 0;
  wire.last = now();
}
function countMsg(data) {
  wire.msgs++;
  wire.bytes += data.byteLength ?? data.length ?? 0;
  wire.last = now();
}

// waitQuiet resolves with the time of the last message once none has
// passed for QUIET_MS.
async function waitQuiet() {
  for (;;) {
    const t = now();
    if (t - wire.last >= QUIET_MS) return wire.last;
    await sleep(Math.max(5, QUIET_MS - (t - wire.last)));
  }
}

// waitHeads polls B's handles every 20 ms until each has the wanted heads;
// it throws after the workload's time limit.
async function waitHeads(handles, want, t0) {
  let pending = handles.map((h, k) => k);
  for (;;) {
    pending = pending.filter(k => headsKey(handles[k]) !== want[k]);
    if (pending.length === 0) return now();
    if (now() - t0 > TIMEOUT_S * 1000) throw new TimeoutError(pending.length);
    await sleep(20);
  }
}

class TimeoutError extends Error {
  constructor(pending) {
    super(`${pending} documents not synced after ${TIMEOUT_S} s`);
  }
}

// withTimeout rejects with a TimeoutError when p takes longer than the
// workload's time limit.
function withTimeout(p, t0) {
  let timer;
  const limit = new Promise((_, rej) => {
    timer = setTimeout(() => rej(new TimeoutError("some")), Math.max(0, TIMEOUT_S * 1000 - (now() - t0)));
  });
  return Promise.race([p, limit]).finally(() => clearTimeout(timer));
}

function version(pkg) {
  try {
    const req = createRequire(import.meta.url);
    const main = req.resolve(pkg);
    let dir = path.dirname(main);
    while (dir !== path.dirname(dir)) {
      const p = path.join(dir, "package.json");
      if (fs.existsSync(p)) {
        const j = JSON.parse(fs.readFileSync(p, "utf8"));
        if (j.name === pkg) return j.version;
      }
      dir = path.dirname(dir);
    }
  } catch {}
  return "unknown";
}

async function main() {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), "ferry-bench-am-"));
  const dirA = path.join(root, "a");
  const dirB = path.join(root, "b");
  const out = {
    n: N,
    node: process.version,
    automerge_repo: version("@automerge/automerge-repo"),
    automerge: version("@automerge/automerge"),
    quiet_ms: QUIET_MS,
  };
  try {
    // Local writes: create the N documents in a fresh repo and flush.
    log(`local writes: creating ${N} documents`);
    const w = new Repo({ storage: new NodeFSStorageAdapter(dirA), network: [] });
    const urls = [];
    const headsA = [];
    let t0 = now();
    const created = [];
    for (let i = 0; i < N; i++) {
      const h = w.create(fields(i));
      created.push(h);
      urls.push(h.url);
    }
    await w.flush();
    let t1 = now();
    for (const h of created) headsA.push(headsKey(h));
    created.length = 0;
    await w.shutdown();
    out.local_writes = { records: N, seconds: (t1 - t0) / 1000, rec_per_s: N / ((t1 - t0) / 1000) };
    log(`local writes: ${out.local_writes.rec_per_s.toFixed(0)} rec/s`);

    // A: a fresh repo over the same directory (nothing loaded), serving.
    const wss = new WebSocketServer({ host: "127.0.0.1", port: 0 });
    await new Promise(r => wss.once("listening", r));
    wss.on("connection", sock => {
      sock.on("message", countMsg);
      const send = sock.send.bind(sock);
      sock.send = (data, ...rest) => {
        countMsg(data);
        return send(data, ...rest);
      };
    });
    // Both ends are in this process: a long keep-alive, so a busy event
    // loop is not taken for a dead peer.
    const repoA = new Repo({
      storage: new NodeFSStorageAdapter(dirA),
      network: [new WebSocketServerAdapter(wss, 600_000)],
    });
    const url = `ws://127.0.0.1:${wss.address().port}`;
    const repoB = new Repo({ storage: new NodeFSStorageAdapter(dirB), network: [] });
    let client;
    const connect = async () => {
      client = new WebSocketClientAdapter(url, 100);
      repoB.networkSubsystem.addNetworkAdapter(client);
      while (repoB.peers.length === 0 || repoA.peers.length === 0) await sleep(1);
    };
    const disconnect = async () => {
      repoB.networkSubsystem.removeNetworkAdapter(client); // disconnects it
      while (repoB.peers.length !== 0 || repoA.peers.length !== 0) await sleep(5);
      await sleep(QUIET_MS);
    };
    // measure waits for the workload's end: B holds the wanted heads and
    // has flushed the documents it received (only those: flushing every
    // handle costs seconds even when nothing changed), and the connection
    // is quiet.
    const measure = async (name, t0, handles, want, extra) => {
      const tHeads = handles.length ? await waitHeads(handles, want, t0) : t0;
      if (handles.length) await repoB.flush(handles.map(h => h.documentId));
      const tFlushed = now();
      const tLast = await waitQuiet();
      const end = Math.max(tFlushed, tLast);
      out[name] = {
        seconds: (end - t0) / 1000,
        heads_seconds: (tHeads - t0) / 1000,
        flushed_seconds: (tFlushed - t0) / 1000,
        last_message_seconds: (tLast - t0) / 1000,
        messages: wire.msgs,
        bytes: wire.bytes,
        ...extra,
      };
      log(`${name}: ${JSON.stringify(out[name])}`);
    };

    let current = "initial";
    try {
    // Initial sync.
    log(`initial sync of ${N} documents`);
    await connect();
    await sleep(QUIET_MS);
    resetWire();
    t0 = now();
    // automerge-repo gives up on a document it requested after 60 s and
    // marks it unavailable (find() rejects); the data, when it comes later,
    // still makes it ready. With many documents requested at once some
    // wait longer than that here, so "unavailable" is accepted and the
    // heads polling waits for the data; the count is reported.
    const handlesB = await withTimeout(
      Promise.all(urls.map(u => repoB.find(u, { allowableStates: ["ready", "unavailable"] }))),
      t0,
    );
    const unavailable = handlesB.filter(h => !h.isReady()).length;
    await measure("initial", t0, handlesB, headsA, { unavailable_at_find: unavailable });
    out.initial.bytes_per_record = out.initial.bytes / N;
    for (let k = 0; k < N; k += Math.max(1, Math.floor(N / 7))) {
      const d = handlesB[k].doc();
      if (d.qty !== k % 1000 || d.email !== fields(k).email) throw new Error(`initial: doc ${k} wrong: ${JSON.stringify(d)}`);
    }

    // Delta: 10 changed documents among N.
    current = "delta";
    await disconnect();
    const idx = changed(N);
    const wantDelta = [];
    for (const i of idx) {
      const h = await repoA.find(urls[i]);
      h.change(d => {
        d.qty = 100000 + i;
      });
      wantDelta.push(headsKey(h));
    }
    await repoA.flush();
    resetWire();
    t0 = now();
    await connect();
    await measure("delta", t0, idx.map(i => handlesB[i]), wantDelta, { changed: idx.length });
    out.delta.bytes_per_changed = out.delta.bytes / idx.length;
    for (const i of idx) {
      if (handlesB[i].doc().qty !== 100000 + i) throw new Error(`delta: doc ${i} not updated`);
    }

    // Idle resync.
    current = "idle";
    await disconnect();
    resetWire();
    t0 = now();
    await connect();
    await measure("idle", t0, [], [], {});

    await disconnect();
    await repoB.shutdown();
    await repoA.shutdown();
    await new Promise(r => wss.close(r));
    } catch (e) {
      if (!(e instanceof TimeoutError)) throw e;
      // A lower bound: the comparison shows it as such.
      out[current] = { timed_out: true, seconds: TIMEOUT_S, error: e.message };
      out.incomplete = true;
      log(`${current}: ${e.message}; stopping`);
    }
    out.max_rss_mib = process.resourceUsage().maxRSS / 1024;
  } finally {
    fs.rmSync(root, { recursive: true, force: true });
  }
  process.stdout.write(JSON.stringify(out, null, 2) + "\n");
}

main().then(
  () => process.exit(0),
  e => {
    console.error(e);
    process.exit(1);
  },
);
