#!/usr/bin/env python3
"""A scripted LLM server that speaks three real streaming wire protocols.

    python3 tests/llm/scripted_llm.py [--port 0] [--chunk-delay-ms 0]

prints ``listening http://127.0.0.1:PORT`` once ready. Standard library only (Python 3.11).

Model endpoints (all streaming):
  * OpenAI    ``POST /v1/chat/completions``            SSE ``data:`` chunks, ``data: [DONE]``
  * Anthropic ``POST /v1/messages``                    SSE named events
  * Bedrock   ``POST /model/{modelId}/converse-stream`` ``application/vnd.amazon.eventstream``

Behaviour, the same for the three, decided by the LAST message of the request:
  * it carries tool results -> text ``tool <name> returned: <first 200 chars>`` (one line per
    result), stop reason end_turn;
  * else its text contains ``use:<tool>`` (a tool of the request), optionally followed on the
    same line by a JSON object -> one tool call per marker with that object (or ``{}``) as
    arguments, streamed in >= 2 fragments, stop reason tool_use. Test extension:
    ``use:<tool> !raw <text>`` streams <text> verbatim as the arguments (to test clients
    against malformed or empty arguments);
  * else -> ``echo: <text>`` streamed in >= 3 chunks, stop reason end_turn.
Usage: input tokens = number of whitespace-separated words in the system prompt and all
message texts / tool arguments / tool results; output tokens = words of the answer text (for
tool calls: words of the name plus the arguments JSON). OpenAI reports usage only when the
request asks for it with ``stream_options.include_usage`` (as the real API does).

Test endpoints:
  * ``GET /__test/requests``  every request received: ``{path, status, headers, body}``;
    ``authorization`` / ``x-api-key`` are shown only as "present" / "absent".
  * ``POST /__test/reset``     forget requests and pending failures.
  * ``POST /__test/fail``      ``{"status": 503, "count": 1, "retry_after": 0}``: the next
    ``count`` model calls answer ``status`` with the provider's error shape.

Requests are validated roughly as the real APIs do (tool result ids must answer tool calls of
the previous assistant message, …); violations answer 400 in the provider's error shape.
"""

import argparse
import json
import re
import sys
import threading
import time
import urllib.parse
import uuid
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
USE_MARKER = re.compile(r"use:([A-Za-z0-9_-]+)")


class BadRequest(Exception):
    """The request breaks the provider's rules; answered with 400."""


class State:
    def __init__(self):
        self.lock = threading.Lock()
        self.requests = []
        self.fail_status = 0
        self.fail_count = 0
        self.fail_retry_after = None

    def take_failure(self):
        with self.lock:
            if self.fail_count > 0:
                self.fail_count -= 1
                return self.fail_status, self.fail_retry_after
            return None, None


STATE = State()
CHUNK_DELAY = 0.0


# ---------------------------------------------------------------- the script


def words(text):
    return len(str(text).split())


def split_text(text, minimum=3):
    """Split text into >= `minimum` non-empty chunks (by words, else by characters)."""
    pieces = re.findall(r"\S+\s*|\s+", text)
    if len(pieces) >= minimum:
        return pieces
    if len(text) < minimum:
        return [text] if text else [""]
    size = len(text) // minimum
    cuts = [i * size for i in range(minimum)] + [len(text)]
    return [text[cuts[i] : cuts[i + 1]] for i in range(minimum)]


