"""STUB - replaced by the Redis store."""
