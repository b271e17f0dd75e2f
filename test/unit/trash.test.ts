/**
 * What the trash unmounts before it removes a box's directory: the mounts under it, read from
 * /proc/self/mountinfo (proc(5)), the last mounted first, so the overlay comes off before the
 * disk it sits on.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { mountsUnder } from "../../packages/server/src/runtime/trash.js";

const MOUNTINFO = [
  "22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw",
  "90 22 7:0 / /var/lib/sail/trash/sb-1/disk rw,relatime shared:50 - ext4 /dev/loop0 rw,noinit_itable",
  "91 22 0:60 / /var/lib/sail/trash/sb-1/rootfs rw,relatime shared:51 - overlay overlay rw,lowerdir=/x,upperdir=/var/lib/sail/trash/sb-1/disk/upper",
  "92 22 7:1 / /var/lib/sail/trash/sb-10/disk rw,relatime shared:52 - ext4 /dev/loop1 rw",
  "93 22 7:2 / /var/lib/sail/trash/odd\\040name/disk rw,relatime shared:53 - ext4 /dev/loop2 rw",
  "",
].join("\n");

describe("the trash", () => {
  test("unmounts what is under a directory, the last mounted first, and nothing of a directory whose name only starts the same", () => {
    assert.deepEqual(mountsUnder("/var/lib/sail/trash/sb-1", MOUNTINFO), [
      { mountPoint: "/var/lib/sail/trash/sb-1/rootfs", fsType: "overlay", source: "overlay" },
      { mountPoint: "/var/lib/sail/trash/sb-1/disk", fsType: "ext4", source: "/dev/loop0" },
    ]);
  });

  test("reads mountinfo's octal escapes in paths", () => {
    assert.deepEqual(mountsUnder("/var/lib/sail/trash/odd name", MOUNTINFO), [{ mountPoint: "/var/lib/sail/trash/odd name/disk", fsType: "ext4", source: "/dev/loop2" }]);
    assert.deepEqual(mountsUnder("/var/lib/sail/boxes/sb-1", MOUNTINFO), []);
  });
});
