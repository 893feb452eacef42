// The approval inbox page: lists pending requests, refreshes on a timer, and posts decisions as JSON.
// Every string that comes from a request (tool names, arguments, reasons, identities) is written with
// textContent or a text node, never parsed as HTML; the server's Content-Security-Policy forbids inline code.
//
// A request whose caller left (its worker stopped renewing its lease, or its waiting task was cancelled) is
// not decidable: its card stays where the person saw it, greyed, with the reason and a Dismiss button. When the
// inbox itself cannot be reached, the page greys the cards whose lease ran out by its own clock (it cannot
// know more), and gives them back if the inbox answers again with the request still pending.
"use strict";

(function () {
  const POLL_MS = Number(document.body.dataset.pollMs) || 1000;
  const cards = new Map(); // request id -> card entry, kept across refreshes so edits in progress survive
  let serverOffset = 0; // server clock minus ours, for the countdowns
  const LEFT = {
    abandoned: "abandoned: the caller left (its worker stopped waiting)",
    withdrawn: "withdrawn: the caller left (it cancelled the call)",
  };

  function serverNow() {
    return Date.now() / 1000 + serverOffset;
  }

  function el(tag, props, children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props || {})) {
      if (key === "class") node.className = value;
      else if (key.startsWith("data-")) node.setAttribute(key, value);
      else node[key] = value; // textContent, type, name, value, hidden, disabled...
    }
    for (const child of children || []) {
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function pretty(value) {
    return JSON.stringify(value, null, 2);
  }

  function countdown(deadline) {
    const left = Math.max(0, Math.round(deadline - serverNow()));
    const minutes = Math.floor(left / 60);
    const seconds = String(left % 60).padStart(2, "0");
    return `expires in ${minutes}:${seconds}`;
  }

  async function send(id, decision) {
    const response = await fetch(`/api/requests/${encodeURIComponent(id)}/decision`, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(decision),
    });
    let body = {};
    try {
      body = await response.json();
    } catch (err) {
      body = {};
    }
    return { status: response.status, body };
  }

  function buildCard(req) {
    const message = el("p", { class: "message", "data-role": "message" });
    const title = el("h3", {}, [
      el("span", { class: "deadline", "data-role": "deadline", textContent: countdown(req.deadline) }),
      el("span", { "data-role": "tool", textContent: req.tool }),
    ]);
    if (req.server) title.append(el("span", { class: "server", textContent: ` on ${req.server}` }));

    const facts = el("dl");
    const rows = [
      ["identity", req.identity],
      ["session", req.session],
      ["reason", req.reason],
      ["about", req.description],
      ["rule", req.rule],
      ["risk", req.risk_class],
    ];
    for (const [label, value] of rows) {
      if (value === null || value === undefined || value === "") continue;
      facts.append(el("dt", { textContent: label }), el("dd", { "data-field": label, textContent: String(value) }));
    }

    const args = el("pre", { "data-role": "args", textContent: pretty(req.args) });
    const parts = [title, facts, el("div", { class: "muted", textContent: "Arguments" }), args];
    if (req.hidden && req.hidden.length) {
      parts.push(
        el("p", {
          class: "hidden-note",
          textContent: `Hidden: ${req.hidden.join(", ")}. Leave "[redacted]" as it is to keep the original value.`,
        }),
      );
    }

    // Edit: a JSON box, with the tool's schema beside it when the worker knew it.
    const editor = el("textarea", { name: "args", spellcheck: false, value: pretty(req.args) });
    const editPanel = el("div", { class: "panel", hidden: true, "data-role": "edit-panel" }, [editor]);
    if (req.schema) {
      editPanel.append(
        el("details", { open: true }, [
          el("summary", { textContent: "Argument schema" }),
          el("pre", { "data-role": "schema", textContent: pretty(req.schema) }),
        ]),
      );
    }
    const saveEdit = el("button", { type: "button", class: "approve", textContent: "Approve with these arguments", "data-action": "save-edit" });
    editPanel.append(el("div", { class: "actions" }, [saveEdit]));

    const reason = el("input", { type: "text", name: "message", placeholder: "Why (the agent sees this)" });
    const confirmReject = el("button", { type: "button", class: "reject", textContent: "Reject", "data-action": "confirm-reject" });
    const rejectPanel = el("div", { class: "panel", hidden: true, "data-role": "reject-panel" }, [
      reason,
      el("div", { class: "actions" }, [confirmReject]),
    ]);

    const approve = el("button", { type: "button", class: "approve", textContent: "Approve", "data-action": "approve" });
    // Grants (a yes for later identical calls: same tool, arguments and caller) for this session, or an hour.
    const approveSession = el("button", {
      type: "button", class: "approve", textContent: "Approve for this session", "data-action": "approve-session",
      title: "Also approve identical calls (same tool, arguments and caller) for the rest of this session",
    });
    const approveHour = el("button", {
      type: "button", class: "approve", textContent: "Approve for 1 hour", "data-action": "approve-hour",
      title: "Also approve identical calls (same tool, arguments and caller) for the next hour",
    });
    const edit = el("button", { type: "button", textContent: "Edit arguments", "data-action": "edit" });
    const reject = el("button", { type: "button", class: "reject", textContent: "Reject…", "data-action": "reject" });
    const dismiss = el("button", { type: "button", textContent: "Dismiss", "data-action": "dismiss", hidden: true });
    const buttons = [approve, approveSession, approveHour, edit, reject, saveEdit, confirmReject];

    const card = el("article", { class: "card", "data-request-id": req.id, "data-state": "live" }, [
      ...parts,
      el("div", { class: "actions" }, [approve, approveSession, approveHour, edit, reject, dismiss]),
      editPanel,
      rejectPanel,
      message,
    ]);
    const entry = { card, req, gone, live };

    function show(text, kind) {
      message.textContent = text;
      message.className = `message ${kind || ""}`;
    }

    // The request can no longer be decided: grey the card, say why, offer only Dismiss. "offline" when the page
    // reckoned it alone (the inbox is unreachable), so that the inbox's own answer can undo it.
    function gone(text, offline) {
      if (card.dataset.state === "left") return; // the inbox said so: final
      card.dataset.state = offline ? "offline" : "left";
      card.classList.add("left");
      buttons.forEach((b) => (b.disabled = true));
      editPanel.hidden = true;
      rejectPanel.hidden = true;
      dismiss.hidden = false;
      card.querySelector("[data-role=deadline]").textContent = "the caller left";
      show(text, "left-note");
    }

    function live() {
      if (card.dataset.state !== "offline") return;
      card.dataset.state = "live";
      card.classList.remove("left");
      if (card.dataset.decided !== "true") buttons.forEach((b) => (b.disabled = false));
      dismiss.hidden = true;
      show("");
    }

    async function decide(decision) {
      buttons.forEach((b) => (b.disabled = true));
      show("sending…");
      let result;
      try {
        result = await send(req.id, decision);
      } catch (err) {
        buttons.forEach((b) => (b.disabled = false));
        show(`could not reach the inbox: ${err}`, "error");
        return;
      }
      if (result.status === 200) {
        show(`${result.body.status || "decided"}: the worker has it`, "done");
        card.dataset.decided = "true";
        setTimeout(refresh, 150);
      } else if (result.status === 410) {
        gone(LEFT[result.body.status] || result.body.error || "the caller left", false);
      } else if (result.status === 409) {
        show(`already decided (${result.body.status || "by someone else"})`, "error");
        card.dataset.decided = "true";
      } else {
        buttons.forEach((b) => (b.disabled = false));
        show(result.body.error || `refused (HTTP ${result.status})`, "error");
      }
    }

    approve.addEventListener("click", () => decide({ type: "approve" }));
    approveSession.addEventListener("click", () => decide({ type: "approve", scope: "session" }));
    approveHour.addEventListener("click", () => decide({ type: "approve", ttl_s: 3600 }));
    edit.addEventListener("click", () => {
      editPanel.hidden = !editPanel.hidden;
      rejectPanel.hidden = true;
    });
    reject.addEventListener("click", () => {
      rejectPanel.hidden = !rejectPanel.hidden;
      editPanel.hidden = true;
    });
    saveEdit.addEventListener("click", () => {
      let parsed;
      try {
        parsed = JSON.parse(editor.value);
      } catch (err) {
        show(`not valid JSON: ${err.message}`, "error");
        return;
      }
      if (parsed === null || typeof parsed !== "object" || Array.isArray(parsed)) {
        show("the arguments must be a JSON object", "error");
        return;
      }
      decide({ type: "edit", args: parsed });
    });
    confirmReject.addEventListener("click", () => decide({ type: "reject", message: reason.value }));
    dismiss.addEventListener("click", () => {
      card.remove();
      cards.delete(req.id);
    });
    return entry;
  }

  function historyItem(req) {
    const when = req.decided_at ? new Date(req.decided_at * 1000).toLocaleTimeString() : "";
    // The status's class colours the whole entry (green approved or edited, red rejected, grey the rest).
    const item = el("li", { class: req.status, "data-request-id": req.id }, [
      el("span", { class: `status ${req.status}`, textContent: req.status }),
      el("span", { class: "mono", textContent: req.tool }),
    ]);
    if (req.server) item.append(el("span", { class: "muted", textContent: ` on ${req.server}` }));
    if (req.identity) item.append(el("span", { class: "muted", textContent: ` · ${req.identity}` }));
    item.append(el("span", { class: "muted", textContent: ` · ${when}` }));
    const decision = req.decision || {};
    if (LEFT[req.status]) item.append(el("div", { class: "muted", textContent: "the caller left: nothing to decide" }));
    if (decision.message) item.append(el("div", { textContent: `“${decision.message}”` }));
    if (decision.args) item.append(el("pre", { textContent: pretty(decision.args) }));
    return item;
  }

  function render(data) {
    serverOffset = data.now - Date.now() / 1000;
    const list = document.getElementById("pending");
    const seen = new Set();
    for (const req of data.pending) {
      seen.add(req.id);
      let entry = cards.get(req.id);
      if (!entry) {
        entry = buildCard(req);
        cards.set(req.id, entry);
        list.append(entry.card);
      }
      entry.req = req; // the lease the worker renewed lately
      entry.live();
      entry.card.querySelector("[data-role=deadline]").textContent = countdown(req.deadline);
    }
    const settled = new Map(data.history.map((req) => [req.id, req]));
    for (const [id, entry] of cards) {
      if (seen.has(id)) continue;
      const last = settled.get(id);
      if (last && LEFT[last.status]) {
        entry.gone(LEFT[last.status], false); // the person was looking at it: say why it cannot be decided
      } else if (entry.card.dataset.state !== "left") {
        entry.card.remove();
        cards.delete(id);
      }
    }
    document.getElementById("pending-count").textContent = String(data.pending.length);
    document.getElementById("empty").hidden = data.pending.length > 0;
    document.title = data.pending.length ? `(${data.pending.length}) Approval inbox · mcp-guard` : "Approval inbox · mcp-guard";

    const history = document.getElementById("history");
    history.replaceChildren(...data.history.map(historyItem));
    document.getElementById("history-empty").hidden = data.history.length > 0;
  }

  let timer = null;
  async function refresh() {
    clearTimeout(timer);
    const status = document.getElementById("connection");
    try {
      const response = await fetch("/api/requests", { credentials: "same-origin", cache: "no-store" });
      if (response.status === 401) {
        status.textContent = "Not signed in: open the address that mcp-guard inbox printed (it ends in ?token=…).";
        return; // no point asking again without a token
      }
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      render(await response.json());
      status.textContent = `live · updated ${new Date().toLocaleTimeString()}`;
    } catch (err) {
      status.textContent = `cannot reach the inbox (${err.message}); retrying…`;
      offline();
    }
    timer = setTimeout(refresh, POLL_MS);
  }

  // The inbox cannot be reached (its server stopped, as the demo's does with its worker): a request whose
  // lease ran out by the page's clock has no caller any more, as far as anyone can tell from here.
  function offline() {
    const now = serverNow();
    for (const entry of cards.values()) {
      if (entry.card.dataset.state !== "live") continue;
      const { lease_until: lease, deadline } = entry.req;
      if (now > deadline) entry.gone("expired: nobody decided in time (the inbox is unreachable)", true);
      else if (lease !== null && lease !== undefined && now > lease)
        entry.gone("the caller left: its lease ran out while the inbox was unreachable", true);
      else entry.card.querySelector("[data-role=deadline]").textContent = countdown(deadline);
    }
    const waiting = [...cards.values()].filter((entry) => entry.card.dataset.state === "live").length;
    document.getElementById("pending-count").textContent = String(waiting);
  }

  refresh();
})();
