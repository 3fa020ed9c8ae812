"""One service function per user action: the only place that knows each action's SQL.

Every action is one transaction of the fewest statements SQL allows (law 5). Most are a single
statement: data-modifying CTEs do the write and return, in the same round trip, what the action needs
to tell a user *why* nothing changed (unknown vehicle, lost race, not yours...). A statement that
changed nothing is harmless, so the classification runs after it, in Python.

Actions do not know which backend runs them (law 4): they hand the backend `Work` that names where
the data lives, and the backend routes it.

Callers use the package (`actions.start_ride(store, ...)`); each action lives, with its SQL, in the module
of what it acts on: `users`, `sessions`, `vehicles`, `rides`, `promo_codes`. What they share is in
`_sql` (columns, the session check, SQLSTATEs), `_run` (running Work, records) and `_idempotency`
(Idempotency-Key).
"""

from __future__ import annotations

from movr.store.actions._run import Session
from movr.store.actions._sql import LIST_LIMIT
from movr.store.actions.promo_codes import apply_promo_code, create_promo_code, list_promo_codes
from movr.store.actions.rides import end_ride, list_rides, start_ride
from movr.store.actions.sessions import (
    DEFAULT_LOGIN_LIMIT,
    ENDED_SESSIONS_KEPT,
    LoggedIn,
    authenticate,
    end_all_sessions,
    end_session,
)
from movr.store.actions.users import get_user, list_users, register, remove_user
from movr.store.actions.vehicles import add_vehicle, list_user_vehicles, list_vehicles, remove_vehicle

# The service functions, one per user action (tests check each one's SQL and round trips).
ACTIONS = (
    register,
    authenticate,
    end_session,
    end_all_sessions,
    get_user,
    list_users,
    remove_user,
    list_vehicles,
    list_user_vehicles,
    add_vehicle,
    remove_vehicle,
    start_ride,
    end_ride,
    list_rides,
    list_promo_codes,
    create_promo_code,
    apply_promo_code,
)

__all__ = [
    "ACTIONS",
    "DEFAULT_LOGIN_LIMIT",
    "ENDED_SESSIONS_KEPT",
    "LIST_LIMIT",
    "LoggedIn",
    "Session",
    *(action.__name__ for action in ACTIONS),
]
