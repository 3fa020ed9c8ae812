"""The SQL the actions share: the columns they return, the session check each one makes inside its own
statement, list limits, and the SQLSTATEs they tell apart."""

from __future__ import annotations

UNIQUE_VIOLATION = "23505"
FOREIGN_KEY_VIOLATION = "23503"
LOCK_NOT_AVAILABLE = "55P03"  # lock_timeout (movr.store.backend.SESSION_TIMEOUTS)
QUERY_CANCELED = "57014"  # statement_timeout
LIST_LIMIT = 200

USER_COLUMNS = "city, id, username, first_name, last_name, email, created_at"
VEHICLE_COLUMNS = "city, id, type, owner_id, status, last_location, color, brand, date_added"
RIDE_COLUMNS = "city, id, rider_id, vehicle_id, start_location, start_time, end_location, end_time, promo_code"

# Is the caller's session live? Checked inside each action's own statement, so authenticating costs no
# round trip of its own: the user's row (in `%(city)s`, the statement's home) exists, carries the
# session's epoch, and does not list the session among its ended ones. True when the action runs for no
# session (tools, benchmarks) or on another city's rows, which are never the session user's (vehicles
# and rides live in their owner's home city), so such an action can only refuse.
SESSION_LIVE = """(%(session_epoch)s::integer IS NULL OR EXISTS (
    SELECT 1 FROM users su
     WHERE su.city = %(city)s AND su.id = %(session_user)s::uuid AND su.session_epoch = %(session_epoch)s::integer
       AND NOT (%(session_id)s::bigint = ANY (su.ended_sessions))))"""
# The CTE `live` of a statement that checks the session: SESSION_LIVE once, which the statement's writes
# and reads are gated on as `(SELECT ok FROM live)` and which it answers as `session_live` (check_session).
LIVE = f"""live AS (
            SELECT {SESSION_LIVE} AS ok
        )"""
