"""The names of the `X-Movr-*` response headers: what a request cost and where it was served (law 2).

The app writes them on every response (movr.web.telemetry) and the benchmarks' client reads them
(movr.bench.client.Figures.from_headers); both take the names from here, so that neither can rename one
alone. This module imports nothing, so either side can import it without pulling in the other.
"""

from __future__ import annotations

REGION = "X-Movr-Region"  # the region of the app server that answered
STATEMENTS = "X-Movr-Statements"  # SQL statements the request sent (law 2: count before you time)
SQL_MS = "X-Movr-Sql-Ms"  # their time, as the app measured it
APP_MS = "X-Movr-App-Ms"  # the app's whole time for the request, SQL included
WAN_ROUND_TRIPS = "X-Movr-Wan-Round-Trips"  # statements that crossed regions
DATA_REGIONS = "X-Movr-Data-Regions"  # comma-separated regions of the servers the statements ran on
CLIENT_CITY = "X-Movr-Client-City"  # where the app believes the client is ("" when it does not know)
CPU_MS = "X-Movr-Cpu-Ms"  # deliberate local work (password hashing): part of a request's physical floor
