"""Apps group Sailboxes."""

from __future__ import annotations

import urllib.parse
from typing import Any, Dict, List, Optional

from ._client import SailClient

__all__ = ["App"]


class App:
    """An app groups Sailboxes; names of live Sailboxes are unique within an app.

    Example::

        app = sail.App.find(name="web-demo", mint_if_missing=True)
    """

    def __init__(self, client: SailClient, info: Dict[str, Any]) -> None:
        self.client = client
        self.id: str = info["id"]
        self.name: str = info["name"]
        self.created_at: str = info["createdAt"]

    @classmethod
    def find(cls, name: str, mint_if_missing: bool = False, client: Optional[SailClient] = None, timeout: Optional[float] = None) -> "App":
        """Look an app up by name; with ``mint_if_missing=True`` it is created if absent.

        Raises:
            sail.NotFoundError: no such app and ``mint_if_missing`` is false.
            sail.InvalidArgumentError: the name is not 1-63 of ``[a-z0-9-]``.
        """
        client = client or SailClient.default()
        path = f"/v1/apps/{urllib.parse.quote(name, safe='')}"
        info = client.request("PUT", path, {}, timeout=timeout) if mint_if_missing else client.request("GET", path, timeout=timeout)
        return cls(client, info)

    @classmethod
    def list(cls, client: Optional[SailClient] = None, timeout: Optional[float] = None) -> List["App"]:
        """Every app of your org."""
        client = client or SailClient.default()
        return [cls(client, info) for info in client.request("GET", "/v1/apps", timeout=timeout)["apps"]]

    def __repr__(self) -> str:
        return f"<App {self.name} ({self.id})>"
