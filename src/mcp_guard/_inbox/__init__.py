"""The approval inbox: the Inbox approver (inbox), its memory:// and redis:// stores (stores), and its web
page and JSON API (web). No CLI here: ``mcp-guard inbox`` is in :mod:`mcp_guard._cli.inbox`.
"""
