"""Marathon app id + labels + env -> Consul service name and tags (README "Naming"). Pure.

Why the `dns` strategy looks the way it does: Consul's DNS parser takes the label right before
`service` as the service name and joins *every* label before it with dots into ONE tag
(true of every Consul release but 1.19.0 and 1.19.1, see the README). So for `/web/customer1/site1`
we register name `web` with the tags `customer1` and `site1.customer1`, and then

    site1.customer1.web.service.dc1.consul   -> tag "site1.customer1" -> this app
    customer1.web.service.dc1.consul         -> tag "customer1"       -> every app under /web/customer1
    web.service.dc1.consul                   -> no tag                -> every app under /web

Dots inside app id segments (`/web/v1.2/a`, legal in Marathon): a dotted segment below the first
is kept verbatim in the tags (`v1.2`, `a.v1.2`), because Consul re-joins the labels of
`a.v1.2.web.service.consul` into exactly the tag `a.v1.2`, so the natural name resolves. The price
is an ambiguity Consul's parser makes unavoidable: `/web/a.b` and `/web/b/a` both answer to
`a.b.web.service.consul`. A dot in the *first* segment cannot be kept: the service name must be
one DNS label, so `/web.v1/a` is registered as `web-v1` (and the rewrite reported).

Strategy `flat` joins the reversed path with `-` into the name (`site1-customer1-web`), no tags.

Overrides, strongest first:
1. app labels: `consul.register=false` (opt out; an explicit `true` also overrides the env
   ignores below), `consul.name` (base name), `consul.tags` (comma list, added to the path tags);
2. registrator's env conventions: `SERVICE_<containerPort>_NAME` (this port's exact name, no
   suffix), `SERVICE_NAME` (base name), `SERVICE_<containerPort>_TAGS` (replaces `SERVICE_TAGS`
   for that port, as in registrator), `SERVICE_TAGS`, `SERVICE_IGNORE`, `SERVICE_<port>_IGNORE`.
   An ignore value counts when it is non-empty and not false/0/no/off.

Several port mappings: port 0 keeps the base name, port i > 0 gets `<base>-<mapping name, else
container port, else "port<i>">`, unless `SERVICE_<containerPort>_NAME` names it.

Who may claim which name (`--allow-name-override`, `NameOverride`): on a shared cluster an override
is a claim on a name other teams' apps may own, so by default (`group`) an override is honoured
only inside the app's own top-level group: for `/web/...` the name `web` itself, any `web-*` name,
or the app's own derived name (what `flat` gives it). `/web/shop` may say `consul.name=web-frontend`
but not `payments`. The test is on the final, DNS-cleaned name (what would be registered), so
`Web_Frontend` passes as `web-frontend` and `payments` cannot sneak in as `Payments`. Names are
hyphen-joined, so a top-level group called `web-frontend` lies inside `/web`'s reach: give groups
names that are not another group's name plus `-`. `any` honours every override (registrator's
behaviour), `none` ignores them all. A refused override is reported in `Identity.refused` and the
port registers under its derived name (multi-port suffix included); the caller logs and counts it.

Names are forced into valid DNS labels (lower case, `[a-z0-9-]`, no leading/trailing `-`,
at most 63 characters). A name longer than 63 is cut to 54 characters plus `-` and 8 hex digits
of its hash, so two long names that share a prefix cannot collapse into one service. Each rewrite
is returned in `Identity.rewrites` as a human message; the caller logs it once.
"""

from __future__ import annotations

import functools
import hashlib
import re
from dataclasses import dataclass

from service.model import App, NameOverride, Naming

MAX_LABEL = 63
_INVALID = re.compile(r"[^a-z0-9-]+")
_DNS_LABEL = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
_FALSE_WORDS = frozenset({"false", "0", "no", "off"})
_UNESCAPED_COMMA = re.compile(r"(?<!\\),")


