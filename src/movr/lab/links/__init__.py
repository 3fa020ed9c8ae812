"""Links: TCP proxies that carry the WAN delay of the latency matrix, and count what crosses them.

Every cross-region byte in the lab passes a link. A link listens on 127.0.0.1 only, opens one connection to
its target per accepted connection, and forwards each chunk in each direction ``one_way_ms`` after it read
it, keeping byte order (one FIFO per direction: a TCP path, not a packet shuffler). This package is the only
place in the product where waiting stands in for distance (ARCHITECTURE.md, law 1).

Links count, per link: connections (total and current), bytes each way, and *round trips*: request/response
turns, one each time data flows server->client after data has flowed client->server since the last turn, so a
pipelined burst counts once (law 2: count before you time).

Timing precision (target: added error p50 <= 0.3 ms, p99 <= 2 ms at 1,000 round trips/s; see
``movr bench links``): a timerfd armed early by the wake-ups' median lateness, delays counted from the
kernel's receive timestamps (`timing`), sockets driven directly (`proxy`), and ``gc.freeze()`` after start-up
in the links process (`__main__`), whose full collections otherwise pause delivery for milliseconds.

The seams: `spec` (what a link is), `timing` (when a chunk is due), `proxy` (a link and its connections),
`server` (links in an event loop, or on a thread), `api` (the control API's client calls) and `__main__` (the
process the lab runs: ``python -m movr.lab.links``, with the control API behind the lab's token).
"""

from movr.lab.links.api import fetch_counters, fetch_links, post_link, reset_counters
from movr.lab.links.server import LinkServer, LinkThread, run_links_in_thread
from movr.lab.links.spec import LINK_KINDS, LISTEN_HOST, LinkSpec, dump_specs, load_specs
from movr.lab.links.timing import RECEIVE_ANCILLARY_SIZE, enable_receive_timestamps, new_event_loop, receive_age

__all__ = [
    "LINK_KINDS",
    "LISTEN_HOST",
    "RECEIVE_ANCILLARY_SIZE",
    "LinkServer",
    "LinkSpec",
    "LinkThread",
    "dump_specs",
    "enable_receive_timestamps",
    "fetch_counters",
    "fetch_links",
    "load_specs",
    "new_event_loop",
    "post_link",
    "receive_age",
    "reset_counters",
    "run_links_in_thread",
]
