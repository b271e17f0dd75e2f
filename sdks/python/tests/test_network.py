"""Outbound network policy from Python: the same wire and codes as the TypeScript SDK. The
traffic itself is tested end to end in test/e2e/egress.test.ts (it needs a fake internet)."""

from __future__ import annotations

import pytest

import sail


def test_create_and_change_a_policy(daemon):
    app = sail.App.find(name="py-network", mint_if_missing=True)
    sb = sail.Sailbox.create(app=app, allow_out=["198.51.100.0/24", "*.Example.com"])
    assert sb.network == {"outbound": "allowlist", "allowOut": ["198.51.100.0/24", "*.example.com"], "denyOut": []}
    assert sb.set_network(block_network=True) == {"outbound": "blocked", "allowOut": [], "denyOut": []}
    assert sb.set_network(deny_out=["203.0.113.7"])["denyOut"] == ["203.0.113.7/32"]
    sb.status()
    assert sb.info.network["outbound"] == "denylist"
    assert sb.set_network()["outbound"] == "open"
    assert sail.Sailbox.create(app=app, block_network=True).network["outbound"] == "blocked"


def test_bad_policies_are_refused_with_their_code(daemon):
    app = sail.App.find(name="py-network", mint_if_missing=True)
    before = len(sail.Sailbox.list(app=app))
    with pytest.raises(sail.InvalidArgumentError) as bad:
        sail.Sailbox.create(app=app, allow_out=["not a host"])
    assert bad.value.code == "SAIL_NETWORK_ENTRY_INVALID" and "not a host" in str(bad.value)
    with pytest.raises(sail.InvalidArgumentError) as both:
        sail.Sailbox.create(app=app, block_network=True, deny_out=["198.51.100.7"])
    assert both.value.code == "SAIL_NETWORK_POLICY_CONFLICT"
    with pytest.raises(sail.InvalidArgumentError) as private:
        sail.Sailbox.create(app=app, allow_out=["192.168.0.0/16"])
    assert private.value.code == "SAIL_NETWORK_ENTRY_REFUSED"
    assert len(sail.Sailbox.list(app=app)) == before
