"""A small OpenAI-compatible chat server for tests: a real transformers model behind real HTTP.

``ChatServer(model_dir).start()`` serves ``POST /v1/chat/completions`` (greedy decoding, ``max_tokens``,
``logprobs``/``top_logprobs`` in OpenAI's format) and ``GET /v1/models`` on 127.0.0.1 at a free port, from
a thread. It can demand an API key, answer 503 to the first N requests (to exercise retries), and counts
the completions it served. ``stop()`` closes the port, so a later request finds nothing listening.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


class ChatServer:
    def __init__(self, model_dir: str | Path, *, served_name: str = "judge", api_key: str | None = None):
        from mipo.engine.generation import stop_token_ids
        from mipo.engine.models import load_model

        self.model, self.tokenizer = load_model(str(model_dir), device="cpu")
        self.stops = set(stop_token_ids(self.model, self.tokenizer))
        self.served_name, self.api_key = served_name, api_key
        self.fail_next = 0  # answer 503 to this many requests first
        self.refuse_logprobs = False  # answer 400 to requests asking for logprobs, as some servers do
        self.completions = 0  # requests answered with a completion
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    def start(self) -> str:
        """Start serving; returns the base URL (``http://127.0.0.1:PORT/v1``)."""
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep test output quiet
                pass

            def do_GET(self) -> None:
                if self.path.rstrip("/") == "/v1/models":
                    self._send(
                        200, {"object": "list", "data": [{"id": owner.served_name, "object": "model"}]}
                    )
                else:
                    self._send(404, {"error": {"message": f"no route {self.path}"}})

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                status, payload = owner.answer(self.path, self.headers.get("Authorization"), body)
                self._send(status, payload)

            def _send(self, status: int, payload: dict[str, Any]) -> None:
                blob = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(blob)))
                self.end_headers()
                self.wfile.write(blob)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def answer(
        self, path: str, authorization: str | None, body: dict[str, Any]
    ) -> tuple[int, dict[str, Any]]:
        if path.rstrip("/") != "/v1/chat/completions":
            return 404, {"error": {"message": f"no route {path}"}}
        if self.api_key is not None and authorization != f"Bearer {self.api_key}":
            return 401, {"error": {"message": "invalid api key", "type": "invalid_request_error"}}
        if body.get("model") != self.served_name:
            return 404, {"error": {"message": f"model {body.get('model')!r} not found"}}
        if body.get("logprobs") and self.refuse_logprobs:
            return 400, {"error": {"message": "logprobs are not supported", "type": "invalid_request_error"}}
        with self._lock:
            if self.fail_next > 0:
                self.fail_next -= 1
                return 503, {"error": {"message": "server busy"}}
        top = int(body.get("top_logprobs") or 0) if body.get("logprobs") else 0
        with self._lock:  # one forward pass at a time through the shared model
            content, tokens, finish = self._generate(body["messages"], int(body.get("max_tokens") or 64), top)
            self.completions += 1
        choice = {
            "index": 0,
            "message": {"role": "assistant", "content": content},
            "logprobs": {"content": tokens} if body.get("logprobs") else None,
            "finish_reason": finish,
        }
        return 200, {
            "id": f"chatcmpl-{self.completions}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.served_name,
            "choices": [choice],
            "usage": {"prompt_tokens": 0, "completion_tokens": len(tokens), "total_tokens": len(tokens)},
        }

    def _entry(self, token_id: int, logprob: float) -> dict[str, Any]:
        text = self.tokenizer.decode([token_id])
        return {"token": text, "logprob": logprob, "bytes": list(text.encode())}

    def _generate(
        self, messages: list[dict[str, str]], max_tokens: int, top: int
    ) -> tuple[str, list[dict[str, Any]], str]:
        """Greedy decoding, one full forward pass per token (the model is tiny)."""
        import torch

        text = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        ids = self.tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
        new, tokens, finish = [], [], "length"
        with torch.inference_mode():
            for _ in range(max_tokens):
                logprobs = torch.log_softmax(self.model(input_ids=ids).logits[0, -1].float(), dim=-1)
                next_id = int(logprobs.argmax())
                if next_id in self.stops:
                    finish = "stop"
                    break
                entry = self._entry(next_id, float(logprobs[next_id]))
                values, indices = (
                    logprobs.topk(top) if top else (torch.empty(0), torch.empty(0, dtype=torch.long))
                )
                entry["top_logprobs"] = [self._entry(int(i), float(v)) for v, i in zip(values, indices)]
                tokens.append(entry)
                new.append(next_id)
                ids = torch.cat([ids, torch.tensor([[next_id]])], dim=1)
        return self.tokenizer.decode(new, skip_special_tokens=True), tokens, finish
