"""The exception queue's decisions: a state machine over status, owner and outcome, with a trail.

Statuses: `open` (waiting for its owner), `approved` (the record is released for delivery despite
the problem), `rejected` (the record is held), `retrying` (a run for its partition is on its
way), `escalated` (passed to the escalation target) and `closed`. Every action is checked
against the status it starts from and recorded with its actor, reason, time and run.
"""

import getpass
import logging
from dataclasses import dataclass

import pandas as pd
import sqlalchemy as sa

from meshline_pipelines.ledger import Ledger
from meshline_pipelines.ledger.store import restore_types, utc_now
from meshline_pipelines.ledger.tables import exception_transitions, exceptions
from meshline_pipelines.routing import Routing

log = logging.getLogger(__name__)

OPEN, APPROVED, REJECTED, RETRYING = "open", "approved", "rejected", "retrying"
ESCALATED, CLOSED = "escalated", "closed"
STATUSES = (OPEN, APPROVED, REJECTED, RETRYING, ESCALATED, CLOSED)
ACTIVE = (OPEN, RETRYING, ESCALATED)

# Action -> (statuses it may start from, status it leaves; None keeps the status).
TRANSITIONS: dict[str, tuple[frozenset[str], str | None]] = {
    "route": (frozenset({OPEN, ESCALATED, REJECTED, APPROVED}), None),
    "approve": (frozenset({OPEN, ESCALATED, REJECTED}), APPROVED),
    "reject": (frozenset({OPEN, ESCALATED, APPROVED}), REJECTED),
    "retry": (frozenset({OPEN, ESCALATED, REJECTED}), RETRYING),
    "replay": (frozenset({OPEN, ESCALATED, REJECTED}), RETRYING),
    "escalate": (frozenset({OPEN, REJECTED, ESCALATED, RETRYING}), ESCALATED),
    "close": (frozenset({OPEN, APPROVED, REJECTED, RETRYING, ESCALATED}), CLOSED),
}
ACTIONS = tuple(TRANSITIONS)
NOTHING_ALLOWED = "none, it is closed (it reopens if the problem recurs)"

# The reason rule: an action that accepts a risk or ends the work requires a reason, so that the
# trail records why it was taken. Approve releases a record despite its problem, reject holds it back
# and close ends the work. Routing, escalation and re-runs pass the work on or try again, so a
# reason is optional for them. Each value describes what the action does, for the error message.
REASON_REQUIRED = {
    "approve": "it releases the record for delivery despite the problem",
    "reject": "it holds the record back from delivery",
    "close": "it ends the work on the exception",
}


class TransitionError(ValueError):
    """An action that the exception's current status does not allow; the message names both."""


class ReasonRequired(ValueError):
    """Error for a decision that requires a reason and has none. The message names the action and --reason."""


class ExceptionNotFound(LookupError):
    pass