@dataclass(frozen=True, slots=True)
class Identity:
    """What one port of an app is called in Consul."""

    name: str
    tags: tuple[str, ...]
    rewrites: tuple[str, ...] = ()
    refused: tuple[str, ...] = ()  # overrides --allow-name-override did not allow, as messages


@functools.lru_cache(maxsize=8192)  # every task of an app asks the same question; App hashes by id+version
def service_identity(app: App, port_index: int, naming: Naming,
                     override: NameOverride = NameOverride.ANY) -> Identity | None:
    """The Consul name and tags of port `port_index` of `app`, or None if it opts out.

    An app without port mappings still has a name for index 0 (what `names APP_ID` prints); the
    per-port env keys then do not apply. `override` is the operator's `--allow-name-override`
    (the pure default `any` keeps this function registrator-compatible; the option defaults to `group`).
    """
    if port_index == 0 and not app.port_mappings:
        port_key = "SERVICE__NO_PORT_"  # matches no registrator key
    elif 0 <= port_index < len(app.port_mappings):
        port_key = f"SERVICE_{app.port_mappings[port_index].container_port}_"
    else:
        raise ValueError(f"app {app.id!r} has no port index {port_index}")
    if _opted_out(app, port_key):
        return None
    segments = app_segments(app.id)
    rewrites: list[str] = []
    refused: list[str] = []
    raw, source = _raw_name(app, port_index, port_key, segments, naming)
    if source is None:
        name = _dns_name(raw, rewrites)
    else:
        claimed_rewrites: list[str] = []
        claimed = _dns_name(raw, claimed_rewrites)
        derived = dns_label(_suffixed(app, port_index, _default_name(segments, naming)))[0]
        if override is NameOverride.ANY or (
            override is NameOverride.GROUP and (not claimed or within_group(claimed, segments, derived))
        ):
            name = claimed
            rewrites += claimed_rewrites
        else:
            why = ("--allow-name-override none" if override is NameOverride.NONE else
                   f"outside its group /{segments[0] if segments else ''} (--allow-name-override group)")
            refused.append(f"service name {raw!r} from {source} refused: {why}; registered as {derived!r}")
            name = _dns_name(_suffixed(app, port_index, _default_name(segments, naming)), rewrites)
    if not name:  # an override that was nothing but invalid characters: fall back to the app id
        name = _dns_name(_suffixed(app, port_index, _default_name(segments, naming)), rewrites) or "app"
    tags = [*_path_tags(segments, naming), *_env_tags(app, port_key), *split_tags(app.labels.get("consul.tags"))]
    return Identity(name=name, tags=tuple(dict.fromkeys(tags)), rewrites=tuple(rewrites), refused=tuple(refused))


def within_group(name: str, segments: list[str], derived: str) -> bool:
    """May an app with id `segments` claim the (DNS-clean) `name`? Yes for its group's own label,
    `<group>-*`, and the name it would get anyway (`derived`, e.g. flat's `site1-customer1-web`)."""
    if name == derived:
        return True
    if not segments:
        return False
    group = dns_label(segments[0])[0]
    return bool(group) and (name == group or name.startswith(group + "-"))


def app_segments(app_id: str) -> list[str]:
    """`/web/customer1/site1` -> `["web", "customer1", "site1"]` (empty segments dropped)."""
    return [segment for segment in app_id.split("/") if segment]


def _opted_out(app: App, port_key: str) -> bool:
    register = app.labels.get("consul.register")
    if register is not None and register.strip() != "":
        return not _truthy(register)  # the label is stronger than any env convention
    return _truthy(app.env.get("SERVICE_IGNORE")) or _truthy(app.env.get(port_key + "IGNORE"))


def _truthy(value: str | None) -> bool:
    return value is not None and value.strip() != "" and value.strip().lower() not in _FALSE_WORDS


