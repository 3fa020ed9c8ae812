"""Every statement names its home (issue 11, item 3): how CockroachDB can serve each action in one region.

On CockroachDB the rows of `users`, `vehicles` and `rides` are homed by a region computed from `city`
(REGIONAL BY ROW AS region). A statement that constrains `city` by equality therefore reads and writes
one region, the one the gateway in the city's region serves locally. The only other way to stay local
is a lookup on a unique key, which CockroachDB serves by locality-optimized search (the local region
first, the others only if the key is not there): log-in by username, which is why `username` must stay
unique. Anything else is a scan of every region, which this test refuses.

Each action's Work is captured by a backend that records it (the SQL's shape is what is tested, so no
server is needed), parsed with PostgreSQL's own parser (pglast), and every access to a REGIONAL BY ROW
table in it is classified; so is every SQL text written in the actions package (movr.store.actions, a
module per thing acted on). docs/cockroachdb.md lists the same classification per action.
"""

from __future__ import annotations

import ast as pyast
import datetime as dt
import importlib
import inspect
import pkgutil
import re
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pglast
import pytest
from pglast import ast
from sqlalchemy import UniqueConstraint

from movr.domain.models import GLOBAL_TABLES, REGIONAL_TABLES, Base
from movr.geo import load_preset
from movr.store import actions
from movr.store.backend import Backend
from movr.store.work import Home, Rows, Statement, Work

DOCS = Path(__file__).resolve().parents[2] / "docs" / "cockroachdb.md"
DOCS_SECTION = "## How CockroachDB serves each action"
CITY = "rome"
ID = uuid.UUID("00000000-0000-4000-8000-000000000001")
SESSION = actions.Session(CITY, ID, 1, 1)

# One call per action; a new action without a line here fails test_every_action_is_checked.
CALLS: dict[str, dict[str, Any]] = {
    "register": {"city": CITY, "username": "ada", "password": "correct horse battery", "password_hash": "x"},
    "authenticate": {"username": "ada", "password": "correct horse battery"},
    "end_session": {"session": SESSION, "lifetime_s": 3600},
    "end_all_sessions": {"session": SESSION},
    "get_user": {"city": CITY, "user_id": ID},
    "list_users": {"city": CITY},
    "remove_user": {"city": CITY, "user_id": ID, "username": "ada"},
    "list_vehicles": {"city": CITY},
    "list_user_vehicles": {"city": CITY, "owner_id": ID},
    "add_vehicle": {"city": CITY, "owner_id": ID, "type": "bike"},
    "remove_vehicle": {"city": CITY, "vehicle_id": ID, "owner_id": ID},
    "start_ride": {"city": CITY, "rider_id": ID, "rider_city": CITY, "vehicle_id": ID},
    "end_ride": {"city": CITY, "ride_id": ID, "rider_id": ID},
    "list_rides": {"city": CITY, "rider_id": ID},
    "list_promo_codes": {},
    "create_promo_code": {
        "code": "spring",
        "description": "",
        "discount_percent": 10,
        "expires_at": dt.datetime(2100, 1, 1, tzinfo=dt.UTC),
    },
    "apply_promo_code": {"city": CITY, "ride_id": ID, "rider_id": ID, "code": "spring"},
}

ONE_REGION = "one region"
ONE_REGION_UNIQUE = "one region; username checked in every region"
SEARCH = "locality-optimized search"
GLOBAL_READ = "local (GLOBAL)"
GLOBAL_WRITE = "every region (GLOBAL write)"
EVERY_REGION = "every region (scan)"


# --- capturing the Work --------------------------------------------------------------------------------


class Captured(Exception):
    """Stops the action once its Work is recorded: what happens with the rows is not under test here."""


class Recorder(Backend):
    name = "recorder"

    def __init__(self) -> None:
        preset = load_preset("gcp-3")
        super().__init__(preset, preset.primary_region)
        self.works: list[Work] = []

    def run(self, work: Work) -> list[Rows]:
        self.works.append(work)
        raise Captured

    def load(self, table: str, rows: Sequence[dict], progress: Callable[[int], None] | None = None) -> None:
        raise NotImplementedError

    def truncate(self) -> None:
        raise NotImplementedError


def action_modules() -> list[ModuleType]:
    """The modules of the actions package, its shared (private) ones included."""
    return [
        importlib.import_module(f"{actions.__name__}.{info.name}") for info in pkgutil.iter_modules(actions.__path__)
    ]


def public_actions() -> set[str]:
    """The public functions defined in the package's service modules: each must be exported by the package."""
    found = {
        name
        for module in action_modules()
        if not module.__name__.rpartition(".")[2].startswith("_")
        for name, fn in vars(module).items()
        if inspect.isfunction(fn) and fn.__module__ == module.__name__ and not name.startswith("_")
    }
    assert all(getattr(actions, name, None) is not None for name in found), "an action the package does not export"
    return found


