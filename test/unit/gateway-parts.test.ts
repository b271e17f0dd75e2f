/** The gateway's small pure parts: the PROXY v2 header guests read, and what Sail reads back from HAProxy. */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { sessionsTo } from "../../packages/server/src/gateway/haproxy-sessions.js";
import { frontendStats, stickTableEntries } from "../../packages/server/src/gateway/haproxy-stats.js";
import { CLIENT_ADDRESS_FIELDS, errorFile, haproxyConfig, DEFAULT_TIMEOUTS } from "../../packages/server/src/gateway/haproxy-config.js";
import { proxyV2Header } from "../../packages/server/src/wire/proxy-protocol.js";

describe("PROXY protocol v2 (HAProxy's proxy-protocol.txt §2.2)", () => {
  const signature = "0d0a0d0a000d0a515549540a";

  test("an IPv4 client (also when Node shows it IPv4-mapped) is a TCP4 PROXY header with both addresses and ports", () => {
    const header = proxyV2Header({ address: "::ffff:203.0.113.7", port: 51234 }, { address: "198.51.100.1", port: 21000 });
    assert.equal(header.toString("hex"), `${signature}2111000c` + "cb007107" + "c6336401" + "c822" + "5208");
  });

  test("IPv6 is TCP6 with 16-byte addresses", () => {
    const header = proxyV2Header({ address: "2001:db8::1", port: 1 }, { address: "2001:db8::2", port: 2 });
    assert.equal(header.subarray(12, 16).toString("hex"), "21210024");
    assert.equal(header.length, 16 + 36);
    assert.equal(header.subarray(16, 32).toString("hex"), "20010db8000000000000000000000001");
  });

  test("addresses of two families, or none, give a LOCAL header receivers accept", () => {
    assert.equal(proxyV2Header({ address: "203.0.113.7", port: 1 }, { address: "2001:db8::2", port: 2 }).toString("hex"), `${signature}20000000`);
    assert.equal(proxyV2Header({}, {}).length, 16);
  });
});

describe("reading HAProxy's runtime API", () => {
  test("stick-table rows give each listener's open connections and moving counters", () => {
    const text =
      "# table: activity, type: string, size:1048576, used:2\n0x55d: key=3000-abcdefghijkl.sail.localhost use=1 exp=3599000 conn_cur=2 http_req_cnt=7 bytes_in_cnt=900 bytes_out_cnt=5000\n0x56e: key=8080-bbbbbbbbbbbb.sail.localhost use=0 exp=10 conn_cur=0 http_req_cnt=1 bytes_in_cnt=10 bytes_out_cnt=20\n";
    assert.deepEqual(stickTableEntries(text), [
      { key: "3000-abcdefghijkl.sail.localhost", open: 2, counters: "7,900,5000" },
      { key: "8080-bbbbbbbbbbbb.sail.localhost", open: 0, counters: "1,10,20" },
    ]);
  });

  test("show sess all: the sessions whose guest connection goes to a box's address", () => {
    const text = [
      "0x7f01: [29/Nov/2026:11:35:24.281735] id=12 proto=tcpv4 source=127.0.0.1:41864",
      "  backend=guests (id=4 mode=http) addr=10.203.0.1:38424",
      "  server=guest (id=1) addr=10.203.0.2:3000",
      "0x7f02: [29/Nov/2026:11:35:25.000000] id=13 proto=tcpv4 source=127.0.0.1:41866",
      "  server=guest (id=1) addr=10.203.0.6:3000",
      "0x7f03: [29/Nov/2026:11:35:26.000000] id=14 proto=unix_stream source=unix:1",
      "  server=<NONE> (id=-1)",
    ].join("\n");
    assert.deepEqual(sessionsTo(text, new Set(["10.203.0.2"])), ["0x7f01"]);
    assert.deepEqual(sessionsTo(text, new Set(["10.203.0.99"])), []);
  });

  test("show stat: a frontend's counters by column name", () => {
    const csv = "# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,req_tot\nhttps,FRONTEND,,,3,10,8000,42,1000,9000,57\nmetrics,FRONTEND,,,0,1,8000,1,0,0,1\n";
    assert.deepEqual({ ...frontendStats(csv, "https") }, { pxname: 0, svname: 0, qcur: 0, qmax: 0, scur: 3, smax: 10, slim: 8000, stot: 42, bin: 1000, bout: 9000, req_tot: 57 });
  });
});

