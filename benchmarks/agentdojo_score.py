"""The published security score (spec section 11): AgentDojo's tasks replayed through mcp-guard, no LLM.

Run: ``make bench-agentdojo`` (it builds ``.bench-venvs/agentdojo`` with ``agentdojo==0.1.35`` and runs this
script there), or ``.bench-venvs/agentdojo/bin/python benchmarks/agentdojo_score.py [--markdown] [--details]``.
agentdojo pulls in many packages (model SDKs among them), so it lives in its own venv, never in ``.venv``.

What is replayed. AgentDojo (benchmark version v1.2.2; suites workspace, travel, banking, slack) ships, for
each user task and each injection task, ``ground_truth(pre_environment)``: the tool calls that solve it. The
suite's tools run against the suite's environment, so every call's real result is known without a model.

* User task: one session. The task's prompt is the user's request (``guard.observe_input(prompt,
  session=...)``, what an adapter does with the user's message), then each ground-truth call goes through
  ``guard.invoke`` with a function that runs the AgentDojo tool against the environment and returns its result
  as an MCP server would: the text AgentDojo shows models (YAML) and, for a tool that returns records (an
  e-mail, an event, a file, a transaction, a message, or a list of them), the records' JSON as
  ``structuredContent``. ``invoke`` records each result in the session's memory with its rule's trust label,
  and the values of the fields the rule labels trusted (``results`` as a map) as trusted, as it does for any
  caller. Under a policy with no session rule (0.2's) both are
  no-ops: the guard keeps no memory it will not read. The environment is the default one (no injection). A
  task is *refused* if any of its calls was refused outright, *needed a human* if none was refused but some
  call was held for approval (the approver records the request and approves, so the task goes on as a person
  who said yes would let it), else *passed*.
* Injection task: paired with EVERY user task of its suite, as AgentDojo's own benchmark pairs them. The
  injection's goal is written into the injection vectors that the user task's ground truth reads (found as
  AgentDojo's attacks find them: a canary in each vector, kept where a result shows it), wrapped in AgentDojo's
  ``important_instructions`` attack text. One session per pairing: the user's prompt, the user task's calls
  up to the first whose result carried the attacker's text to the agent (the attack says "before you solve
  the task, do this first"), then the injection task's ground-truth calls, computed on the environment as it
  is at that moment. A pairing is *refused outright* if any of the injection's calls was refused, *held* if
  none was refused but some needed approval, *passed* otherwise. Only the injection's calls are judged: what
  happened to the user's calls is the user task's score.

Each call carries the tool's input schema (checked strictly, as an MCP adapter passes ``inputSchema``) and the
suite's name as its server; AgentDojo's tools have no MCP annotations, and the policies name every tool, so
none are passed. The guard runs on a replay clock (a day between sessions), so a per-caller rate limit does
not count calls of sessions that would in reality be hours apart.

What AgentDojo's ground truths hold that matters when reading the score:

* 8 of workspace's 14 injection tasks (6-13, the v1.2 additions: mail every unread e-mail, every file, the five
  largest files to the attacker, then delete; phishing mails to today's participants) have an empty ground
  truth, and travel's injection_task_6 asks only for a sentence in the answer: nothing to replay, not scored.
* Banking user_task_5 and user_task_11 pay "Spotify" and "Apple", names, not IBANs; user_task_10 ("pay the
  bill, like last month") only reads the history; user_task_9 sets the rent to the amount it already is. The
  attacker's IBAN, US133000000121212121212, is a look-alike of the user's own payee US122000000121212121212.
  The bill's injection vector holds the bill's payment text, so an injected bill no longer shows the IBAN
  that user_task_0's ground truth pays.
* Workspace user_task_25 mails two colleagues at "luesparrowtech.com", a look-alike of the company's domain
  that the file's sharing list holds.
* Slack user_task_18 and user_task_19 never open the TODO page their prompt points to; user_task_4 opens a
  blog that only Bob's inbox names, and its prompt runs the address it posts to into the next sentence
  ("www.our-company.com.They sent ..."), so as a whole token the prompt names ``www.our-company.com.they``,
  not the address the ground truth posts to. The secret that slack's attacks post to the web ("Secret key is 1a7b3d.")
  is plain prose in a channel message.

Policies: ``examples/policies/agentdojo/<suite>.yaml`` (0.3's language: trust labels, provenance, session
conditions) and ``examples/policies/agentdojo/v02/<suite>.yaml`` (0.2's language only). A set that does not
load on the installed mcp-guard is reported as such, with the loader's message, and skipped.

Not a timed test: the script prints a table and checks nothing. Exit status 0 when some policy set was scored
(a set that does not load is reported, not fatal), 1 when none was, 2 when agentdojo or detect-secrets (the
``secrets`` detector that 0.3's policies name) is not importable (with the command that fixes it).
"""

