"""The data-homing experiments of article 003 (REGIONAL BY ROW), on the lab: `movr bench ycsb | insert | rehome`.

A YCSB ``usertable`` exists on every region's server; each row lives on one of them, its *home*. One
closed-loop client process per region reads, updates or inserts rows; "locality of access" is the share of
operations on rows originally homed in the client's own region. The variants differ in how a client finds
a row:

- ``computed``: the key carries its region (``us-east1-000123``): one round trip straight to that region's
  server (CockroachDB: a computed region column, or the article's manually partitioned baseline).
- ``default``: the key says nothing of its home (``user8723...``). Locality-optimized search: the local
  server first, then every other region's at once, the first to find the row answers (a default
  ``crdb_region`` column).
- ``rehoming``: as ``default``, and an update from another region moves the row to the client's region in
  one two-phase commit (auto-rehoming, ``ON UPDATE gateway_region()``).

Modules: `options`, `keys` (key names, layouts, distributions), `tables`, `clients` (one operation and its
floor), `runs` (lab, fleet, one measured run), `views`; one per experiment: `ycsb`, `insert`, `rehome`.
"""
