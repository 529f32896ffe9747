"""`medtune serve MODEL_DIR [--port N]`: an exported model behind Ray Serve.

OpenAI-compatible `POST /v1/chat/completions` and `GET /healthz`, bound to 127.0.0.1 unless
`--host` says otherwise. Malformed requests get a 4xx with a JSON body saying what is wrong.
Requests that arrive together are answered in one batch (`serve.batch`; the response's
`x-medtune-batch-size` header says how many shared it).

    curl -s localhost:8000/v1/chat/completions -H 'content-type: application/json' \\
      -d '{"messages": [{"role": "user", "content": "What is asthma?"}], "max_tokens": 64}'
"""

# No `from __future__ import annotations` here: FastAPI reads the request model from the
# handler's real annotation; as a string under Serve's ingress wrapper it is taken for a query
# parameter.
import asyncio
import signal
import time
import uuid
from pathlib import Path
from typing import Literal

from fastapi import FastAPI, HTTPException, Response
from pydantic import BaseModel, ConfigDict, Field
from ray import serve
from rich.console import Console

from trainables.evaluation import Completion
from tune.generate import Ask

__all__ = ["ChatRequest", "build_app", "run_serve"]

LOOPBACK = ("127.0.0.1", "localhost", "::1")
# Requests that arrive together are answered in one batch: decoding reads every weight once per
# token whatever the batch, so on a CPU eight questions took 0.243-0.271x the time of eight in
# turn (SmolLM2-135M, 64 tokens each, 2-core AMD EPYC, 2026-12-02; BENCHMARKS.md).
MAX_BATCH = 8
BATCH_WAIT_S = 0.05  # how long a request waits for others to join it; answers take seconds


class ChatMessage(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str = Field(min_length=1, max_length=32_000)


class ChatRequest(BaseModel):
    """The subset of OpenAI's chat request that a local model can honour."""

    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    messages: list[ChatMessage] = Field(min_length=1, max_length=64)
    max_tokens: int = Field(128, ge=1, le=1024)
    temperature: float = Field(0.0, ge=0.0, le=0.0, description="Greedy decoding only.")


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

    @api.post("/v1/chat/completions")
    async def chat(self, request: ChatRequest, response: Response) -> dict:
        last = request.messages[-1]
        if last.role != "user":
            raise HTTPException(400, "the last message must have role 'user'")
        system = next((m.content for m in request.messages if m.role == "system"), None)
        done, batch = await self.complete(Ask(last.content, system, request.max_tokens))
        response.headers["x-medtune-batch-size"] = str(batch)  # how many were answered with it
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": request.model or self.model.name,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": done.text},
                    # OpenAI's: "length" when max_tokens cut the answer short.
                    "finish_reason": "stop" if done.stopped else "length",
                }
            ],
            "usage": {
                "prompt_tokens": done.prompt_tokens,
                "completion_tokens": done.completion_tokens,
                "total_tokens": done.prompt_tokens + done.completion_tokens,
            },
        }

    @serve.batch(max_batch_size=MAX_BATCH, batch_wait_timeout_s=BATCH_WAIT_S)
    async def complete(self, asks: list[Ask]) -> list[tuple[Completion, int]]:
        # In a thread: the event loop keeps taking requests, which make the next batch.
        completions = await asyncio.to_thread(self.model.complete_many, asks)
        return [(c, len(asks)) for c in completions]


def build_app(model_dir: Path):
    return ChatDeployment.bind(str(model_dir))


def run_serve(args, console: Console) -> int:
    import ray

    from tune.generate import ExportedModel

    ExportedModel(args.model_dir)  # fail fast, with exit 2, before Ray starts
    if args.host not in LOOPBACK:
        console.print(
            f"[bold red]Warning:[/] serving on {args.host}: Ray's endpoints have no "
            "authentication (CVE-2023-48022, 'ShadowRay'); put an authenticating reverse proxy "
            "in front. See docs/security.md."
        )
    # "local", as the sweep: a bare ray.init() would join whatever `ray start` last started here.
    ray.init(address="local", include_dashboard=False, log_to_driver=False, logging_level="ERROR")
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