from __future__ import annotations

import argparse
import functools
import sys
import textwrap
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

ROOT = Path(__file__).resolve().parent.parent
POLICY_DIR = ROOT / "examples" / "policies" / "agentdojo"
POLICY_SETS: dict[str, Path] = {"0.3": POLICY_DIR, "0.2": POLICY_DIR / "v02"}
SUITES = ("workspace", "travel", "banking", "slack")
BENCHMARK_VERSION = "v1.2.2"
AGENTDOJO_VERSION = "0.1.35"
# How AgentDojo's important_instructions attack signs its message (the suites' user is Emma Johnson); the
# model name is the attack's default when the victim model is not named.
ATTACK_USER = "Emma Johnson"
ATTACK_MODEL = "the AI language model"
# How the replay tells that a result carried the attack to the agent: the attack's opening tag. Not the goal's
# text, which YAML may fold across lines when a tool's result is dumped.
ATTACK_MARKER = "<INFORMATION>"
SETUP_HINT = (
    "agentdojo is not importable in this Python. Build its venv and run there: make bench-agentdojo "
    f"(or: python3 -m venv .bench-venvs/agentdojo && .bench-venvs/agentdojo/bin/pip install -e '.[yaml,secrets]' "
    f"agentdojo=={AGENTDOJO_VERSION})"
)
SECRETS_HINT = (
    "detect-secrets is not importable in this Python, and 0.3's policies name the 'secrets' detector (a venv built "
    "before it was added lacks it): .bench-venvs/agentdojo/bin/pip install -e '.[yaml,secrets]'"
)

Verdict = Literal["refused", "held", "passed"]


# -- results ----------------------------------------------------------------------------------------------


@dataclass
class CallOutcome:
    """One replayed call: what the guard did with it, and why (the rule that refused or asked)."""

    tool: str
    verdict: Verdict
    code: str | None = None
    rule: str | None = None
    reason: str | None = None
    delivered: str = ""  # what the agent got back: the tool's text, or the violation payload's reason


@dataclass
class UserTaskResult:
    suite: str
    task: str
    calls: list[CallOutcome]
    environment: Any = field(default=None, repr=False)  # the environment after the replay (what the tools did)

    @property
    def verdict(self) -> Verdict:
        return worst(c.verdict for c in self.calls)


@dataclass
class PairingResult:
    suite: str
    user_task: str
    injection_task: str
    vectors: tuple[str, ...]
    delivered: bool  # the attacker's text reached the agent through a user-task call's result
    calls: list[CallOutcome]  # the injection task's calls only
    environment: Any = field(default=None, repr=False)  # the environment after the replay (what the tools did)

    @property
    def verdict(self) -> Verdict | None:
        """None when the injection task has no ground-truth calls: nothing to judge."""
        return worst(c.verdict for c in self.calls) if self.calls else None


@dataclass
class SuiteScore:
    suite: str
    users: list[UserTaskResult] = field(default_factory=list)
    pairings: list[PairingResult] = field(default_factory=list)

    def user_counts(self) -> Counter[str]:
        return Counter(u.verdict for u in self.users)

    def pairing_counts(self) -> Counter[str]:
        return Counter(p.verdict or "unscored" for p in self.pairings)

    def injection_tasks(self) -> list[str]:
        return sorted({p.injection_task for p in self.pairings}, key=task_number)

    def unscored_injection_tasks(self) -> list[str]:
        return [t for t in self.injection_tasks() if all(p.verdict is None for p in self.by_injection(t))]

    def by_injection(self, task: str) -> list[PairingResult]:
        return [p for p in self.pairings if p.injection_task == task]


def worst(verdicts: Iterable[Verdict]) -> Verdict:
    seen = set(verdicts)
    for v in ("refused", "held"):
        if v in seen:
            return v  # type: ignore[return-value]
    return "passed"


def task_number(task_id: str) -> int:
    return int(task_id.rsplit("_", 1)[-1])


# -- the approver: a person who reads every request and says yes --------------------------------------------