def split_fragments(text, count=3):
    """Split a JSON argument string into >= 2 fragments."""
    if len(text) < 2:
        return [text, ""]
    count = min(count, len(text))
    size = max(1, len(text) // count)
    cuts = [i * size for i in range(count)] + [len(text)]
    return [text[cuts[i] : cuts[i + 1]] for i in range(count)]


def decide(last_text, tool_results, tool_names):
    """Returns ("text", answer) or ("tools", [(name, args_dict)])."""
    if tool_results:
        lines = [f"tool {name} returned: {content[:200]}" for name, content in tool_results]
        return "text", "\n".join(lines)
    calls = []
    decoder = json.JSONDecoder()
    for line in last_text.splitlines():
        for match in USE_MARKER.finditer(line):
            name = match.group(1)
            if name not in tool_names:
                continue
            rest = line[match.end() :]
            stripped = rest.lstrip()
            args = {}
            if stripped == "!raw" or stripped.startswith("!raw "):
                args = RawArgs(stripped[5:])
            elif stripped.startswith("{"):
                try:
                    value, _ = decoder.raw_decode(stripped)
                    if isinstance(value, dict):
                        args = value
                except ValueError:
                    pass
            calls.append((name, args))
    if calls:
        return "tools", calls
    return "text", f"echo: {last_text}"


class RawArgs:
    """Arguments sent verbatim (``use:<tool> !raw <text>``)."""

    def __init__(self, text):
        self.text = text


def args_text(args):
    return args.text if isinstance(args, RawArgs) else json.dumps(args)


def output_words(kind, payload):
    if kind == "text":
        return words(payload)
    return sum(words(name) + words(args_text(args)) for name, args in payload)


def new_id(prefix):
    return prefix + uuid.uuid4().hex[:24]


# ---------------------------------------------------------------- OpenAI


def openai_text(content):
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        out = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text":
                raise BadRequest("content parts must be {type: text, text}")
            out.append(str(part.get("text", "")))
        return "".join(out)
    raise BadRequest("content must be a string or a list of parts")


def openai_parse(body):
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise BadRequest("you must provide a model parameter")
    if body.get("stream") is not True:
        raise BadRequest("this scripted server only answers stream: true")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("'messages' must be a non-empty array")
    tool_names = set()
    for tool in body.get("tools") or []:
        if not isinstance(tool, dict) or tool.get("type") != "function":
            raise BadRequest("tools[].type must be 'function'")
        function = tool.get("function")
        if not isinstance(function, dict) or not TOOL_NAME.match(str(function.get("name", ""))):
            raise BadRequest("tools[].function.name must match ^[a-zA-Z0-9_-]{1,64}$")
        params = function.get("parameters")
        if params is not None and (not isinstance(params, dict) or params.get("type") != "object"):
            raise BadRequest("tools[].function.parameters must be a JSON Schema object")
        tool_names.add(function["name"])
    input_words = 0
    pending = {}  # tool_call_id -> name, from the last assistant message with tool_calls
    calls_by_id = {}
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise BadRequest(f"messages[{i}] must be an object")
        role = message.get("role")
        if role not in ("system", "developer", "user", "assistant", "tool"):
            raise BadRequest(f"messages[{i}].role is invalid: {role!r}")
        if role != "tool" and pending:
            raise BadRequest(
                "An assistant message with 'tool_calls' must be followed by tool messages "
                f"responding to each 'tool_call_id'. Missing: {sorted(pending)}"
            )
        if role == "tool":
            call_id = message.get("tool_call_id")
            if not isinstance(call_id, str) or call_id not in pending:
                raise BadRequest(
                    f"messages[{i}]: messages with role 'tool' must be a response to a preceding "
                    f"message with 'tool_calls' (unknown tool_call_id {call_id!r})"
                )
            pending.pop(call_id)
            input_words += words(openai_text(message.get("content")))
            continue
        input_words += words(openai_text(message.get("content")))
        if role == "assistant" and message.get("tool_calls"):
            for call in message["tool_calls"]:
                if not isinstance(call, dict) or call.get("type") != "function":
                    raise BadRequest(f"messages[{i}].tool_calls[].type must be 'function'")
                function = call.get("function") or {}
                if not isinstance(call.get("id"), str) or not isinstance(function.get("name"), str):
                    raise BadRequest(f"messages[{i}].tool_calls[] needs id and function.name")
                arguments = function.get("arguments")
                if not isinstance(arguments, str):
                    raise BadRequest(f"messages[{i}].tool_calls[].function.arguments must be a string")
                try:
                    json.loads(arguments)
                except ValueError:
                    raise BadRequest(f"messages[{i}].tool_calls[].function.arguments is not JSON")
                input_words += words(arguments)
                pending[call["id"]] = function["name"]
                calls_by_id[call["id"]] = function["name"]
    if pending:
        raise BadRequest(
            "An assistant message with 'tool_calls' must be followed by tool messages "
            f"responding to each 'tool_call_id'. Missing: {sorted(pending)}"
        )
    # The LAST message: a trailing run of tool messages, or one message.
    tool_results = []
    j = len(messages) - 1
    while j >= 0 and messages[j].get("role") == "tool":
        tool_results.insert(
            0, (calls_by_id[messages[j]["tool_call_id"]], openai_text(messages[j].get("content")))
        )
        j -= 1
    last_text = "" if tool_results else openai_text(messages[-1].get("content"))
    return last_text, tool_results, tool_names, input_words


def openai_stream(handler, body, kind, payload, in_words):
    created = int(time.time())
    chunk_id = new_id("chatcmpl-")
    model = body["model"]
    include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

    def chunk(delta, finish=None, choices=True, usage=None):
        data = {"id": chunk_id, "object": "chat.completion.chunk", "created": created, "model": model}
        data["choices"] = [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}] if choices else []
        if include_usage:
            data["usage"] = usage
        handler.send_chunk(b"data: " + json.dumps(data).encode() + b"\n\n")

    handler.start_stream("text/event-stream")
    chunk({"role": "assistant", "content": ""})
    if kind == "text":
        for piece in split_text(payload):
            chunk({"content": piece})
        finish = "stop"
    else:
        for index, (name, args) in enumerate(payload):
            chunk({"tool_calls": [{"index": index, "id": new_id("call_"), "type": "function",
                                   "function": {"name": name, "arguments": ""}}]})
            for fragment in split_fragments(args_text(args)):
                chunk({"tool_calls": [{"index": index, "function": {"arguments": fragment}}]})
        finish = "tool_calls"
    chunk({}, finish=finish)
    if include_usage:
        out = output_words(kind, payload)
        chunk(None, choices=False, usage={"prompt_tokens": in_words, "completion_tokens": out,
                                          "total_tokens": in_words + out})
    handler.send_chunk(b"data: [DONE]\n\n")
    handler.end_stream()


