"""`medtune serve MODEL_DIR [--port N]`: an exported model behind Ray Serve.

OpenAI-compatible `POST /v1/chat/completions`, `GET /v1/models` and `GET /healthz`, bound to
127.0.0.1 unless `--host` says otherwise. The last user message is answered after the
conversation before it (the chat template's turns, or the plain template's earlier questions
and answers); `"stream": true` gets server-sent events as the answer is generated, and
`stop` strings end it. Malformed requests, and
conversations longer than the model reads, get a 4xx with a JSON body saying what is wrong.
Requests that arrive together are answered in one batch (`serve.batch`; the response's
`x-medtune-batch-size` header says how many shared it).

    curl -s localhost:8000/v1/chat/completions -H 'content-type: application/json' \\
      -d '{"messages": [{"role": "user", "content": "What is asthma?"}], "max_tokens": 64}'
"""

# No `from __future__ import annotations` here: FastAPI reads the request model from the
# handler's real annotation; as a string under Serve's ingress wrapper it is taken for a query
# parameter.
import asyncio
import json
import signal
import threading
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Literal

from fastapi import FastAPI, HTTPException, Response
from fastapi.responses import StreamingResponse
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)
from ray import serve
from rich.console import Console

from trainables.evaluation import Completion
from tune.generate import Ask, grown

__all__ = ["ChatRequest", "build_app", "run_serve"]

LOOPBACK = ("127.0.0.1", "localhost", "::1")
# Requests that arrive together are answered in one batch: decoding reads every weight once per
# token whatever the batch, so on a CPU eight questions took 0.243-0.271x the time of eight in
# turn (SmolLM2-135M, 64 tokens each, 2-core AMD EPYC, 2026-12-02; BENCHMARKS.md).
MAX_BATCH = 8
BATCH_WAIT_S = 0.05  # how long a request waits for others to join it; answers take seconds


class ChatMessage(BaseModel):
    # "developer" is OpenAI's newer name for a system message.
    role: Literal["system", "developer", "user", "assistant"]
    content: str = Field(min_length=1, max_length=32_000)

    @field_validator("content", mode="before")
    @classmethod
    def _text(cls, v):
        """Content in OpenAI's list form (parts of type "text") as one text."""
        if not isinstance(v, list):
            return v
        for n, part in enumerate(v):
            kind = part.get("type") if isinstance(part, dict) else type(part).__name__
            if kind != "text" or not isinstance(part.get("text"), str):
                raise ValueError(
                    f"part {n} is of type {kind!r}; this model reads text only: send text "
                    'parts ({"type": "text", "text": ...}) or a string'
                )
        return "\n".join(part["text"] for part in v)

    @property
    def system(self) -> bool:
        return self.role in ("system", "developer")


class StreamOptions(BaseModel):
    include_usage: bool = False


# OpenAI request fields this server cannot honour, each with the value that asks for nothing
# and why: a request that asks for one of them gets a 422 saying so, rather than an answer
# that silently lacks it. Fields not named here and not below (user, seed, top_p, metadata,
# ...) change nothing about a greedy answer and are ignored.
_NOT_HONOURED = {
    "n": (1, "this server gives one answer per request (greedy decoding would repeat it)"),
    "logprobs": (False, "this server does not return log probabilities"),
    "frequency_penalty": (0, "this server applies no penalties (the greedy answer is given)"),
    "presence_penalty": (0, "this server applies no penalties (the greedy answer is given)"),
    "logit_bias": (None, "this server applies no logit bias"),
    "tools": (None, "this model has no tool calling"),
    "response_format": ({"type": "text"}, "answers are plain text; a format is not enforced"),
}