def _raw_name(app: App, port_index: int, port_key: str, segments: list[str],
              naming: Naming) -> tuple[str, str | None]:
    """The name before DNS-label cleaning, following the override order, and which override gave
    it (None: derived from the app id)."""
    label_name = (app.labels.get("consul.name") or "").strip()
    if label_name:
        return _suffixed(app, port_index, label_name), "label consul.name"
    port_name = (app.env.get(port_key + "NAME") or "").strip()
    if port_name:
        return port_name, f"env {port_key}NAME"  # names this port exactly: no multi-port suffix
    env_name = (app.env.get("SERVICE_NAME") or "").strip()
    if env_name:
        return _suffixed(app, port_index, env_name), "env SERVICE_NAME"
    return _suffixed(app, port_index, _default_name(segments, naming)), None


def _default_name(segments: list[str], naming: Naming) -> str:
    if not segments:
        return ""
    if naming is Naming.FLAT:
        return "-".join(reversed(segments))
    return segments[0]


def _suffixed(app: App, port_index: int, base: str) -> str:
    """Port 0 keeps the base name; the others get a suffix that tells them apart."""
    if port_index == 0:
        return base
    mapping = app.port_mappings[port_index]
    suffix = mapping.name or (str(mapping.container_port) if mapping.container_port else f"port{port_index}")
    return f"{base}-{suffix}"


def _path_tags(segments: list[str], naming: Naming) -> list[str]:
    """dns: `[web, customer1, site1]` -> `[customer1, site1.customer1]` (each deeper prefix,
    reversed and dot-joined, so the DNS name reads like a host name)."""
    if naming is not Naming.DNS:
        return []
    deeper = segments[1:]
    return [".".join(reversed(deeper[: depth + 1])) for depth in range(len(deeper))]


def _env_tags(app: App, port_key: str) -> list[str]:
    per_port = app.env.get(port_key + "TAGS")
    return split_tags(per_port if per_port is not None else app.env.get("SERVICE_TAGS"))


def split_tags(value: str | None) -> list[str]:
    """`"a, b,,c\\,d"` -> `["a", "b", "c,d"]`: comma list, `\\,` escapes a comma (registrator)."""
    if not value:
        return []
    parts = (part.replace("\\,", ",").strip() for part in _UNESCAPED_COMMA.split(value))
    return [part for part in parts if part]


def _dns_name(raw: str, rewrites: list[str]) -> str:
    """`raw` as a valid DNS label; a rewrite appends a message to `rewrites`."""
    label, why = dns_label(raw)
    if why and label:
        rewrites.append(f"service name {raw!r} is not a valid DNS label ({why}); registered as {label!r}")
    elif why:
        rewrites.append(f"service name {raw!r} has no valid DNS label characters; using the app id instead")
    return label


def dns_label(raw: str) -> tuple[str, str]:
    """`raw` made into a DNS label, and why it had to change ("" if it did not)."""
    reasons = []
    label = raw.lower()
    if label != raw:
        reasons.append("upper case")
    cleaned = _INVALID.sub("-", label).strip("-")
    if cleaned != label:
        reasons.append("characters other than a-z, 0-9 and '-' inside or '-' at an end")
    if len(cleaned) > MAX_LABEL:
        digest = hashlib.sha256(cleaned.encode()).hexdigest()[:8]
        cleaned = f"{cleaned[: MAX_LABEL - 9].rstrip('-')}-{digest}"
        reasons.append(f"longer than {MAX_LABEL} characters")
    return cleaned, ", ".join(reasons)


def dns_names(identity: Identity, datacenter: str = "dc1") -> list[str]:
    """The Consul DNS names that resolve this service: the bare name, then one per tag.

    Tags that cannot be written as DNS labels (spaces, `_`, empty labels, > 63 characters) are
    left out: they work for catalog queries but no DNS name reaches them.
    """
    suffix = f"{identity.name}.service.{datacenter}.consul"
    names = [suffix]
    for tag in identity.tags:
        if all(_DNS_LABEL.match(part) for part in tag.split(".")) and len(tag) + len(suffix) < 253:
            names.append(f"{tag}.{suffix}")
    return names