def openai_error(status, message):
    kind = {400: "invalid_request_error", 401: "invalid_request_error", 429: "rate_limit_exceeded"}
    return {"error": {"message": message, "type": kind.get(status, "server_error"), "param": None, "code": None}}


# ---------------------------------------------------------------- Anthropic


def anthropic_blocks(content, where):
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if not isinstance(content, list):
        raise BadRequest(f"{where}.content must be a string or an array of blocks")
    for k, block in enumerate(content):
        if not isinstance(block, dict) or "type" not in block:
            raise BadRequest(f"{where}.content.{k}: blocks must be objects with a type")
    return content


def anthropic_result_text(content):
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(b.get("text", "")) for b in content if isinstance(b, dict) and b.get("type") == "text")
    if content is None:
        return ""
    raise BadRequest("tool_result.content must be a string or an array of blocks")


def anthropic_parse(handler, body):
    if not handler.headers.get("anthropic-version"):
        raise BadRequest("anthropic-version: header is required")
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise BadRequest("model: Field required")
    if not isinstance(body.get("max_tokens"), int) or body["max_tokens"] < 1:
        raise BadRequest("max_tokens: Field required")
    if body.get("stream") is not True:
        raise BadRequest("this scripted server only answers stream: true")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("messages: at least one message is required")
    tool_names = set()
    for k, tool in enumerate(body.get("tools") or []):
        if not isinstance(tool, dict) or not TOOL_NAME.match(str(tool.get("name", ""))):
            raise BadRequest(f"tools.{k}.name: String should match pattern '^[a-zA-Z0-9_-]{{1,64}}$'")
        schema = tool.get("input_schema")
        if not isinstance(schema, dict) or schema.get("type") != "object":
            raise BadRequest(f"tools.{k}.input_schema.type: Input should be 'object'")
        tool_names.add(tool["name"])
    system = body.get("system")
    input_words = words(system) if isinstance(system, str) else 0
    if isinstance(system, list):
        input_words += sum(words(b.get("text", "")) for b in system if isinstance(b, dict))
    previous_tool_uses = {}
    all_tool_uses = {}
    parsed = []
    for i, message in enumerate(messages):
        where = f"messages.{i}"
        if not isinstance(message, dict) or message.get("role") not in ("user", "assistant"):
            raise BadRequest(f"{where}.role: Input should be 'user' or 'assistant'")
        if i == 0 and message["role"] != "user":
            raise BadRequest("messages: first message must use the \"user\" role")
        blocks = anthropic_blocks(message.get("content"), where)
        answered = set()
        tool_uses = {}
        seen_other = False
        results = []
        texts = []
        for k, block in enumerate(blocks):
            kind = block["type"]
            if kind == "text":
                seen_other = True
                texts.append(str(block.get("text", "")))
                input_words += words(block.get("text", ""))
            elif kind == "tool_use":
                if message["role"] != "assistant":
                    raise BadRequest(f"{where}.content.{k}: tool_use blocks belong in assistant messages")
                if not isinstance(block.get("id"), str) or not isinstance(block.get("name"), str):
                    raise BadRequest(f"{where}.content.{k}.tool_use: id and name are required")
                if not isinstance(block.get("input"), dict):
                    raise BadRequest(f"{where}.content.{k}.tool_use.input: Input should be a valid dictionary")
                tool_uses[block["id"]] = block["name"]
                input_words += words(json.dumps(block["input"]))
            elif kind == "tool_result":
                if message["role"] != "user":
                    raise BadRequest(f"{where}.content.{k}: tool_result blocks belong in user messages")
                if seen_other:
                    raise BadRequest(f"{where}: tool_result blocks must come first in the user message")
                use_id = block.get("tool_use_id")
                if use_id not in previous_tool_uses:
                    raise BadRequest(
                        f"{where}.content.{k}: unexpected `tool_use_id` found in `tool_result` blocks: "
                        f"{use_id}. Each `tool_result` block must have a corresponding `tool_use` "
                        "block in the previous message."
                    )
                if "is_error" in block and not isinstance(block["is_error"], bool):
                    raise BadRequest(f"{where}.content.{k}.is_error: Input should be a valid boolean")
                text = anthropic_result_text(block.get("content"))
                input_words += words(text)
                answered.add(use_id)
                results.append((previous_tool_uses[use_id], text))
            else:
                raise BadRequest(f"{where}.content.{k}.type: unsupported block type {kind!r}")
        if previous_tool_uses and set(previous_tool_uses) - answered:
            raise BadRequest(
                f"{where}: `tool_use` ids were found without `tool_result` blocks immediately "
                f"after: {sorted(set(previous_tool_uses) - answered)}"
            )
        previous_tool_uses = tool_uses
        all_tool_uses.update(tool_uses)
        parsed.append((results, "".join(texts)))
    if previous_tool_uses:
        raise BadRequest("the last message must not end with unanswered tool_use blocks")
    results, text = parsed[-1]
    return (text if not results else ""), results, tool_names, input_words