class ChatRequest(BaseModel):
    """The subset of OpenAI's chat request that a local model can honour."""

    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    messages: list[ChatMessage] = Field(min_length=1, max_length=64)
    max_tokens: int | None = Field(None, ge=1, le=1024, description="Default 128.")
    # OpenAI's newer name for max_tokens, which its clients now send instead.
    max_completion_tokens: int | None = Field(None, ge=1, le=1024)
    temperature: float | None = Field(None, description="Greedy decoding only: 0 or absent.")
    n: int | None = None
    logprobs: bool | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    logit_bias: dict | None = None
    tools: list | None = None
    response_format: dict | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    # OpenAI's: up to 4 strings; the answer ends before the first that appears.
    stop: str | list[str] | None = None

    @field_validator("temperature")
    @classmethod
    def _greedy(cls, v: float | None) -> float | None:
        if v:  # a client's default (0.7, 1.0) must not pass for what was asked
            raise ValueError(
                f"got {v}; this server decodes greedily (the answer `medtune generate` gives), "
                "so send temperature 0 or leave it out"
            )
        return v

    @field_validator(*_NOT_HONOURED)
    @classmethod
    def _honoured(cls, v, info: ValidationInfo):
        neutral, why = _NOT_HONOURED[info.field_name]
        if v is not None and v != neutral and not (neutral is None and not v):
            got = json.dumps(v)
            got = got if len(got) <= 80 else got[:77] + "..."
            fix = "leave it out" if neutral is None else f"send {json.dumps(neutral)} or none"
            raise ValueError(f"got {got}; {why}: {fix}")
        return v

    @model_validator(mode="after")
    def _one_budget(self) -> "ChatRequest":
        both = self.max_tokens is not None and self.max_completion_tokens is not None
        if both and self.max_tokens != self.max_completion_tokens:
            raise ValueError(
                f"max_tokens {self.max_tokens} and max_completion_tokens "
                f"{self.max_completion_tokens} differ; send one of them"
            )
        return self

    @property
    def budget(self) -> int:
        """The most tokens the answer may take (max_completion_tokens or max_tokens; 128)."""
        return self.max_completion_tokens or self.max_tokens or 128

    @field_validator("stop")
    @classmethod
    def _stops(cls, v: str | list[str] | None) -> str | list[str] | None:
        stops = [v] if isinstance(v, str) else v or []
        if len(stops) > 4 or any(not s or len(s) > 256 for s in stops):
            raise ValueError(
                f"got {v!r}; send up to 4 stop strings, each 1 to 256 characters, as OpenAI's "
                "API takes them"
            )
        return v

    def ask(self) -> Ask:
        """The last user message, asked after the conversation before it, with the system
        messages (all of them, in order) in place of the training system prompt."""
        turns = [m for m in self.messages if not m.system]
        if not turns or turns[-1].role != "user":
            raise HTTPException(400, "the last message must have role 'user'")
        system = "\n\n".join(m.content for m in self.messages if m.system) or None
        history = tuple({"role": m.role, "content": m.content} for m in turns[:-1])
        stop = (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())
        return Ask(turns[-1].content, system, self.budget, history, stop)


# Above the deployment class: Serve pickles it by value as it is decorated, while this module
# is still being imported, so a name defined below it would be missing in the replica.
async def _stream_events(
    head: dict, steps: AsyncIterator[Completion], with_usage: bool, gone: threading.Event
) -> AsyncIterator[str]:
    """The answer as OpenAI's server-sent chat.completion.chunk events, a chunk for each piece
    of text as it is generated, then the finish_reason, then (when asked with
    stream_options.include_usage) the usage; then [DONE]. A client that leaves sets `gone`,
    which ends its answer at the next token."""
    chunk = {**head, "object": "chat.completion.chunk"}
    if with_usage:
        chunk["usage"] = None  # as OpenAI: null on every chunk but the last

    def event(choices: list, **extra) -> str:
        return f"data: {json.dumps({**chunk, 'choices': choices, **extra})}\n\n"

    try:
        yield event(
            [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]
        )
        sent, done = "", None
        async for done in steps:
            if piece := grown(sent, done.text):
                yield event([{"index": 0, "delta": {"content": piece}, "finish_reason": None}])
                sent += piece
        yield event([{"index": 0, "delta": {}, "finish_reason": _finish(done)}])
        if with_usage:
            yield event([], usage=_usage(done))
        yield "data: [DONE]\n\n"
    finally:
        gone.set()


def _finish(done: Completion) -> str:
    return "stop" if done.stopped else "length"  # OpenAI's: "length" when max_tokens cut it


def _usage(done: Completion) -> dict:
    return {
        "prompt_tokens": done.prompt_tokens,
        "completion_tokens": done.completion_tokens,
        "total_tokens": done.prompt_tokens + done.completion_tokens,
    }


api = FastAPI(title="medtune")


