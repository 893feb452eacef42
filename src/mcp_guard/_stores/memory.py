"""STUB - replaced by the in-memory store."""
