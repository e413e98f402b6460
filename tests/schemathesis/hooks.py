"""What schemathesis cannot learn from /openapi.json alone (loaded by tests/schemathesis.rs).

- A glob's grammar is not regular, so the spec names it `format: glob`; valid globs are
  drawn from a small grammar here (every one is accepted by the broker's parser).
- A page cursor is an opaque token only the broker makes: a made-up one, however well
  formed, is refused with 400 (it would skip or repeat items otherwise). Cursors that match
  the spec's pattern are left out of generated queries; malformed ones still go out and must
  be refused. tests/pages.rs follows real cursors through every list.
- An edit's reservation (`auto` in POST /files/reserve) names files, not globs: a pattern
  that holds only a directory's contents (a trailing `/`) is refused then. Generated bodies
  with `auto` have that `/` dropped; tests/reservations.rs and the core tests cover the rule.
- A chat post with `task` is a comment, which goes to its task's thread: `channel` and `to`
  are refused beside it (a rule across fields). Generated posts with `task` have them
  dropped; tests/http_api.rs covers the refusal.
"""

import re

import schemathesis
from hypothesis import strategies as st

SEGMENT = r"(?:[a-z0-9_-]{1,8}|\*|[a-z]{1,4}\*|\?[a-z]{0,3}|\[a-c\][a-z]{0,3})"
GLOB = rf"\A(?:/)?(?:(?:{SEGMENT}|\*\*)/){{0,3}}(?:{SEGMENT}(?:\.[a-z]{{1,3}})?|\*\*)/?\Z"

schemathesis.openapi.format("glob", st.from_regex(GLOB))

CURSOR = re.compile(r"^(?:[0-9A-Fa-f]{2}){5,512}$")  # the non-empty cursors of the spec


@schemathesis.hook
def map_query(context, query):
    if query and isinstance(query.get("cursor"), str) and CURSOR.match(query["cursor"]):
        del query["cursor"]
    return query


@schemathesis.hook
def map_body(context, body):
    if (
        context.operation.path == "/files/reserve"
        and isinstance(body, dict)
        and body.get("auto") is True
        and isinstance(body.get("patterns"), list)
    ):
        body["patterns"] = [p.rstrip("/") or "a" if isinstance(p, str) else p for p in body["patterns"]]
    if context.operation.path == "/chat/messages" and isinstance(body, dict) and body.get("task") is not None:
        body.pop("channel", None)
        body.pop("to", None)
    return body
