"""`medtune serve`: Ray Serve on 127.0.0.1 with an OpenAI-compatible chat endpoint."""

import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request

import pytest

from tests.tune.conftest import MEDTUNE

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _request(url, body=None, raw=None):
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(url, data=data, headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


@pytest.fixture(scope="module")
def server(sweep):
    out, _ = sweep
    port = _free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(
        [MEDTUNE, "serve", str(out / "export"), "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 180
    while time.time() < deadline:
        try:
            if _request(f"{base}/healthz")[0] == 200:
                break
        except (urllib.error.URLError, ConnectionError, json.JSONDecodeError):
            pass
        if proc.poll() is not None:
            pytest.fail(f"medtune serve exited: {proc.stdout.read()[-3000:]}")
        time.sleep(1)
    else:
        proc.kill()
        pytest.fail("medtune serve did not answer /healthz within 180 s")
    yield base
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()


def test_healthz(server):
    status, body = _request(f"{server}/healthz")
    assert status == 200 and body["status"] == "ok"


def test_models_lists_the_served_model_as_openai_clients_ask(server, sweep):
    status, body = _request(f"{server}/v1/models")
    assert status == 200
    assert body == {
        "object": "list",
        "data": [
            {"id": sweep[0].joinpath("export").name, "object": "model", "owned_by": "medtune"}
        ],
    }


def test_chat_completion(server, sweep):
    """The answer `medtune generate` gives, with OpenAI's usage and finish_reason."""
    from tune.generate import ExportedModel

    status, body = _request(
        f"{server}/v1/chat/completions",
        {"messages": [{"role": "user", "content": "What is asthma?"}], "max_tokens": 8},
    )
    assert status == 200, body
    assert body["object"] == "chat.completion"
    (choice,) = body["choices"]
    expected = ExportedModel(sweep[0] / "export").complete("What is asthma?", max_new_tokens=8)
    assert choice["message"] == {"role": "assistant", "content": expected.text}
    assert choice["finish_reason"] == ("stop" if expected.stopped else "length")
    assert body["usage"] == {
        "prompt_tokens": expected.prompt_tokens,
        "completion_tokens": expected.completion_tokens,
        "total_tokens": expected.prompt_tokens + expected.completion_tokens,
    }
    assert 0 < expected.prompt_tokens and expected.completion_tokens <= 8


def test_questions_asked_together_are_answered_in_one_batch(server, sweep):
    """Six clients at once: answered in fewer batches than requests (the response header says
    how many shared each), each exactly as alone: its own prompt's tokens, its own
    max_tokens, its own system message."""
    from concurrent.futures import ThreadPoolExecutor

    from tune.generate import ExportedModel

    asks = [
        (f"What is the usual treatment for condition number {i}?" + " Explain." * i, 4 + 3 * i)
        for i in range(6)
    ]

    def ask(question_and_limit):
        question, limit = question_and_limit
        messages = [{"role": "user", "content": question}]
        if limit % 2:
            messages.insert(0, {"role": "system", "content": "Answer in one sentence."})
        body = json.dumps({"messages": messages, "max_tokens": limit}).encode()
        req = urllib.request.Request(
            f"{server}/v1/chat/completions", data=body, headers={"content-type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=120) as r:
            return int(r.headers["x-medtune-batch-size"]), json.loads(r.read())

    with ThreadPoolExecutor(len(asks)) as pool:
        answered = list(pool.map(ask, asks))
    assert max(batch for batch, _ in answered) > 1, answered
    model = ExportedModel(sweep[0] / "export")
    for (question, limit), (_, body) in zip(asks, answered, strict=True):
        system = "Answer in one sentence." if limit % 2 else None
        alone = model.complete(question, system=system, max_new_tokens=limit)
        assert body["choices"][0]["message"]["content"] == alone.text
        assert body["usage"]["prompt_tokens"] == alone.prompt_tokens
        assert body["usage"]["completion_tokens"] == alone.completion_tokens <= limit


def test_a_conversation_is_answered_after_its_earlier_turns(server, sweep):
    """The last user message, asked after the messages before it; every system message is
    the system prompt."""
    from tune.generate import ExportedModel

    history = (
        {"role": "user", "content": "What is gout?"},
        {"role": "assistant", "content": "A form of arthritis."},
    )
    messages = [
        {"role": "system", "content": "Be brief."},
        *history,
        {"role": "system", "content": "Name one drug."},
        {"role": "user", "content": "How is it treated?"},
    ]
    status, body = _request(
        f"{server}/v1/chat/completions", {"messages": messages, "max_tokens": 6}
    )
    assert status == 200, body
    model = ExportedModel(sweep[0] / "export")
    system = "Be brief.\n\nName one drug."
    expected = model.complete(
        "How is it treated?", system=system, max_new_tokens=6, history=history
    )
    alone = model.complete("How is it treated?", system=system, max_new_tokens=6)
    assert body["choices"][0]["message"]["content"] == expected.text
    assert body["usage"]["prompt_tokens"] == expected.prompt_tokens > alone.prompt_tokens


def _stream(url, body):
    req = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"content-type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=60) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        text = r.read().decode()
    events = [line.removeprefix("data: ") for line in text.split("\n\n") if line]
    assert all(line.startswith("data: ") for line in text.split("\n\n") if line)
    assert events[-1] == "[DONE]"
    return [json.loads(e) for e in events[:-1]]


def test_a_streamed_answer_is_openais_server_sent_chunks(server, sweep):
    """The answer comes as it is generated: a chunk for each token that adds text, the same
    pieces `ExportedModel.complete_many(on_step=)` sees grow, then the finish_reason."""
    from tune.generate import Ask, ExportedModel

    grown = []
    expected = ExportedModel(sweep[0] / "export").complete_many(
        [Ask("What is acne?", max_new_tokens=5)],
        on_step=lambda _, partials: grown.append(partials[0].text),
    )[0]
    pieces = [text for before, text in zip([""] + grown, grown, strict=False) if text != before]
    assert len(pieces) > 1  # else the test would not tell a stream from one chunk
    body = {"messages": [{"role": "user", "content": "What is acne?"}], "max_tokens": 5}
    chunks = _stream(f"{server}/v1/chat/completions", {**body, "stream": True})
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert len({c["id"] for c in chunks}) == 1
    role, *answer, end = (c["choices"][0] for c in chunks)
    assert role["delta"] == {"role": "assistant", "content": ""}
    deltas = [c["delta"]["content"] for c in answer]
    assert [c["finish_reason"] for c in answer] == [None] * len(answer)
    assert ["".join(deltas[: n + 1]) for n in range(len(deltas))] == pieces
    assert pieces[-1] == expected.text
    assert end == {
        "index": 0,
        "delta": {},
        "finish_reason": "stop" if expected.stopped else "length",
    }
    assert all("usage" not in c for c in chunks)

    options = {**body, "stream": True, "stream_options": {"include_usage": True}}
    *answer, last = _stream(f"{server}/v1/chat/completions", options)
    assert all(c["usage"] is None for c in answer)
    assert last["choices"] == [] and last["usage"] == {
        "prompt_tokens": expected.prompt_tokens,
        "completion_tokens": expected.completion_tokens,
        "total_tokens": expected.prompt_tokens + expected.completion_tokens,
    }


def test_an_answer_ends_before_a_stop_string(server, sweep):
    """OpenAI's `stop` (a string or up to 4): the answer is cut before the first that
    appears and ends there, `finish_reason` "stop", streamed or not."""
    from tune.generate import Ask, ExportedModel

    model = ExportedModel(sweep[0] / "export")
    free = model.complete("What is acne?", max_new_tokens=8)
    stop = free.text[len(free.text) // 2 :][:2]  # from the answer's second half
    assert stop.strip(), free
    expected = model.complete_many([Ask("What is acne?", max_new_tokens=8, stop=(stop,))])[0]
    assert expected.stopped and expected.completion_tokens < free.completion_tokens
    assert expected.text == free.text[: free.text.find(stop)].strip()
    body = {"messages": [{"role": "user", "content": "What is acne?"}], "max_tokens": 8}
    for given in (stop, [stop, "never in any answer"]):
        status, answer = _request(f"{server}/v1/chat/completions", {**body, "stop": given})
        assert status == 200, answer
        (choice,) = answer["choices"]
        assert choice["message"]["content"] == expected.text
        assert choice["finish_reason"] == "stop"
        assert answer["usage"]["completion_tokens"] == expected.completion_tokens
    chunks = _stream(f"{server}/v1/chat/completions", {**body, "stop": stop, "stream": True})
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == expected.text
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


def test_a_conversation_longer_than_the_model_reads_gets_a_400(server, sweep):
    from tune.generate import Ask, ExportedModel

    model = ExportedModel(sweep[0] / "export")
    question = "Why? " * 360
    tokens = model.prompt_tokens(Ask(question))
    limit = model.context_length
    assert tokens < limit < tokens + 1024  # fits alone, not with the longest answer
    body = {"messages": [{"role": "user", "content": question}], "max_tokens": 1024}
    got, answer = _request(f"{server}/v1/chat/completions", body)
    assert got == 400, answer
    assert answer["detail"] == (
        f"the conversation: its prompt is {tokens} tokens and the answer may take 1024; "
        f"{model.name} reads at most {limit}; send fewer or shorter messages, or a lower "
        "max_tokens"
    )


@pytest.mark.parametrize(
    ("payload", "status"),
    [
        ({"messages": []}, 422),
        ({"prompt": "What is asthma?"}, 422),
        ({"messages": [{"role": "doctor", "content": "hi"}]}, 422),
        ({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 0}, 422),
        ({"messages": [{"role": "user", "content": "hi"}], "temperature": 0.7}, 422),
        ({"messages": [{"role": "user", "content": "hi"}], "stop": ["a", "b", "c", "d", "e"]}, 422),
        ({"messages": [{"role": "user", "content": "hi"}], "stop": [""]}, 422),
        ({"messages": [{"role": "user", "content": "hi"}], "n": 2}, 422),
        ({"messages": [{"role": "user", "content": "hi"}], "logprobs": True}, 422),
        ({"messages": [{"role": "user", "content": "hi"}], "presence_penalty": 0.5}, 422),
        ({"messages": [{"role": "user", "content": "hi"}], "tools": [{"type": "function"}]}, 422),
        (
            {"messages": [{"role": "user", "content": "hi"}], "response_format": {"type": "json"}},
            422,
        ),
        (
            {
                "messages": [{"role": "user", "content": "hi"}],
                "max_tokens": 2,
                "max_completion_tokens": 3,
            },
            422,
        ),
        ({"messages": [{"role": "assistant", "content": "hi"}]}, 400),
    ],
)
def test_malformed_requests_get_a_4xx(server, payload, status):
    got, body = _request(f"{server}/v1/chat/completions", payload)
    assert got == status, body
    assert "detail" in body


def test_a_sampling_temperature_is_refused_with_the_reason(server):
    body = {"messages": [{"role": "user", "content": "hi"}], "temperature": 0.7}
    got, answer = _request(f"{server}/v1/chat/completions", body)
    assert got == 422
    (error,) = answer["detail"]
    assert error["loc"] == ["body", "temperature"]
    assert "decodes greedily" in error["msg"] and "temperature 0" in error["msg"]
    body["temperature"] = 0
    assert _request(f"{server}/v1/chat/completions", {**body, "max_tokens": 2})[0] == 200


def test_what_openai_clients_send_is_honoured_or_refused_with_the_reason(server, sweep):
    """`max_completion_tokens` (OpenAI's newer name) is the answer's budget; fields asking
    for what this server cannot do are a 422 naming them (before, they were ignored and the
    answer silently lacked them); their neutral values, and fields that change nothing about
    a greedy answer, pass."""
    from tune.generate import ExportedModel

    expected = ExportedModel(sweep[0] / "export").complete("What is gout?", max_new_tokens=3)
    neutral = {
        "messages": [{"role": "user", "content": "What is gout?"}],
        "max_completion_tokens": 3,
        "n": 1,
        "logprobs": False,
        "frequency_penalty": 0,
        "presence_penalty": 0.0,
        "logit_bias": {},
        "tools": [],
        "response_format": {"type": "text"},
        "seed": 7,
        "user": "someone",
        "top_p": 0.9,
    }
    status, body = _request(f"{server}/v1/chat/completions", neutral)
    assert status == 200, body
    assert body["choices"][0]["message"]["content"] == expected.text
    assert body["usage"]["completion_tokens"] == expected.completion_tokens <= 3
    got, refused = _request(f"{server}/v1/chat/completions", {**neutral, "n": 2})
    assert got == 422
    (error,) = refused["detail"]
    assert error["loc"] == ["body", "n"]
    assert "one answer per request" in error["msg"] and "send 1 or none" in error["msg"]


def test_content_parts_and_developer_messages_read_as_openai_sends_them(server):
    """Newer OpenAI clients send a message's content as a list of parts and the system
    message as role "developer": answered as the same request in the plain form. A part
    that is not text (an image) is a 422 saying this model reads text only."""
    url = f"{server}/v1/chat/completions"
    plain = {
        "messages": [
            {"role": "system", "content": "Answer in one sentence."},
            {"role": "user", "content": "What is gout?"},
        ],
        "max_tokens": 4,
    }
    parts = {
        "messages": [
            {"role": "developer", "content": [{"type": "text", "text": "Answer in one sentence."}]},
            {"role": "user", "content": [{"type": "text", "text": "What is gout?"}]},
        ],
        "max_tokens": 4,
    }
    (status, expected), (got, answer) = _request(url, plain), _request(url, parts)
    assert status == got == 200, answer
    assert answer["choices"] == expected["choices"] and answer["usage"] == expected["usage"]
    image = {"type": "image_url", "image_url": {"url": "https://example.org/x.png"}}
    status, refused = _request(url, {"messages": [{"role": "user", "content": [image]}]})
    assert status == 422
    (error,) = refused["detail"]
    assert error["loc"] == ["body", "messages", 0, "content"]
    assert "type 'image_url'; this model reads text only" in error["msg"]


def test_invalid_json_gets_a_4xx(server):
    got, _ = _request(f"{server}/v1/chat/completions", raw=b"{not json")
    assert 400 <= got < 500
