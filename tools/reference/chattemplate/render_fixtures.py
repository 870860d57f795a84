#!/usr/bin/python3
"""Render reference fixtures for hone/chattemplate with Python Jinja2.

Run from the repository root:

    /usr/bin/python3 tools/reference/chattemplate/render_fixtures.py

It extracts every Hugging Face chat template ("gguf" field) from
ollama-utils' chat-template-automap.ts plus the chat_template of the
tokenizer_config.json assets, renders each one against a fixed set of
conversations the way transformers' apply_chat_template does, and writes
chattemplate/testdata/renders.json (gzipped to renders.json.gz when large).

The Jinja2 environment mirrors transformers: ImmutableSandboxedEnvironment
with trim_blocks, lstrip_blocks, the loopcontrols extension, a no-op
{% generation %} tag, raise_exception/strftime_now globals and a tojson
filter that is plain json.dumps (ensure_ascii=False, no HTML escaping).
Only jinja2 is needed.
"""

import gzip
import json
import os
import sys
from datetime import datetime

import jinja2
import jinja2.ext
import jinja2.nodes
from jinja2.exceptions import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
ASSETS = os.path.join(ROOT, ".cache", "assets")
AUTOMAP = os.path.join(ASSETS, "ollama-utils", "package", "src", "chat-template-automap.ts")
TOKENIZER_CONFIGS = [
    "tokenizer-llama3_1/package/models/tokenizer_config.json",
    "tokenizer-llama2/package/models/tokenizer_config.json",
]
OUT_DIR = os.path.join(ROOT, "chattemplate", "testdata")
FIXED_NOW = datetime(2026, 11, 26, 9, 5, 7)  # strftime_now("%d %b %Y") == "26 Nov 2026"


# ---------------------------------------------------------------------------
# TS extraction. The automap file is generated code: an array of object
# literals whose "model" and "gguf" properties are JS string literals, quoted
# with either ' or ". We tokenize string literals properly (escapes included)
# rather than regex-matching, because the templates themselves contain quotes.

JS_SIMPLE_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f",
                     "v": "\v", "0": "\0", "\\": "\\", "'": "'", '"': '"', "`": "`"}


def read_js_string(src, i):
    """Parse the JS string literal starting at src[i]; return (value, end)."""
    quote = src[i]
    if quote not in "'\"`":
        raise ValueError("expected string literal at offset %d, got %r" % (i, src[i:i + 20]))
    if quote == "`" and "${" in src[i:src.index("`", i + 1)]:
        raise ValueError("template literal with substitutions at offset %d" % i)
    out = []
    i += 1
    while True:
        c = src[i]
        if c == quote:
            return "".join(out), i + 1
        if c == "\\":
            e = src[i + 1]
            if e in JS_SIMPLE_ESCAPES:
                out.append(JS_SIMPLE_ESCAPES[e])
                i += 2
            elif e == "x":
                out.append(chr(int(src[i + 2:i + 4], 16)))
                i += 4
            elif e == "u" and src[i + 2] == "{":
                j = src.index("}", i)
                out.append(chr(int(src[i + 3:j], 16)))
                i = j + 1
            elif e == "u":
                code = int(src[i + 2:i + 6], 16)
                i += 6
                # Join UTF-16 surrogate pairs.
                if 0xD800 <= code < 0xDC00 and src[i:i + 2] == "\\u":
                    low = int(src[i + 2:i + 6], 16)
                    if 0xDC00 <= low < 0xE000:
                        code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)
                        i += 6
                out.append(chr(code))
            elif e == "\n":  # line continuation
                i += 2
            else:
                out.append(e)
                i += 2
        elif c == "\n" and quote != "`":
            raise ValueError("newline inside string literal at offset %d" % i)
        else:
            out.append(c)
            i += 1


def skip_ws(src, i):
    while src[i] in " \t\r\n":
        i += 1
    return i


def read_property_string(src, i):
    """Read a string value that may be split as "a" + "b" across lines."""
    i = skip_ws(src, i)
    val, i = read_js_string(src, i)
    while True:
        j = skip_ws(src, i)
        if src[j] != "+":
            return val, i
        more, i = read_js_string(src, skip_ws(src, j + 1))
        val += more


