"""The data-homing experiments of article 003 (REGIONAL BY ROW), on the lab: `movr bench ycsb | insert | rehome`.

A YCSB ``usertable`` exists on every region's server; each row lives on exactly one of them, its *home*.
One closed-loop client process per region reads, updates or inserts rows; "locality of access" is the
share of operations on rows originally homed in the client's own region. How a client finds a row is what
the variants compare:

- ``computed``: the key carries its region (``us-east1-000123``), so the client sends the operation
  straight to that region's server: one round trip, local or remote (CockroachDB: a computed region
  column, or the article's manually partitioned baseline).
- ``default``: the key says nothing about its home (``user8723...``). Locality-optimized search: the
  operation runs on the local server first; if it found no row, on every other region's server at once,
  and the first that finds the row answers (CockroachDB: a default ``crdb_region`` column).
- ``rehoming``: as ``default``, and an update issued from another region moves the row to the client's
  region in one two-phase commit, so later accesses from this region are local (CockroachDB:
  auto-rehoming, ``ON UPDATE gateway_region()``).

The modules, in the order a run uses them: `options` (the commands' options, validated into `Settings`),
`keys` (key names, layouts and distributions), `tables` (the tables, loading and counting), `clients`
(what a client process does per operation, and its floor: movr.bench.floors.Network.ycsb_floor_us),
`runs` (the lab, the fleet, one measured run; `experiment` declares one), `views` (tables shown alike on
the terminal and in the report, charts, claims); and one module per experiment — `ycsb`, `insert`,
`rehome` — each ending with its `EXPERIMENT`.
"""
