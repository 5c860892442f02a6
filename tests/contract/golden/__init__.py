"""Golden samples of every published event version: ``<type>/v<N>.json``, each a whole envelope as it
travels on the wire (``Envelope.to_dict()``'s form), kept as they were published, never edited.

A version is published once a producer could have sent it: its messages may sit in a queue, in an
outbox row not yet sent, or in a dead letter waiting for replay, so every sample here must still decode.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent


def samples() -> dict[tuple[str, int], dict[str, Any]]:
    """Every sample, by (event type, version)."""
    found: dict[tuple[str, int], dict[str, Any]] = {}
    for path in sorted(HERE.glob("*/v*.json")):
        found[(path.parent.name, int(path.stem[1:]))] = json.loads(path.read_text())
    return found


def latest() -> dict[str, dict[str, Any]]:
    """Each event type's sample of its newest version (what producers send today)."""
    newest: dict[str, tuple[int, dict[str, Any]]] = {}
    for (name, version), wire in samples().items():
        if name not in newest or version > newest[name][0]:
            newest[name] = (version, wire)
    return {name: wire for name, (_, wire) in newest.items()}