def extract_automap(path):
    src = open(path, encoding="utf-8").read()
    entries = []
    i = 0
    model = None
    while True:
        # Find the next "model:" or "gguf:" property key (tab-indented keys of
        # the top-level object literals; never inside a string because we jump
        # over every string we parse).
        m = src.find("model:", i)
        g = src.find("gguf:", i)
        if g < 0:
            break
        if 0 <= m < g:
            model, i = read_property_string(src, m + len("model:"))
            continue
        tmpl, i = read_property_string(src, g + len("gguf:"))
        entries.append((model, tmpl))
        # Skip the rest of this entry's properties (ollama template strings
        # may themselves contain "model:" text), by jumping to the next entry.
        nxt = src.find("\n\t{\n", i)
        i = nxt if nxt >= 0 else len(src)
    return entries


# ---------------------------------------------------------------------------
# Environment, as transformers builds it.

class GenerationTag(jinja2.ext.Extension):
    """{% generation %}...{% endgeneration %}: transformers uses it to mark
    assistant spans; for rendering the body passes through unchanged."""

    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return jinja2.nodes.Scope(body).set_lineno(lineno)


def raise_exception(message):
    raise TemplateError(message)


def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent,
                      separators=separators, sort_keys=sort_keys)


def strftime_now(fmt):
    return FIXED_NOW.strftime(fmt)


