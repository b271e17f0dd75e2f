"""Build progress of a create or an image build, printed to stderr as Modal prints its image builds."""

from __future__ import annotations

import sys
import time
from typing import Any, Callable, Dict, Optional

# while one build step lasts, a line this often says it still runs (seconds)
_STILL_EVERY = 30.0

ProgressCallback = Callable[[Dict[str, Any]], None]


def describe_progress(progress: Dict[str, Any]) -> str:
    """``"debian_arm64: configuring (arm64, emulated) libc6 (95 s)"``."""
    detail = progress.get("detail") or ""
    if len(detail) > 60:
        detail = detail[:57] + "..."
    if progress.get("phase") == "image":
        what = (progress.get("step") or "building") + (f" {detail}" if detail else "")
    else:
        what = f"starting {progress.get('sailboxId') or 'the box'}"
    return f"{progress.get('image')}: {what} ({round(progress.get('elapsedMs', 0) / 1000)} s)"


def print_build_progress(write: Optional[Callable[[str], Any]] = None) -> ProgressCallback:
    """The default ``on_progress``: a line on stderr when an image build reaches a new step, and
    every 30 s while one step lasts. A create that finds its image built prints nothing."""
    out = write or (lambda text: (sys.stderr.write(text), sys.stderr.flush()))
    state: Dict[str, Any] = {"step": None, "latest": None, "printed_at": 0.0}

    def show(progress: Dict[str, Any], still: bool) -> None:
        out(f"sail: {'still building' if still else 'building'} {describe_progress(progress)}\n")
        state["printed_at"] = time.monotonic()

    def on_event(event: Dict[str, Any]) -> None:
        if "heartbeat" in event:
            latest = state["latest"]
            if latest is not None and time.monotonic() - state["printed_at"] >= _STILL_EVERY:
                show({**latest, "elapsedMs": event["heartbeat"].get("elapsedMs", 0)}, True)
            return
        progress = event.get("progress") or {}
        if progress.get("phase") != "image":
            state["latest"] = None  # the build's last step ("ready") was printed
            return
        state["latest"] = progress
        if progress.get("step") != state["step"]:
            show(progress, False)
        elif time.monotonic() - state["printed_at"] >= _STILL_EVERY:
            show(progress, True)
        state["step"] = progress.get("step")

    return on_event


def progress_callback(on_progress: Any) -> Optional[ProgressCallback]:
    """``None`` (default): print builds to stderr; ``False``: quiet; a callable: every event."""
    if on_progress is False:
        return None
    if on_progress is None or on_progress is True:
        return print_build_progress()
    return on_progress  # type: ignore[no-any-return]
