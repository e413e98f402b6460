"""Drives `muster mcp` with the official MCP Python SDK (PyPI `mcp`), as an editor would:
two agents, each its own `muster mcp` process over stdio, against one real broker.

    python drive.py MUSTER_BINARY BROKER_URL

Run by tests/mcp_sdk.rs. Exits non-zero, saying what differed, on the first failure. The
SDK checks every structured result against the tool's published output schema by itself.
"""

import asyncio
import sys

from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

MUSTER, URL = sys.argv[1], sys.argv[2]


def session(agent):
    params = StdioServerParameters(command=MUSTER, args=["mcp", "--as", agent, "--url", URL])
    return stdio_client(params)


def text(result):
    return " ".join(c.text for c in result.content if c.type == "text")


def check(condition, what):
    if not condition:
        sys.exit(f"FAILED: {what}")
    print(f"ok: {what}")


async def main():
    async with session("ann") as (r1, w1), ClientSession(r1, w1) as ann:
        await ann.initialize()
        async with session("bo") as (r2, w2), ClientSession(r2, w2) as bo:
            await bo.initialize()

            tools = {t.name: t for t in (await ann.list_tools()).tools}
            check({"claim_task", "wait_for", "reserve_files", "read_chat"} <= tools.keys(), "the tools are listed")
            wait_in = tools["wait_for"].input_schema
            check(wait_in["properties"]["timeout_seconds"].get("type") == "integer", "timeout_seconds is a plain integer")
            check(wait_in.get("additionalProperties") is False, "unknown arguments are not allowed by the schema")
            priority = tools["create_task"].input_schema["properties"]["priority"]
            check(priority.get("enum") == ["P0", "P1", "P2", "P3"], "priority is an enum")
            check(tools["list_tasks"].annotations.read_only_hint is True, "list_tasks is read-only")
            check(tools["release_task"].annotations.destructive_hint is True, "release_task is destructive")
            check(tools["show_task"].output_schema["type"] == "object", "show_task has an output schema")

            created = await ann.call_tool("create_task", {"title": "race me", "priority": "P1"})
            check(not created.is_error and created.structured_content["id"] == "T-1", "create_task answers the task")
            claimed = await ann.call_tool("claim_task", {"task": "T-1"})
            check(not claimed.is_error and claimed.structured_content["claim"]["agent"] == "ann", "ann claims T-1")
            conflict = await bo.call_tool("claim_task", {"task": "T-1"})
            check(conflict.is_error and "ann" in text(conflict), "bo's claim is a tool error naming the owner")

            misspelled = await bo.call_tool("wait_for", {"mention": True, "timeout": "2s"})
            check(misspelled.is_error and "timeout" in text(misspelled), "an unknown argument is a tool error naming it")
            wrong = await bo.call_tool("create_task", {"title": "x", "priority": "urgent"})
            check(wrong.is_error and "priority" in text(wrong), "a bad enum value is a tool error naming the field")
            as_string = await bo.call_tool("read_chat", {"limit": "2"})
            check(not as_string.is_error, "a number sent as a string is accepted")

            listed = await bo.call_tool("list_tasks", {"status": ["doing"]})
            check([t["id"] for t in listed.structured_content["tasks"]] == ["T-1"], "list_tasks filters by status")
            who = await bo.call_tool("who", {})
            names = {a["name"] for a in who.structured_content["agents"]}
            check({"ann", "bo"} <= names, "who lists both agents")

            waiter = asyncio.create_task(bo.call_tool("wait_for", {"mention": True, "timeout_seconds": "30"}))
            await asyncio.sleep(1)
            check(not waiter.done(), "wait_for blocks while nothing happens")
            posted = await ann.call_tool("post_message", {"content": "@bo please review T-1"})
            check(not posted.is_error, "ann posts a mention")
            woke = await asyncio.wait_for(waiter, 20)
            check(not woke.is_error and "please review" in text(woke), "wait_for is woken by the mention")

            # Every other tool once, so that the SDK checks each output schema against a result.
            calls = [
                (bo, "show_task", {"task": "T-1"}),
                (bo, "read_inbox", {"all": True}),
                (bo, "ack_inbox", {}),
                (bo, "set_status", {"status": "busy", "note": "reviewing"}),
                (bo, "create_task", {"title": "second", "blocked_by": ["T-1"], "tags": ["x"]}),
                (bo, "next_task", {}),
                (bo, "update_task", {"task": "T-2", "priority": "P0", "title": "second, urgent"}),
                (ann, "reserve_files", {"patterns": ["src/auth/**"], "task": "T-1", "repo": "example/repo"}),
                (bo, "who_has_files", {"paths": ["src/auth/login.rs"], "repo": "example/repo"}),
                (ann, "release_files", {"repo": "example/repo"}),
                (ann, "complete_task", {"task": "T-1", "token": claimed.structured_content["claim"]["token"]}),
                (bo, "claim_task", {"task": "T-2"}),
                (bo, "release_task", {"task": "T-2"}),
                (bo, "next_task", {"claim": "true"}),
            ]
            for who_calls, tool, arguments in calls:
                result = await who_calls.call_tool(tool, arguments)
                check(not result.is_error and result.structured_content is not None, f"{tool} answers typed data: {text(result)[:80]}")

            timed_out = await bo.call_tool("wait_for", {"task": "T-2", "until": "done", "timeout_seconds": 1})
            check(timed_out.is_error and "within 1s" in text(timed_out), "wait_for times out as a tool error")


asyncio.run(main())
print("all checks passed")