def anthropic_stream(handler, body, kind, payload, in_words):
    def event(name, data):
        handler.send_chunk(f"event: {name}\ndata: {json.dumps(data)}\n\n".encode())

    handler.start_stream("text/event-stream")
    event("message_start", {"type": "message_start", "message": {
        "id": new_id("msg_"), "type": "message", "role": "assistant", "model": body["model"],
        "content": [], "stop_reason": None, "stop_sequence": None,
        "usage": {"input_tokens": in_words, "output_tokens": 1}}})
    event("ping", {"type": "ping"})
    if kind == "text":
        event("content_block_start", {"type": "content_block_start", "index": 0,
                                      "content_block": {"type": "text", "text": ""}})
        for piece in split_text(payload):
            event("content_block_delta", {"type": "content_block_delta", "index": 0,
                                          "delta": {"type": "text_delta", "text": piece}})
        event("content_block_stop", {"type": "content_block_stop", "index": 0})
        stop = "end_turn"
    else:
        for index, (name, args) in enumerate(payload):
            event("content_block_start", {"type": "content_block_start", "index": index, "content_block": {
                "type": "tool_use", "id": new_id("toolu_"), "name": name, "input": {}}})
            event("content_block_delta", {"type": "content_block_delta", "index": index,
                                          "delta": {"type": "input_json_delta", "partial_json": ""}})
            for fragment in split_fragments(args_text(args)):
                event("content_block_delta", {"type": "content_block_delta", "index": index,
                                              "delta": {"type": "input_json_delta", "partial_json": fragment}})
            event("content_block_stop", {"type": "content_block_stop", "index": index})
        stop = "tool_use"
    event("message_delta", {"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": None},
                            "usage": {"output_tokens": output_words(kind, payload)}})
    event("message_stop", {"type": "message_stop"})
    handler.end_stream()