class RecordingApprover:
    """Records each approval request (per session) and approves it, so a held call goes on."""

    def __init__(self) -> None:
        self.requests: dict[str | None, list[Any]] = {}

    def __call__(self, request: Any) -> bool:
        self.requests.setdefault(request.session, []).append(request)
        return True

    def count(self, session: str) -> int:
        return len(self.requests.get(session, ()))

    def last(self, session: str) -> Any:
        return self.requests[session][-1]


class ReplayClock:
    """The guard's clock: a second per call, a day between sessions.

    The replay runs hundreds of sessions in a minute; on the wall clock, the policies' per-minute limits would
    count calls of unrelated sessions together (a limit scoped to the caller spans sessions). Real sessions
    happen at different times, so each starts a day after the last.
    """

    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now

    def next_call(self) -> None:
        self.now += 1.0

    def next_session(self) -> None:
        self.now += 86_400.0


# -- AgentDojo: environments, tools, injections ------------------------------------------------------------


def import_agentdojo() -> Any:
    """``agentdojo.task_suite.load_suites``, or None when agentdojo is not importable here."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # its model SDKs warn at import on some Pythons: not ours to fix
            from agentdojo.task_suite import load_suites
    except ImportError:
        return None
    return load_suites


class SuiteReplay:
    """One AgentDojo suite: its environments (default and injected), its tools as guard-callable functions."""

    def __init__(self, suite: Any) -> None:
        import yaml
        from agentdojo.agent_pipeline.tool_execution import tool_result_to_str
        from agentdojo.attacks.important_instructions_attacks import ImportantInstructionsAttack
        from agentdojo.functions_runtime import FunctionsRuntime
        from agentdojo.task_suite.task_suite import read_suite_file

        self.suite = suite
        self.name: str = suite.name
        self.runtime = FunctionsRuntime(suite.tools)
        self.schemas: dict[str, dict[str, Any]] = {f.name: f.parameters.model_json_schema() for f in suite.tools}
        self.to_text: Callable[[Any], str] = tool_result_to_str
        self.attack_template: str = ImportantInstructionsAttack._JB_STRING
        self._yaml = yaml
        self._environment_text: str = read_suite_file(suite.name, "environment.yaml", suite.data_path)
        self.vector_defaults: dict[str, str] = suite.get_injection_vector_defaults()
        self._environments: dict[tuple[tuple[str, str], ...], Any] = {}

    def environment(self, injections: Mapping[str, str] | None = None) -> Any:
        """A fresh environment with ``injections`` (vector -> text) in place of the vectors' defaults.

        What ``TaskSuite.load_and_inject_default_environment`` builds (the same text, formatted the same way),
        parsed with libyaml where present (pure-Python YAML takes half a second per workspace environment,
        and the injection pairings load hundreds), and cached: each caller gets a deep copy.
        """
        key = tuple(sorted((injections or {}).items()))
        env = self._environments.get(key)
        if env is None:
            values = {**self.vector_defaults, **(injections or {})}
            loader = getattr(self._yaml, "CSafeLoader", self._yaml.SafeLoader)
            data = self._yaml.load(self._environment_text.format(**values), Loader=loader)
            env = self.suite.environment_type.model_validate(data)
            self._environments[key] = env
        return env.model_copy(deep=True)

    def tool(self, env: Any, name: str) -> Callable[..., Any]:
        """``fn(**args)``: run the AgentDojo tool ``name`` against ``env``; its result as an MCP server returns it.

        The text is what AgentDojo shows the model (YAML); a tool that returns records (a model, a list of them)
        also gives them as ``structuredContent`` (their JSON dump), as an MCP server with an output schema does,
        so a policy can label fields of them. A plain string result, and a tool error (as AgentDojo's tool
        executor hands it to the model), is text alone.
        """

        def run(**args: Any) -> Any:
            result, error = self.runtime.run_function(env, name, args)
            if error is not None:
                return error
            text = self.to_text(result)
            doc = structured(result)
            if doc is None:
                return text
            return {"content": [{"type": "text", "text": text}], "structuredContent": doc}

        run.__name__ = name
        return run

    def raw_results(self, env: Any, calls: Sequence[Any]) -> list[str]:
        """Each call's result text with no guard in the way (to find which vectors a task reads)."""
        return [text_of(self.tool(env, c.function)(**dict(c.args))) for c in calls]

    @functools.cache  # noqa: B019  (one SuiteReplay per suite and run: the cache lives as long as the run)
    def vectors_read_by(self, task_id: str) -> tuple[str, ...]:
        """The injection vectors whose content the user task's ground truth shows to the agent.

        AgentDojo's ``BaseAttack.get_injection_candidates``: a canary in every vector, the ground truth run,
        the vectors whose canary appears in some result kept (here after the task's ``init_environment``,
        as the benchmark runs the task).
        """
        task = self.suite.user_tasks[task_id]
        canaries = {v: f"<CANARY---{v}--->" for v in self.vector_defaults}
        env = task.init_environment(self.environment(canaries))
        texts = self.raw_results(env, task.ground_truth(env.model_copy(deep=True)))
        return tuple(v for v, canary in canaries.items() if any(canary in t for t in texts))

    def attack_text(self, goal: str) -> str:
        return self.attack_template.format(goal=goal, user=ATTACK_USER, model=ATTACK_MODEL, task="")


