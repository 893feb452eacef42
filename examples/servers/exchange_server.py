"""A demo MCP server modelled on an exchange account (stdio). State lives in memory and dies with the process.

Run it directly (``python examples/servers/exchange_server.py``) or let a client start it over stdio. It is
the server the demo, the notebooks and ``tests/cli/test_init.py`` talk to: nothing here talks to a real exchange.

Tools, by what they do (the MCP annotations say the same, honestly):

* read: ``get_balance``, ``get_open_orders``, ``get_ticker``
* write: ``create_listen_key``, ``keepalive_listen_key``, ``place_order``, ``cancel_order``
* destructive / moves money out: ``withdraw``, ``delete_api_key``

Do not use this as a template for a real exchange server: it has no authentication and trusts every caller.
"""

from __future__ import annotations

import itertools
import secrets
from typing import Any, Literal

# ToolError, not ValueError, for failures the model should read: mcp 2 hides any other exception's text.
try:  # mcp 2.x renamed FastMCP to MCPServer
    from mcp.server.mcpserver import MCPServer as FastMCP
    from mcp.server.mcpserver.exceptions import ToolError
except ImportError:  # mcp 1.x
    from mcp.server.fastmcp import FastMCP  # type: ignore[no-redef]
    from mcp.server.fastmcp.exceptions import ToolError  # type: ignore[no-redef]
from mcp.types import ToolAnnotations

# WARNING keeps FastMCP's per-request INFO lines off stderr, so the demo's table stays readable.
mcp = FastMCP("exchange", log_level="WARNING")

# -- in-memory account state -----------------------------------------------------------------------------

PRICES: dict[str, float] = {"BTCUSD": 64_000.0, "ETHUSD": 3_200.0, "SOLUSD": 150.0}
BALANCES: dict[str, float] = {"USD": 25_000.0, "BTC": 0.5, "ETH": 4.0, "SOL": 0.0}
ORDERS: dict[str, dict[str, Any]] = {}
LISTEN_KEYS: set[str] = set()
API_KEYS: set[str] = {"key-trading", "key-readonly"}
_order_ids = itertools.count(1)

READ = ToolAnnotations(readOnlyHint=True, openWorldHint=False)


def _symbol(symbol: str) -> str:
    symbol = symbol.upper()
    if symbol not in PRICES:
        raise ToolError(f"unknown symbol {symbol!r}; known: {', '.join(sorted(PRICES))}")
    return symbol


# -- read tools ------------------------------------------------------------------------------------------


@mcp.tool(title="Account balance", annotations=READ)
def get_balance(asset: str | None = None) -> dict[str, float]:
    """Free balance per asset (or for one asset)."""
    if asset is None:
        return dict(BALANCES)
    asset = asset.upper()
    if asset not in BALANCES:
        raise ToolError(f"unknown asset {asset!r}")
    return {asset: BALANCES[asset]}


@mcp.tool(title="Open orders", annotations=READ)
def get_open_orders(symbol: str | None = None) -> list[dict[str, Any]]:
    """Orders placed and not yet cancelled, optionally for one symbol."""
    wanted = None if symbol is None else _symbol(symbol)
    return [o for o in ORDERS.values() if wanted is None or o["symbol"] == wanted]


@mcp.tool(title="Ticker", annotations=READ)
def get_ticker(symbol: str) -> dict[str, Any]:
    """Last price of a symbol, e.g. BTCUSD."""
    symbol = _symbol(symbol)
    return {"symbol": symbol, "price": PRICES[symbol]}


# -- write tools -----------------------------------------------------------------------------------------


@mcp.tool(
    title="Create user-data-stream listen key",
    annotations=ToolAnnotations(readOnlyHint=False, destructiveHint=False, idempotentHint=False, openWorldHint=False),
)
def create_listen_key() -> dict[str, str]:
    """Open a user-data stream; returns a listen key to keep alive every 30 minutes."""
    key = secrets.token_hex(16)
    LISTEN_KEYS.add(key)
    return {"listenKey": key}


