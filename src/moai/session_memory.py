"""Which model a conversation (``session``, else the request's ``user``) is on, so that its next turn stays there:
this process's memory first, else the shared telemetry database, asked off the event loop and within a time limit."""

from __future__ import annotations

import logging
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

from moai.bounded import BoundedSteps
from moai.refusals import UnknownModel
from moai.telemetry.metrics import Metrics
from moai.telemetry.store import TelemetryStore

if TYPE_CHECKING:
    from moai.config import Mix

SESSION_LOOKUPS_AT_ONCE = 4  # database lookups at once (a hung database holds their threads)


def _nothing_to_undo(_model: str | None) -> None:
    """A lookup given up on reads only: nothing to take back."""


class SessionMemory:
    """The session lookups of a Mixture (its ``store``, ``metrics``, ``resolve`` and in-memory ``_sessions``)."""

    store: TelemetryStore | None
    metrics: Metrics
    _sessions: OrderedDict[tuple[str | None, str, str], str]

    if TYPE_CHECKING:
        def resolve(self, model: str) -> tuple[str, Mix]: ...

    session_lookup_timeout_s = 2.0  # how long a session's model is awaited from the database before going without
    _session_lookups: BoundedSteps | None = None  # this process's lookups, bounded (made on first use, on its loop)
    _session_lookup_failing = False

    def session_model(self, session: str, mix: str, api_key: str | None = None) -> str | None:
        """Which model this conversation is on: this process's memory, else the shared database. A database that
        cannot answer knows no model for it (the conversation is routed afresh), as for a new session. Sessions
        belong to the API key (id) that sent them; keyless requests share the keyless ones."""
        model = self._sessions.get((api_key, mix, session))
        if model is None and self.store is not None:
            try:
                model = self.store.session_model(session, mix, api_key)
            except Exception as e:  # noqa: BLE001 - down: the request goes on without its session's model
                self._session_lookup_failed(e)
                return None
            self._session_lookup_failing = False
        return model

    async def asession_model(self, body: Any, session: str | None = None, api_key: str | None = None) -> str | None:
        """``session_model`` for ``prepare(body, api_key, session=session, session_model=...)``, off the event loop and
        bounded by ``session_lookup_timeout_s`` (None: no session, no model known for it, or no answer in time).
        While a lookup given up on has not returned, the database is taken to hang and is not asked again."""
        session = session or body.user
        if not session:
            return None
        try:
            mix_name, mix = self.resolve(body.model)
        except UnknownModel:
            return None
        model = self._sessions.get((api_key, mix_name, session))
        if mix.sessions == "off" or model is not None or self.store is None:
            return model
        lookups = self._session_lookups = self._session_lookups or BoundedSteps(self.session_lookup_timeout_s,
                                                                                  SESSION_LOOKUPS_AT_ONCE)
        lookups.timeout_s = self.session_lookup_timeout_s
        store = self.store
        try:
            model = await lookups.run(lambda: store.session_model(session, mix_name, api_key), _nothing_to_undo)
        except Exception as e:  # noqa: BLE001 - down or hanging (GaveUp): the request goes on without its model
            self._session_lookup_failed(e)
            return None
        self._session_lookup_failing = False
        return model

    def _session_lookup_failed(self, e: BaseException) -> None:
        self.metrics.observe_database_error("session")
        if not self._session_lookup_failing:  # once per outage
            self._session_lookup_failing = True
            logging.getLogger("moai").warning("session lookup failed (%s); sessions not in memory start afresh "
                                              "until the telemetry database answers", type(e).__name__)
