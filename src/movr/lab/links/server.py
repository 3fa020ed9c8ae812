"""A set of links in one event loop (`LinkServer`), and the same on a background thread (`LinkThread`:
tests and in-process benchmarks), with their run-time changes: delay, down, target."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import threading
from collections.abc import Callable, Iterable
from typing import Any

from movr.lab.links.proxy import Link, Pipe
from movr.lab.links.spec import LISTEN_HOST, LinkSpec
from movr.lab.links.timing import Scheduler, new_event_loop


class LinkServer:
    """Runs a set of links in the current event loop.

    Counters, per link: ``connections_total``, ``connections_current``, ``connect_errors``,
    ``bytes_c2s`` (client->server, i.e. towards the target), ``bytes_s2c``, ``round_trips``.
    """

    def __init__(self, specs: Iterable[LinkSpec], *, precise_timer: bool = True) -> None:
        self._specs = list(specs)
        names = [s.name for s in self._specs]
        if len(set(names)) != len(names):
            raise ValueError("duplicate link names")
        self._precise_timer = precise_timer
        self._links: dict[str, Link] = {}
        self._scheduler: Scheduler | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._scheduler = Scheduler(self._loop, precise=self._precise_timer)
        try:
            for spec in self._specs:
                link = Link(spec, self._scheduler)
                self._links[spec.name] = link
                self._listen(link)
                if spec.listen_port == 0:
                    assert link.listener is not None
                    link.spec = dataclasses.replace(spec, listen_port=link.listener.getsockname()[1])
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        """Close every listener and every connection."""
        for link in self._links.values():
            self._close_listener(link)
            self._drop_connections(link)
        await asyncio.sleep(0)  # let cancelled connection attempts finish
        if self._scheduler is not None:
            self._scheduler.close()
            self._scheduler = None

    @property
    def precise_timer(self) -> bool:
        return self._scheduler is not None and self._scheduler.precise

    def names(self) -> list[str]:
        return list(self._links)

    def spec(self, name: str) -> LinkSpec:
        """The link's spec, with the port actually bound (differs from the input when it asked for 0)."""
        return self._link(name).spec

    def port(self, name: str) -> int:
        return self._link(name).spec.listen_port

    def counters(self) -> dict[str, dict[str, int]]:
        return {name: link.counters() for name, link in self._links.items()}

    def describe(self) -> list[dict[str, Any]]:
        """Every link: its spec (current delay), whether it is down, and its counters."""
        return [link.describe() for link in self._links.values()]

    def reset_counters(self) -> None:
        for link in self._links.values():
            link.reset()

    def set_delay(self, name: str, one_way_ms: float) -> None:
        """Change the one-way delay; bytes already in flight keep the delay they were read with."""
        if one_way_ms < 0:
            raise ValueError("one_way_ms must be >= 0")
        self._link(name).delay_s = one_way_ms / 1000.0

    def set_target(self, name: str, target_port: int, *, dst: str | None = None, kind: str | None = None) -> None:
        """Point the link at another server (failover re-routing); its name and listening port stay.

        Connections it carries go to the old target, so they are dropped (a reset), as a client of a
        failed-over database would see; new connections reach the new target. ``dst``/``kind`` describe the
        new far end (the caller sets the delay that goes with it through ``set_delay``).
        """
        if not 0 < int(target_port) < 65536:
            raise ValueError("target_port must be a TCP port")
        link = self._link(name)
        changes: dict[str, Any] = {"target_port": int(target_port)}
        if dst is not None:
            changes["dst"] = str(dst)
        if kind is not None:
            changes["kind"] = kind
        link.spec = dataclasses.replace(link.spec, **changes)  # validates kind
        self._drop_connections(link)

    def set_down(self, name: str, down: bool) -> None:
        """A down link refuses new connections (its port is closed) and drops the ones it carries."""
        link = self._link(name)
        if down == link.down:
            return
        if down:
            link.down = True
            self._close_listener(link)
            self._drop_connections(link)
        else:
            self._listen(link)  # raises OSError if the port was taken meanwhile; the link stays down
            link.down = False

    def _link(self, name: str) -> Link:
        try:
            return self._links[name]
        except KeyError:
            raise KeyError(f"no link named {name!r}") from None

    def _listen(self, link: Link) -> None:
        spec = link.spec
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            # Reuse: set_down(False) must re-listen on the port while old connections sit in TIME_WAIT.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((LISTEN_HOST, spec.listen_port))
            sock.listen(512)
        except OSError as exc:
            sock.close()
            message = f"link {spec.name!r}: cannot listen on {LISTEN_HOST}:{spec.listen_port}: {exc}"
            raise OSError(exc.errno, message) from exc
        sock.setblocking(False)
        link.listener = sock
        assert self._loop is not None
        self._loop.add_reader(sock, self._accept, link)

    def _accept(self, link: Link) -> None:
        listener = link.listener
        assert self._loop is not None
        for _ in range(64):  # bounded, so a connection storm cannot starve delivery
            if listener is None:
                return
            try:
                client, _ = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return  # e.g. the peer reset before we accepted; nothing to carry
            Pipe(link, self._loop, client)

    def _close_listener(self, link: Link) -> None:
        if link.listener is not None:
            assert self._loop is not None
            self._loop.remove_reader(link.listener)
            link.listener.close()  # closed port: new connections are refused, as for a down path
            link.listener = None

    @staticmethod
    def _drop_connections(link: Link) -> None:
        for pipe in list(link.pipes):
            pipe.abort()


# --- a link server on a background thread (tests, in-process benches) ------------------------------------


class LinkThread:
    """A LinkServer on its own thread and event loop; every method is safe to call from other threads."""

    def __init__(self, specs: Iterable[LinkSpec], *, precise_timer: bool = True) -> None:
        self._loop = new_event_loop()
        self.server = LinkServer(specs, precise_timer=precise_timer)
        self._started = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="movr-links", daemon=True)
        self._thread.start()
        self._started.wait()
        if self._error is not None:
            self._thread.join()
            raise self._error

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self.server.start())
        except BaseException as exc:
            self._error = exc
            self._started.set()
            self._loop.close()
            return
        self._started.set()
        try:
            self._loop.run_forever()
        finally:
            self._loop.run_until_complete(self.server.stop())
            self._loop.close()

    def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        async def run() -> Any:
            return fn(*args)

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(timeout=10)

    def counters(self) -> dict[str, dict[str, int]]:
        return self._call(self.server.counters)

    def describe(self) -> list[dict[str, Any]]:
        return self._call(self.server.describe)

    def port(self, name: str) -> int:
        return self._call(self.server.port, name)

    def set_delay(self, name: str, one_way_ms: float) -> None:
        self._call(self.server.set_delay, name, one_way_ms)

    def set_down(self, name: str, down: bool) -> None:
        self._call(self.server.set_down, name, down)

    def set_target(self, name: str, target_port: int, *, dst: str | None = None, kind: str | None = None) -> None:
        self._call(lambda: self.server.set_target(name, target_port, dst=dst, kind=kind))

    def reset_counters(self) -> None:
        self._call(self.server.reset_counters)

    def close(self) -> None:
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)

    def __enter__(self) -> LinkThread:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def run_links_in_thread(specs: Iterable[LinkSpec], *, precise_timer: bool = True) -> LinkThread:
    """Start links on a background thread; returns a handle with counters/set_delay/set_down/close."""
    return LinkThread(specs, precise_timer=precise_timer)
