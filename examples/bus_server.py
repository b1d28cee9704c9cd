"""A real Trio server whose requests dispatch jobs to a nursery-scoped Bus.

A tiny HTTP/1.1 service on loopback (`trio.serve_tcp`, no framework):

====================  ======================================================================
POST /jobs/<type>     body: a JSON payload; dispatches one job -> 202 {"dispatch_id", "job_id"}
POST /batches/<type>  body: a JSON list of payloads; one batch -> 202 {"batch_id"}
GET  /batches/<id>    the batch's state -> 200 {...} (404 if unknown)
POST /wait            returns once the bus is idle -> 200 {"handled": n}
====================  ======================================================================

The bus lives exactly as long as the server: both are opened in `serve`, and cancelling it
stops both. Bad requests are refused at the boundary (400), unknown job types with 404.

Run: python -m examples.bus_server   (starts on a free port, sends a few requests, stops)
"""

from __future__ import annotations

import json
from functools import partial
from typing import Any

import attrs
import trio

from actors.bus import Bus, Job, JobContext, NotFound, UnknownJobType, open_bus

MAX_REQUEST = 64 * 1024


@attrs.define
class Request:
    method: str
    path: str
    body: bytes


class BadRequest(Exception):
    pass


async def read_request(stream: trio.SocketStream) -> Request:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = await stream.receive_some(4096)
        if not chunk or len(data) > MAX_REQUEST:
            raise BadRequest("incomplete or oversized request head")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    try:
        method, path, _version = lines[0].split(" ")
    except ValueError:
        raise BadRequest(f"bad request line {lines[0]!r}") from None
    headers = dict(line.lower().split(": ", 1) for line in lines[1:] if ": " in line)
    length = int(headers.get("content-length", "0"))
    if length > MAX_REQUEST:
        raise BadRequest("body too large")
    while len(body) < length:
        chunk = await stream.receive_some(length - len(body))
        if not chunk:
            raise BadRequest("body shorter than content-length")
        body += chunk
    return Request(method, path, body)


async def respond(stream: trio.SocketStream, status: int, payload: Any) -> None:
    reason = {200: "OK", 202: "Accepted", 400: "Bad Request", 404: "Not Found"}[status]
    body = json.dumps(payload).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    await stream.send_all(head.encode() + body)


class App:
    """Routes requests to the bus."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self.handled = 0

    async def route(self, request: Request) -> tuple[int, Any]:
        parts = request.path.strip("/").split("/")
        try:
            body = json.loads(request.body) if request.body else None
        except json.JSONDecodeError as exc:
            return 400, {"error": f"body is not JSON: {exc}"}
        try:
            match request.method, parts:
                case "POST", ["jobs", job_type]:
                    result = await self.bus.dispatch(Job(job_type, body))
                    return 202, {"dispatch_id": result.dispatch_id, "job_id": result.job_id}
                case "POST", ["batches", job_type]:
                    if not isinstance(body, list) or not body:
                        return 400, {"error": "a batch body is a non-empty JSON list"}
                    batch_id = await self.bus.batch(*(Job(job_type, p) for p in body)).dispatch()
                    return 202, {"batch_id": batch_id}
                case "GET", ["batches", batch_id]:
                    state = await self.bus.find_batch(batch_id)
                    return 200, attrs.asdict(state, value_serializer=_json_value)
                case "POST", ["wait"]:
                    await self.bus.wait_idle()
                    return 200, {"handled": self.handled}
        except (UnknownJobType, NotFound) as exc:
            return 404, {"error": str(exc)}
        except (TypeError, ValueError) as exc:
            return 400, {"error": str(exc)}
        return 404, {"error": f"no route for {request.method} {request.path}"}

    async def handle(self, stream: trio.SocketStream) -> None:
        async with stream:
            try:
                try:
                    request = await read_request(stream)
                except BadRequest as exc:
                    await respond(stream, 400, {"error": str(exc)})
                    return
                status, payload = await self.route(request)
                await respond(stream, status, payload)
            except trio.BrokenResourceError:
                pass  # the client went away; the jobs it dispatched still run


def _json_value(instance: Any, field: Any, value: Any) -> Any:
    return value.isoformat() if hasattr(value, "isoformat") else value


async def serve(
    port: int = 0,
    *,
    host: str = "127.0.0.1",
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until cancelled; ``task_status.started(port)`` once listening."""
    async with open_bus(queues={"default": 4}) as bus:
        app = App(bus)

        @bus.handler("thumbs:make")
        async def make_thumbnail(ctx: JobContext) -> None:
            await trio.lowlevel.checkpoint()  # real work would resize ctx.payload["image"]
            app.handled += 1

        @bus.handler("emails:send")
        async def send_email(ctx: JobContext) -> None:
            if "@" not in str(ctx.payload.get("to", "")):
                raise ValueError(f"bad address {ctx.payload.get('to')!r}")
            app.handled += 1

        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(partial(trio.serve_tcp, app.handle, port, host=host))
            task_status.started(listeners[0].socket.getsockname()[1])


async def request(port: int, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    """A minimal HTTP client for the server above: returns (status, JSON body)."""
    data = b"" if body is None else json.dumps(body).encode()
    async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
        await stream.send_all(
            f"{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: {len(data)}\r\n"
            f"Connection: close\r\n\r\n".encode()
            + data
        )
        response = b""
        while chunk := await stream.receive_some(65536):
            response += chunk
    head, _, payload = response.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), json.loads(payload)


async def main() -> None:
    async with trio.open_nursery() as nursery:
        port = await nursery.start(serve, 0)
        print(f"serving on 127.0.0.1:{port}")
        print(await request(port, "POST", "/jobs/emails:send", {"to": "a@b.org"}))
        status, batch = await request(
            port, "POST", "/batches/thumbs:make", [{"image": i} for i in range(5)]
        )
        print(status, "batch accepted")
        print(await request(port, "POST", "/wait"))
        status, state = await request(port, "GET", f"/batches/{batch['batch_id']}")
        print(status, {k: state[k] for k in ("total", "processed", "failed", "completed")})
        print(await request(port, "POST", "/jobs/nope", {}))
        nursery.cancel_scope.cancel()


if __name__ == "__main__":
    trio.run(main)
