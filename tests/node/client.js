// A kvgrpc client in Node.js: node client.js HOST:PORT
// Loads proto/kv.proto at run time (no generated code), then Put, Get, BatchGet, Scan and
// a Get of a missing key; prints one JSON line with what came back.
"use strict";
const path = require("path");
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");

const definition = protoLoader.loadSync(path.join(__dirname, "..", "..", "proto", "kv.proto"), {
  keepCase: true, longs: String, defaults: true,
});
const kv = grpc.loadPackageDefinition(definition).kvgrpc.v1;
const client = new kv.KeyValue(process.argv[2], grpc.credentials.createInsecure());
const call = (method, request) => new Promise((resolve, reject) =>
  client[method](request, { deadline: Date.now() + 10000 }, (err, reply) => (err ? reject(err) : resolve(reply))));

(async () => {
  const put = await call("Put", { key: "from-node", value: Buffer.from("héllo from node") });
  const get = await call("Get", { key: "from-node", read_options: { consistency: "READ_CONSISTENCY_STRONG" } });
  const strong = { consistency: "READ_CONSISTENCY_STRONG" };
  const batch = await call("BatchGet", { keys: ["from-node", "absent"], read_options: strong });
  const scan = await call("Scan", { prefix: "from-", read_options: strong });
  let missing = null;
  try { await call("Get", { key: "absent" }); } catch (err) { missing = { code: err.code, details: err.details }; }
  console.log(JSON.stringify({
    version: put.version,
    value: get.record.value.toString("utf8"),
    missing_keys: batch.missing_keys,
    scanned: scan.records.map((r) => r.key),
    missing,
    not_found_code: grpc.status.NOT_FOUND,
  }));
  client.close();
})().catch((err) => { console.error(err.message); process.exit(1); });
