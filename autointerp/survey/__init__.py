"""The human survey: a local web app that runs the study's protocol for many participants.

* :mod:`autointerp.survey.questions` — the study's six questions (texts and answer ranges).
* :mod:`autointerp.survey.features` — which features are surveyed and their images (from the run folder).
* :mod:`autointerp.survey.db` — SQLite (WAL) storage, one row per (participant, feature).
* :mod:`autointerp.survey.app` — the FastAPI app (``create_app``) and ``serve`` (uvicorn).
* :mod:`autointerp.survey.export` — the study's CSV format plus a ``participant`` column.

CLI: ``autointerp survey serve RUN`` and ``autointerp survey export RUN --out answers.csv``.
"""

from __future__ import annotations

from autointerp.runfolder import ANSWERS_SQLITE

DEFAULT_DB_NAME = ANSWERS_SQLITE
