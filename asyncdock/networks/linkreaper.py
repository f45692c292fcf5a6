"""Host-side links that the kernel removes by itself, awaited on its link notifications.

Why: deleting a veth ourselves (RTM_DELLINK) blocks the caller about 30 ms in the kernel (RCU
grace periods while the device unregisters), per link, serialised on RTNL: at a container's
exit that was the largest part of the network's cost. A veth, though, dies with its peer, and
the peer dies with the container's netns as soon as the netns is unpinned and its processes are
gone; the kernel then deletes the links of every namespace dying at that moment in one batch, on
its own worker. So the stop path unpins and moves on; this reaper watches RTNLGRP_LINK (a
netlink socket read on the event loop: no thread) for the RTM_DELLINK of each link it was told
to expect. Whoever needs the links really gone (`network rm`, an address to hand out again,
shutdown) awaits `settle`. A link that is not gone after `grace` seconds (its netns kept alive
by something else, e.g. a container sharing it) is deleted explicitly by its `fallback`.
"""
from __future__ import annotations

import asyncio
import errno
import logging
import socket
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from ..util.tasks import TaskSet
from .netlink import RTM_DELLINK, RTNLGRP_LINK, Netlink, NetlinkError, parse_link_event

log = logging.getLogger(__name__)

_RCVBUF = 4 << 20
_SO_RCVBUFFORCE = 33  # asm-generic/socket.h; not exported by Python's socket module


@dataclass(eq=False)
class _Dying:
    index: int
    name: str
    key: str
    fallback: Callable[[], None]  # blocking: deletes the link now (runs in a worker thread)
    on_gone: Callable[[], None]   # on the loop, once the link is gone
    done: asyncio.Future[None]
    timer: asyncio.TimerHandle | None = None
    expiring: bool = False


class LinkReaper:
    def __init__(self, grace: float = 5.0) -> None:
        self.grace = grace
        self._nl: Netlink | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._dying: dict[int, _Dying] = {}  # ifindex -> entry
        self._tasks = TaskSet("link reaper")  # explicit deletes and resyncs

    def start(self) -> None:
        """Subscribe to link notifications (before anything is expected: none is missed)."""
        self._loop = asyncio.get_running_loop()
        try:
            nl = Netlink()
        except OSError as e:
            log.warning("no netlink link notifications (%s): links will be deleted one by one", e)
            return
        try:
            nl.subscribe(RTNLGRP_LINK)
            try:
                # every container start and stop makes a few notifications: room for bursts
                nl.sock.setsockopt(socket.SOL_SOCKET, _SO_RCVBUFFORCE, _RCVBUF)  # beyond rmem_max: we are root
            except OSError:
                pass
            nl.sock.setblocking(False)
            self._loop.add_reader(nl.fileno(), self._readable)
        except BaseException:
            nl.close()
            raise
        self._nl = nl

    @property
    def watching(self) -> bool:
        """Started, and told of link deletions (else links are to be deleted one by one)."""
        return self._nl is not None

    def expect(self, index: int, name: str, key: str, fallback: Callable[[], None],
               on_gone: Callable[[], None]) -> None:
        """Link `index` (called `name`) is going away by itself: call on_gone when it has."""
        assert self._loop is not None, "LinkReaper.start() first"
        entry = _Dying(index, name, key, fallback, on_gone, self._loop.create_future())
        if self._nl is None or index <= 0 or index in self._dying:
            self._expire(entry)  # nobody would tell us: delete it now
            return
        self._dying[index] = entry
        entry.timer = self._loop.call_later(self.grace, self._expire, entry)

    def pending(self, key: str | None = None) -> bool:
        return any(key is None or e.key == key for e in self._dying.values())

    async def settle(self, key: str | None = None, timeout: float | None = None) -> None:
        """Wait until the expected links (of `key`, or all) are gone; those still there after
        `timeout` (default: what is left of their grace) are deleted explicitly."""
        entries = [e for e in self._dying.values() if key is None or e.key == key]
        if not entries:
            return
        if timeout is not None:
            _, late = await asyncio.wait([e.done for e in entries], timeout=timeout)
            for e in entries:
                if e.done in late:
                    self._expire(e)
        await asyncio.gather(*(asyncio.shield(e.done) for e in entries), return_exceptions=True)

    async def close(self) -> None:
        await self.settle(timeout=0)
        if self._nl is not None:
            assert self._loop is not None
            self._loop.remove_reader(self._nl.fileno())
            self._nl.close()
            self._nl = None
        await self._tasks.close(timeout=None)  # the deletes run to their end

    # ------------------------------------------------------------------ internals
    def _readable(self) -> None:
        assert self._nl is not None
        while True:
            try:
                data = self._nl.sock.recv(1 << 16)
            except BlockingIOError:
                return
            except OSError as e:
                if e.errno == errno.ENOBUFS:
                    # notifications were dropped: ask the kernel which expected links remain
                    self._spawn(self._resync(), "resync")
                    continue
                log.warning("reading link notifications: %s", e)
                return
            for mtype, lk in parse_link_event(data):
                if mtype == RTM_DELLINK:
                    entry = self._dying.get(lk.index)
                    if entry is not None and (not lk.name or lk.name == entry.name):
                        self._finish(entry)

    async def _resync(self) -> None:
        def present() -> set[int]:
            with Netlink() as nl:
                return {lk.index for lk in nl.links()}

        try:
            alive = await asyncio.to_thread(present)
        except (OSError, NetlinkError) as e:
            log.warning("listing links: %s", e)
            return
        for entry in list(self._dying.values()):
            if entry.index not in alive:
                self._finish(entry)

    def _expire(self, entry: _Dying) -> None:
        if entry.expiring or entry.done.done():
            return
        entry.expiring = True
        self._spawn(self._delete(entry), f"delete of link {entry.name}")

    async def _delete(self, entry: _Dying) -> None:
        try:
            await asyncio.to_thread(entry.fallback)
        except Exception as e:
            log.warning("deleting link %s: %s", entry.name, e)
        self._finish(entry)

    def _finish(self, entry: _Dying) -> None:
        if entry.done.done():
            return
        if self._dying.get(entry.index) is entry:
            del self._dying[entry.index]
        if entry.timer is not None:
            entry.timer.cancel()
        try:
            entry.on_gone()
        finally:
            entry.done.set_result(None)

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        self._tasks.spawn(coro, name=name)
