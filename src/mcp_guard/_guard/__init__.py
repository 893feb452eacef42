"""The runtime: acts on a Decision. guard (the Guard: options and entry points), pipeline (the steps, once,
and their sync and async drivers), retry (tenacity as the retry engine), shadow, usage, reload, pins (tool
pinning), grants (approval grants), memory (session memory records).
"""