def anthropic_error(status, message):
    kind = {400: "invalid_request_error", 401: "authentication_error", 429: "rate_limit_error",
            500: "api_error", 529: "overloaded_error"}
    return {"type": "error", "error": {"type": kind.get(status, "api_error"), "message": message}}


# ---------------------------------------------------------------- Bedrock


def bedrock_parse(handler, body):
    auth = handler.headers.get("authorization", "")
    if not auth.startswith("AWS4-HMAC-SHA256 ") or "/bedrock/aws4_request" not in auth:
        raise BadRequest("MissingAuthenticationToken: a SigV4 signature for service 'bedrock' is required")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("The messages field is required and must not be empty.")
    tool_names = set()
    tool_config = body.get("toolConfig")
    if tool_config is not None:
        tools = tool_config.get("tools") if isinstance(tool_config, dict) else None
        if not isinstance(tools, list) or not tools:
            raise BadRequest("toolConfig.tools must contain at least one tool")
        for k, tool in enumerate(tools):
            spec = tool.get("toolSpec") if isinstance(tool, dict) else None
            if not isinstance(spec, dict) or not TOOL_NAME.match(str(spec.get("name", ""))):
                raise BadRequest(f"toolConfig.tools.{k}.toolSpec.name is invalid")
            schema = (spec.get("inputSchema") or {}).get("json")
            if not isinstance(schema, dict):
                raise BadRequest(f"toolConfig.tools.{k}.toolSpec.inputSchema.json must be an object")
            tool_names.add(spec["name"])
    inference = body.get("inferenceConfig")
    if inference is not None and (not isinstance(inference.get("maxTokens", 1), int) or inference.get("maxTokens", 1) < 1):
        raise BadRequest("inferenceConfig.maxTokens must be >= 1")
    input_words = sum(words(b.get("text", "")) for b in body.get("system") or [] if isinstance(b, dict))
    previous_tool_uses = {}
    has_tool_blocks = False
    parsed = []
    for i, message in enumerate(messages):
        where = f"messages.{i}"
        if not isinstance(message, dict) or message.get("role") not in ("user", "assistant"):
            raise BadRequest(f"{where}.role must be user or assistant")
        if i == 0 and message["role"] != "user":
            raise BadRequest("A conversation must start with a user message.")
        if i > 0 and messages[i - 1].get("role") == message["role"]:
            raise BadRequest("A conversation must alternate between user and assistant roles.")
        content = message.get("content")
        if not isinstance(content, list) or not content:
            raise BadRequest(f"{where}.content must be a non-empty array")
        tool_uses, answered, results, texts = {}, set(), [], []
        for k, block in enumerate(content):
            if not isinstance(block, dict) or len(block) != 1:
                raise BadRequest(f"{where}.content.{k} must have exactly one member")
            if "text" in block:
                texts.append(str(block["text"]))
                input_words += words(block["text"])
            elif "toolUse" in block:
                has_tool_blocks = True
                use = block["toolUse"]
                if message["role"] != "assistant":
                    raise BadRequest(f"{where}.content.{k}: toolUse belongs in assistant messages")
                if not isinstance(use.get("toolUseId"), str) or not isinstance(use.get("name"), str):
                    raise BadRequest(f"{where}.content.{k}.toolUse needs toolUseId and name")
                if not isinstance(use.get("input"), dict):
                    raise BadRequest(f"{where}.content.{k}.toolUse.input must be an object")
                tool_uses[use["toolUseId"]] = use["name"]
                input_words += words(json.dumps(use["input"]))
            elif "toolResult" in block:
                has_tool_blocks = True
                result = block["toolResult"]
                if message["role"] != "user":
                    raise BadRequest(f"{where}.content.{k}: toolResult belongs in user messages")
                use_id = result.get("toolUseId")
                if use_id not in previous_tool_uses:
                    raise BadRequest(
                        f"{where}.content.{k}: The toolResult blocks must match the toolUse blocks "
                        f"of the previous turn (unknown toolUseId {use_id!r})."
                    )
                if result.get("status") not in (None, "success", "error"):
                    raise BadRequest(f"{where}.content.{k}.toolResult.status must be success or error")
                parts = []
                for part in result.get("content") or []:
                    if "text" in part:
                        parts.append(str(part["text"]))
                    elif "json" in part:
                        parts.append(json.dumps(part["json"]))
                    else:
                        raise BadRequest(f"{where}.content.{k}.toolResult.content: unsupported part")
                text = "".join(parts)
                input_words += words(text)
                answered.add(use_id)
                results.append((previous_tool_uses[use_id], text))
            else:
                raise BadRequest(f"{where}.content.{k}: unsupported content block {sorted(block)}")
        if previous_tool_uses and set(previous_tool_uses) - answered:
            raise BadRequest(
                f"{where}: The number of toolResult blocks exceeds or is less than the toolUse "
                f"blocks of previous turn (missing {sorted(set(previous_tool_uses) - answered)})."
            )
        previous_tool_uses = tool_uses
        parsed.append((results, "".join(texts)))
    if has_tool_blocks and tool_config is None:
        raise BadRequest("The toolConfig field must be defined when using toolUse and toolResult content blocks.")
    results, text = parsed[-1]
    return (text if not results else ""), results, tool_names, input_words