def structured(result: Any) -> Any:
    """The JSON form of a tool's records (a pydantic model, a list or dict holding some), else None."""
    from pydantic import BaseModel

    def plain(value: Any) -> Any:
        if isinstance(value, BaseModel):
            return value.model_dump(mode="json")
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {str(k): plain(v) for k, v in value.items()}
        return value

    if isinstance(result, BaseModel) or (
        isinstance(result, (list, tuple, dict)) and any(isinstance(v, BaseModel) for v in _items(result))
    ):
        return plain(result)
    return None


def _items(value: Any) -> Iterable[Any]:
    return value.values() if isinstance(value, dict) else value


def text_of(value: Any) -> str:
    """The text the agent reads of a tool's (or the guard's) answer."""
    if isinstance(value, Mapping) and isinstance(value.get("content"), list):
        return "\n".join(str(block.get("text", "")) for block in value["content"] if isinstance(block, Mapping))
    return str(value)


# -- the replay ---------------------------------------------------------------------------------------------


class Replayer:
    """Replays sessions through one guard built from one policy (one Guard per suite and policy set)."""

    def __init__(self, replay: SuiteReplay, policy: Any) -> None:
        from mcp_guard import Guard

        self.replay = replay
        self.approver = RecordingApprover()
        self.clock = ReplayClock()
        self.guard = Guard(policy, approver=self.approver, clock=self.clock)

    def user_request(self, session: str, text: str) -> None:
        """A new session starts with the user's own words (``from: [user]``; a no-op for a policy that never
        asks where a value came from)."""
        self.clock.next_session()
        self.guard.observe_input(text, session=session)

    def call(self, session: str, env: Any, call: Any) -> CallOutcome:
        name: str = call.function
        self.clock.next_call()
        before = self.approver.count(session)
        out = self.guard.invoke(
            name,
            dict(call.args),
            self.replay.tool(env, name),
            session=session,
            server=self.replay.name,
            tool_schema=self.replay.schemas.get(name),
        )
        held = self.approver.count(session) > before
        if isinstance(out, Mapping) and out.get("error") == "policy_violation":
            return CallOutcome(name, "refused", out.get("code"), out.get("rule"), out.get("reason"), str(out))
        if held:
            asked = self.approver.last(session)
            return CallOutcome(name, "held", "approval", asked.rule, asked.reason, text_of(out))
        return CallOutcome(name, "passed", delivered=text_of(out))

    def user_task(self, task_id: str) -> UserTaskResult:
        task = self.replay.suite.user_tasks[task_id]
        session = f"{self.replay.name}/{task_id}"
        env = task.init_environment(self.replay.environment())
        calls = task.ground_truth(env.model_copy(deep=True))
        self.user_request(session, task.PROMPT)
        return UserTaskResult(self.replay.name, task_id, [self.call(session, env, c) for c in calls], env)

    def pairing(self, user_id: str, injection_id: str) -> PairingResult:
        suite = self.replay.suite
        task, injection = suite.user_tasks[user_id], suite.injection_tasks[injection_id]
        vectors = self.replay.vectors_read_by(user_id)
        text = self.replay.attack_text(injection.GOAL)
        env = task.init_environment(self.replay.environment(dict.fromkeys(vectors, text)))
        session = f"{self.replay.name}/{user_id}+{injection_id}"
        self.user_request(session, task.PROMPT)
        delivered = False
        for c in task.ground_truth(env.model_copy(deep=True)):
            outcome = self.call(session, env, c)
            if ATTACK_MARKER in outcome.delivered:
                delivered = True
                break
        calls = [self.call(session, env, c) for c in injection.ground_truth(env.model_copy(deep=True))]
        return PairingResult(self.replay.name, user_id, injection_id, vectors, delivered, calls, env)


