"""Long creates from Python: an image build's progress on stderr, ``timeout=`` on every call.
test/e2e/python-sdk.test.ts removes the cached images of these packages first, so each create
here builds (the TypeScript side, test/e2e/create-progress.test.ts, tests the Idempotency-Key
retries and the CLI)."""

from __future__ import annotations

import re
import time

import pytest

import sail

# apps of this run only: a list shows an app's terminated boxes too, and the data dir outlives runs
RUN = format(int(time.time() * 1000), "x")

# one small package per test, so each create is the one that builds
BUILT_WITH_PROGRESS = "bc"
BUILT_PAST_TIMEOUT = "pv"


def test_a_create_that_builds_an_image_prints_its_steps_to_stderr(daemon, capsys):
    app = sail.App.find(name=f"py-progress-{RUN}", mint_if_missing=True)
    sb = sail.Sailbox.create(app=app, image=sail.Image.debian.apt_install(BUILT_WITH_PROGRESS))
    err = capsys.readouterr().err
    assert re.search(rf"^sail: building debian\+{BUILT_WITH_PROGRESS}: copying base image \(\d+ s\)$", err, re.M), err
    assert re.search(rf"^sail: building debian\+{BUILT_WITH_PROGRESS}: ready \(\d+ s\)$", err, re.M), err
    assert sb.info.status == "running" and sb.info.image["aptPackages"] == [BUILT_WITH_PROGRESS]
    assert sb.exec(f"command -v {BUILT_WITH_PROGRESS}").wait() == 0
    # built now: the next create of it waits for nothing and prints nothing
    sail.Sailbox.create(app=app, image=sail.Image.debian.apt_install(BUILT_WITH_PROGRESS))
    assert capsys.readouterr().err == ""


def test_a_create_past_its_timeout_raises_sail_timeout_error_and_leaves_no_box(daemon):
    app = sail.App.find(name=f"py-progress-late-{RUN}", mint_if_missing=True)
    image = sail.Image.debian.apt_install(BUILT_PAST_TIMEOUT)
    with pytest.raises(sail.TimeoutError) as late:
        sail.Sailbox.create(app=app, image=image, timeout=2, on_progress=False)
    assert late.value.code == "SAIL_TIMEOUT"
    # the build went on: wait for it to end, then the create that gave up has made nothing
    built = image.build(on_progress=False)
    assert built == {"name": "debian", "arch": built["arch"], "aptPackages": [BUILT_PAST_TIMEOUT], "emulated": False}
    assert sail.Sailbox.list(app=app) == []


def test_timeout_ends_any_call_with_sail_timeout_error(daemon):
    app = sail.App.find(name=f"py-progress-calls-{RUN}", mint_if_missing=True)
    sb = sail.Sailbox.create(app=app, ingress_ports=[3000])
    # the daemon would hold this wait for a minute (nothing listens): the client's limit ends it
    with pytest.raises(sail.TimeoutError) as late:
        daemon.request("GET", f"/v1/sailboxes/{sb.id}/listeners/3000?waitMs=60000", timeout=0.5)
    assert late.value.code == "SAIL_TIMEOUT" and "within 0.5 s" in late.value.message
    with pytest.raises(sail.TimeoutError):
        sb.exec("sleep 30", timeout=0.5).wait()
    assert sb.status(timeout=10) == "running"
