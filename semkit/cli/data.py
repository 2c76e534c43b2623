"""``semkit data …`` and ``semkit curate``: dataset registry, fetching and curation."""

from __future__ import annotations

commands: list = []
