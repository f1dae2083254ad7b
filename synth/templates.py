"""Chat templates and the pre-query templates Magpie needs.

Everything is derived by rendering marker messages through the model's own Jinja chat
template in a sandbox (chat templates are untrusted input) and cutting around the marker:
the pre-query template is whatever the template writes before a user message's content,
default system prompt included. Built-in families are the same mechanism over templates
shipped as files in `synth/chat_templates/`.
"""

from __future__ import annotations

import functools
import json
import re
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from synth.core import SynthError

if TYPE_CHECKING:  # jinja2 is imported on the first template compiled: 25 ms off every `synth` start
    import jinja2

MARKER = "SYNTHMARKER7F3A"


@dataclass(frozen=True)
class Family:
    """A built-in template family: its Jinja file, special tokens and name patterns."""

    file: str
    bos: str
    eos: str
    names: tuple[str, ...]


FAMILIES: dict[str, Family] = {
    "llama3": Family("llama3.jinja", "<|begin_of_text|>", "<|eot_id|>", ("llama-3", "llama3")),
    "qwen2.5": Family("qwen2_5.jinja", "", "<|im_end|>", ("qwen2.5", "qwen-2.5", "qwen2_5")),
    "chatml": Family("chatml.jinja", "", "<|im_end|>", ("qwen", "chatml", "hermes", "smollm")),
    "gemma": Family("gemma.jinja", "<bos>", "<end_of_turn>", ("gemma",)),
    "phi3": Family("phi3.jinja", "", "<|endoftext|>", ("phi-3", "phi3")),
    "phi4": Family("phi4.jinja", "", "<|im_end|>", ("phi-4", "phi4")),
    "mistral": Family("mistral.jinja", "<s>", "</s>", ("mistral", "mixtral")),
}

# Markers of each family in a chat template's text, Jinja or Go (Ollama); first match wins.
_SHAPES: tuple[tuple[str, str], ...] = (
    ("<|start_header_id|>", "llama3"),
    ("<|im_sep|>", "phi4"),
    ("You are Qwen, created by Alibaba Cloud", "qwen2.5"),
    ("<|im_start|>", "chatml"),
    ("<start_of_turn>", "gemma"),
    ("<|assistant|>", "phi3"),
    ("[INST]", "mistral"),
)


# A chat template is untrusted input: besides the sandbox's bans, its rendering is bounded in time,
# in output (a few times what went in, plus room for the template's own text) and in the size of
# any string or list it builds, so a hostile or broken one stops with a message, not a hung run.
RENDER_SECONDS = 2.0
RENDER_CHARS = 1 << 20  # plus 8x the characters of the messages
BUILT_ITEMS = 1 << 20  # the longest string or list one operation or argument may make


class _Overrun(Exception):
    """The template went past one of the bounds above."""


def _raise(message: str) -> None:
    import jinja2

    raise jinja2.TemplateError(message)


@functools.lru_cache(maxsize=1)
def _bounded_environment() -> type[jinja2.sandbox.ImmutableSandboxedEnvironment]:
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class _BoundedEnvironment(ImmutableSandboxedEnvironment):
        """The sandbox, with `*`, `**` and `%` checked before they run and no call or filter given a
        number above BUILT_ITEMS (`"x" * 10**9`, `"x".ljust(10**9)`, `"x"|center(10**9)`)."""

        intercepted_binops = frozenset({"*", "**", "%"})

        def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
            if operator == "**" and isinstance(right, int) and abs(right) > 64:
                raise _Overrun(f"a power of {right}")
            if operator == "*":
                for seq, times in ((left, right), (right, left)):
                    sized = isinstance(seq, (str, list, tuple)) and isinstance(times, int)
                    if sized and len(seq) * times > BUILT_ITEMS:
                        raise _Overrun(f"a sequence of {len(seq) * times} items")
            result = super().call_binop(context, operator, left, right)
            if isinstance(result, str) and len(result) > BUILT_ITEMS:
                raise _Overrun(f"a string of {len(result)} characters")
            return result

        def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805 - jinja's signature
            _check_numbers(args, kwargs)
            return super().call(__context, __obj, *args, **kwargs)

    return _BoundedEnvironment


