/**
 * What the runtime counts as a network the host is directly connected to, from `ip -j` dumps
 * (taken on this kernel, iproute2 6.1), and which `ip monitor` lines make it read them again.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { forbiddenIpv4Ranges } from "@sail/protocol";
import { connectedPrefixes, lineMatters } from "../../packages/server/src/runtime/host-networks.js";

const ADDRESSES = [
  { ifname: "lo", addr_info: [{ family: "inet", local: "127.0.0.1", prefixlen: 8 }] },
  { ifname: "eth0", addr_info: [{ family: "inet", local: "192.0.2.2", prefixlen: 24 }] },
  // a point-to-point address: the peer's network is what is connected
  { ifname: "ppp0", addr_info: [{ family: "inet", local: "10.1.0.1", address: "10.1.0.2", prefixlen: 32 }] },
  { ifname: "sv1", addr_info: [{ family: "inet", local: "10.200.0.1", prefixlen: 30 }] },
  { ifname: "down0", addr_info: [] },
];

const ROUTES = [
  { dst: "default", gateway: "192.0.2.1", dev: "eth0" },
  { dst: "default", dev: "wg0", scope: "link" },
  { dst: "192.0.2.0/24", dev: "eth0", protocol: "kernel", scope: "link", prefsrc: "192.0.2.2" },
  // an operator's route without a gateway, in another table
  { dst: "203.0.113.0/26", dev: "eth1", table: "100", scope: "link" },
  // beyond a router
  { dst: "198.51.100.0/25", gateway: "198.51.100.126", dev: "sin1" },
  // multipath: one path straight on the link, one through a router
  { dst: "100.1.0.0/16", nexthops: [{ dev: "eth1" }, { gateway: "192.0.2.1", dev: "eth0" }] },
  {
    dst: "100.2.0.0/16",
    nexthops: [
      { gateway: "192.0.2.1", dev: "eth0" },
      { gateway: "192.0.2.3", dev: "eth0" },
    ],
  },
  { type: "unreachable", dst: "10.200.0.0/16" },
  { type: "local", dst: "192.0.2.2", dev: "eth0", table: "local", scope: "host" },
  { type: "broadcast", dst: "192.0.2.255", dev: "eth0", table: "local", scope: "link" },
];

describe("the host's directly connected networks", () => {
  test("each address's network and each route without a gateway; not default routes, routes via a router, or local, broadcast and unreachable entries", () => {
    assert.deepEqual(connectedPrefixes(ADDRESSES, ROUTES), ["10.1.0.2/32", "10.200.0.0/30", "100.1.0.0/16", "127.0.0.0/8", "192.0.2.0/24", "203.0.113.0/26"]);
    assert.deepEqual(connectedPrefixes([], []), []);
  });

  test("monitor lines about the box subnet (every box start) or what is refused anyway start no reading; others do", () => {
    const ignored = forbiddenIpv4Ranges([], "10.200.0.0/16");
    const box = [
      "812: sv8d2k1x    inet 10.200.0.9/30 scope global sv8d2k1x\\       valid_lft forever preferred_lft forever",
      "10.200.0.8/30 dev sv8d2k1x proto kernel scope link src 10.200.0.9 ",
      "local 10.200.0.9 dev sv8d2k1x table local proto kernel scope host src 10.200.0.9 ",
      "Deleted broadcast 10.200.0.11 dev sv8d2k1x table local proto kernel scope link src 10.200.0.9 ",
    ];
    for (const line of box) assert.equal(lineMatters(line, ignored), false, line);
    const lan = [
      "5: eth1    inet 198.51.100.121/30 scope global eth1\\       valid_lft forever preferred_lft forever",
      "Deleted 198.51.100.120/30 dev eth1 proto kernel scope link src 198.51.100.121 ",
      "203.0.113.0/26 dev eth1 table 100 scope link ",
      "default dev wg0 scope link ",
    ];
    for (const line of lan) assert.equal(lineMatters(line, ignored), true, line);
  });
});