def captured(name: str) -> Work:
    store = Recorder()
    with pytest.raises(Captured):
        getattr(actions, name)(store, **CALLS[name])
    (work,) = store.works  # one transaction per action
    return work


# --- reading the SQL -----------------------------------------------------------------------------------


def unique_keys(table: str, *, partial: bool = False) -> list[frozenset[str]]:
    """The table's unique keys in the models: primary key, unique indexes, unique constraints. Partial
    unique indexes make no column unique for a lookup, but an insert must check them (`partial`)."""
    model = Base.metadata.tables[table]
    keys = [frozenset(c.name for c in model.primary_key.columns)]
    keys += [
        frozenset(c.name for c in index.columns)
        for index in model.indexes
        if index.unique and (partial or index.dialect_options["postgresql"].get("where") is None)
    ]
    keys += [
        frozenset(c.name for c in constraint.columns)
        for constraint in model.constraints
        if isinstance(constraint, UniqueConstraint)
    ]
    return keys


@dataclass(frozen=True)
class Access:
    """One REGIONAL BY ROW table read or written by one query block, and how its rows are found."""

    table: str
    how: str  # "city" (city = %(city)s), "unique:<cols>" (a unique-key lookup), or "scan"


def parse(statement: Statement) -> tuple[ast.Node, dict[int, str]]:
    """The statement's parse tree, with psycopg's %(name)s placeholders as $n, and n -> name."""
    names: list[str] = []

    def number(match: re.Match[str]) -> str:
        if match[1] not in names:
            names.append(match[1])
        return f"${names.index(match[1]) + 1}"

    (raw,) = pglast.parse_sql(re.sub(r"%\((\w+)\)s", number, statement.sql))
    return raw.stmt, {n: name for n, name in enumerate(names, 1)}


def children(node: Any) -> Iterator[Any]:
    if isinstance(node, list | tuple):
        yield from node
    elif isinstance(node, ast.Node):
        for attribute in type(node).__slots__:
            yield getattr(node, attribute)


def walk(node: Any) -> Iterator[ast.Node]:
    if isinstance(node, ast.Node):
        yield node
    for child in children(node):
        yield from walk(child)


def conjuncts(expr: Any) -> Iterator[Any]:
    """The terms of a top-level AND (an OR or NOT pins nothing)."""
    if isinstance(expr, ast.BoolExpr) and expr.boolop == pglast.enums.BoolExprType.AND_EXPR:
        for arg in expr.args:
            yield from conjuncts(arg)
    elif expr is not None:
        yield expr


def from_items(items: Any, relations: list[ast.RangeVar], quals: list[Any]) -> None:
    """Tables and join conditions of a FROM list (subqueries are query blocks of their own)."""
    for item in items or ():
        if isinstance(item, ast.RangeVar):
            relations.append(item)
        elif isinstance(item, ast.JoinExpr):
            from_items([item.larg, item.rarg], relations, quals)
            quals.append(item.quals)


def param_name(node: Any, params: dict[int, str]) -> str | None:
    while isinstance(node, ast.TypeCast):
        node = node.arg
    return params.get(node.number) if isinstance(node, ast.ParamRef) else None


def block_accesses(block: ast.Node, params: dict[int, str], ctes: set[str]) -> list[Access]:
    """The accesses to REGIONAL BY ROW tables of one query block (SELECT, UPDATE, DELETE or INSERT)."""
    if isinstance(block, ast.InsertStmt):
        return insert_accesses(block, params, ctes)
    relations: list[ast.RangeVar] = []
    quals: list[Any] = []
    if isinstance(block, ast.UpdateStmt | ast.DeleteStmt):
        relations.append(block.relation)
    from_items(getattr(block, "fromClause", None) or getattr(block, "usingClause", None), relations, quals)
    quals.append(block.whereClause)
    tables = {(r.alias.aliasname if r.alias else r.relname): r.relname for r in relations if r.relname not in ctes}
    regional = [alias for alias, table in tables.items() if table in REGIONAL_TABLES]

    def column(node: Any) -> tuple[str, str] | None:
        """(alias, column) of a column reference to a table of this block."""
        if not isinstance(node, ast.ColumnRef) or not all(isinstance(f, ast.String) for f in node.fields):
            return None
        names = [f.sval for f in node.fields]
        if len(names) == 2 and names[0] in tables:
            return names[0], names[1]
        if len(names) == 1 and len(regional) == 1:  # unqualified: only unambiguous with one regional table
            return regional[0], names[0]
        return None

    equalities = [
        (term.lexpr, term.rexpr)
        for qual in quals
        for term in conjuncts(qual)
        if isinstance(term, ast.A_Expr)
        and term.kind == pglast.enums.A_Expr_Kind.AEXPR_OP
        and [n.sval for n in term.name] == ["="]
    ]
    pinned: set[str] = set()
    bound: dict[str, set[str]] = {alias: set() for alias in regional}  # columns equal to a parameter
    changed = True
    while changed:  # a join on city pins the joined table to the pinned one's region
        changed = False
        for left, right in equalities + [(right, left) for left, right in equalities]:
            target = column(left)
            if target is None or target[0] not in bound:
                continue
            alias, name = target
            if param_name(right, params) is not None:
                bound[alias].add(name)
            source = column(right)
            pins = (name == "city" and param_name(right, params) == "city") or (
                name == "city" and source is not None and source[1] == "city" and source[0] in pinned
            )
            if pins and alias not in pinned:
                pinned.add(alias)
                changed = True
    accesses = []
    for alias in regional:
        table = tables[alias]
        if alias in pinned:
            accesses.append(Access(table, "city"))
            continue
        keys = [key for key in unique_keys(table) if key <= bound[alias]]
        accesses.append(Access(table, f"unique:{','.join(sorted(min(keys, key=len)))}" if keys else "scan"))
    return accesses


