"""The approval inbox: the Inbox approver (inbox), its memory:// and redis:// stores in a scheme registry
(stores), how their URLs are shown without secrets (urls), and its web page and JSON API (web).

Imports go one way: web -> inbox -> stores -> urls. The page is built for an inbox with
``web.create_app(inbox, token=...)``; the inbox knows nothing of its page. No CLI here: ``mcp-guard inbox`` is in
:mod:`mcp_guard._cli.inbox`, which wires the two.
"""