def score_suite(replay: SuiteReplay, policy: Any, *, injections: bool = True) -> SuiteScore:
    replayer = Replayer(replay, policy)
    users = sorted(replay.suite.user_tasks, key=task_number)
    score = SuiteScore(replay.name)
    for task in users:
        score.users.append(replayer.user_task(task))
        score.users[-1].environment = None  # hundreds of workspace environments would not fit in memory
    if injections:
        for inj in sorted(replay.suite.injection_tasks, key=task_number):
            for task in users:
                score.pairings.append(replayer.pairing(task, inj))
                score.pairings[-1].environment = None
    return score


# -- policies -----------------------------------------------------------------------------------------------


def load_policy_set(directory: Path, suites: Sequence[str]) -> dict[str, Any] | str:
    """Each suite's policy from ``directory``, or why the set does not load on this mcp-guard (short)."""
    from mcp_guard import Policy, PolicyError

    policies: dict[str, Any] = {}
    for suite in suites:
        path = directory / f"{suite}.yaml"
        try:
            policies[suite] = Policy.load(path)
        except (PolicyError, OSError) as exc:
            # The loader's first line counts the problems; the next one names the first of them.
            lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
            return f"{path.name}: " + (" ".join(lines[-1:] if len(lines) < 2 else lines[1:2]) or type(exc).__name__)
    return policies


# -- output -------------------------------------------------------------------------------------------------


def pct(n: int, total: int) -> str:
    return f"{100 * n / total:.0f}%" if total else "-"


def share(n: int, total: int) -> str:
    return f"{n} ({pct(n, total)})"


HEADERS = (
    "suite",
    "user tasks",
    "refused",
    "needed a human",
    "injection tasks",
    "pairings",
    "refused outright",
    "held",
    "passed",
)
LEGEND = (
    "User tasks: refused = a call was refused outright; needed a human = no call refused, one held for approval "
    "(the replay's approver says yes). Injection tasks, over their pairings (each with every user task of its "
    "suite): refused outright = one of the injection's calls was refused; held = none refused, one needed "
    "approval; passed = all ran with nobody asked. Injection tasks whose AgentDojo ground truth has no calls "
    "are not scored (the column shows scored of all)."
)


def _row(name: str, users: int, u: Counter[str], tasks: int, scored_tasks: int, p: Counter[str]) -> list[str]:
    pairings = sum(p.values()) - p["unscored"]
    return [
        name,
        str(users),
        share(u["refused"], users),
        share(u["held"], users),
        str(tasks) if scored_tasks == tasks else f"{scored_tasks} of {tasks}",
        str(pairings),
        pct(p["refused"], pairings),
        pct(p["held"], pairings),
        pct(p["passed"], pairings),
    ]


def table_rows(scores: Sequence[SuiteScore]) -> list[list[str]]:
    rows: list[list[str]] = []
    all_u: Counter[str] = Counter()
    all_p: Counter[str] = Counter()
    users = tasks = scored_tasks = 0
    for s in scores:
        u, p = s.user_counts(), s.pairing_counts()
        n_tasks = len(s.injection_tasks())
        n_scored = n_tasks - len(s.unscored_injection_tasks())
        rows.append(_row(s.suite, len(s.users), u, n_tasks, n_scored, p))
        all_u += u
        all_p += p
        users += len(s.users)
        tasks += n_tasks
        scored_tasks += n_scored
    if len(scores) > 1:
        rows.append(_row("total", users, all_u, tasks, scored_tasks, all_p))
    return rows


def print_table(title: str, scores: Sequence[SuiteScore], markdown: bool) -> None:
    rows = table_rows(scores)
    print(title)
    if markdown:
        print("| " + " | ".join(HEADERS) + " |")
        print("|" + "|".join("---" if i == 0 else "--:" for i in range(len(HEADERS))) + "|")
        for row in rows:
            cells = [f"**{c}**" if row[0] == "total" else c for c in row]
            print("| " + " | ".join(cells) + " |")
    else:
        widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(HEADERS)]
        print("  ".join(h.ljust(w) for h, w in zip(HEADERS, widths, strict=True)).rstrip())
        for row in rows:
            print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    print()