def insert_accesses(insert: ast.InsertStmt, params: dict[int, str], ctes: set[str]) -> list[Access]:
    """An INSERT is homed by the city it writes: the `city` value must be the %(city)s parameter."""
    table = insert.relation.relname
    if table not in REGIONAL_TABLES or table in ctes:
        return []
    columns = [target.name for target in insert.cols]
    if "city" not in columns:
        return [Access(table, "scan")]
    source = insert.selectStmt
    position = columns.index("city")
    values = [row[position] for row in source.valuesLists] if source.valuesLists else [source.targetList[position].val]
    return [Access(table, "city" if all(param_name(v, params) == "city" for v in values) else "scan")]


def accesses_of(statement: Statement) -> list[Access]:
    tree, params = parse(statement)
    ctes = {node.ctename for node in walk(tree) if isinstance(node, ast.CommonTableExpr)}
    blocks = (ast.SelectStmt, ast.UpdateStmt, ast.DeleteStmt, ast.InsertStmt)
    return [access for node in walk(tree) if isinstance(node, blocks) for access in block_accesses(node, params, ctes)]


def tables_of(statement: Statement) -> set[str]:
    tree, _ = parse(statement)
    return {node.relname for node in walk(tree) if isinstance(node, ast.RangeVar)}


def serving(work: Work) -> str:
    """How CockroachDB serves the Work, from its statements' accesses."""
    accesses = [access for statement in work.statements for access in accesses_of(statement)]
    if any(access.how == "scan" for access in accesses):
        return EVERY_REGION
    if any(access.how.startswith("unique:") for access in accesses):
        return SEARCH
    if accesses:
        # An insert checks every unique key; one that leaves out city is checked in every region.
        writes_global_unique = any(
            isinstance(node, ast.InsertStmt)
            and node.relation.relname in REGIONAL_TABLES
            and any("city" not in key for key in unique_keys(node.relation.relname, partial=True))
            for statement in work.statements
            for node in walk(parse(statement)[0])
        )
        return ONE_REGION_UNIQUE if writes_global_unique else ONE_REGION
    return GLOBAL_READ if work.readonly else GLOBAL_WRITE


SQL_START = re.compile(r"\s*(SELECT|INSERT|UPDATE|DELETE|WITH)\b")


def written_sql() -> list[str]:
    """Every SQL statement written in the modules of movr/store/actions/, f-strings filled in from each module's
    constants: also the statements of branches a captured Work does not reach (e.g. after a failed password
    check)."""
    found: list[str] = []
    unreadable: list[str] = []

    class Strings(pyast.NodeVisitor):
        def __init__(self, module: ModuleType) -> None:
            self.module = module

        def visit_JoinedStr(self, node: pyast.JoinedStr) -> None:
            skeleton = "".join(part.value if isinstance(part, pyast.Constant) else "{}" for part in node.values)
            try:
                found.append(eval(compile(pyast.Expression(node), self.module.__file__, "eval"), vars(self.module)))
            except NameError:
                unreadable.append(skeleton)  # built from run-time values: fine for a message, not for SQL

        def visit_Constant(self, node: pyast.Constant) -> None:
            if isinstance(node.value, str):
                found.append(node.value)

    for module in action_modules():
        Strings(module).visit(pyast.parse(Path(module.__file__).read_text()))
    assert not [text for text in unreadable if SQL_START.match(text)], "SQL must be static text with parameters"
    return [text for text in found if SQL_START.match(text)]


# --- the tests -----------------------------------------------------------------------------------------

