"""The gateway's policy, table-driven: env x binding x action x (allowed, denied, deny beats
allow, protected, wildcard), each asserting the decision and its reason."""

from __future__ import annotations

import pytest

from bindingd.config.model import BINDING_TYPES
from bindingd.gateway.policy import ACTIONS, ACTIONS_BY_TYPE, ANY, Policy, Rule

BINDINGS = {
    "CACHE": "kv",
    "FILES": "objects",
    "APP_DB": "sql",
    "JOBS": "queue",
    "SITE": "var",
    "API_KEY": "secret",
}


def rule(where: str, who: str, env: str, bindings: str | list[str], actions: str | list[str]) -> Rule:
    return Rule(
        who,
        env,
        bindings if bindings == ANY else frozenset(bindings),
        actions if actions == ANY else frozenset(actions),
        where,
    )


POLICY = Policy(
    grants=(
        rule("policy.grants[0]", "group:developers", "staging", "*", ["read", "write", "send", "consume"]),
        rule("policy.grants[1]", "group:developers", "production", ["APP_DB", "FILES"], ["read"]),
        rule("policy.grants[2]", "user:carol", "*", "*", "*"),
        rule("policy.grants[3]", "group:ops", "production", ["JOBS"], ["send"]),
        rule("policy.grants[4]", "user:alice", "staging", ["API_KEY"], ["read"]),
    ),
    denies=(
        rule("policy.denies[0]", "user:bob", "production", "*", "*"),
        rule("policy.denies[1]", "*", "staging", ["APP_DB"], ["write"]),
    ),
    groups={"developers": frozenset({"alice", "bob"}), "ops": frozenset({"carol"})},
    protected_envs=frozenset({"production"}),
)

ALLOWED = "by policy.grants"
NO_GRANT = "has no grant for"
DENIED = "is denied"
PROTECTED = 'env "production" is protected'
SECRET = "a secret is served only by a grant that names it"
NOT_AN_ACTION = "is not an action of"

# user, enrolment groups, env, binding, action, allowed, what the reason says
CASES = [
    # allowed, by a group grant and by a user grant
    ("alice", (), "staging", "CACHE", "read", True, "by policy.grants[0] (group:developers)"),
    ("alice", (), "staging", "CACHE", "write", True, "by policy.grants[0]"),
    ("alice", (), "staging", "FILES", "write", True, "by policy.grants[0]"),
    ("alice", (), "staging", "JOBS", "send", True, "by policy.grants[0]"),
    ("alice", (), "staging", "JOBS", "consume", True, "by policy.grants[0]"),
    ("alice", (), "staging", "APP_DB", "read", True, "by policy.grants[0]"),
    ("alice", (), "staging", "SITE", "read", True, "by policy.grants[0]"),  # a var: "*" reaches it
    ("alice", (), "staging", "API_KEY", "read", True, "by policy.grants[4] (user:alice)"),
    ("alice", (), "production", "APP_DB", "read", True, "by policy.grants[1]"),
    ("alice", (), "production", "FILES", "read", True, "by policy.grants[1]"),
    # denied by default: nobody granted it
    ("dave", (), "staging", "CACHE", "read", False, NO_GRANT),
    ("alice", (), "production", "CACHE", "read", False, NO_GRANT),
    ("alice", (), "production", "APP_DB", "write", False, NO_GRANT),
    ("alice", (), "review", "CACHE", "read", False, NO_GRANT),
    # an action the type does not have
    ("alice", (), "staging", "CACHE", "send", False, NOT_AN_ACTION),
    ("alice", (), "staging", "JOBS", "read", False, NOT_AN_ACTION),
    ("alice", (), "staging", "SITE", "write", False, NOT_AN_ACTION),
    # a deny beats an allow
    (
        "alice",
        (),
        "staging",
        "APP_DB",
        "write",
        False,
        'denied write on sql binding "APP_DB" in env "staging" by policy.denies[1] (*)',
    ),
    ("carol", (), "staging", "APP_DB", "write", False, "by policy.denies[1]"),
    ("bob", (), "production", "APP_DB", "read", False, "by policy.denies[0] (user:bob)"),
    ("bob", (), "staging", "CACHE", "read", True, "by policy.grants[0]"),  # the deny is production's
    # a protected env: "*" grants read there, never write, send or consume
    ("carol", (), "production", "CACHE", "read", True, "by policy.grants[2] (user:carol)"),
    ("carol", (), "production", "CACHE", "write", False, PROTECTED),
    ("carol", (), "production", "FILES", "write", False, PROTECTED),
    ("carol", (), "production", "JOBS", "consume", False, PROTECTED),
    ("carol", (), "production", "JOBS", "send", True, "by policy.grants[3] (group:ops)"),
    ("carol", (), "staging", "CACHE", "write", True, "by policy.grants[2]"),  # not protected
    # groups recorded at enrolment count like the file's own
    ("erin", ("ops",), "production", "JOBS", "send", True, "by policy.grants[3]"),
    ("erin", ("ops",), "production", "JOBS", "consume", False, NO_GRANT),
    ("erin", ("developers",), "staging", "CACHE", "write", True, "by policy.grants[0]"),
    # secrets: only a grant that names them
    ("bob", (), "staging", "API_KEY", "read", False, SECRET),
    ("carol", (), "production", "API_KEY", "read", False, SECRET),
    ("dave", (), "staging", "API_KEY", "read", False, NO_GRANT),
]