def eventstream_frame(event_type, payload):
    headers = b""
    for name, value in ((":event-type", event_type), (":content-type", "application/json"),
                        (":message-type", "event")):
        name_b, value_b = name.encode(), value.encode()
        headers += bytes([len(name_b)]) + name_b + bytes([7]) + len(value_b).to_bytes(2, "big") + value_b
    body = json.dumps(payload).encode()
    total = 12 + len(headers) + len(body) + 4
    prelude = total.to_bytes(4, "big") + len(headers).to_bytes(4, "big")
    prelude += zlib.crc32(prelude).to_bytes(4, "big")
    message = prelude + headers + body
    return message + zlib.crc32(message).to_bytes(4, "big")


def bedrock_stream(handler, body, kind, payload, in_words):
    started = time.monotonic()

    def event(name, data):
        data = dict(data)
        data["p"] = "abcdefgh"  # the real service pads events to hide their length
        handler.send_chunk(eventstream_frame(name, data))

    handler.start_stream("application/vnd.amazon.eventstream")
    event("messageStart", {"role": "assistant"})
    if kind == "text":
        for piece in split_text(payload):
            event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": piece}})
        event("contentBlockStop", {"contentBlockIndex": 0})
        stop = "end_turn"
    else:
        for index, (name, args) in enumerate(payload):
            event("contentBlockStart", {"contentBlockIndex": index, "start": {
                "toolUse": {"toolUseId": new_id("tooluse_"), "name": name}}})
            for fragment in split_fragments(args_text(args)):
                event("contentBlockDelta", {"contentBlockIndex": index,
                                            "delta": {"toolUse": {"input": fragment}}})
            event("contentBlockStop", {"contentBlockIndex": index})
        stop = "tool_use"
    event("messageStop", {"stopReason": stop})
    out = output_words(kind, payload)
    event("metadata", {"usage": {"inputTokens": in_words, "outputTokens": out, "totalTokens": in_words + out},
                       "metrics": {"latencyMs": int((time.monotonic() - started) * 1000)}})
    handler.end_stream()


BEDROCK_ERRORS = {400: "ValidationException", 403: "AccessDeniedException", 429: "ThrottlingException",
                  500: "InternalServerException", 503: "ServiceUnavailableException"}


