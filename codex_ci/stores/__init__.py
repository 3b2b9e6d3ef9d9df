"""Secret stores: one module per store behind the small Protocol in :mod:`codex_ci.stores.base`."""

from codex_ci.stores.base import Store, StoreConflict, Versioned, open_store, parse_url

__all__ = ["Store", "StoreConflict", "Versioned", "open_store", "parse_url"]