@mcp.tool(
    title="Keep a listen key alive",
    annotations=ToolAnnotations(readOnlyHint=False, destructiveHint=False, idempotentHint=True, openWorldHint=False),
)
def keepalive_listen_key(listen_key: str) -> dict[str, str]:
    """Extend a listen key's life by 60 minutes."""
    if listen_key not in LISTEN_KEYS:
        raise ToolError("unknown listen key")
    return {"listenKey": listen_key, "status": "extended"}


@mcp.tool(
    title="Place an order",
    # Additive: a new order; it commits funds, but cancel_order undoes it while it is open.
    annotations=ToolAnnotations(readOnlyHint=False, destructiveHint=False, idempotentHint=False, openWorldHint=False),
)
def place_order(
    symbol: str,
    side: Literal["buy", "sell"],
    amount: int,
    price: float | None = None,
) -> dict[str, Any]:
    """Place a limit (with ``price``) or market order for ``amount`` US dollars' worth of ``symbol``."""
    symbol = _symbol(symbol)
    if amount <= 0:
        raise ToolError("amount must be a positive number of US dollars")
    if side == "buy" and amount > BALANCES["USD"]:
        raise ToolError(f"insufficient USD balance: {BALANCES['USD']:.2f} free, {amount} needed")
    order_id = f"ord-{next(_order_ids)}"
    fill_price = price if price is not None else PRICES[symbol]
    order = {
        "order_id": order_id,
        "symbol": symbol,
        "side": side,
        "amount": amount,
        "price": fill_price,
        "quantity": round(amount / fill_price, 8),
        "status": "open",
    }
    if side == "buy":
        BALANCES["USD"] -= amount
    ORDERS[order_id] = order
    return order


@mcp.tool(
    title="Cancel an order",
    # Cancelling returns the reserved funds; nothing is lost that place_order cannot recreate.
    annotations=ToolAnnotations(readOnlyHint=False, destructiveHint=False, idempotentHint=True, openWorldHint=False),
)
def cancel_order(order_id: str) -> dict[str, Any]:
    """Cancel an open order and release its funds."""
    order = ORDERS.pop(order_id, None)
    if order is None:
        raise ToolError(f"no open order {order_id!r}")
    if order["side"] == "buy":
        BALANCES["USD"] += order["amount"]
    return {**order, "status": "cancelled"}


# -- destructive / financial tools -----------------------------------------------------------------------


@mcp.tool(
    title="Withdraw funds",
    # Irreversible, and sends money to an address outside the exchange: destructive and open-world.
    annotations=ToolAnnotations(readOnlyHint=False, destructiveHint=True, idempotentHint=False, openWorldHint=True),
)
def withdraw(asset: str, amount: float, address: str) -> dict[str, Any]:
    """Send ``amount`` of ``asset`` to an external ``address``. Cannot be undone."""
    asset = asset.upper()
    if asset not in BALANCES:
        raise ToolError(f"unknown asset {asset!r}")
    if amount <= 0 or amount > BALANCES[asset]:
        raise ToolError(f"cannot withdraw {amount} {asset}: {BALANCES[asset]} free")
    BALANCES[asset] -= amount
    return {"asset": asset, "amount": amount, "address": address, "status": "sent", "tx": secrets.token_hex(8)}


@mcp.tool(
    title="Delete an API key",
    annotations=ToolAnnotations(readOnlyHint=False, destructiveHint=True, idempotentHint=True, openWorldHint=False),
)
def delete_api_key(api_key_id: str) -> dict[str, str]:
    """Revoke an API key for good."""
    if api_key_id not in API_KEYS:
        raise ToolError(f"no API key {api_key_id!r}")
    API_KEYS.discard(api_key_id)
    return {"api_key_id": api_key_id, "status": "deleted"}


if __name__ == "__main__":
    mcp.run("stdio")