# ---------------------------------------------------------------- HTTP


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "scripted-llm/1"
    # Stream chunks leave at once, as from a real provider (no Nagle + delayed-ACK stalls).
    disable_nagle_algorithm = True

    def log_message(self, format, *args):  # quiet
        pass

    # -- plumbing
    def send_json(self, status, data, extra_headers=None):
        raw = json.dumps(data).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(raw)))
        for name, value in (extra_headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(raw)
        self.wfile.flush()

    def start_stream(self, content_type):
        self.send_response(200)
        self.send_header("content-type", content_type)
        self.send_header("transfer-encoding", "chunked")
        self.send_header("cache-control", "no-cache")
        self.end_headers()
        self.first_chunk = True

    def send_chunk(self, data):
        if CHUNK_DELAY and not self.first_chunk:
            time.sleep(CHUNK_DELAY)
        self.first_chunk = False
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def end_stream(self):
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def read_body(self):
        length = int(self.headers.get("content-length") or 0)
        return self.rfile.read(length) if length else b""

    def record(self, path, raw, status):
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", "replace")
        headers = {
            "authorization": "present" if self.headers.get("authorization") else "absent",
            "x-api-key": "present" if self.headers.get("x-api-key") else "absent",
            "anthropic-version": self.headers.get("anthropic-version"),
            "content-type": self.headers.get("content-type"),
        }
        entry = {"path": path, "status": status, "headers": headers, "body": body}
        with STATE.lock:
            STATE.requests.append(entry)
        return entry

    # -- routes
    def do_GET(self):
        if self.path == "/__test/requests":
            with STATE.lock:
                data = list(STATE.requests)
            return self.send_json(200, data)
        self.send_json(404, {"message": "not found"})

    def do_POST(self):
        raw = self.read_body()
        path = urllib.parse.urlsplit(self.path).path
        if path == "/__test/reset":
            with STATE.lock:
                STATE.requests.clear()
                STATE.fail_count = 0
            return self.send_json(200, {"ok": True})
        if path == "/__test/fail":
            spec = json.loads(raw or b"{}")
            with STATE.lock:
                STATE.fail_status = int(spec.get("status", 503))
                STATE.fail_count = int(spec.get("count", 1))
                STATE.fail_retry_after = spec.get("retry_after")
            return self.send_json(200, {"ok": True})
        if path == "/v1/chat/completions":
            return self.model_call(path, raw, openai_error, lambda body: openai_parse(body), openai_stream, {})
        if path == "/v1/messages":
            if not self.headers.get("x-api-key"):
                self.record(path, raw, 401)
                return self.send_json(401, anthropic_error(401, "x-api-key header is required"))
            return self.model_call(path, raw, anthropic_error, lambda body: anthropic_parse(self, body),
                                   anthropic_stream, {})
        match = re.fullmatch(r"/model/([^/]+)/converse-stream", path)
        if match:
            return self.model_call(path, raw, None, lambda body: bedrock_parse(self, body), bedrock_stream,
                                   {"model": urllib.parse.unquote(match.group(1))})
        self.record(path, raw, 404)
        self.send_json(404, {"message": f"no route for POST {path}"})

    def error(self, error_shape, status, message, retry_after=None):
        headers = {}
        if retry_after is not None:
            headers["retry-after"] = str(retry_after)
        if error_shape is None:  # Bedrock: restJson1 error
            headers["x-amzn-errortype"] = BEDROCK_ERRORS.get(status, "InternalServerException")
            return self.send_json(status, {"message": message}, headers)
        return self.send_json(status, error_shape(status, message), headers)

    def model_call(self, path, raw, error_shape, parse, stream, extra):
        status, retry_after = STATE.take_failure()
        if status:
            self.record(path, raw, status)
            return self.error(error_shape, status, f"scripted failure {status}", retry_after)
        try:
            body = json.loads(raw)
            if not isinstance(body, dict):
                raise BadRequest("the body must be a JSON object")
            body.update(extra)
            last_text, tool_results, tool_names, in_words = parse(body)
        except (ValueError, BadRequest) as error:
            self.record(path, raw, 400)
            return self.error(error_shape, 400, str(error))
        self.record(path, raw, 200)
        kind, payload = decide(last_text, tool_results, tool_names)
        try:
            stream(self, body, kind, payload, in_words)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True


def main():
    global CHUNK_DELAY
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--chunk-delay-ms", type=int, default=0)
    args = parser.parse_args()
    CHUNK_DELAY = args.chunk_delay_ms / 1000.0
    ThreadingHTTPServer.request_queue_size = 1024  # bench/agent opens 1,000 streams at once
    server = ThreadingHTTPServer((args.host, args.port), Handler)
    server.daemon_threads = True
    host, port = server.server_address[:2]
    print(f"listening http://{host}:{port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    sys.exit(main())