describe("the HAProxy configuration", () => {
  const config = haproxyConfig({ dir: "/var/lib/sail/gateway", host: "0.0.0.0", port: 8443, threads: 2, maxConnections: 8000, memoryMiB: 1024, timeouts: DEFAULT_TIMEOUTS, user: "haproxy" });

  test("client-supplied X-Forwarded-*, client-IP fields and every field with an underscore are dropped before HAProxy sets its own", () => {
    assert.ok(config.includes(`http-request del-header ${CLIENT_ADDRESS_FIELDS} -m reg\n`));
    assert.ok(config.indexOf("del-header") < config.indexOf("set-header x-forwarded-proto"));
    assert.match(config, /option forwardfor/);
    const dropped = new RegExp(CLIENT_ADDRESS_FIELDS);
    for (const field of [
      "x-forwarded-for",
      "x-forwarded-proto",
      "x-forwarded-host",
      "x-forwarded-port",
      "forwarded",
      "x-real-ip",
      "true-client-ip",
      "x-client-ip",
      "x_forwarded_for",
      "x_real_ip",
      "my_header",
    ]) {
      assert.ok(dropped.test(field), field);
    }
    for (const field of ["x-custom", "x-forwarded-fortune", "cookie", "authorization", "x-realip-note"]) assert.ok(!dropped.test(field), field);
  });

  test("the slow path's connections are never reused, and a Host with several values is answered by a rule", () => {
    assert.match(config, /backend slow\n {2}http-reuse never\n/);
    assert.match(
      config,
      /http-request return status 400 content-type "application\/json; charset=utf-8" file \/var\/lib\/sail\/gateway\/host-ambiguous\.json hdr x-sail-error SAIL_HOST_AMBIGUOUS [^\n]* if \{ req\.hdr_cnt\(host\) gt 1 \}/,
    );
  });

  test("every phase has its limit, and the answers HAProxy gives for a failing guest carry Sail's codes", () => {
    for (const line of ["timeout http-request 20000ms", "timeout client 30000ms", "timeout server 300000ms", "timeout tunnel 3600000ms", "maxconn 8000"]) assert.ok(config.includes(line), line);
    for (const status of [502, 504]) assert.ok(config.includes(`errorfile ${status} /var/lib/sail/gateway/${status}.http`), String(status));
    assert.match(config, /http-reuse always/);
    const page = errorFile(504, "SAIL_UPSTREAM_TIMEOUT", "late");
    const [head, body] = page.split("\r\n\r\n") as [string, string];
    assert.match(head, /^HTTP\/1\.1 504 Gateway Timeout\r\n[^]*x-sail-error: SAIL_UPSTREAM_TIMEOUT/);
    assert.match(head, new RegExp(`content-length: ${Buffer.byteLength(body)}`));
  });

  test("resumption by session tickets only, AEAD suites with forward secrecy, AES-128 first; --tls-session-resumption off: no tickets either, so every handshake is a full one", () => {
    assert.doesNotMatch(config, /no-tls-tickets/);
    assert.match(config, /tune\.ssl\.cachesize 0\n/);
    assert.match(config, /ssl-default-bind-ciphersuites TLS_AES_128_GCM_SHA256:/);
    for (const cipher of config.match(/ssl-default-bind-ciphers (.*)/)![1]!.split(":")) assert.match(cipher, /^ECDHE-(ECDSA|RSA)-(AES\d+-GCM-SHA\d+|CHACHA20-POLY1305)$/);
    const off = haproxyConfig({ dir: "/g", host: "0.0.0.0", port: 8443, threads: 2, maxConnections: 8000, memoryMiB: 1024, timeouts: DEFAULT_TIMEOUTS, sessionResumption: false });
    assert.match(off, /ssl-default-bind-options ssl-min-ver TLSv1\.2 no-tls-tickets\n/);
    assert.match(off, /tune\.ssl\.cachesize 0\n/);
  });

  test("routes by the exact Host (without port), h2c listeners to an h2 backend, everything else to the slow path", () => {
    assert.match(config, /req\.hdr\(host\),field\(1,:\),lower,map\(\/var\/lib\/sail\/gateway\/routes\.map\)/);
    assert.match(config, /server guest 0\.0\.0\.0:0 proto h2/);
    assert.match(config, /default_backend slow/);
  });
});