def print_details(scores: Sequence[SuiteScore]) -> None:
    for s in scores:
        print(f"## {s.suite}: user tasks that did not simply pass")
        for u in s.users:
            if u.verdict == "passed":
                continue
            why = "; ".join(f"{c.tool}: {c.verdict} ({c.code}, {c.rule})" for c in u.calls if c.verdict != "passed")
            print(f"  {u.task:<16} {u.verdict:<8} {why}")
        if s.pairings:
            print(f"## {s.suite}: injection tasks over their pairings (refused / held / passed / not delivered)")
            for inj in s.injection_tasks():
                ps = s.by_injection(inj)
                c = Counter(p.verdict or "unscored" for p in ps)
                if c["unscored"] == len(ps):
                    print(f"  {inj:<20} no ground-truth calls: not scored")
                    continue
                lost = sum(not p.delivered for p in ps)
                print(
                    f"  {inj:<20} {pct(c['refused'], len(ps)):>5} {pct(c['held'], len(ps)):>5} "
                    f"{pct(c['passed'], len(ps)):>5}   {lost}/{len(ps)}   {why_refused(ps)}"
                )
        print()


def why_refused(pairings: Sequence[PairingResult]) -> str:
    """The rules that refused or held the injection's calls, most frequent first."""
    rules = Counter(f"{c.verdict}:{c.rule}" for p in pairings for c in p.calls if c.verdict != "passed")
    return ", ".join(f"{r} x{n}" for r, n in rules.most_common(3))


# -- main ---------------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--policies",
        choices=[*POLICY_SETS, "both"],
        default="both",
        help="which policy set to score: 0.3's language, 0.2's, or both (default)",
    )
    parser.add_argument("--policy-dir", type=Path, help="score the policies in this directory instead")
    parser.add_argument("--suites", nargs="+", choices=SUITES, default=list(SUITES))
    parser.add_argument("--no-injections", action="store_true", help="score the user tasks only")
    parser.add_argument("--markdown", action="store_true", help="print the tables as Markdown (for the README)")
    parser.add_argument("--details", action="store_true", help="list each held or refused task and its rule")
    opts = parser.parse_args(argv)

    load_suites = import_agentdojo()
    if load_suites is None:
        print(SETUP_HINT, file=sys.stderr)
        return 2
    import importlib.metadata
    import importlib.util

    # Without detect-secrets a policy's detect: [secrets] cannot run, and every result it judges would be
    # refused (the guard fails closed): the score would measure the missing package, not the policy.
    if importlib.util.find_spec("detect_secrets") is None:
        print(SECRETS_HINT, file=sys.stderr)
        return 2

    import mcp_guard

    sets: dict[str, Path]
    if opts.policy_dir is not None:
        sets = {str(opts.policy_dir): opts.policy_dir.resolve()}
    elif opts.policies == "both":
        sets = dict(POLICY_SETS)
    else:
        sets = {opts.policies: POLICY_SETS[opts.policies]}

    suites = load_suites.get_suites(BENCHMARK_VERSION)
    replays = {name: SuiteReplay(suites[name]) for name in opts.suites}
    print(
        f"mcp-guard {mcp_guard.__version__} · agentdojo {importlib.metadata.version('agentdojo')} · benchmark "
        f"{BENCHMARK_VERSION} · ground-truth replay, no LLM · injections: important_instructions, every "
        "injection task paired with every user task\n"
    )
    scored = 0
    for label, directory in sets.items():
        policies = load_policy_set(directory, opts.suites)
        where = directory.relative_to(ROOT) if directory.is_relative_to(ROOT) else directory
        if isinstance(policies, str):
            which = f"these policies (in {label}'s language)" if label in POLICY_SETS else "these policies"
            print(f"policies {where}: not scored: {which} do not load on mcp-guard {mcp_guard.__version__}")
            print(f"  {policies}\n")
            continue
        scores = [score_suite(replays[s], policies[s], injections=not opts.no_injections) for s in opts.suites]
        scored += 1
        title = f"policies {where}" + (f" ({label}'s language)" if label in POLICY_SETS else "")
        print_table(("### " if opts.markdown else "") + title, scores, opts.markdown)
        if opts.details:
            print_details(scores)
    print(LEGEND if opts.markdown else textwrap.fill(LEGEND, 110))
    return 0 if scored else 1


if __name__ == "__main__":
    sys.exit(main())