@serve.deployment(name="medtune-chat", num_replicas=1, max_ongoing_requests=4 * MAX_BATCH)
@serve.ingress(api)
class ChatDeployment:
    def __init__(self, model_dir: str):
        from tune.generate import ExportedModel

        self.model = ExportedModel(Path(model_dir))

    @api.get("/healthz")
    def healthz(self) -> dict:
        return {"status": "ok", "model": self.model.name}

    @api.get("/v1/models")
    def models(self) -> dict:
        """OpenAI's model list, which clients and chat UIs ask for before they chat."""
        return {
            "object": "list",
            "data": [{"id": self.model.name, "object": "model", "owned_by": "medtune"}],
        }

    @api.post("/v1/chat/completions", response_model=None)
    async def chat(self, request: ChatRequest, response: Response) -> dict | StreamingResponse:
        ask = request.ask()
        if why := self.model.too_long(ask):
            raise HTTPException(
                400,
                f"the conversation: {why}; send fewer or shorter messages, or a lower max_tokens",
            )
        gone = threading.Event()  # set when the client has its answer or has left
        steps = self.complete(ask, gone)
        try:
            batch = await anext(steps)  # the batch's size comes first, before any token
        except BaseException:  # the client left while the request waited for its batch
            gone.set()
            raise
        head = {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "created": int(time.time()),
            "model": request.model or self.model.name,
        }
        batch_header = {"x-medtune-batch-size": str(batch)}  # how many were answered with it
        if request.stream:
            with_usage = bool(request.stream_options and request.stream_options.include_usage)
            events = _stream_events(head, steps, with_usage, gone)
            return StreamingResponse(events, media_type="text/event-stream", headers=batch_header)
        try:
            done = [partial async for partial in steps][-1]
        finally:
            gone.set()
        response.headers.update(batch_header)
        message = {"role": "assistant", "content": done.text}
        return {
            **head,
            "object": "chat.completion",
            "choices": [{"index": 0, "message": message, "finish_reason": _finish(done)}],
            "usage": _usage(done),
        }

    @serve.batch(max_batch_size=MAX_BATCH, batch_wait_timeout_s=BATCH_WAIT_S)
    async def complete(
        self, asks: list[Ask], gone: list[threading.Event]
    ) -> AsyncIterator[list[int | Completion | type[StopIteration]]]:
        """Answers the questions that arrived together in one batch, yielding first the batch's
        size to each, then each answer so far after every generated token until it is final;
        an answer whose client left (`gone`) ends at the next token."""
        loop = asyncio.get_running_loop()
        steps: asyncio.Queue = asyncio.Queue()

        def on_step(_start: int, partials: list[Completion]) -> None:  # generation's thread
            loop.call_soon_threadsafe(steps.put_nowait, partials)

        # In a thread: the event loop keeps taking requests, which make the next batch.
        job = asyncio.ensure_future(
            asyncio.to_thread(
                self.model.complete_many, asks, on_step=on_step, dropped=lambda i: gone[i].is_set()
            )
        )
        job.add_done_callback(lambda _: steps.put_nowait(None))
        yield [len(asks)] * len(asks)
        ended = [False] * len(asks)
        while (partials := await steps.get()) is not None:
            yield [StopIteration if end else p for p, end in zip(partials, ended, strict=True)]
            ended = [
                end or p.final(a.max_new_tokens)
                for p, a, end in zip(partials, asks, ended, strict=True)
            ]
        job.result()  # a generation that failed fails its requests


def build_app(model_dir: Path):
    return ChatDeployment.bind(str(model_dir))


def run_serve(args, console: Console) -> int:
    from tune.cluster import init_local_ray
    from tune.generate import ExportedModel

    ExportedModel(args.model_dir)  # fail fast, with exit 2, before Ray starts
    if args.host not in LOOPBACK:
        console.print(
            f"[bold red]Warning:[/] serving on {args.host}: Ray's endpoints have no "
            "authentication (CVE-2023-48022, 'ShadowRay'); put an authenticating reverse proxy "
            "in front. See docs/security.md."
        )
    init_local_ray(console, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    serve.start(http_options={"host": args.host, "port": args.port})
    serve.run(build_app(args.model_dir), name="medtune", route_prefix="/")
    console.print(
        f"Serving {args.model_dir} on http://{args.host}:{args.port} (Ctrl-C stops)", markup=False
    )
    # Stop cleanly on SIGINT and SIGTERM even when started in the background, where the
    # shell leaves SIGINT ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        serve.shutdown()
    return 0
