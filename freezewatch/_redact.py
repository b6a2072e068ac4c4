"""Untrusted text from the application: one redaction rule, one escape for terminals.

Everything freezewatch records *from the application* (request paths and
URLs, task names, ``watch()`` details, exception text) is passed through a
redaction rule before it is stored, and escaped for control characters
where it leaves for a person (the ``.txt``, log events, the CLI). Frame
locations (file, line, function, source line) are code, not data, and are
escaped but not redacted.

The default rule, :func:`redact` (see ``docs/security.md``), in order:

1. ``scheme://user:password@host`` loses its ``user:password@``.
2. Query strings (``?k=v...``) and the fragments of URLs are dropped.
3. ``key=value`` where the key names a secret (``token``, ``secret``,
   ``password``, ``passwd``, ``pwd``, ``api_key``, ``apikey``, ``auth``,
   ``session``, ``signature``) keeps only ``key=<redacted>``; so does
   ``Bearer``/``Basic`` followed by a credential.
4. A token-like path segment (20 characters or more of URL-safe characters)
   becomes ``<redacted>``; the public part before a ``:`` stays
   (``bot123456:<redacted>``). Token-like: a JWT (``eyJ...``, three dotted
   parts); 32 or more hex digits (not a UUID); or a run of letters and digits
   mixing upper case, lower case and digits (two or more of each), or
   lower-case letters with 4 or more digits and no separator, or a
   ``<digits>:<secret>`` pair (bot APIs).

Replace the rule with ``install(redact=callable)``: it receives each text
and returns what may be recorded. A rule that raises (or returns a
non-string) is replaced by the default for that text: redaction never fails
open and never breaks the application. This module keeps no state.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

REDACTED = "<redacted>"

_URL = re.compile(r"\b([A-Za-z][A-Za-z0-9+.-]{0,15}://)([^\s/?#@'\"<>]*@)?([^\s'\"<>]*)")
_QUERY = re.compile(r"\?(?=[^\s'\"<>]*=)[^\s'\"<>]*")
_FRAGMENT = re.compile(r"#[^\s'\"<>]*")
_SECRET_KV = re.compile(
    r"(?i)((?:token|secret|passw(?:or)?d|pwd|api[_-]?key|auth|session|signature)[\w-]*[=:])"
    r"([^\s&;,'\"<>]+)")
_BEARER = re.compile(r"(?i)\b(bearer|basic)(\s+)([A-Za-z0-9._~+/=-]{8,})")
_RUN = re.compile(r"[A-Za-z0-9._~:+=%-]{20,}")
_JWT = re.compile(r"^eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*$")
_HEX = re.compile(r"^[0-9a-fA-F-]{32,}$")
_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_ALNUM = re.compile(r"^[A-Za-z0-9_+=-]{20,}$")
_PAIR = re.compile(r"^(.*?\d{3,}):([A-Za-z0-9_-]{16,})$")  # bot123456:AAH...


def _token_like(s: str) -> bool:
    if len(s) < 20:
        return False
    if _JWT.match(s):
        return True
    if _HEX.match(s) and not _UUID.match(s):
        return sum(c != "-" for c in s) >= 32
    if not _ALNUM.match(s):
        return False
    digits = sum(c.isdigit() for c in s)
    upper = sum(c.isupper() for c in s)
    lower = sum(c.islower() for c in s)
    if digits >= 2 and upper >= 2 and lower >= 2:
        return True
    return len(s) >= 24 and digits >= 4 and lower + upper >= 4 and s.isalnum()


def _segment(m: re.Match[str]) -> str:
    run = m.group(0)
    pair = _PAIR.match(run)
    if pair:
        return f"{pair.group(1)}:{REDACTED}"
    if _token_like(run):
        return REDACTED
    for sep in ("=", ":"):  # key=<secret>, id:<secret>
        head, found, tail = run.rpartition(sep)
        if found and _token_like(tail):
            return f"{head}{sep}{REDACTED}"
    return run


_SECRET_WORDS = ("token", "secret", "passw", "pwd", "key", "auth", "session", "signature")


def _has_secret_word(text: str) -> bool:
    low = text.lower()
    return any(w in low for w in _SECRET_WORDS)


def _secret_kv(m: re.Match[str]) -> str:
    return m.group(1) + REDACTED


def _url(m: re.Match[str]) -> str:
    rest = _FRAGMENT.sub("", m.group(3).split("?", 1)[0])
    return m.group(1) + rest


def redact(text: str) -> str:
    """The default rule: ``text`` without credentials, query strings and token-like segments."""
    if not text:
        return text
    if "://" in text:
        text = _URL.sub(_url, text)
    if "?" in text:
        text = _QUERY.sub("", text)
    if len(text) >= 14:
        text = _BEARER.sub(lambda m: f"{m.group(1)}{m.group(2)}{REDACTED}", text)
    if ("=" in text or ":" in text) and _has_secret_word(text):
        text = _SECRET_KV.sub(_secret_kv, text)
    if len(text) >= 20:
        text = _RUN.sub(_segment, text)
    return text


Rule = Callable[[str], str]


def apply(rule: Rule | None, text: str) -> str:
    """``rule(text)``, falling back to the default rule if ``rule`` fails; never raises."""
    if rule is None or rule is redact:
        return redact(text)
    try:
        out = rule(text)
    except Exception:  # boundary: the user's rule
        return redact(text)
    return out if isinstance(out, str) else redact(text)


# -- control characters -------------------------------------------------------
_CONTROL = re.compile(
    "[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\x1b": "\\x1b"}


def _escape_one(m: re.Match[str]) -> str:
    c = m.group(0)
    named = _NAMED.get(c)
    if named is not None:
        return named
    return f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}"


def escape(text: str) -> str:
    """``text`` with every control character (C0, DEL, C1, line separators and
    bidirectional overrides) written as a visible escape (``\\x1b``, ``\\n``,
    ``\\u202e``), so it cannot move a terminal's cursor, retitle it, ring its
    bell, forge a line or reorder what a reader sees."""
    if text.isprintable():
        return text
    return _CONTROL.sub(_escape_one, text)


def escape_lines(text: str) -> str:
    """Escape each line of a multi-line text, keeping its line breaks."""
    return "\n".join(escape(line) for line in text.split("\n"))


# -- a dump document ------------------------------------------------------------
_UNIT_KEYS = ("name", "detail", "task")


def _unit(u: object, rule: Rule | None) -> object:
    if not isinstance(u, dict):
        return u
    out = dict(u)
    for k in _UNIT_KEYS:
        if isinstance(out.get(k), str):
            out[k] = apply(rule, out[k])
    return out


def _party(p: object, rule: Rule | None) -> object:
    if isinstance(p, dict) and isinstance(p.get("task"), str):
        return {**p, "task": apply(rule, p["task"])}
    return p


def redact_doc(doc: dict[str, Any], rule: Rule | None = None) -> dict[str, Any]:
    """A copy of a dump document with every text taken from the application passed
    through ``rule`` (default: :func:`redact`): units in flight, the request, the
    stalled unit, task and thread names, what tasks await, capture errors, py-spy's
    error. Frames (code locations), the request id and allow-listed context
    variables are kept as they are."""
    out = dict(doc)
    if isinstance(out.get("inflight"), list):
        out["inflight"] = [_unit(u, rule) for u in out["inflight"]]
    for key in ("request", "stalled"):
        if key in out:
            out[key] = _unit(out[key], rule)
    if isinstance(out.get("current_task"), str):
        out["current_task"] = apply(rule, out["current_task"])
    groups = out.get("tasks")
    if isinstance(groups, list):
        new = []
        for g in groups:
            if isinstance(g, dict):
                g = dict(g)
                for k in ("name", "awaiting"):
                    if isinstance(g.get(k), str):
                        g[k] = apply(rule, g[k])
                if isinstance(g.get("names"), list):
                    g["names"] = [apply(rule, n) if isinstance(n, str) else n
                                  for n in g["names"]]
            new.append(g)
        out["tasks"] = new
    threads = out.get("threads")
    if isinstance(threads, list):
        out["threads"] = [{**t, "name": apply(rule, t["name"])}
                          if isinstance(t, dict) and isinstance(t.get("name"), str) else t
                          for t in threads]
    errors = out.get("capture_errors")
    if isinstance(errors, list):
        out["capture_errors"] = [apply(rule, e) if isinstance(e, str) else e for e in errors]
    native = out.get("native")
    if isinstance(native, dict) and isinstance(native.get("error"), str):
        out["native"] = {**native, "error": apply(rule, native["error"])}
    links = out.get("waits_for")
    if isinstance(links, list):
        out["waits_for"] = [
            {**link, "waiter": _party(link.get("waiter"), rule),
             "holders": [_party(h, rule) for h in link.get("holders") or []]}
            if isinstance(link, dict) else link for link in links]
    return out
