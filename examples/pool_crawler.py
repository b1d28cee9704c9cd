"""The Pool: a (fake) crawler fetching pages three at a time, retrying the flaky ones.

The crawl runs in one pool block, a level at a time: `submit` every URL of the level with an
exponential retry policy, `Pool.wait` for every fetch and retry of it, then read the new
``pool.outputs`` and ``pool.errors`` and build the next level from the links found. (Leaving
the block waits the same way: a pool per level would do too.) A page that keeps failing ends
up in ``errors`` with its original exception. Last, `Pool.map` fetches a few pages again as
a stream, in input order.

The fake web answers after a fake network delay, fails some pages a set number of times
(a 503), and one page always (a 404). The program runs on Trio's MockClock
(``autojump_threshold=0``), so the delays and backoffs pass instantly in real time but keep
their exact values; the times printed are seconds since the start.

Run: python -m examples.pool_crawler
"""

from __future__ import annotations

from functools import partial

import trio
import trio.testing

import actors
from actors import Retry, RetryPolicy

SITE: dict[str, list[str]] = {
    "/": ["/docs", "/blog", "/about"],
    "/docs": ["/docs/pool", "/docs/scheduler", "/docs/missing"],
    "/blog": ["/blog/1", "/blog/2"],
    "/about": [],
    "/docs/pool": [],
    "/docs/scheduler": [],
    "/blog/1": [],
    "/blog/2": [],
}
FLAKY = {"/blog": 2, "/docs/scheduler": 1}  # how many times these answer 503 first


class HTTPError(Exception):
    def __init__(self, url: str, status: int) -> None:
        super().__init__(f"{status} for {url}")
        self.status = status


class FakeWeb:
    def __init__(self) -> None:
        self.start = trio.current_time()
        self.failures_left = dict(FLAKY)
        self.running = 0
        self.most_running = 0

    def log(self, message: str) -> None:
        print(f"  t={trio.current_time() - self.start:5.2f}s  {message}")

    async def get(self, url: str) -> list[str]:
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        try:
            await trio.sleep(0.2)  # the network
        finally:
            self.running -= 1
        if url not in SITE:
            self.log(f"GET {url} -> 404")
            raise HTTPError(url, 404)
        if self.failures_left.get(url, 0) > 0:
            self.failures_left[url] -= 1
            self.log(f"GET {url} -> 503, will retry")
            raise HTTPError(url, 503)
        self.log(f"GET {url} -> 200")
        return SITE[url]


async def fetch(web: FakeWeb, url: str) -> tuple[str, list[str]]:
    try:
        return url, await web.get(url)
    except HTTPError as exc:
        if exc.status == 404:
            raise  # no point retrying; with no submit policy this fails at once
        raise Retry(exc, RetryPolicy.exponential(max_attempts=4, initial_delay=0.5)) from exc


async def main() -> None:
    web = FakeWeb()
    seen = {"/"}
    level = ["/"]
    depth = 0
    async with actors.open_pool(limit=3) as pool:
        while level:
            print(f"level {depth}: {level}")
            outputs, errors = len(pool.outputs), len(pool.errors)
            for url in level:
                await pool.submit(fetch, web, url)
            await pool.wait()  # this level's fetches and their retries have all ended
            for error in pool.errors[errors:]:
                print(f"  gave up: {error!r}")
            links = [link for _, page_links in pool.outputs[outputs:] for link in page_links]
            level = [link for link in dict.fromkeys(links) if link not in seen]
            seen.update(level)
            depth += 1
    print(f"crawled {len(seen)} URLs, at most {web.most_running} fetches at once")

    print("map, in input order:")
    async with actors.open_pool(limit=3) as pool:
        async for url, links in pool.map(partial(fetch, web), ["/about", "/docs", "/blog/2"]):
            print(f"  {url}: {len(links)} links")


if __name__ == "__main__":
    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