EXPECTED = {
    "register": ONE_REGION_UNIQUE,
    "authenticate": SEARCH,
    "end_session": ONE_REGION,
    "end_all_sessions": ONE_REGION,
    "get_user": ONE_REGION,
    "list_users": ONE_REGION,
    "remove_user": ONE_REGION,
    "list_vehicles": ONE_REGION,
    "list_user_vehicles": ONE_REGION,
    "add_vehicle": ONE_REGION,
    "remove_vehicle": ONE_REGION,
    "start_ride": ONE_REGION,
    "end_ride": ONE_REGION,
    "list_rides": ONE_REGION,
    "list_promo_codes": GLOBAL_READ,
    "create_promo_code": GLOBAL_WRITE,
    "apply_promo_code": ONE_REGION,
}


def test_every_action_is_checked():
    assert set(CALLS) == public_actions() == set(EXPECTED) == {action.__name__ for action in actions.ACTIONS}


@pytest.mark.parametrize("name", sorted(CALLS))
def test_every_access_to_a_regional_table_names_its_home(name):
    work = captured(name)
    accesses = [access for statement in work.statements for access in accesses_of(statement)]
    scans = [access.table for access in accesses if access.how == "scan"]
    assert not scans, f"{name} reads {scans} without `city = %(city)s` or a unique key: a scan of every region"
    assert serving(work) == EXPECTED[name]
    if any(access.how == "city" for access in accesses):
        # The Work's home is the city the SQL pins, so the lab's router and CockroachDB agree.
        assert work.home == Home.of_city(CITY)
        assert all(statement.params["city"] == CITY for statement in work.statements)
    if any(access.how.startswith("unique:") for access in accesses):
        assert work.home.kind == "search"
    if not accesses:
        assert all(tables_of(statement) <= set(GLOBAL_TABLES) for statement in work.statements)
        assert work.home == (Home.local() if work.readonly else Home.global_write())


def test_every_statement_written_in_the_actions_names_its_home():
    statements = written_sql()
    assert len(statements) >= len(CALLS)
    for sql in statements:
        scans = [access.table for access in accesses_of(Statement(sql)) if access.how == "scan"]
        assert not scans, f"reads {scans} without `city = %(city)s` or a unique key:\n{sql}"


def test_log_in_is_a_lookup_on_a_unique_username():
    """Locality-optimized search needs a unique key: without UNIQUE on username, log-in scans every region."""
    assert frozenset({"username"}) in unique_keys("users")
    (statement,) = captured("authenticate").statements
    assert accesses_of(statement) == [Access("users", "unique:username")]


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT city, id FROM users WHERE id = %(id)s",  # the removed find_user: id alone is not unique
        "SELECT id FROM users WHERE city = %(city)s OR id = %(id)s",
        "SELECT id FROM vehicles WHERE owner_id = %(owner_id)s",
        "SELECT v.id FROM vehicles v JOIN users u ON u.id = v.owner_id WHERE v.city = %(city)s",
        "SELECT r.id FROM rides r, vehicles v WHERE r.city = %(city)s AND v.id = r.vehicle_id",
        "UPDATE rides SET end_time = now() WHERE id = %(id)s",
        "DELETE FROM vehicles WHERE id = %(id)s",
        "INSERT INTO rides (city, id, rider_id, vehicle_id) VALUES (%(other)s, %(id)s, %(id)s, %(id)s)",
        "WITH t AS (SELECT id FROM users WHERE username LIKE %(city)s) SELECT * FROM t",
        "SELECT id FROM users WHERE city = %(elsewhere)s",
    ],
)
def test_a_city_less_query_is_caught(sql):
    assert any(access.how == "scan" for access in accesses_of(Statement(sql)))


@pytest.mark.parametrize(
    ("sql", "how"),
    [
        ("SELECT id FROM users WHERE city = %(city)s AND id = %(id)s", ["city"]),
        ("SELECT 1 FROM rides r JOIN vehicles v ON v.city = r.city WHERE r.city = %(city)s", ["city", "city"]),
        ("SELECT 1 FROM users WHERE username = %(username)s", ["unique:username"]),
        ("SELECT 1 FROM users WHERE city = %(c2)s AND id = %(id)s", ["unique:city,id"]),
    ],
)
def test_what_counts_as_naming_a_home(sql, how):
    assert [access.how for access in accesses_of(Statement(sql))] == how


def test_the_docs_list_how_each_action_is_served():
    text = DOCS.read_text()
    assert DOCS_SECTION in text
    section = text.split(DOCS_SECTION, 1)[1].split("\n## ", 1)[0]
    rows = {
        cells[0].strip("` "): cells[1].strip()
        for line in section.splitlines()
        if line.startswith("| `")
        for cells in [line.strip("|").split("|")]
    }
    assert rows == EXPECTED