def make_env():
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True,
        extensions=[GenerationTag, jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env


# ---------------------------------------------------------------------------
# Conversations. Dict keys of tools are written in sorted order because the
# Go side receives tools as map[string]any, which has no key order.

TRICKY_SYSTEM = 'Tu es un assistant "utile" — réponds en français. 日本語も OK ✓ 🚀'
TRICKY_USER = ('  Parse this: {"a": [1, 2, {"b": null}], \'q\': "x\\"y"}\n'
               'Line two\twith tab and {{ not a tag }} {% nope %}\n\n  ')
TRICKY_ASSISTANT = '\n```json\n{"ok": true, "emoji": "😀", "path": "C:\\\\tmp"}\n```\n  '

TOOLS = [
    {
        "function": {
            "description": "Get the current weather for a city, e.g. \"Paris\" or \"São Paulo\".",
            "name": "get_weather",
            "parameters": {
                "properties": {
                    "location": {"description": "City name", "type": "string"},
                    "unit": {"enum": ["celsius", "fahrenheit"], "type": "string"},
                },
                "required": ["location"],
                "type": "object",
            },
        },
        "type": "function",
    },
    {
        "function": {
            "description": "Add two integers.",
            "name": "add",
            "parameters": {
                "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
                "required": ["a", "b"],
                "type": "object",
            },
        },
        "type": "function",
    },
]


def msg(role, content):
    return {"role": role, "content": content}


CONVERSATIONS = [
    ("system_user_assistant", [
        msg("system", "You are a helpful assistant."),
        msg("user", "What is the capital of France?"),
        msg("assistant", "The capital of France is Paris."),
    ], False, False),
    ("multi_turn", [
        msg("user", "Hi!"),
        msg("assistant", "Hello! How can I help?"),
        msg("user", "Tell me a joke."),
        msg("assistant", "Why did the chicken cross the road? To get to the other side."),
        msg("user", "Another one, please."),
    ], True, False),
    ("system_multi_turn", [
        msg("system", "Be brief."),
        msg("user", "2+2?"),
        msg("assistant", "4"),
        msg("user", "3+3?"),
        msg("assistant", "6"),
    ], False, False),
    ("user_only_gen", [msg("user", "Write a haiku about Go.")], True, False),
    ("user_only_nogen", [msg("user", "Write a haiku about Go.")], False, False),
    ("tricky_content", [
        msg("system", TRICKY_SYSTEM),
        msg("user", TRICKY_USER),
        msg("assistant", TRICKY_ASSISTANT),
        msg("user", "  ¿Y ahora?  "),
    ], True, False),
    ("tools", [
        msg("system", "You can call tools."),
        msg("user", "What's the weather in Paris?"),
    ], True, True),
    ("tools_no_system", [msg("user", "Add 2 and 3.")], True, True),
]


def special_tokens(template):
    """bos/eos as the template's model would define them."""
    if "<|start_header_id|>" in template or "<|begin_of_text|>" in template:
        return "<|begin_of_text|>", "<|eot_id|>"
    if "<|im_start|>" in template:  # Qwen-style ChatML models
        return "", "<|im_end|>"
    if "<start_of_turn>" in template:  # Gemma
        return "<bos>", "<eos>"
    return "<s>", "</s>"


def render(env, compiled, messages, agp, tools, bos, eos):
    try:
        out = compiled.render(messages=messages, tools=tools, documents=None,
                              add_generation_prompt=agp, bos_token=bos, eos_token=eos)
        return {"output": out}
    except TemplateError as e:
        return {"error": str(e), "error_type": type(e).__name__}
    except Exception as e:  # e.g. TypeError from a template bug
        return {"error": "%s: %s" % (type(e).__name__, e), "error_type": type(e).__name__}


def main():
    sources = []
    for model, tmpl in extract_automap(AUTOMAP):
        sources.append(("ollama:" + (model or "?"), tmpl, None))
    for rel in TOKENIZER_CONFIGS:
        cfg = json.load(open(os.path.join(ASSETS, rel), encoding="utf-8"))
        ct = cfg.get("chat_template")
        if isinstance(ct, list):
            ct = next((t["template"] for t in ct if t.get("name") == "default"), None)
        if ct is None:
            print("note: %s has no chat_template (base model)" % rel, file=sys.stderr)
            continue
        tok = lambda v: v.get("content") if isinstance(v, dict) else v
        sources.append(("tokenizer:" + rel, ct, (tok(cfg.get("bos_token")) or "", tok(cfg.get("eos_token")) or "")))

    env = make_env()
    templates = []
    by_src = {}
    for name, tmpl, toks in sources:
        if tmpl in by_src:  # dedupe identical templates, keep every name
            by_src[tmpl]["names"].append(name)
            continue
        bos, eos = toks if toks else special_tokens(tmpl)
        entry = {"names": [name], "template": tmpl, "bos_token": bos, "eos_token": eos, "cases": []}
        by_src[tmpl] = entry
        templates.append(entry)
        try:
            compiled = env.from_string(tmpl)
        except TemplateError as e:
            entry["compile_error"] = str(e)
            continue
        for conv, messages, agp, with_tools in CONVERSATIONS:
            if with_tools and "tools" not in tmpl:
                continue
            tools = TOOLS if with_tools else None
            case = {"conversation": conv}
            case.update(render(env, compiled, messages, agp, tools, bos, eos))
            entry["cases"].append(case)

    conversations = {}
    for conv, messages, agp, with_tools in CONVERSATIONS:
        conversations[conv] = {"messages": messages, "add_generation_prompt": agp,
                               "tools": TOOLS if with_tools else None}
    doc = {
        "generator": "tools/reference/chattemplate/render_fixtures.py",
        "jinja2_version": jinja2.__version__,
        "now": FIXED_NOW.isoformat(),
        "conversations": conversations,
        "templates": templates,
    }
    data = json.dumps(doc, ensure_ascii=False, indent=1).encode("utf-8")
    os.makedirs(OUT_DIR, exist_ok=True)
    plain = os.path.join(OUT_DIR, "renders.json")
    gz = plain + ".gz"
    for p in (plain, gz):
        if os.path.exists(p):
            os.remove(p)
    if len(data) > 3 * 1024 * 1024:
        with gzip.GzipFile(gz, "wb", mtime=0) as f:
            f.write(data)
        out = gz
    else:
        with open(plain, "wb") as f:
            f.write(data)
        out = plain
    ncases = sum(len(t["cases"]) for t in templates)
    nerr = sum(1 for t in templates for c in t["cases"] if "error" in c)
    print("wrote %s: %d templates (%d sources), %d cases (%d raise)" %
          (out, len(templates), len(sources), ncases, nerr), file=sys.stderr)


if __name__ == "__main__":
    main()
