"""ACL tokens and the authorizer, reduced to what the agent endpoints enforce (reference §4).

ACLs are off unless `--acl-default-policy allow|deny` is given; then every request's token is
resolved (query `?token=`, then `X-Consul-Token`, then `Authorization: Bearer`, else anonymous)
and an unknown secret is `403 ACL not found`.

Token rules syntax (the simulator's own, much smaller than HCL policies):
`--acl-token SECRET=ACCESSOR:RULES` where RULES is a comma-separated list of
`RESOURCE:ACCESS:PATTERN`, RESOURCE one of `service`, `node`, `agent`, `session` (pattern = node
name, like Consul's `session "node"` rules) or `key` (pattern = key), ACCESS one of `read`,
`write`, `deny`, and PATTERN an exact name or a prefix ending in `*` (`*` alone = every name).
Examples: `service:write:*`, `service:write:web,service:read:*`, `node:read:*,agent:read:*`.
Like Consul, an exact rule beats a prefix rule, the longest prefix wins, `write` implies `read`,
and a name no rule matches gets the default policy. The anonymous token
(`00000000-0000-0000-0000-000000000002`) has no rules.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from devcluster.consul_sim.validation import ApiError

ANONYMOUS_ACCESSOR = "00000000-0000-0000-0000-000000000002"
_RESOURCES = ("service", "node", "agent", "session", "key")
_ACCESS = ("read", "write", "deny")


@dataclass(frozen=True)
class Rule:
    resource: str
    access: str
    pattern: str

    def match_len(self, name: str) -> int | None:
        """How specific the match is (exact beats every prefix), or None if no match."""
        if self.pattern.endswith("*"):
            prefix = self.pattern[:-1]
            return len(prefix) if name.startswith(prefix) else None
        return 1_000_000 if name == self.pattern else None


@dataclass(frozen=True)
class Token:
    secret: str
    accessor: str
    rules: tuple[Rule, ...] = field(default=())


def parse_rules(text: str) -> tuple[Rule, ...]:
    rules = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        bits = part.split(":", 2)
        if len(bits) != 3 or bits[0] not in _RESOURCES or bits[1] not in _ACCESS or not bits[2]:
            raise ValueError(f"bad ACL rule {part!r}: want RESOURCE:ACCESS:PATTERN")
        rules.append(Rule(*bits))
    return tuple(rules)


def parse_token_arg(arg: str) -> Token:
    """`SECRET=ACCESSOR:RULES` (CLI form)."""
    secret, sep, rest = arg.partition("=")
    accessor, _, rules = rest.partition(":")
    if not sep or not secret or not accessor:
        raise ValueError(f"bad --acl-token {arg!r}: want SECRET=ACCESSOR:RULES")
    return Token(secret, accessor, parse_rules(rules))


class Authorizer:
    """What one resolved token may do."""

    def __init__(self, token: Token | None, default_policy: str, enabled: bool) -> None:
        self.token = token
        self.default_policy = default_policy
        self.enabled = enabled

    @property
    def accessor(self) -> str:
        return self.token.accessor if self.token else ANONYMOUS_ACCESSOR

    def allowed(self, resource: str, name: str, need: str) -> bool:
        if not self.enabled:
            return True
        best: tuple[int, Rule] | None = None
        for rule in self.token.rules if self.token else ():
            if rule.resource != resource:
                continue
            n = rule.match_len(name)
            if n is not None and (best is None or n > best[0]):
                best = (n, rule)
        if best is None:
            return self.default_policy == "allow"
        access = best[1].access
        return access == "write" or (access == "read" and need == "read")

    def allowed_prefix(self, resource: str, prefix: str, need: str) -> bool:
        """`KeyWritePrefix` (acl/policy_authorizer.go): the prefix itself is allowed and no more
        specific rule under it takes the access away (used by `DELETE /v1/kv/<p>?recurse`)."""
        if not self.enabled:
            return True
        if not self.allowed(resource, prefix, need):
            return False
        for rule in self.token.rules if self.token else ():
            if rule.resource == resource and rule.pattern.rstrip("*").startswith(prefix):
                if not (rule.access == "write" or (rule.access == "read" and need == "read")):
                    return False
        return True

    def denied_text(self, resource: str, name: str, need: str) -> str:
        """`PermissionDeniedError.Error` (acl/errors.go)."""
        return (f"Permission denied: token with AccessorID '{self.accessor}' lacks "
                f"permission '{resource}:{need}' on \"{name}\"")

    def require(self, resource: str, name: str, need: str) -> None:
        if not self.allowed(resource, name, need):
            raise ApiError(403, f"Permission denied: token with AccessorID '{self.accessor}' lacks "
                                f"permission '{resource}:{need}' on \"{name}\"")


class AclStore:
    """Token lookup; `resolve` raises the 403 `ACL not found` of an unknown secret."""

    def __init__(self, default_policy: str | None, tokens: list[Token]) -> None:
        self.enabled = default_policy is not None
        self.default_policy = default_policy or "allow"
        self.tokens = {t.secret: t for t in tokens}

    def resolve(self, secret: str) -> Authorizer:
        if not self.enabled:
            return Authorizer(None, "allow", enabled=False)
        if not secret or secret == "anonymous":
            return Authorizer(None, self.default_policy, enabled=True)
        token = self.tokens.get(secret)
        if token is None:
            raise ApiError(403, "ACL not found")
        return Authorizer(token, self.default_policy, enabled=True)


def token_from_request(query: Mapping[str, str], headers: Mapping[str, str]) -> str:
    """HTTP `parseTokenInternal`: ?token=, then X-Consul-Token, then Authorization: Bearer."""
    tok = query.get("token", "")
    if tok:
        return tok
    tok = headers.get("X-Consul-Token", "")
    if tok:
        return tok
    auth = headers.get("Authorization", "")
    scheme, _, rest = auth.strip().partition(" ")
    if scheme.lower() == "bearer" and rest.strip():
        return rest.strip().split()[0]
    return ""
