"""Who may do what through the gateway: pure rules, no I/O, checked on every call.

A rule names who (`user:NAME`, `group:NAME` or `*`), an env (a name or `*`), bindings (`*` or
names) and actions (`*` or names). The decision for (user, env, binding, action):

1. An action that does not apply to the binding's type is refused (`send` on a kv binding).
2. Default deny: nothing is allowed that no grant allows.
3. A deny beats an allow: one matching deny refuses, whatever the grants say.
4. A protected env opens only to a grant that names it: for a write (`write`, `send`,
   `consume`), a grant with `env: "*"` does not count. `consume` is a write because a consumer's
   ack removes messages from the queue, as the daemon already treats it in a protected env
   (bindingd/server/queue.py); reading changes nothing and may come from `env: "*"`.
5. A secret is served only where granted by name: a `bindings: "*"` grant does not cover a
   secret binding (a var, plain configuration, it does cover).

Every reason names the user, the env, the binding and the action, and the rule that decided
(`policy.grants[2]`), so a developer knows what to ask for and an admin where to look.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

ANY = "*"
# The actions of each binding type, in the order they are listed to people.
ACTIONS_BY_TYPE: dict[str, tuple[str, ...]] = {
    "kv": ("read", "write"),
    "objects": ("read", "write"),
    "sql": ("read", "write"),
    "queue": ("send", "consume"),
    "var": ("read",),
    "secret": ("read",),
}
ACTIONS: tuple[str, ...] = tuple(dict.fromkeys(a for actions in ACTIONS_BY_TYPE.values() for a in actions))
# What a protected env gives only to a grant that names it (see the module docstring, 4).
WRITE_ACTIONS = frozenset({"write", "send", "consume"})
# Types a `bindings: "*"` grant does not reach (see 5).
NAMED_ONLY_TYPES = frozenset({"secret"})
WHO_KINDS = ("user", "group")


@dataclass(frozen=True)
class Rule:
    """One grant or deny. `bindings` and `actions` are ANY or a frozenset of names."""

    who: str  # "user:alice", "group:developers" or "*"
    env: str  # an env name or "*"
    bindings: str | frozenset[str]
    actions: str | frozenset[str]
    where: str  # "policy.grants[0]": how reasons name the rule

    def covers(self, user: str, groups: frozenset[str], env: str, binding: str, action: str) -> bool:
        return (
            self.names(user, groups)
            and self.env in (ANY, env)
            and (self.bindings == ANY or binding in self.bindings)
            and (self.actions == ANY or action in self.actions)
        )

    def names(self, user: str, groups: frozenset[str]) -> bool:
        if self.who == ANY:
            return True
        kind, _, name = self.who.partition(":")
        return (kind == "user" and name == user) or (kind == "group" and name in groups)


# At most this many decisions remembered per Policy (cleared when full).
DECIDED_MAX = 4096


@dataclass(frozen=True)
class Decision:
    allow: bool
    reason: str


@dataclass(frozen=True)
class Policy:
    """The policy of one gateway.yaml. `groups` are the file's own (`policy.groups`); a user's
    groups are those and the ones recorded at enrolment (`--group`), together."""

    grants: tuple[Rule, ...] = ()
    denies: tuple[Rule, ...] = ()
    groups: Mapping[str, frozenset[str]] | None = None  # group name -> users
    protected_envs: frozenset[str] = frozenset()
    # Decisions already made: the gateway decides on every call, mostly the same question. A
    # Policy is never changed (a reload makes a new one), so its answers stay true.
    _decided: dict[tuple[str, tuple[str, ...], str, str, str, str], Decision] = field(
        default_factory=dict, init=False, repr=False, compare=False, hash=False
    )

    def groups_of(self, user: str, groups: Iterable[str] = ()) -> frozenset[str]:
        own = {name for name, users in (self.groups or {}).items() if user in users}
        return frozenset(groups) | own

    def decide(
        self, user: str, groups: Iterable[str], env: str, binding: str, binding_type: str, action: str
    ) -> Decision:
        key = (user, tuple(groups), env, binding, binding_type, action)
        decision = self._decided.get(key)
        if decision is None:
            if len(self._decided) >= DECIDED_MAX:
                self._decided.clear()
            decision = self._decided[key] = self.evaluate(*key)
        return decision

    def evaluate(
        self, user: str, groups: Iterable[str], env: str, binding: str, binding_type: str, action: str
    ) -> Decision:
        """The decision worked out from the rules, every time (`decide` remembers it)."""
        what = f'{action} on {binding_type} binding "{binding}" in env "{env}"'
        actions = ACTIONS_BY_TYPE.get(binding_type, ())
        if action not in actions:
            allowed = ", ".join(actions) or "none"
            return Decision(
                False,
                f'user "{user}" cannot {what}: "{action}" is not an action of {binding_type} '
                f"bindings ({allowed})",
            )
        member = self.groups_of(user, groups)
        for rule in self.denies:
            if rule.covers(user, member, env, binding, action):
                return Decision(False, f'user "{user}" is denied {what} by {rule.where} ({rule.who})')
        matching = [rule for rule in self.grants if rule.covers(user, member, env, binding, action)]
        if binding_type in NAMED_ONLY_TYPES:
            if matching and not [rule for rule in matching if rule.bindings != ANY]:
                return Decision(
                    False,
                    f'user "{user}" may not {what}: a secret is served only by a grant that names '
                    f'it ({matching[0].where} covers bindings "*", which does not reach secrets)',
                )
            matching = [rule for rule in matching if rule.bindings != ANY]
        if env in self.protected_envs and action in WRITE_ACTIONS:
            named = [rule for rule in matching if rule.env == env]
            if matching and not named:
                return Decision(
                    False,
                    f'user "{user}" may not {what}: env "{env}" is protected and a write there needs '
                    f'a grant that names env "{env}" ({matching[0].where} is for env "*")',
                )
            matching = named
        if not matching:
            return Decision(False, f'user "{user}" has no grant for {what}; ask a gateway admin for one')
        rule = matching[0]
        return Decision(True, f'user "{user}" may {what} by {rule.where} ({rule.who})')

    def granted(
        self, user: str, groups: Iterable[str], env: str, bindings: Mapping[str, str]
    ) -> dict[str, list[str]]:
        """What `user` may do in `env`: {binding: sorted actions} for each binding (name ->
        type) with at least one action allowed; what discovery serves and a token carries."""
        member = tuple(groups)
        out: dict[str, list[str]] = {}
        for name, binding_type in bindings.items():
            allowed = sorted(
                action
                for action in ACTIONS_BY_TYPE.get(binding_type, ())
                if self.decide(user, member, env, name, binding_type, action).allow
            )
            if allowed:
                out[name] = allowed
        return out