def default_actor() -> str:
    """Return the operating-system user, the actor of a command run without --actor."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


@dataclass(frozen=True)
class Transition:
    exception_id: int
    action: str
    from_status: str
    to_status: str
    from_owner: str
    to_owner: str


def get_exception(ledger: Ledger, exception_id: int) -> pd.Series:
    with ledger.engine.connect() as connection:
        row = connection.execute(sa.select(exceptions).where(exceptions.c.id == exception_id)).mappings().first()
    if row is None:
        raise ExceptionNotFound(f"no exception with ID {exception_id}: `meshline exceptions list` shows the IDs")
    return restore_types(pd.DataFrame([dict(row)]), exceptions).iloc[0]


# The command of each action where they differ: `meshline exceptions assign` records `route`.
COMMANDS = {"route": "assign"}


def allowed_actions(status: str) -> list[str]:
    """Return the commands the status allows, as `meshline exceptions` names them."""
    return [COMMANDS.get(action, action) for action, (sources, _) in TRANSITIONS.items() if status in sources]


def checked_reason(action: str, reason: str | None, exception_id: int | None = None) -> str | None:
    """Return the reason without surrounding blanks, or None if it is blank.

    Raise ReasonRequired when the reason is blank and the action requires one. Every operator
    decision passes through this check before `transition`, which stays open to MeshLine's own
    steps and to library callers.
    """
    reason = (reason or "").strip() or None
    if reason is None and action in REASON_REQUIRED:
        command = COMMANDS.get(action, action)
        target = exception_id if exception_id is not None else "ID"
        raise ReasonRequired(
            f"missing reason: {command} requires one because {REASON_REQUIRED[action]}. Nothing was changed. "
            f"Pass it with --reason, for example:\n"
            f'  meshline exceptions {command} {target} --reason "checked with the owner"')
    return reason


def transition(ledger: Ledger, exception_id: int, action: str, *, actor: str | None = None,
               reason: str | None = None, owner: str | None = None, run_id: str | None = None,
               outcome: str | None = None, to_status: str | None = None) -> Transition:
    """Apply an action to an exception and record it; raise TransitionError when its status forbids it.

    The check and the update happen in one transaction, and the update only applies if the
    status is still the one checked, so two operators acting at once cannot both succeed.
    """
    if action not in TRANSITIONS and action not in ("reopen", "run_finished"):
        raise TransitionError(f"unknown action {action!r}: expected one of {', '.join(ACTIONS)}")
    actor = actor or default_actor()
    now = utc_now()
    with ledger.engine.begin() as connection:
        row = connection.execute(sa.select(exceptions.c.status, exceptions.c.owner).where(
            exceptions.c.id == exception_id)).first()
        if row is None:
            raise ExceptionNotFound(f"no exception with ID {exception_id}: `meshline exceptions list` shows the IDs")
        if action in TRANSITIONS:
            sources, result = TRANSITIONS[action]
            if row.status not in sources:
                allowed = allowed_actions(row.status)
                command = COMMANDS.get(action, action)
                raise TransitionError(
                    f"exception {exception_id} is {row.status}: {command} is not allowed from {row.status}; "
                    f"allowed: {', '.join(allowed) if allowed else NOTHING_ALLOWED}")
        else:
            result = None
        new_status = to_status or result or row.status
        new_owner = owner or row.owner

        values = {"status": new_status, "owner": new_owner, "updated_at": now}
        if action in ("approve", "reject", "close", "retry", "replay", "escalate"):
            values["outcome"] = outcome or action
        if new_status == CLOSED:
            values["closed_at"] = now
        if action in ("retry", "replay"):
            values["attempts"] = exceptions.c.attempts + 1
        changed = connection.execute(exceptions.update().where(
            exceptions.c.id == exception_id, exceptions.c.status == row.status).values(values)).rowcount
        if changed != 1:
            raise TransitionError(f"exception {exception_id} changed while {action} was applied; try again")
        connection.execute(exception_transitions.insert().values(
            exception_id=exception_id, action=action, from_status=row.status, to_status=new_status,
            from_owner=row.owner, to_owner=new_owner, actor=actor, reason=reason, run_id=run_id, at=now))
    log.info("exception %s: %s by %s, %s -> %s%s", exception_id, action, actor, row.status, new_status,
             f" (owner {new_owner})" if new_owner != row.owner else "")
    return Transition(exception_id, action, row.status, new_status, row.owner, new_owner)


def close_resolved_exception(ledger: Ledger, exception_id: int, reason: str) -> bool:
    """Close an exception whose problem a MeshLine check no longer finds; return whether it was closed.

    Another actor may have changed the exception after the check read it. That actor's status is
    kept, so the close is skipped with a warning.
    """
    try:
        transition(ledger, exception_id, "close", actor="meshline", reason=reason)
    except TransitionError as exc:
        log.warning("exception %s was not closed: %s", exception_id, exc)
        return False
    return True


def escalate(ledger: Ledger, routing: Routing, exception_id: int, *, actor: str | None = None,
             reason: str | None = None) -> Transition:
    """Pass an exception to its route's escalation target."""
    current = get_exception(ledger, exception_id)
    target = routing.route(current["kind"], current["system"], current["entity"]).escalate_to
    if not target:
        raise TransitionError(f"no escalation target for {current['kind']} exceptions of {current['system']}: "
                              "set escalate_to on the route or the default in the routing file")
    return transition(ledger, exception_id, "escalate", actor=actor, reason=reason, owner=target)


def escalate_overdue(ledger: Ledger, routing: Routing, *, now=None, actor: str = "meshline") -> list[Transition]:
    """Escalate every open or retrying exception past its due time, once; return what was escalated."""
    now = now or utc_now()
    with ledger.engine.connect() as connection:
        rows = connection.execute(sa.select(exceptions.c.id).where(
            exceptions.c.status.in_([OPEN, RETRYING]), exceptions.c.due_at < now).order_by(exceptions.c.id)).all()
    done = []
    for (exception_id,) in rows:
        try:
            done.append(escalate(ledger, routing, exception_id, actor=actor, reason="overdue"))
        except TransitionError as exc:
            log.warning("exception %s is overdue but was not escalated: %s", exception_id, exc)
    return done


def read_transitions(ledger: Ledger, exception_id: int | None = None) -> pd.DataFrame:
    query = sa.select(exception_transitions).order_by(exception_transitions.c.id)
    if exception_id is not None:
        query = query.where(exception_transitions.c.exception_id == exception_id)
    with ledger.engine.connect() as connection:
        frame = pd.DataFrame(connection.execute(query).mappings().all(),
                             columns=[column.name for column in exception_transitions.columns])
    return restore_types(frame, exception_transitions)