def _check_numbers(args: Sequence[Any], kwargs: Mapping[str, Any]) -> None:
    for value in (*args, *kwargs.values()):
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) > BUILT_ITEMS:
            raise _Overrun(f"an argument of {value}")


def _bounded_filter(fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)  # keeps jinja's pass_context / pass_environment marks
    def bounded(*args: Any, **kwargs: Any) -> Any:
        _check_numbers(args[1:], kwargs)
        return fn(*args, **kwargs)

    return bounded


def _environment() -> jinja2.sandbox.ImmutableSandboxedEnvironment:
    env = _bounded_environment()(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
    env.filters = {name: _bounded_filter(fn) for name, fn in env.filters.items()}
    env.globals["raise_exception"] = _raise
    env.globals["strftime_now"] = lambda fmt: "26 Jul 2024"  # fixed: prompts must be reproducible
    env.filters["tojson"] = lambda x, indent=None, **_: json.dumps(x, indent=indent, ensure_ascii=False)
    return env


def _deadline_tracer(deadline: float) -> Callable[..., Any]:
    """A `sys.settrace` function that checks the clock on each line of template code only (loops
    with no calls in them included), and leaves every other frame untraced."""

    def on_line(frame: Any, event: str, arg: Any) -> Any:
        if event == "line" and time.monotonic() > deadline:
            raise _Overrun(f"more than {RENDER_SECONDS:g}s")
        return on_line

    def on_call(frame: Any, event: str, arg: Any) -> Any:
        return on_line if frame.f_code.co_filename == "<template>" else None

    return on_call


@dataclass(frozen=True)
class ChatTemplate:
    """A model's chat template plus what Magpie derives from it."""

    family: str
    source: str = field(repr=False)
    bos_token: str = ""
    eos_token: str = ""
    origin: str = field(default="", compare=False)  # where it came from, for messages: a file, GGUF metadata

    @property
    def named(self) -> str:
        """The template as error messages name it: its family and where it came from."""
        return f"the {self.family} chat template ({self.origin or 'from the model'})"

    @cached_property
    def _compiled(self) -> jinja2.Template:
        import jinja2

        try:
            return _environment().from_string(self.source)
        except jinja2.TemplateError as exc:
            raise SynthError(f"{self.named} does not parse: {exc}") from None

    def render(self, messages: Sequence[Mapping[str, str]], add_generation_prompt: bool = True) -> str:
        """Messages to prompt text, as the model was trained to see them."""
        import jinja2

        msgs = [dict(m) for m in messages]
        try:
            return self._render(msgs, add_generation_prompt)
        except jinja2.TemplateError:
            if not msgs or msgs[0]["role"] != "system":
                raise
        # Templates without a system role (Gemma 2, older Mistral): fold it into the first user turn.
        system, rest = msgs[0]["content"], msgs[1:]
        if rest and rest[0]["role"] == "user":
            rest[0] = {**rest[0], "content": f"{system}\n\n{rest[0]['content']}"}
        return self._render(rest, add_generation_prompt)

    def _render(self, messages: list[dict[str, Any]], add_generation_prompt: bool) -> str:
        from jinja2.exceptions import SecurityError

        limit = RENDER_CHARS + 8 * sum(len(str(m.get("content") or "")) for m in messages)
        variables = {
            "messages": messages,
            "add_generation_prompt": add_generation_prompt,
            "bos_token": self.bos_token,
            "eos_token": self.eos_token,
        }
        pieces, size = [], 0
        previous = sys.gettrace()
        sys.settrace(_deadline_tracer(time.monotonic() + RENDER_SECONDS))
        try:
            for piece in self._compiled.generate(**variables):
                size += len(piece)
                if size > limit:
                    raise _Overrun(f"over {limit} characters of output")
                pieces.append(piece)
        except SecurityError as exc:
            raise SynthError(f"{self.named} tried an unsafe operation ({exc}); not run") from None
        except (_Overrun, OverflowError, MemoryError, RecursionError) as exc:
            raise SynthError(
                f"{self.named} went past synth's bounds on rendering ({exc}); "
                "fix the template or pass --template FAMILY"
            ) from None
        finally:
            sys.settrace(previous)
        return "".join(pieces)

    def _cut(self, text: str, what: str) -> int:
        """Where the marker message's content is in `text`; a template that drops it cannot be used."""
        at = text.find(MARKER)
        if at < 0:
            raise SynthError(
                f"{self.named} dropped the {what} given to it, so synth cannot tell where a turn begins; "
                "fix the template or pass --template FAMILY"
            )
        return at

    def pre_query(self, system: str | None = None, history: Sequence[Mapping[str, str]] = ()) -> str:
        """The text that comes right before a user message's content: Magpie's whole prompt.

        Cut from a rendered conversation that ends in a user turn, never after an
        assistant header, and with any default system prompt the template inserts kept.
        """
        messages = [{"role": "system", "content": system}] if system else []
        messages += [dict(m) for m in history] + [{"role": "user", "content": MARKER}]
        text = self.render(messages, add_generation_prompt=False)
        return text[: self._cut(text, "user message")]

    @cached_property
    def _after_user(self) -> tuple[str, str]:
        """What follows a user turn's content: (closing the turn, opening the assistant's)."""
        user = [{"role": "user", "content": MARKER}]
        bare = self.render(user, add_generation_prompt=False)
        opened = self.render(user, add_generation_prompt=True)
        bare = bare[self._cut(bare, "user message") + len(MARKER) :]
        opened = opened[self._cut(opened, "user message") + len(MARKER) :]
        # Compare piece by piece (special tokens whole), since some templates end a conversation
        # with EOS when no generation prompt is asked for (Phi-3): "<|end|>\n<|endoftext|>".
        shared = 0
        for a, b in zip(_PIECES.findall(bare), _PIECES.findall(opened)):
            if a != b:
                break
            shared += len(a)
        return opened[:shared], opened[shared:]

    @property
    def user_end(self) -> str:
        """What closes a user turn (`<|eot_id|>`, `<end_of_turn>`, `[/INST]`, ...)."""
        return self._after_user[0].strip()

    @property
    def assistant_prefix(self) -> str:
        """What the template adds to open the assistant's turn."""
        return self._after_user[1]

    @cached_property
    def assistant_end(self) -> str:
        """What closes an assistant turn."""
        turns = [{"role": "user", "content": "a"}, {"role": "assistant", "content": MARKER}]
        text = self.render(turns, add_generation_prompt=False)
        return text[self._cut(text, "assistant message") + len(MARKER) :].strip()

    @property
    def instruction_stop(self) -> tuple[str, ...]:
        """Stop strings while the model writes a user turn (Magpie's instruction)."""
        return _stops(self.user_end, self.eos_token, self.assistant_prefix, self.assistant_end)

    @property
    def response_stop(self) -> tuple[str, ...]:
        """Stop strings while the model writes an assistant turn."""
        return _stops(self.assistant_end, self.eos_token, self.user_end)


_PIECES = re.compile(r"<[^<>\s]+>|\s+|[^<\s]+|<")


def _stops(*pieces: str) -> tuple[str, ...]:
    # "<|end|>\n<|endoftext|>" (Phi-3 closes a turn, then the conversation) is two stops.
    lines = (line.strip() for piece in pieces for line in piece.split("\n"))
    return tuple(dict.fromkeys(line for line in lines if line))


def builtin(family: str) -> ChatTemplate:
    """The template shipped with synth for `family` (see `FAMILIES`)."""
    spec = FAMILIES.get(family)
    if spec is None:
        raise SynthError(unknown_family_message(family))
    source = resources.files("synth.chat_templates").joinpath(spec.file).read_text(encoding="utf-8")
    return ChatTemplate(family, source, spec.bos, spec.eos, origin=f"synth's built-in {spec.file}")


def unknown_family_message(what: str) -> str:
    """The one-line error for a `--template` that names no known family nor a file, with the fix."""
    return f"unknown chat template family {what!r}; {_HINT}"


_HINT = f"known families: {', '.join(FAMILIES)}. Pass --template FAMILY, or --template path/to/chat_template.jinja"


def family_from_text(text: str) -> str | None:
    """Recognise a family from a chat template's text (Jinja or an Ollama Go template)."""
    for marker, family in _SHAPES:
        if marker in text:
            return family
    return None


def family_from_name(name: str) -> str | None:
    """Recognise a family from a model name, tag or GGUF architecture (`llama3:8b`, `gemma3`)."""
    lowered = name.lower()
    for family, spec in FAMILIES.items():
        if any(alias in lowered for alias in spec.names):
            return family
    if re.search(r"llama-?3", lowered):
        return "llama3"
    return None


def from_jinja(source: str, bos_token: str = "", eos_token: str = "", name: str = "", origin: str = "") -> ChatTemplate:
    """Wrap a model's own chat template (GGUF metadata, tokenizer_config.json, a .jinja file)."""
    family = family_from_text(source) or family_from_name(name) or "custom"
    return ChatTemplate(family, source, bos_token, eos_token, origin=origin)


def from_tokenizer_config(path: str | Path) -> ChatTemplate:
    """The chat template of a Hugging Face model folder or its `tokenizer_config.json`."""
    path = Path(path)
    config_file = path / "tokenizer_config.json" if path.is_dir() else path
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise SynthError(f"cannot read a tokenizer config at {config_file} ({exc}); pass --template FAMILY") from None
    source = config.get("chat_template")
    if isinstance(source, list):  # [{"name": "default", "template": ...}, {"name": "tool_use", ...}]
        source = next((t["template"] for t in source if t.get("name") == "default"), source[0]["template"])
    side_file = config_file.parent / "chat_template.jinja"  # where newer transformers save it
    if not source and side_file.is_file():
        source = side_file.read_text(encoding="utf-8")
    if not source:
        raise SynthError(f"{config_file} carries no chat_template; pass --template FAMILY")
    bos, eos = _token_text(config.get("bos_token")), _token_text(config.get("eos_token"))
    return from_jinja(source, bos, eos, str(path), origin=str(config_file))


def _token_text(token: Any) -> str:
    if isinstance(token, dict):
        return token.get("content", "")
    return token or ""


def resolve(
    override: str | None = None,
    *,
    jinja_source: str | None = None,
    bos_token: str = "",
    eos_token: str = "",
    names: Sequence[str] = (),
    origin: str = "",
) -> ChatTemplate:
    """Pick a template: `override` (family or file), else the model's own (from `origin`), else by name."""
    if override:
        if override in FAMILIES:
            return builtin(override)
        path = Path(override)
        if path.suffix in {".jinja", ".j2", ".txt"} and path.is_file():
            return from_jinja(path.read_text(encoding="utf-8"), bos_token, eos_token, path.stem, origin=str(path))
        raise SynthError(unknown_family_message(override))
    if jinja_source:
        return from_jinja(jinja_source, bos_token, eos_token, " ".join(names), origin=origin)
    for name in names:
        family = family_from_name(name)
        if family:
            return builtin(family)
    raise SynthError(
        f"could not tell the chat template of {' / '.join(n for n in names if n) or 'this model'}: "
        f"it carries none and its name matches no known family; {_HINT}"
    )
