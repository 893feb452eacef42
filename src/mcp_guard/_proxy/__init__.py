"""``mcp-guard proxy``'s machinery: the stdio relay (relay) and its strict reading of each message
(strict_json), the SDK server path (server), the HTTP front (http) with its Host/Origin check (origin) and JWT
gate (jwt, jwt_gate), and what both paths say on the wire (wire). Options and the command are in
:mod:`mcp_guard._cli.proxy`.
"""