@pytest.mark.parametrize(("user", "groups", "env", "binding", "action", "allow", "says"), CASES)
def test_the_policy_matrix(
    user: str, groups: tuple[str, ...], env: str, binding: str, action: str, allow: bool, says: str
) -> None:
    decision = POLICY.decide(user, groups, env, binding, BINDINGS[binding], action)
    assert decision.allow is allow, decision.reason
    assert says in decision.reason
    for named in (f'user "{user}"', f'env "{env}"', f'binding "{binding}"', action):
        assert named in decision.reason


def test_every_reason_names_user_env_binding_and_action() -> None:
    """Over the whole matrix, not only the rows above, and no decision without a reason."""
    for user in ("alice", "bob", "carol", "dave"):
        for env in ("staging", "production", "review"):
            for binding, binding_type in BINDINGS.items():
                for action in ACTIONS:
                    reason = POLICY.decide(user, (), env, binding, binding_type, action).reason
                    for named in (f'user "{user}"', f'env "{env}"', f'binding "{binding}"', action):
                        assert named in reason, reason


def test_an_empty_policy_denies_everything() -> None:
    for binding, binding_type in BINDINGS.items():
        for action in ACTIONS_BY_TYPE[binding_type]:
            assert not Policy().decide("alice", ("admins",), "dev", binding, binding_type, action).allow


def test_granted_lists_each_binding_with_its_sorted_actions() -> None:
    assert POLICY.granted("alice", (), "staging", BINDINGS) == {
        "CACHE": ["read", "write"],
        "FILES": ["read", "write"],
        "APP_DB": ["read"],  # the deny of writes
        "JOBS": ["consume", "send"],
        "SITE": ["read"],
        "API_KEY": ["read"],
    }
    assert POLICY.granted("alice", (), "production", BINDINGS) == {"FILES": ["read"], "APP_DB": ["read"]}
    assert POLICY.granted("carol", (), "production", BINDINGS) == {
        "CACHE": ["read"],
        "FILES": ["read"],
        "APP_DB": ["read"],
        "JOBS": ["send"],
        "SITE": ["read"],
    }
    assert POLICY.granted("bob", (), "production", BINDINGS) == {}
    assert POLICY.granted("dave", (), "staging", BINDINGS) == {}


def test_the_actions_of_each_type() -> None:
    assert ACTIONS_BY_TYPE == {
        "kv": ("read", "write"),
        "objects": ("read", "write"),
        "sql": ("read", "write"),
        "queue": ("send", "consume"),
        "var": ("read",),
        "secret": ("read",),
    }
    assert ACTIONS == ("read", "write", "send", "consume")
    assert set(ACTIONS_BY_TYPE) == set(BINDING_TYPES)  # a new binding type must say its actions
